# jetmail's runtime image: the release binaries built on the host, on a Debian base.
# compose.yaml runs every service from it (README, "Running with Docker"):
#
#   cargo build --release --bin jetmail-ingest --bin jetmail-sender --bin jetmail-monitor \
#     --bin jetmail-webui --bin jetmail-sink
#   docker compose build
#
# The binaries link against the host's glibc: build them on Debian 12 (bookworm) or older, or
# in a container of the same Debian as BASE_IMAGE (README shows the `docker run rust:…` line).
#
# BASE_IMAGE is any Debian bookworm image: debian:bookworm-slim from a registry, or one made
# locally without a registry (scripts/docker-images.sh: debootstrap + docker import, with
# ca-certificates and curl already in it). Packages are installed only when missing, so a
# base without a reachable package mirror builds too. This file needs no BuildKit feature.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# ca-certificates: relays and NATS over TLS with the system's roots; curl: the health checks.
# /mail is the demo SMTP sink's maildir: a named volume mounted there starts with its owner.
RUN set -eu; \
    missing=""; \
    [ -s /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"; \
    command -v curl >/dev/null || missing="$missing curl"; \
    if [ -n "$missing" ]; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin jetmail; \
    mkdir /mail && chown jetmail /mail

# The cargo profile the binaries were built with: release for every image you run; CI's
# compose test reuses the test suite's debug build (scripts/test-compose.sh --profile debug).
ARG PROFILE=release
COPY target/${PROFILE}/jetmail-ingest target/${PROFILE}/jetmail-sender \
     target/${PROFILE}/jetmail-monitor target/${PROFILE}/jetmail-webui \
     target/${PROFILE}/jetmail-sink /usr/local/bin/
COPY examples/ /usr/share/jetmail/examples/
USER jetmail
ENV JETMAIL_LOG=info
