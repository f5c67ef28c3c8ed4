#!/usr/bin/env bash
# Builds the upstream Kubernetes control plane that `nkvm sandbox --control-plane upstream`
# runs: kube-apiserver, kube-controller-manager, kube-scheduler and a single-member etcd, all from
# the Go module proxy at the release pinned in tools/upstream/go.mod.
#
# Idempotent and cached: the binaries go to a directory keyed by a hash of the Go module and of
# this script, and a rerun whose binaries exist returns in seconds. Go's own build and module
# caches (GOCACHE, GOMODCACHE) keep their defaults, so every checkout on a machine shares them.
#
# The last line of output is the directory holding the four binaries.
#
# Environment:
#   NKVM_UPSTREAM_OUT  parent directory of the cached builds (default ~/.cache/nkvm-upstream)
#   NKVM_BUILD_LOCK    lock file serializing builds on a shared machine (default
#                      /tmp/nkvm-build.lock); empty when the caller already holds it (.ci/run)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
module="${root}/tools/upstream"

# The Kubernetes release; it must match the k8s.io/kubernetes requirement in go.mod.
kube_version="v1.37.2"

if ! command -v go >/dev/null 2>&1; then
  echo "error: 'go' not found; install Go 1.26 or newer (https://go.dev/dl/) and rerun" >&2
  exit 2
fi
if ! grep -q "k8s.io/kubernetes ${kube_version}" "${module}/go.mod"; then
  echo "error: tools/upstream/go.mod does not require k8s.io/kubernetes ${kube_version};" \
    "update kube_version in $0 together with go.mod" >&2
  exit 2
fi

# The version variables upstream's build sets (hack/lib/version.sh); without them the binaries
# report v0.0.0-master. The module proxy carries no git commit, so gitCommit stays empty.
minor="${kube_version#v*.}"
minor="${minor%%.*}"
major="${kube_version#v}"
major="${major%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${kube_version}"
  ldflags+=" -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean"
done

# The cache key: everything that decides what is built (not the build date).
key="$(cat "${module}/go.mod" "${module}/go.sum" "${module}/cmd/etcd/main.go" \
  <(echo "${kube_version} ${ldflags} $(go version)") | sha256sum | cut -c1-16)"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.buildDate=${build_date}"
done
out="${NKVM_UPSTREAM_OUT:-${HOME}/.cache/nkvm-upstream}/${kube_version}-${key}"
binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd)

complete() {
  [ -f "${out}/.complete" ] || return 1
  for b in "${binaries[@]}"; do [ -x "${out}/${b}" ] || return 1; done
  [ "$("${out}/kube-apiserver" --version 2>/dev/null)" = "Kubernetes ${kube_version}" ]
}

if complete; then
  echo "upstream control plane ${kube_version} already built"
  echo "${out}"
  exit 0
fi

mkdir -p "$(dirname "${out}")"
staging="$(mktemp -d "${out}.tmp.XXXXXX")"
trap 'rm -rf "${staging}"' EXIT

echo "building upstream control plane ${kube_version} into ${out} (a cold build takes a while)"
cd "${module}"
# One build at a time on shared machines; CGO off as upstream builds its server binaries.
lock="${NKVM_BUILD_LOCK-/tmp/nkvm-build.lock}"
locked=()
[ -n "${lock}" ] && locked=(flock "${lock}")
CGO_ENABLED=0 "${locked[@]}" go build -trimpath -ldflags "${ldflags}" \
  -o "${staging}/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  ./cmd/etcd

for b in "${binaries[@]}"; do
  [ -x "${staging}/${b}" ] || { echo "error: go build did not produce ${b}" >&2; exit 1; }
done
"${staging}/kube-apiserver" --version
"${staging}/etcd" --version
chmod 755 "${staging}"
touch "${staging}/.complete"
rm -rf "${out}"
mv "${staging}" "${out}"
trap - EXIT
echo "${out}"
