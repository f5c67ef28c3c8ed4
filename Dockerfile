# syntax=docker/dockerfile:1
#
# One image for every way nkvm runs: `nkvm serve` in Kubernetes (deploy/k8s/), standalone with
# `docker run`, and as the helper-pod image (it has GNU tar, sh and sleep; set
# NKVM_HELPER_IMAGE to it). Build and smoke-test: docs/runbooks/operations.md.
#
#   docker build -t nkvm:dev .
#
# Where no Rust toolchain image can be pulled (scripts/build-image.sh builds with podman from a
# local Debian base), the binary can come from outside instead: a context holding
# `prebuilt/nkvm` (built for the same Debian release) and `--build-arg NKVM_BINARY=prebuilt`.
# Only the stage named by NKVM_BINARY is built, so the other one's base is never pulled.

# The toolchain the project is tested with; the workspace's minimum is in Cargo.toml.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
# Where the binary comes from: `source` (compiled in the toolchain stage) or `prebuilt`.
ARG NKVM_BINARY=source

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build-source
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the target dir between builds; the binary is copied out
# of the cached target dir inside the same step, since cache mounts are not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p nkvm \
    && install -D -m 0755 target/release/nkvm /out/nkvm

FROM scratch AS build-prebuilt
COPY prebuilt/nkvm /out/nkvm

FROM build-${NKVM_BINARY} AS build

FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim
# ARGs declared before the first FROM are not visible inside a stage unless declared again
# (without it the base-name label below read `debian:-slim`).
ARG DEBIAN_RELEASE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="nkvm" \
      org.opencontainers.image.description="Kubernetes PVC backup manager: web UI, CLI and sandbox cluster in one binary" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_RELEASE}-slim"

# GNU tar, sh and sleep are in the base already (the helper-pod contract); ca-certificates
# lets remote kubeconfigs whose API servers use public CAs verify them. No kubectl: nkvm
# speaks to the API itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 nkvm \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/nkvm --no-create-home \
       --shell /usr/sbin/nologin nkvm \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/nkvm

COPY --from=build /out/nkvm /usr/local/bin/nkvm

# Everything nkvm writes lives under /var/lib/nkvm (archives and the SQLite history), so the
# root filesystem can be read-only. nkvm creates backups/ and data/ itself, which matters
# when an empty volume is mounted over /var/lib/nkvm.
ENV NKVM_BACKUP_DIR=/var/lib/nkvm/backups \
    NKVM_METADATA_DB_PATH=/var/lib/nkvm/data/backups.db \
    NKVM_DEFAULT_AUTH_MODE=in-cluster \
    NKVM_LISTEN=0.0.0.0:8080 \
    HOME=/var/lib/nkvm
VOLUME ["/var/lib/nkvm"]
WORKDIR /var/lib/nkvm
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nkvm"]
CMD ["serve"]
