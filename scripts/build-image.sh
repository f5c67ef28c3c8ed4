#!/usr/bin/env bash
# Builds the project's Dockerfile with podman on a machine that can reach no container
# registry, and tags it localhost/nkvm:dev (docs/image.md).
#
#   1. podman, runc and debootstrap come from Debian's packages (installed when missing).
#   2. The runtime base is a `debootstrap --variant=minbase` root of the Dockerfile's Debian
#      release, trimmed of docs, man pages and locales, imported under the exact name the
#      Dockerfile's final `FROM` uses, so podman finds it locally and pulls nothing.
#   3. The Rust toolchain image cannot be pulled either: the binary is built here with cargo
#      (release, without the `sandbox` feature, in the cached target dir) and handed to the
#      Dockerfile through its `NKVM_BINARY=prebuilt` build argument.
#   4. podman builds with runc and explicit ulimits (crun and podman's default RLIMIT_NOFILE
#      fail on these machines), then the image's size is printed.
#
# Idempotent and cached: the base root and its import are kept, cargo rebuilds only what
# changed, and podman reuses its layer cache. The last line of output is the image's tag.
#
# Environment:
#   NKVM_IMAGE_TAG      tag to build (default localhost/nkvm:dev)
#   NKVM_IMAGE_CACHE    cache directory for the base root (default ~/.cache/nkvm-image)
#   CARGO_TARGET_DIR    cargo's target dir (default ~/.cache/nkvm-target, shared with .ci/run)
#   NKVM_BUILD_LOCK     lock file serializing builds on a shared machine (default
#                       /tmp/nkvm-build.lock); empty when the caller already holds it (.ci/run)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${NKVM_IMAGE_TAG:-localhost/nkvm:dev}"
cache="${NKVM_IMAGE_CACHE:-${HOME}/.cache/nkvm-image}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME}/.cache/nkvm-target}"
lock="${NKVM_BUILD_LOCK-/tmp/nkvm-build.lock}"

# podman's defaults that fail here: crun ("cgroups in hybrid mode not supported") and an
# RLIMIT_NOFILE above the machine's hard limit.
podman_run_flags=(--runtime runc)
ulimits=(--ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

install_tools() {
  local missing=()
  for tool in podman runc debootstrap; do
    command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${missing[*]} missing; install them (apt-get install podman runc debootstrap)" \
      "or rerun as root" >&2
    exit 2
  fi
  echo "== installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >&2
}

# The Dockerfile's value of `ARG NAME=default`.
dockerfile_arg() {
  sed -n "s/^ARG $1=//p" "${root}/Dockerfile" | head -n 1
}

# The final stage's base, with the Dockerfile's ARG defaults substituted.
base_image() {
  local from release
  from="$(grep '^FROM ' "${root}/Dockerfile" | tail -n 1 | awk '{print $2}')"
  release="$(dockerfile_arg DEBIAN_RELEASE)"
  echo "${from//\$\{DEBIAN_RELEASE\}/${release}}"
}

# What the published debian-slim images do to a minbase root: drop docs, man pages, locales
# and package caches, and configure dpkg and apt so packages installed later (the Dockerfile's
# ca-certificates) add none of them either. Without the apt part, `apt-get update` alone leaves
# about 90 MB of package caches in the image.
slim() {
  local dir="$1"
  rm -rf "${dir}"/usr/share/{doc,man,info,locale}/* "${dir}"/var/cache/apt/archives/*.deb \
    "${dir}"/var/cache/apt/*.bin "${dir}"/var/lib/apt/lists/* "${dir}"/var/log/*.log \
    "${dir}"/var/cache/debconf/*-old
  cat >"${dir}/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  cat >"${dir}/etc/apt/apt.conf.d/slim" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
APT::Install-Recommends "false";
CFG
}

# A trimmed minbase root of `release`, as a tar file in the cache (made once).
base_tar() {
  local release="$1" tar="${cache}/${release}-minbase-slim.tar"
  if [ ! -s "${tar}" ]; then
    local dir="${cache}/${release}-rootfs"
    rm -rf "${dir}"
    mkdir -p "${cache}"
    echo "== debootstrap --variant=minbase ${release} (about a minute)" >&2
    debootstrap --variant=minbase "${release}" "${dir}" http://deb.debian.org/debian >&2
    slim "${dir}"
    tar --numeric-owner -C "${dir}" -cf "${tar}.part" .
    mv "${tar}.part" "${tar}"
    rm -rf "${dir}"
  fi
  echo "${tar}"
}

import_base() {
  local base="$1" release
  if podman image exists "${base}"; then
    return 0
  fi
  release="$(dockerfile_arg DEBIAN_RELEASE)"
  echo "== importing a minbase ${release} root as ${base}" >&2
  podman import --quiet "$(base_tar "${release}")" "${base}" >&2
}

# The release binary, without the embedded sandbox (a server image needs no `nkvm sandbox`),
# staged as `prebuilt/nkvm` in a build context of its own.
stage_binary() {
  local context="$1"
  local build=(cargo build --release --locked -p nkvm --no-default-features)
  echo "== ${build[*]} (CARGO_TARGET_DIR=${CARGO_TARGET_DIR})" >&2
  if [ -n "${lock}" ]; then
    (cd "${root}" && flock "${lock}" "${build[@]}") >&2
  else
    (cd "${root}" && "${build[@]}") >&2
  fi
  install -D -m 0755 "${CARGO_TARGET_DIR}/release/nkvm" "${context}/prebuilt/nkvm"
  strip "${context}/prebuilt/nkvm" 2>/dev/null || true
}

main() {
  install_tools
  local base revision
  base="$(base_image)"
  import_base "${base}"
  context="$(mktemp -d)"
  trap 'rm -rf "${context}"' EXIT
  stage_binary "${context}"
  revision="$(git -C "${root}" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "== podman build ${tag} (base ${base}, nothing pulled)" >&2
  podman "${podman_run_flags[@]}" build "${ulimits[@]}" --network host --pull=never \
    --build-arg NKVM_BINARY=prebuilt --build-arg REVISION="${revision}" \
    -f "${root}/Dockerfile" -t "${tag}" "${context}" >&2
  local bytes
  bytes="$(podman image inspect --format '{{.Size}}' "${tag}")"
  echo "== ${tag}: $((bytes / 1000000)) MB (${bytes} bytes)" >&2
  echo "${tag}"
}

main "$@"
