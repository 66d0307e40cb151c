# Builds every jetmail binary once; compose.yaml runs each service from this image (curl is
# for its health checks).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
 && mkdir /out \
 && cp target/release/jetmail-ingest target/release/jetmail-sender \
       target/release/jetmail-monitor target/release/jetmail-webui \
       target/release/jetmail-sink /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 jetmail
COPY --from=build /out/ /usr/local/bin/
COPY examples/ /usr/share/jetmail/examples/
USER jetmail
ENV JETMAIL_LOG=info
