#!/usr/bin/env bash
# Validates every Kubernetes manifest nkvm ships, offline, against the API schemas of the
# Kubernetes version nkvm is tested with (kubernetes-validate, strict: unknown fields fail):
# the kustomizations rendered by kubectl, the rendered RoleBindings, and the example Secret.
# Needs kubectl (for kustomize) and kubernetes-validate (scripts/install-test-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_version="${NKVM_VALIDATE_K8S_VERSION:-1.32.0}"
venv="${NKVM_TOOLS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nkvm-tools/venv}"

validator="$(command -v kubernetes-validate || true)"
if [ -z "$validator" ] && [ -x "$venv/bin/kubernetes-validate" ]; then
  validator="$venv/bin/kubernetes-validate"
fi
if [ -z "$validator" ]; then
  echo "error: kubernetes-validate is not installed; run scripts/install-test-deps.sh (or: python3 -m venv $venv && $venv/bin/pip install kubernetes-validate)" >&2
  exit 2
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "error: kubectl is not on PATH; it renders the kustomizations (kubectl kustomize)" >&2
  exit 2
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

kubectl kustomize deploy/k8s/app >"$out/app.yaml"
kubectl kustomize deploy/k8s/overlays/remote-kubeconfig >"$out/app-with-remote-kubeconfig.yaml"
kubectl kustomize deploy/k8s/overlays/stores >"$out/app-with-stores.yaml"
kubectl kustomize deploy/k8s/rbac >"$out/rbac.yaml"
scripts/render-rolebindings.sh example-a example-b >"$out/rolebindings.yaml"
cp deploy/k8s/app/remote-kubeconfig/secret.example.yaml "$out/remote-kubeconfig-secret.yaml"
cp deploy/k8s/app/stores/secret.example.yaml "$out/store-credentials-secret.yaml"

status=0
for file in "$out"/*.yaml; do
  if ! "$validator" --strict --quiet -k "$k8s_version" "$file"; then
    echo "invalid: $(basename "$file") (rendered from deploy/k8s)" >&2
    status=1
  fi
done
[ $status -eq 0 ] && echo "all manifests valid against Kubernetes $k8s_version (strict)"
exit $status
