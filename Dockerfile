# gantry's container image, built from source:
#
#   docker build -t gantry:0.1.0 .
#
# Stage 1 builds a statically linked gantry with the official Rust image; stage 2 is FROM
# scratch: the binary, a passwd entry for the non-root user gantry (10001:10001), the CA
# bundle, nsswitch.conf, /tmp and /var/lib/gantry, under 20 MB in all. The files are laid out
# by `.ci/image context`, which Dockerfile.scratch uses too, so both images are alike.
#
# This file needs a registry (docker.io/library/rust). The machines gantry's CI runs on reach
# none, so CI builds Dockerfile.scratch instead, around a binary built on the host
# (`.ci/image build`), and runs that image (`.ci/chart`).
# Needs BuildKit (Docker 23 and later use it by default) for the cache mounts.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (+crt-static): the final image has no libc. The cache mounts keep
# the registry and the build between builds; the binary is copied out of the cached target.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu -p gantry-proxy --bin gantry \
    && cp target/x86_64-unknown-linux-gnu/release/gantry /gantry
RUN bash .ci/image context /image /gantry

FROM scratch
COPY --from=build /image/rootfs/ /
# The data directory belongs to the gantry user; COPY makes everything else root's.
COPY --from=build --chown=10001:10001 /image/data /var/lib/gantry

# Scratch images have no PATH of their own; `kubectl exec ... -- gantry` needs one.
ENV PATH=/usr/local/bin
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Every gantry command (up, check-config, user) reads this file unless --config says otherwise.
ENV GANTRY_CONFIG=/etc/gantry/gantry.toml
USER 10001:10001
WORKDIR /var/lib/gantry
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/gantry"]
CMD ["up", "--config", "/etc/gantry/gantry.toml"]
