#!/usr/bin/env bash
# Builds helm from its pinned Go module (no prebuilt binary is downloaded) into a cache folder
# keyed by version, once per machine; prints the folder. About 2 minutes on 2 cores with an
# empty module cache. tests/deploy.rs uses it to lint and render charts/titan-dr.
set -euo pipefail
HELM_VERSION=v3.22.0
cache=${TITAN_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/titan-dr/helm/$HELM_VERSION}
mkdir -p "$cache"
# One build at a time (test threads may race to build it).
exec 9>"$cache/.lock"
flock 9
if [ ! -x "$cache/helm" ]; then
  echo "building helm $HELM_VERSION into $cache" >&2
  start=$SECONDS
  GOBIN="$cache/bin.tmp" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$cache/bin.tmp/helm" "$cache/helm"
  rmdir "$cache/bin.tmp"
  echo "built helm in $((SECONDS - start))s" >&2
fi
echo "$cache"
