#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (its S3 gateway is the S3-compatible server of the object-storage
# tests) from the pinned Go module into a cache folder keyed by version, once per machine.
# Prints the binary's path. The module's go.mod has replace directives, which `go install
# pkg@version` refuses, so it is built as the main module from the module cache.
set -euo pipefail
VERSION=${TITAN_SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
MODULE=github.com/seaweedfs/seaweedfs
cache=${TITAN_SEAWEEDFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/titan-dr/seaweedfs/$VERSION}
if [ ! -x "$cache/weed" ]; then
  mkdir -p "$cache"
  echo "building weed ($MODULE@$VERSION) into $cache" >&2
  start=$SECONDS
  source_dir=$(cd /tmp && go mod download -json "$MODULE@$VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  (cd "$source_dir" && go build -trimpath -ldflags "-s -w" -o "$cache/weed.tmp" ./weed)
  mv "$cache/weed.tmp" "$cache/weed"
  echo "built weed in $((SECONDS - start))s" >&2
fi
echo "$cache/weed"
