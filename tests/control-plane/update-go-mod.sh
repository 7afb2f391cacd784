#!/usr/bin/env bash
# Regenerates the replace block of go.mod from k8s.io/kubernetes' own go.mod:
# it requires its staging modules at v0.0.0 and replaces them with ./staging
# paths that only exist inside its repository. Run after changing K8S_VERSION.
set -euo pipefail
cd "$(dirname "$0")"
K8S_VERSION=${K8S_VERSION:-v1.37.2}
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
dir=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
sed -i '/^replace (/,/^)/d' go.mod
{
  echo "replace ("
  grep '=> ./staging/' "$dir/go.mod" | awk -v v="$STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}'
  echo ")"
} >> go.mod
go mod tidy
