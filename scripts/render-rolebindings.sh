#!/usr/bin/env bash
# Prints one RoleBinding per namespace granting nkvm's runtime role (deploy/k8s/rbac) to its
# ServiceAccount there: the namespace allowlist, as RBAC. Apply the output:
#   scripts/render-rolebindings.sh shop billing | kubectl apply -f -
# Revoke a namespace with `kubectl -n NS delete rolebinding nkvm-runtime`.
# The ServiceAccount defaults to nkvm/nkvm-runner (deploy/k8s/app); override with
# NKVM_SERVICE_ACCOUNT_NAMESPACE and NKVM_SERVICE_ACCOUNT.
set -euo pipefail

sa_namespace="${NKVM_SERVICE_ACCOUNT_NAMESPACE:-nkvm}"
sa_name="${NKVM_SERVICE_ACCOUNT:-nkvm-runner}"

if [ $# -eq 0 ]; then
  echo "usage: $0 NAMESPACE... (or one comma-separated list, as in NKVM_NAMESPACES)" >&2
  exit 2
fi

# Accept "a,b c" as well as "a b c", so NKVM_NAMESPACES can be passed as it is.
namespaces=()
for arg in "$@"; do
  IFS=',' read -r -a parts <<<"$arg"
  for ns in "${parts[@]}"; do
    [ -n "$ns" ] && namespaces+=("$ns")
  done
done

dns_label='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
for ns in "${namespaces[@]}" "$sa_namespace"; do
  if ! [[ "$ns" =~ $dns_label ]]; then
    echo "error: \"$ns\" is not a valid namespace name (lowercase letters, digits and '-', at most 63)" >&2
    exit 2
  fi
done

first=1
for ns in "${namespaces[@]}"; do
  [ $first -eq 1 ] || echo "---"
  first=0
  cat <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: nkvm-runtime
  namespace: $ns
  labels:
    app.kubernetes.io/name: nkvm
    app.kubernetes.io/part-of: nkvm
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: nkvm-runtime
subjects:
- kind: ServiceAccount
  name: $sa_name
  namespace: $sa_namespace
YAML
done
