#!/usr/bin/env bash
# Builds the cluster's images as OCI archives (scripts/oci-image.py) from Debian packages and
# this project's binaries, into $IMAGES_DIR (default target/images), and, with --import,
# imports into the node's containerd every image whose digest it does not have yet.
#
#   localhost/titan-dr:local          the operator: titan-dr and titan-step, user 65532
#   localhost/titan-toolbox:local     recovery steps: busybox sh and coreutils, curl, jq,
#                                     redis-cli, kubectl; user 65532
#   localhost/titan-redis:local       redis-server and redis-cli from Debian; user 65532
#   localhost/titan-service:local     the Titan example service (Debian's python3)
#   localhost/titan-seaweedfs:local   SeaweedFS's weed, an S3-compatible server for the tests
#   localhost/titan-busybox-root:local  busybox as root, for tests of a root image
#   localhost/pause:local, localhost/coredns:local, localhost/local-path-provisioner:local
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
IMAGES_DIR=${IMAGES_DIR:-$root/target/images}
mkdir -p "$IMAGES_DIR"
node=$("$root/scripts/build-node.sh")
k8s=$("$root/scripts/build-control-plane.sh")
profile=${TITAN_IMAGE_PROFILE:-debug}
if [ "$profile" = release ]; then release_flag=--release; else release_flag=; fi
# All targets, so the tests that follow find the same artefacts (dev-dependencies change
# the feature set, and with it what a plain `--bin` build would compile).
(cd "$root" && cargo build --quiet --workspace --all-targets $release_flag)
target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
titan_dr=$target_dir/$profile/titan-dr
titan_step=$("$root/scripts/build-titan-step.sh")
# The operator binary without its debug information: a tenth of the size.
strip -o "$IMAGES_DIR/titan-dr.stripped" "$titan_dr"

passwd='root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n'
group='root:x:0:\nnonroot:x:65532:\n'
certs=/etc/ssl/certs/ca-certificates.crt
base_text="\"/etc/passwd\": \"$passwd\", \"/etc/group\": \"$group\""
base_dirs='"/tmp": "1777:0:0", "/home/nonroot": "755:65532:65532"'

archive() { # name: its archive, target/images/<name without localhost/ and tag>.tar
  local repository=${1%%:*}
  echo "$IMAGES_DIR/${repository#localhost/}.tar"
}
image() { # name spec-json
  local name=$1 spec=$2 file
  file=$(archive "$name")
  mkdir -p "$(dirname "$file")"
  printf '%s' "$spec" >"$file.json"
  printf '%s %s\n' "$name" "$(python3 "$root/scripts/oci-image.py" "$file.json" "$file")" >>"$IMAGES_DIR/index.tmp"
}
rm -f "$IMAGES_DIR/index.tmp"

image localhost/pause:local "{
  \"name\": \"localhost/pause:local\", \"user\": \"65535:65535\", \"entrypoint\": [\"/pause\"],
  \"files\": {\"/pause\": \"$node/pause\"}}"

image localhost/coredns:local "{
  \"name\": \"localhost/coredns:local\", \"user\": \"65532:65532\", \"entrypoint\": [\"/coredns\"],
  \"files\": {\"/coredns\": \"$node/coredns\", \"/etc/ssl/certs/ca-certificates.crt\": \"$certs\"},
  \"text\": {$base_text}, \"dirs\": {$base_dirs}}"

image localhost/local-path-provisioner:local "{
  \"name\": \"localhost/local-path-provisioner:local\", \"user\": \"65532:65532\",
  \"entrypoint\": [\"/usr/bin/local-path-provisioner\"],
  \"files\": {\"/usr/bin/local-path-provisioner\": \"$node/local-path-provisioner\"},
  \"text\": {$base_text}, \"dirs\": {$base_dirs}}"

# The operator: the same entrypoint, user and files as the Dockerfile (tests/images.rs checks).
image localhost/titan-dr:local "{
  \"name\": \"localhost/titan-dr:local\", \"user\": \"65532:65532\", \"workdir\": \"/backups\",
  \"entrypoint\": [\"/usr/local/bin/titan-dr\"], \"cmd\": [\"operator\"],
  \"env\": [\"PATH=/usr/local/bin:/usr/bin:/bin\", \"SSL_CERT_FILE=$certs\"],
  \"binaries\": {\"/usr/local/bin/titan-dr\": \"$IMAGES_DIR/titan-dr.stripped\",
                 \"/usr/local/bin/titan-step\": \"$titan_step\"},
  \"files\": {\"/etc/ssl/certs/ca-certificates.crt\": \"$certs\"},
  \"text\": {$base_text}, \"dirs\": {$base_dirs, \"/backups\": \"755:65532:65532\"}}"

