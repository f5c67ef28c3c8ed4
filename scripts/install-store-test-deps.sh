#!/usr/bin/env bash
# Installs the real servers the off-site store tests run against:
# - Debian's OpenSSH server (openssh-server: sshd, sftp-server, ssh-keygen) for the SFTP
#   tests, which start their own sshd on a loopback port (found at /usr/sbin/sshd, or
#   NKVM_SSHD_BIN); installed with apt-get when missing, which needs root.
# - the S3 server s3s-fs 0.14.1 from crates.io (it checks SigV4 request signatures; 0.17 needs
#   a newer rustc), built once per machine into ~/.cache/nkvm-tools/bin.
# - Versity's S3 gateway versitygw v1.8.0 from the Go module proxy (a production S3 server over
#   a POSIX directory; it also checks each part's sha256 checksum header), built once per machine into the same directory; the store contract tests and the
#   benchmark run against both servers.
# Its output is two `export NAME=PATH` lines (NKVM_S3S_FS_BIN, NKVM_VERSITYGW_BIN) for the
# caller to eval; tests also find the binaries at those default paths. Idempotent.
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
if [ ! -x /usr/sbin/sshd ] || [ ! -x /usr/lib/openssh/sftp-server ] || ! command -v ssh-keygen >/dev/null; then
  echo "installing openssh-server (apt-get) for the SFTP store tests" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "installing openssh-server needs root: run 'apt-get install openssh-server' as root" >&2
    exit 1
  fi
  apt-get update -qq >&2
  # The package's service is not started here: the tests run their own sshd.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >&2
fi
# sshd refuses to start without its privilege-separation directory (systemd makes it at boot).
mkdir -p /run/sshd 2>/dev/null || true

tools="${NKVM_TOOLS_DIR:-${HOME}/.cache/nkvm-tools}"
bin="${tools}/bin/s3s-fs"
if [ ! -x "$bin" ] || ! "$bin" --version 2>/dev/null | grep -q '0\.14\.1'; then
  echo "installing s3s-fs 0.14.1 into ${tools}" >&2
  # A private target dir, removed afterwards: the build is not needed once installed.
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  CARGO_TARGET_DIR="$build" cargo install --quiet --locked s3s-fs@0.14.1 --features binary --root "$tools"
fi

vgw_version=v1.8.0
vgw="${tools}/bin/versitygw"
if [ ! -x "$vgw" ] || ! "$vgw" --version 2>/dev/null | grep -q "Version *: *${vgw_version}\$"; then
  echo "installing versitygw ${vgw_version} into ${tools} (go install, Go module proxy)" >&2
  # go.sum of the module pins every dependency; the version is stamped so the check above
  # can tell an older build apart. GOCACHE and GOMODCACHE keep their defaults (shared).
  GOBIN="${tools}/bin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-X main.Version=${vgw_version}" \
    "github.com/versity/versitygw/cmd/versitygw@${vgw_version}" >&2
fi
echo "export NKVM_S3S_FS_BIN=${bin}"
echo "export NKVM_VERSITYGW_BIN=${vgw}"
