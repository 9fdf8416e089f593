# syntax=docker/dockerfile:1.7
#
# One image for the whole platform: the four service binaries, `cart-node` (a gateway and an
# aggregate in one process) and the catalog seed. The command picks the service, e.g.
# `docker run cart-platform gateway`, `... aggregate seed-catalog`.
#   docker build -t cart-platform .
# BuildKit is required (cache mounts); it is the default builder of current Docker releases.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The commit the binaries name in `cart_build_info{git_sha}` (shared/build.rs reads GIT_SHA; the
# build context has no .git): `docker build --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD)`.
ARG GIT_SHA=unknown
ENV GIT_SHA=${GIT_SHA}
# The cache mounts keep the crates.io download and the incremental target dir between builds, so
# a code change rebuilds only the crates it touches. The target dir is a cache, not a layer:
# the binaries are copied out in the same step. `--locked` builds exactly what Cargo.lock says.
# protoc comes from the protoc-bin-vendored crate (proto/build.rs); no system package needed.
# No debug info in the image (the workspace's release profile keeps line tables for local
# profiling): ~20 MB per binary instead of ~110 MB; panics still name the functions.
ENV CARGO_PROFILE_RELEASE_DEBUG=false
RUN --mount=type=cache,id=cart-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=cart-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=cart-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p aggregate -p gateway -p projection -p runner -p cart-node --bins \
 && mkdir -p /out \
 && cp target/release/aggregate target/release/gateway target/release/projection \
       target/release/runner target/release/cart-node /out/

# Same Debian release as the builder, so the glibc the binaries link against is there. curl is
# for container health checks (docker compose `healthcheck:` probes /ready); ca-certificates for
# TLS to the payment provider.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cart \
 && useradd --system --uid 10001 --gid cart --home-dir /app --shell /usr/sbin/nologin cart \
 && mkdir -p /app/deploy /var/lib/cart \
 && chown cart:cart /var/lib/cart
COPY --from=builder /out/ /usr/local/bin/
# `aggregate seed-catalog` defaults to deploy/catalog.json relative to the working directory.
COPY deploy/catalog.json /app/deploy/catalog.json
WORKDIR /app
# Numeric, so Kubernetes `runAsNonRoot` can verify it. /var/lib/cart (the projection's SQLite
# volume) is owned by this user: a fresh named volume inherits that ownership.
USER 10001:10001
# Service ports (defaults of the deploy configs): gateway HTTP, aggregate gRPC/ops,
# projection gRPC/ops, runner gRPC/ops, and the runner's embedded mock provider (compose).
EXPOSE 8080 50051 9101 50062 9102 50061 9103 9200
# SIGTERM (the default stop signal) makes every service drain; the binary is PID 1 and handles it.
CMD ["aggregate"]