# The toolbox: every busybox applet as a command, plus the tools recovery steps reach for.
applets=$(busybox --list | grep -vx busybox | sed 's#.*#"/usr/bin/&": "busybox"#' | paste -sd,)
image localhost/titan-toolbox:local "{
  \"name\": \"localhost/titan-toolbox:local\", \"user\": \"65532:65532\", \"workdir\": \"/home/nonroot\",
  \"entrypoint\": [\"/bin/sh\"],
  \"env\": [\"PATH=/usr/local/bin:/usr/bin:/bin\", \"HOME=/home/nonroot\", \"SSL_CERT_FILE=$certs\"],
  \"binaries\": {\"/usr/bin/busybox\": \"$(command -v busybox)\", \"/usr/bin/curl\": \"$(command -v curl)\",
                 \"/usr/bin/jq\": \"$(command -v jq)\", \"/usr/bin/redis-cli\": \"$(command -v redis-cli)\",
                 \"/usr/bin/kubectl\": \"$k8s/kubectl\"},
  \"files\": {\"/etc/ssl/certs/ca-certificates.crt\": \"$certs\"},
  \"symlinks\": {$applets},
  \"text\": {$base_text}, \"dirs\": {$base_dirs}}"

# A root image, as most public images are: what a step under runAsNonRoot meets in the wild.
image localhost/titan-busybox-root:local "{
  \"name\": \"localhost/titan-busybox-root:local\", \"entrypoint\": [\"/bin/sh\"],
  \"binaries\": {\"/usr/bin/busybox\": \"$(command -v busybox)\"},
  \"symlinks\": {$applets}, \"dirs\": {$base_dirs}}"

image localhost/titan-redis:local "{
  \"name\": \"localhost/titan-redis:local\", \"user\": \"65532:65532\", \"workdir\": \"/data\",
  \"entrypoint\": [\"/usr/bin/redis-server\"], \"env\": [\"PATH=/usr/local/bin:/usr/bin:/bin\"],
  \"binaries\": {\"/usr/bin/redis-server\": \"$(readlink -f "$(command -v redis-server)")\",
                 \"/usr/bin/redis-cli\": \"$(command -v redis-cli)\"},
  \"text\": {$base_text}, \"dirs\": {$base_dirs, \"/data\": \"755:65532:65532\"}}"

# SeaweedFS's weed: the S3-compatible server the object-storage tests run in the cluster.
weed=$("$root/scripts/build-seaweedfs.sh")
image localhost/titan-seaweedfs:local "{
  \"name\": \"localhost/titan-seaweedfs:local\", \"user\": \"65532:65532\", \"workdir\": \"/data\",
  \"entrypoint\": [\"/usr/bin/weed\"],
  \"binaries\": {\"/usr/bin/weed\": \"$weed\"},
  \"files\": {\"/etc/ssl/certs/ca-certificates.crt\": \"$certs\"},
  \"text\": {$base_text}, \"dirs\": {$base_dirs, \"/data\": \"755:65532:65532\"}}"

image localhost/titan-service:local "{
  \"name\": \"localhost/titan-service:local\", \"user\": \"65532:65532\",
  \"entrypoint\": [\"/usr/bin/python3\", \"/app/titan-service.py\"],
  \"env\": [\"PYTHONDONTWRITEBYTECODE=1\", \"TITAN_SERVICE_BIND=0.0.0.0\"],
  \"binaries\": {\"/usr/bin/python3\": \"/usr/bin/python3.11\"},
  \"trees\": {\"/usr/lib/python3.11\": \"/usr/lib/python3.11\"},
  \"files\": {\"/app/titan-service.py\": \"$root/examples/titan/app/titan-service.py\"},
  \"text\": {$base_text}, \"dirs\": {$base_dirs}}"

mv "$IMAGES_DIR/index.tmp" "$IMAGES_DIR/index"

if [ "${1:-}" = --import ]; then
  CLUSTER_DIR=${CLUSTER_DIR:-$root/target/cluster}
  ctr() { "$node/ctr" --address "$CLUSTER_DIR/containerd/containerd.sock" -n k8s.io "$@"; }
  have=$(ctr images ls 2>/dev/null | awk 'NR>1 {print $1, $3}')
  while read -r name digest; do
    grep -qxF "$name $digest" <<<"$have" && continue
    file=$(archive "$name")
    ctr images import "$file" >/dev/null 2>&1
    # Pinned: the kubelet's image garbage collection never removes them.
    ctr images label "$name" io.cri-containerd.pinned=pinned >/dev/null 2>&1
    echo "imported $name ($digest)" >&2
  done <"$IMAGES_DIR/index"
fi
