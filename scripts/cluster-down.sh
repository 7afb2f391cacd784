#!/usr/bin/env bash
# Stops the control plane started by cluster-up.sh (node agent first, so no
# Pod process outlives the cluster) and removes its etcd data.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$root/target/cluster}
[ -d "$CLUSTER_DIR" ] || exit 0
for name in node-agent controller-manager apiserver etcd; do
  pidfile=$CLUSTER_DIR/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
done
rm -rf "$CLUSTER_DIR/etcd-data" "$CLUSTER_DIR/apiserver.port"
echo "control plane stopped"
