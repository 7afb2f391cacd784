#!/usr/bin/env bash
# Stops the cluster started by cluster-up.sh and undoes what it, the kubelet, the CNI plugins
# and kube-proxy changed on the host: the pods' processes, mounts, network namespaces and
# cgroups, the bridge, the iptables chains, the node address, the saved sysctls, the fixed
# paths that did not exist before. Removes the etcd data and the node's state.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$root/target/cluster}
[ -d "$CLUSTER_DIR" ] || exit 0
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
NODE_IP=10.200.0.1

stop() { # name: SIGTERM, then SIGKILL after 5 s
  local pidfile=$CLUSTER_DIR/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}

# The kubelet first, so it restarts nothing; then every process of every pod (they live in
# the kubepods cgroups the kubelet made), then the runtime and its shims.
stop kubelet
stop kube-proxy
for hierarchy in /sys/fs/cgroup/*/; do
  [ -d "$hierarchy/kubepods" ] || [ -d "$hierarchy/kubepods.slice" ] || continue
  find "$hierarchy"kubepods* -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null
done
ctrd=$CLUSTER_DIR/containerd
for shim in $(pgrep -f "containerd-shim-runc-v2 .*-address $ctrd/containerd.sock" 2>/dev/null); do
  kill -9 "$shim" 2>/dev/null
done
stop containerd
for hierarchy in /sys/fs/cgroup/*/; do
  # Deepest first: a cgroup can be removed only once its children are.
  find "$hierarchy" -depth -type d -path '*kubepods*' -exec rmdir {} + 2>/dev/null
done

for name in scheduler controller-manager apiserver etcd; do stop "$name"; done

# Mounts under the cluster folder (pod volumes, overlay snapshots, netns), deepest first.
awk -v dir="$CLUSTER_DIR/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r |
  while read -r mount; do umount -l "$mount" 2>/dev/null; done
for ns in /run/netns/cni-*; do
  [ -e "$ns" ] && { umount -l "$ns" 2>/dev/null; rm -f "$ns"; }
done

ip link del titan0 2>/dev/null
command -v iptables >/dev/null && {
  bins=$(ls -d "${XDG_CACHE_HOME:-$HOME/.cache}"/titan-dr/control-plane/*/ 2>/dev/null | head -1)
  [ -n "$bins" ] && [ -x "$bins/kube-proxy" ] && "$bins/kube-proxy" --cleanup >/dev/null 2>&1
  for table in filter nat mangle; do
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^(KUBE-|CNI-)/) {print $2}'); do
      iptables -t "$table" -S | awk -v c="$chain" '$1=="-A" && $0 ~ ("-j " c "( |$)") {sub("-A","-D"); print}' |
        while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null; done
      iptables -t "$table" -F "$chain" 2>/dev/null
      iptables -t "$table" -X "$chain" 2>/dev/null
    done
  done
  while iptables -D INPUT -d "$NODE_IP" -j TITAN-NODE 2>/dev/null; do :; done
  iptables -F TITAN-NODE 2>/dev/null
  iptables -X TITAN-NODE 2>/dev/null
}
ip addr del "$NODE_IP/32" dev lo 2>/dev/null

if [ -f "$CLUSTER_DIR/sysctl.saved" ]; then
  read -r overcommit panic oops forward <"$CLUSTER_DIR/sysctl.saved"
  sysctl -q -w vm.overcommit_memory="$overcommit" kernel.panic="$panic" \
    kernel.panic_on_oops="$oops" net.ipv4.ip_forward="$forward"
  rm -f "$CLUSTER_DIR/sysctl.saved"
fi
if [ -f "$CLUSTER_DIR/created-paths" ]; then
  xargs -r rm -rf <"$CLUSTER_DIR/created-paths"
  rm -f "$CLUSTER_DIR/created-paths"
fi
rm -rf "$CLUSTER_DIR/etcd-data" "$CLUSTER_DIR/apiserver.port" "$CLUSTER_DIR/kubelet" \
  "$CLUSTER_DIR/containerd" "$CLUSTER_DIR/cni/ipam" "$CLUSTER_DIR/volumes"
echo "cluster stopped"
