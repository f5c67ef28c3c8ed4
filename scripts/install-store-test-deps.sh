#!/usr/bin/env bash
# Installs the real S3 server the off-site store tests run against: s3s-fs 0.14.1 from
# crates.io (it checks SigV4 request signatures; 0.17 needs a newer rustc), built once per
# machine into ~/.cache/nkvm-tools. Prints the binary's path as its last line; tests find it
# through NKVM_S3S_FS_BIN or at that default path. Idempotent.
#
# Also installs Debian's age CLI (age, age-keygen), with which the encryption tests prove
# that an operator can open an encrypted archive by hand.
#
# It builds with cargo: run it under the caller's build lock (CI runs it from .ci/run).
set -euo pipefail

if ! command -v age >/dev/null || ! command -v age-keygen >/dev/null; then
  echo "installing Debian's age CLI" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >&2
fi

tools="${NKVM_TOOLS_DIR:-${HOME}/.cache/nkvm-tools}"
bin="${tools}/bin/s3s-fs"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q '0\.14\.1'; then
  echo "installing s3s-fs 0.14.1 into ${tools}" >&2
  # A private target dir, removed afterwards: the build is not needed once installed.
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  CARGO_TARGET_DIR="$build" cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$tools"
fi
echo "$bin"
