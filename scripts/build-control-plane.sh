#!/usr/bin/env bash
# Builds the Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl) from the pinned Go modules in
# tests/control-plane into a cache folder keyed by version, once per machine.
# Prints the folder. A cold build takes 15-25 minutes on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$root/tests/control-plane/go.mod")
ETCD_VERSION=$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2; exit}' "$root/tests/control-plane/go.mod")
cache=${TITAN_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/titan-dr/control-plane/$K8S_VERSION}
mkdir -p "$cache"

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build() { # name package [ldflags]
  local name=$1 pkg=$2 flags=$3
  [ -x "$cache/$name" ] && return 0
  echo "building $name ($pkg) into $cache" >&2
  local start=$SECONDS
  (cd "$root/tests/control-plane" && CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$cache/$name.tmp" "$pkg")
  mv "$cache/$name.tmp" "$cache/$name"
  echo "built $name in $((SECONDS - start))s" >&2
}
build etcd go.etcd.io/etcd/server/v3 "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ldflags"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ldflags"
build kubectl k8s.io/kubernetes/cmd/kubectl "$ldflags"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ldflags"
build kubelet k8s.io/kubernetes/cmd/kubelet "$ldflags"
build kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$ldflags"
echo "$cache"
