#!/usr/bin/env bash
# Builds what a real node needs beside the Kubernetes binaries of
# build-control-plane.sh: containerd v2 with its runc shim, the CNI plugins,
# CoreDNS, rancher's local-path-provisioner and the pause program. Each comes
# from its pinned Go module (`go install module@version` checks it against the
# checksum database); nothing prebuilt is downloaded. Into a cache folder keyed
# by the versions, once per machine; prints the folder. About 6 minutes cold.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tests/node/versions.env
. "$root/tests/node/versions.env"
key=containerd-$CONTAINERD_VERSION.cni-$CNI_PLUGINS_VERSION.coredns-$COREDNS_VERSION.lpp-$LOCAL_PATH_VERSION.k8s-$K8S_VERSION
cache=${TITAN_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/titan-dr/node/$key}
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

install_tool() { # name module/package@version [ldflags] [tags]
  local name=$1 pkg=$2 ldflags=${3:-} tags=${4:-}
  [ -x "$cache/$name" ] && return 0
  echo "building $name ($pkg)" >&2
  local start=$SECONDS
  rm -rf "$cache/bin.tmp"
  GOBIN="$cache/bin.tmp" CGO_ENABLED=0 go install -trimpath -tags "$tags" -ldflags "-s -w $ldflags" "$pkg"
  mv "$cache/bin.tmp/$(basename "${pkg%@*}")" "$cache/$name"
  rm -rf "$cache/bin.tmp"
  echo "built $name in $((SECONDS - start))s" >&2
}

ctr_ldflags="-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
ctr_tags="no_btrfs no_devmapper no_zfs no_aufs"
for cmd in containerd ctr containerd-shim-runc-v2; do
  install_tool "$cmd" "github.com/containerd/containerd/v2/cmd/$cmd@$CONTAINERD_VERSION" "$ctr_ldflags" "$ctr_tags"
done
mkdir -p "$cache/cni"
for plugin in main/bridge main/loopback ipam/host-local meta/portmap; do
  name=$(basename "$plugin")
  [ -x "$cache/cni/$name" ] && continue
  install_tool "cni-$name" "github.com/containernetworking/plugins/plugins/$plugin@$CNI_PLUGINS_VERSION"
  mv "$cache/cni-$name" "$cache/cni/$name"
done
install_tool coredns "github.com/coredns/coredns@$COREDNS_VERSION"
install_tool local-path-provisioner "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"

# pause: the sandbox's one process, from the Kubernetes module's own source.
if [ ! -x "$cache/pause" ]; then
  src=$(cd "$root/tests/control-plane" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  gcc -Os -static -DVERSION="$K8S_VERSION" -o "$cache/pause.tmp" "$src/build/pause/linux/pause.c"
  strip "$cache/pause.tmp"
  mv "$cache/pause.tmp" "$cache/pause"
fi
echo "$cache"
