#!/usr/bin/env bash
# Installs the system packages the tests and the sandbox cluster need. Idempotent: installs
# only what is missing. Needs root (CI and development machines run as root).
set -euo pipefail

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)   # runs sandbox pod processes
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux) # runAsUser in sandbox pods
command -v tar >/dev/null 2>&1 || missing+=(tar)            # kubectl cp, backups
command -v zstd >/dev/null 2>&1 || missing+=(zstd)          # tests extract stored archives

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages: ${missing[*]}; run this script as root (apt-get install -y ${missing[*]})" >&2
    exit 2
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "error: kubectl is not on PATH; the conformance tests drive the real kubectl (machines of this kind ship it at /usr/bin/kubectl)" >&2
  exit 2
fi
