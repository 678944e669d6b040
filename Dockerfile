# syntax=docker/dockerfile:1
# The retort image: one binary for every service (`retort gateway|metering|breaker|distill serve|...`)
# and the provider simulator, built with the locked dependency set, offline, and run as a non-root user.
#
#   docker build -t retort:0.1.0 .                                 # CPU (burn's CPU backend)
#   docker build --build-arg cuda=1 -t retort:0.1.0-cuda .         # distill/selector on CUDA GPUs (burn-cuda)
#
# Layers: the crate set is fetched from the workspace's manifests and Cargo.lock alone (`cargo fetch
# --locked`), so editing sources reuses it; the build then runs `--locked --offline` on it.
ARG RUST_IMAGE=rust:1.95.0-bookworm
# 1: build the training crate's CUDA backend in and run on CUDA's runtime image (burn-cuda loads the
# driver at run time, so no GPU is needed to build).
ARG cuda=0

# The workspace's manifests and lock, with an empty file at each target root (what cargo needs to
# read the workspace); nothing else, so the next stage's cache key is the dependency set.
FROM ${RUST_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /out; \
    cp Cargo.toml Cargo.lock /out/; \
    find . -name Cargo.toml -not -path './target/*' | while read -r m; do \
        d=$(dirname "$m"); mkdir -p "/out/$d"; cp "$m" "/out/$d/"; \
        find "$d" -path "$d/target" -prune -o \( -path "$d/src/lib.rs" -o -path "$d/src/main.rs" \
            -o -path "$d/src/bin/*.rs" -o -path "$d/build.rs" -o -path "$d/benches/*.rs" \
            -o -path "$d/tests/*.rs" -o -path "$d/examples/*.rs" \) -type f -print \
        | while read -r t; do mkdir -p "/out/$(dirname "$t")"; : > "/out/$t"; done; \
    done

# Every crate of Cargo.lock, downloaded once: the build below never reaches the network.
FROM ${RUST_IMAGE} AS deps
WORKDIR /src
COPY --from=manifests /out/ ./
RUN cargo fetch --locked

FROM deps AS build
COPY . .
ARG cuda
RUN set -eu; \
    features=""; \
    if [ "$cuda" = 1 ]; then features="-p retort-training --features retort-training/cuda"; fi; \
    cargo build --release --locked --offline -p retort -p retort-sim $features; \
    mkdir -p /out && cp target/release/retort target/release/retort-sim /out/

# Runtime bases: Debian for the CPU build; CUDA's runtime libraries (NVRTC for burn-cuda's kernels)
# on an Ubuntu whose glibc is not older than the build's (bookworm: 2.36).
FROM debian:bookworm-slim AS runtime-0
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04 AS runtime-1
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility

FROM runtime-${cuda} AS runtime
# A fixed non-root user (the Kubernetes manifests run as 10001:10001); its data directory is the
# only place the services write (the manifests mount volumes there and on /tmp).
RUN groupadd --system --gid 10001 retort \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/retort --create-home --shell /usr/sbin/nologin retort \
    && mkdir -p /var/lib/retort /etc/retort \
    && chown retort:retort /var/lib/retort
COPY --from=build /out/retort /out/retort-sim /usr/local/bin/
COPY deploy/retort.example.toml /etc/retort/retort.toml
WORKDIR /var/lib/retort
USER 10001:10001
ENV RETORT_HTTP_ADDR=0.0.0.0:8080 RETORT_GRPC_ADDR=0.0.0.0:50051
EXPOSE 8080 50051 50052 50053 50054
ENTRYPOINT ["retort"]
CMD ["gateway", "--config", "/etc/retort/retort.toml"]
