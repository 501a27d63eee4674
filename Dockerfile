# syntax=docker/dockerfile:1
#
# cordon: multi-stage build. The builder uses the pinned Rust toolchain (1.95, matching
# `rust-version` in Cargo.toml); the runtime is a slim Debian with CA certificates and
# time zone data. docs/deploy.md, "Docker", has the whole procedure.
#
#   docker build -t cordon .
#   docker run -d --name cordon --restart unless-stopped --stop-timeout 30 \
#       -v cordon-state:/var/lib/cordon \
#       -v /etc/cordon/cordon.yaml:/etc/cordon/cordon.yaml:ro \
#       -v /etc/cordon/playbooks:/etc/cordon/playbooks:ro \
#       -v /etc/cordon/secrets:/run/secrets/cordon:ro \
#       -p 127.0.0.1:9464:9464 \
#       cordon
#
# with, in cordon.yaml, `state_dir: /var/lib/cordon`,
# `archive_dir: /var/lib/cordon/archives`, `playbooks_dir: /etc/cordon/playbooks`,
# `password: { file: /run/secrets/cordon/password }`,
# `store_passphrase: { file: /run/secrets/cordon/store-passphrase }`. The secret files
# must be readable by uid 10001. For /metrics and /healthz, set
# `metrics: { listen: 0.0.0.0:9464 }` (the loopback default is unreachable from outside
# the container) and publish the port to the host's loopback only, as above.
#
# The first start sets up cordon's recovery key, which must not end in the container's
# log. The image's command refuses to start until that first start is done
# (`--require-session`, exit 78): do it once by hand, in a terminal,
#
#   docker run -it --rm --log-driver none -v cordon-state:/var/lib/cordon \
#       -v /etc/cordon/cordon.yaml:/etc/cordon/cordon.yaml:ro \
#       -v /etc/cordon/playbooks:/etc/cordon/playbooks:ro \
#       -v /etc/cordon/secrets:/run/secrets/cordon:ro \
#       cordon run --config /etc/cordon/cordon.yaml
#
# (or with `--recovery-key-out FILE` on a mounted directory), stop it with ctrl-c, and
# then start the container as above (docs/deploy.md, "First start" and "Docker").
#
# HEALTHCHECK runs `cordon healthcheck`, which asks /healthz at the config's
# `metrics.listen` (the image has no curl); it needs `metrics.listen` set, as above.

FROM rust:1.95-slim-bookworm AS builder
# The slim Rust image already carries gcc and libc6-dev, which the C parts need
# (bundled SQLite, aws-lc and ring); nothing else is installed.
WORKDIR /src
# Build the dependencies first, against stub sources, so that source edits do not
# rebuild matrix-sdk. The stubs give every target Cargo.toml names a file: the library
# (src/lib.rs) and the binary (src/main.rs), and the testkit's library and binary.
# There is no build script and no bench target.
# The workspace's other member, the testkit, must be present for cargo to read the
# manifest; it is never built here (`cargo build` builds the default member, cordon).
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml ./testkit/
RUN mkdir -p src testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && : > testkit/src/lib.rs \
    && echo 'fn main() {}' > testkit/src/main.rs \
    && cargo build --release --locked --bin cordon \
    && rm -rf src
# Everything the binary compiles in is under src/ (the playbook scaffold is
# src/input/playbook/scaffold.yaml), and the Synapse module's Python files, which
# `cordon demo` writes out for its throwaway Synapse (src/dev/synapse.rs). The tests stay
# stubs: only the binary is built, and test edits then leave this layer's cache alone.
COPY src ./src
COPY synapse-module/cordon_synapse ./synapse-module/cordon_synapse
COPY scripts/check-no-test-hooks ./scripts/
# Touch so that cargo sees the real sources as newer than the stub build. No
# `--features`: the `test-hooks` feature (failpoints, a fake full disk, a skewed clock,
# all driven by environment variables) is for the tests only, and the check fails the
# build if any of its variables is in the binary.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin cordon \
    && strip target/release/cordon \
    && bash scripts/check-no-test-hooks target/release/cordon

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 cordon \
    && useradd --system --uid 10001 --gid cordon --home-dir /var/lib/cordon --shell /usr/sbin/nologin cordon \
    && mkdir -p /var/lib/cordon /etc/cordon/playbooks \
    && chown cordon:cordon /var/lib/cordon && chmod 0700 /var/lib/cordon
COPY --from=builder /src/target/release/cordon /usr/local/bin/cordon
# The sample playbooks, for reference only. They name example holders and example
# archive keys, so they are not in /etc/cordon/playbooks: mount the emergency planners'
# own playbooks there (read-only).
COPY playbooks /usr/share/cordon/playbooks
# The store, the Matrix session, the archive signing key and the sealed archives.
VOLUME ["/var/lib/cordon"]
# /metrics and /healthz (see above).
EXPOSE 9464
USER cordon:cordon
WORKDIR /var/lib/cordon
# Healthy when /healthz says so: synced recently and the store writable. The start
# period covers a start-up that catches up on timers after a long stop.
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
    CMD ["/usr/local/bin/cordon", "healthcheck", "--config", "/etc/cordon/cordon.yaml"]
ENTRYPOINT ["/usr/local/bin/cordon"]
CMD ["run", "--config", "/etc/cordon/cordon.yaml", "--require-session"]
