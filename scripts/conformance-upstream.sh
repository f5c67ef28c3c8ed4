#!/usr/bin/env bash
# Runs the kubectl / kube-rs / Python conformance suite (crates/kube-sandbox/tests/it) against
# the upstream control plane instead of the embedded sandbox: starts
# `nkvm sandbox --control-plane upstream` in a temporary directory, points the suite at it
# with NKVM_TEST_KUBECONFIG, and stops it again. Tests that need the embedded sandbox's fixed
# nodes, faults or seeding skip themselves there.
#
# Needs NKVM_UPSTREAM_BIN (scripts/upstream-control-plane.sh prints it) and a built nkvm
# (NKVM_BIN, default: $CARGO_TARGET_DIR/debug/nkvm).
set -euo pipefail
cd "$(dirname "$0")/.."

: "${NKVM_UPSTREAM_BIN:?set NKVM_UPSTREAM_BIN to the directory scripts/upstream-control-plane.sh printed}"
target_dir="${CARGO_TARGET_DIR:-target}"
nkvm="${NKVM_BIN:-$target_dir/debug/nkvm}"
if [ ! -x "$nkvm" ]; then
  echo "error: no nkvm binary at $nkvm; build it first (cargo build) or set NKVM_BIN" >&2
  exit 2
fi

work="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    wait "$pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$nkvm" sandbox --control-plane upstream --upstream-bin "$NKVM_UPSTREAM_BIN" \
  --listen 127.0.0.1:0 --state-dir "$work/state" --kubeconfig-out "$work/kubeconfig" \
  >"$work/sandbox.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
  [ -s "$work/kubeconfig" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: the upstream control plane did not start:" >&2
    tail -n 30 "$work/sandbox.log" >&2
    exit 1
  fi
  sleep 0.5
done
if [ ! -s "$work/kubeconfig" ]; then
  echo "error: no kubeconfig from the upstream control plane within 60 s:" >&2
  tail -n 30 "$work/sandbox.log" >&2
  exit 1
fi
kubectl --kubeconfig "$work/kubeconfig" version
NKVM_TEST_KUBECONFIG="$work/kubeconfig" cargo test -p kube-sandbox --test it --locked
