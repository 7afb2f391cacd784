#!/usr/bin/env bash
# The demo: for now, the local control plane with the CRDs installed.
set -euo pipefail
echo "The control plane is up with the titan-dr CRDs installed:"
kubectl get crd -l '!nothing' -o custom-columns=NAME:.metadata.name
echo
echo "Use it with: export KUBECONFIG=$KUBECONFIG"
