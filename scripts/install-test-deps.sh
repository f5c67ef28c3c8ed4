#!/usr/bin/env bash
# Installs the system packages the tests and the sandbox cluster need. Idempotent: installs
# only what is missing. Needs root (CI and development machines run as root).
set -euo pipefail

# --runtime-only: just what the sandbox cluster needs to run pods (scripts/demo.sh).
runtime_only=false
[ "${1:-}" = "--runtime-only" ] && runtime_only=true

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)   # runs sandbox pod processes
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux) # runAsUser in sandbox pods
command -v tar >/dev/null 2>&1 || missing+=(tar)            # kubectl cp, backups
command -v zstd >/dev/null 2>&1 || missing+=(zstd)          # tests extract stored archives
if ! $runtime_only; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # real-browser tests of the web UI
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver) # drives it (WebDriver)
fi

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

if $runtime_only; then
  exit 0
fi

if ! command -v kubectl >/dev/null 2>&1; then
  echo "error: kubectl is not on PATH; the conformance tests drive the real kubectl (machines of this kind ship it at /usr/bin/kubectl)" >&2
  exit 2
fi

# Python tools from PyPI in a private venv, so the system Python stays untouched: kubernetes-validate
# for offline manifest validation (scripts/validate-manifests.sh) and the official `kubernetes`
# client, which the sandbox's conformance tests drive (crates/kube-sandbox/tests/python).
# Quick when they are there already.
tools_venv="${NKVM_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nkvm-tools/venv}"
pip_missing=()
if ! command -v kubernetes-validate >/dev/null 2>&1 && [ ! -x "$tools_venv/bin/kubernetes-validate" ]; then
  pip_missing+=(kubernetes-validate)
fi
if ! "$tools_venv/bin/python3" -c 'import kubernetes' >/dev/null 2>&1; then
  pip_missing+=(kubernetes)
fi
if [ ${#pip_missing[@]} -gt 0 ]; then
  if [ ! -x "$tools_venv/bin/pip" ]; then
    if ! command -v python3 >/dev/null 2>&1; then
      echo "error: python3 is needed to install ${pip_missing[*]} (apt-get install -y python3 python3-venv)" >&2
      exit 2
    fi
    python3 -m venv "$tools_venv" || {
      echo "error: python3 -m venv failed; install python3-venv (apt-get install -y python3-venv)" >&2
      exit 2
    }
  fi
  echo "installing: ${pip_missing[*]} (into $tools_venv)"
  "$tools_venv/bin/pip" install --quiet --disable-pip-version-check "${pip_missing[@]}"
fi
