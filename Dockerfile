# syntax=docker/dockerfile:1
#
# cordon: multi-stage build. The builder uses the pinned Rust toolchain (1.95, matching
# `rust-version` in Cargo.toml); the runtime is a slim Debian with only CA certificates.
#
#   docker build -t cordon .
#   docker run --rm -v cordon-state:/var/lib/cordon -v ./playbooks:/etc/cordon/playbooks:ro \
#       -v ./cordon.yaml:/etc/cordon/cordon.yaml:ro \
#       -e CORDON_PASSWORD=... -e CORDON_STORE_PASSPHRASE=... \
#       cordon run --config /etc/cordon/cordon.yaml
#
# with, in cordon.yaml, `password: { env: CORDON_PASSWORD }`,
# `store_passphrase: { env: CORDON_STORE_PASSPHRASE }` and `state_dir: /var/lib/cordon`
# (or secret files mounted read-only and named with `{ file: ... }`).

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
# Build dependencies first so that source edits do not rebuild matrix-sdk.
COPY Cargo.toml Cargo.lock ./
# Cargo.toml names tests/it/main.rs as a target, so the stub needs it too.
RUN mkdir -p src tests/it && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > tests/it/main.rs \
    && cargo build --release --locked --bin cordon \
    && rm -rf src tests
COPY src ./src
COPY tests ./tests
# Touch so cargo sees the real sources as newer than the dummy build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin cordon \
    && strip target/release/cordon

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cordon \
    && useradd --system --uid 10001 --gid cordon --home-dir /var/lib/cordon --shell /usr/sbin/nologin cordon \
    && mkdir -p /var/lib/cordon /etc/cordon/playbooks \
    && chown cordon:cordon /var/lib/cordon && chmod 0700 /var/lib/cordon
COPY --from=builder /src/target/release/cordon /usr/local/bin/cordon
COPY playbooks /etc/cordon/playbooks
# The store, Matrix session and sealed archives live in the state volume; playbooks are
# mounted read-only by the emergency planners' deployment.
VOLUME ["/var/lib/cordon", "/etc/cordon/playbooks"]
USER cordon:cordon
WORKDIR /var/lib/cordon
ENTRYPOINT ["/usr/local/bin/cordon"]
CMD ["check", "/etc/cordon/playbooks"]
