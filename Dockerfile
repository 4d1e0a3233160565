# syntax=docker/dockerfile:1
# The leadpipe server image: `docker build -t leadpipe .` (BuildKit, the default builder).

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-slim-trixie AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io downloads and the compiled dependencies between builds,
# so a source change recompiles only leadpipe itself. The target directory is a cache, not a
# layer, so the binary is copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin leadpipe \
 && cp target/release/leadpipe /usr/local/bin/leadpipe

FROM debian:trixie-slim
# The binary needs only the C runtime: TLS is rustls, so no OpenSSL and no CA bundle.
RUN groupadd --system --gid 10001 leadpipe \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/leadpipe --create-home leadpipe
COPY --from=builder /usr/local/bin/leadpipe /usr/local/bin/leadpipe
USER 10001:10001
WORKDIR /var/lib/leadpipe
# Listen on every interface inside the container. With `--auth auto`, the server then refuses
# to start until an API key exists (`leadpipe keys create`), or LEADPIPE_AUTH is set.
ENV LEADPIPE_LISTEN=0.0.0.0:50051 \
    LEADPIPE_DATABASE_URL=sqlite:///var/lib/leadpipe/leadpipe.db
VOLUME /var/lib/leadpipe
EXPOSE 50051
# SIGTERM starts the graceful shutdown: streams end with UNAVAILABLE, in-flight calls finish.
STOPSIGNAL SIGTERM
# `leadpipe health` asks the plaintext port named by LEADPIPE_LISTEN; with TLS configured,
# override this check (e.g. `docker run --no-healthcheck`) and probe with a TLS client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["leadpipe", "health"]
ENTRYPOINT ["leadpipe"]
CMD ["serve"]
