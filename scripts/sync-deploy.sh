#!/usr/bin/env bash
# Copies the generated CRDs (crds/crds.yaml, from `make crds`) to where the deployment
# artefacts need them: manifests/crds.yaml (kustomize refuses files outside its folder) and
# charts/titan-dr/crds/crds.yaml (Helm installs a chart's crds/ folder).
# With --check, changes nothing and exits 1 when a copy differs (tests/deploy.rs checks too).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source=$root/crds/crds.yaml
copies=("$root/manifests/crds.yaml" "$root/charts/titan-dr/crds/crds.yaml")
if [ "${1:-}" = --check ]; then
  status=0
  for copy in "${copies[@]}"; do
    if ! cmp -s "$source" "$copy"; then
      echo "${copy#"$root"/} differs from crds/crds.yaml: run scripts/sync-deploy.sh" >&2
      status=1
    fi
  done
  exit $status
fi
for copy in "${copies[@]}"; do
  mkdir -p "$(dirname "$copy")"
  cp "$source" "$copy"
done
