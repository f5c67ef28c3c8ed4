#!/usr/bin/env bash
# The README's first command: installs what the sandbox cluster needs to run pods
# (bubblewrap, util-linux, tar, zstd) if missing, then builds and starts `nkvm demo`.
# Arguments go to `nkvm demo` (e.g. --listen 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh --runtime-only
exec cargo run --release -- demo "$@"
