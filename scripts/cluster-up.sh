#!/usr/bin/env bash
# Starts a real one-node cluster on this machine: etcd, kube-apiserver, kube-controller-manager
# (every default controller, node-lifecycle among them), kube-scheduler, containerd with runc,
# a kubelet, kube-proxy, a CNI bridge, CoreDNS and a default StorageClass served by
# local-path-provisioner; imports the locally built images (scripts/build-images.sh), applies
# crds/ and waits until they are Established. Writes an admin kubeconfig to
# $CLUSTER_DIR/kubeconfig. Idempotent: returns at once when the cluster already answers.
#
# Addresses: the API server and the kubelet listen on $NODE_IP, an address on the loopback
# interface that only this machine and its pods reach (a DROP rule keeps it off eth0); pods
# live on the bridge titan0 (10.244.0.0/24), Services in 10.0.0.0/24. cluster-down.sh undoes
# every change to the host.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$root/target/cluster}
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
pki=$CLUSTER_DIR/pki
NODE_IP=10.200.0.1
NODE_NAME=titan-node
POD_CIDR=10.244.0.0/24

# One start at a time per folder (test binaries may race to start it).
exec 9>"$CLUSTER_DIR/.lock"
flock 9

bins=$("$root/scripts/build-control-plane.sh")
node=$("$root/scripts/build-node.sh")
kubectl() { "$bins/kubectl" "$@"; }

answers() {
  [ -f "$KUBECONFIG" ] && [ -f "$CLUSTER_DIR/apiserver.port" ] &&
    curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
      "https://$NODE_IP:$(cat "$CLUSTER_DIR/apiserver.port")/readyz" >/dev/null
}
running() { [ -f "$CLUSTER_DIR/$1.pid" ] && kill -0 "$(cat "$CLUSTER_DIR/$1.pid")" 2>/dev/null; }
if answers && running kubelet && running containerd; then
  # Images and CRDs may have changed since it started.
  "$root/scripts/build-images.sh" --import
  kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
  echo "cluster already running: KUBECONFIG=$KUBECONFIG"
  exit 0
fi
"$root/scripts/cluster-down.sh" >/dev/null 2>&1 || true
# A half-started cluster is stopped, not left behind.
trap '[ $? -eq 0 ] || "$root/scripts/cluster-down.sh" >/dev/null 2>&1' EXIT

echo "building the images" >&2
"$root/scripts/build-images.sh"
start=$SECONDS

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- the host: what the kubelet and the bridge plugin change is saved first, restored at down
sysctl -n vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward |
  paste -sd' ' >"$CLUSTER_DIR/sysctl.saved"
ip addr show dev lo | grep -q " $NODE_IP/" || ip addr add "$NODE_IP/32" dev lo
# The node address answers this machine and its pods only.
if ! iptables -S TITAN-NODE >/dev/null 2>&1; then
  iptables -N TITAN-NODE
  iptables -A TITAN-NODE -i lo -j RETURN
  iptables -A TITAN-NODE -i titan0 -j RETURN
  iptables -A TITAN-NODE -j DROP
  iptables -I INPUT -d "$NODE_IP" -j TITAN-NODE
fi
for fixed in /var/lib/kubelet /run/netns /var/lib/cni; do
  [ -e "$fixed" ] || echo "$fixed" >>"$CLUSTER_DIR/created-paths"
done

# --- certificates: a CA; serving certs; clients: admin, the kubelet (Node authorizer), the
# API server towards kubelets; a service-account key pair
cert() { # name subject [ext]
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf '%b' "${3:-extendedKeyUsage=clientAuth\n}" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
}
if [ ! -f "$pki/kubelet.crt" ]; then
  rm -rf "$pki" && mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt -subj "/CN=titan-dr-local-ca" 2>/dev/null
    cert apiserver /CN=kube-apiserver "subjectAltName=IP:$NODE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n"
    cert admin "/O=system:masters/CN=titan-admin"
    cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
fi

etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
sched_port=$(free_port); kubelet_port=$(free_port); kubelet_healthz=$(free_port)
proxy_healthz=$(free_port); proxy_metrics=$(free_port)
echo "$api_port" >"$CLUSTER_DIR/apiserver.port"

kubeconfig() { # file user-cert
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: titan-local
  cluster:
    server: https://$NODE_IP:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: titan-local
  context: {cluster: titan-local, user: $2, namespace: default}
current-context: titan-local
EOF
}
kubeconfig "$KUBECONFIG" admin
kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" kubelet

launch() { # name command...
  local name=$1; shift
  nohup "$@" >"$CLUSTER_DIR/$name.log" 2>&1 9>&- &
  echo $! >"$CLUSTER_DIR/$name.pid"
}
wait_for() { # what seconds command...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! running "$what"; then
      echo "$what did not become ready within ${limit}s (or exited); last log lines:" >&2
      tail -n 30 "$CLUSTER_DIR/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

# --- control plane
rm -rf "$CLUSTER_DIR/etcd-data"
launch etcd "$bins/etcd" --name titan-local --data-dir "$CLUSTER_DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "titan-local=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn \
  --watch-progress-notify-interval 5s
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

launch apiserver "$bins/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$api_port" \
  --cert-dir "$CLUSTER_DIR/apiserver-certs" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 --authorization-mode Node,RBAC --allow-privileged=true \
  --enable-admission-plugins NodeRestriction \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP
wait_for apiserver 120 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://$NODE_IP:$api_port/readyz"

launch controller-manager "$bins/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
  --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$kcm_port" --cert-dir "$CLUSTER_DIR/kcm-certs" \
  --controllers '*' --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key"
launch scheduler "$bins/kube-scheduler" --kubeconfig "$KUBECONFIG" \
  --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$sched_port"

# --- containerd, with the CNI bridge
ctrd=$CLUSTER_DIR/containerd
mkdir -p "$ctrd" "$CLUSTER_DIR/cni/net.d"
cat >"$CLUSTER_DIR/cni/net.d/10-titan.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "titan",
  "plugins": [
    {"type": "bridge", "bridge": "titan0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$CLUSTER_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
cat >"$ctrd/config.toml" <<EOF
version = 3
root = "$ctrd/root"
state = "$ctrd/state"
[grpc]
  address = "$ctrd/containerd.sock"
[ttrpc]
  address = "$ctrd/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/pause:local"
[plugins.'io.containerd.cri.v1.runtime']
  # This machine's root lacks CAP_SYS_RESOURCE: without it every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$node/cni"]
    conf_dir = "$CLUSTER_DIR/cni/net.d"
EOF
PATH=$node:$PATH launch containerd "$node/containerd" --config "$ctrd/config.toml"
wait_for containerd 30 "$node/ctr" --address "$ctrd/containerd.sock" version
"$root/scripts/build-images.sh" --import

# --- the kubelet
mkdir -p "$CLUSTER_DIR/kubelet"
grep -v '^nameserver 127\.' /etc/resolv.conf >"$CLUSTER_DIR/resolv.conf" || true
cat >"$CLUSTER_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_healthz
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$ctrd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
clusterDNS: [10.0.0.10]
clusterDomain: cluster.local
resolvConf: $CLUSTER_DIR/resolv.conf
serializeImagePulls: false
# The images are imported, never pulled: garbage collection must not remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
EOF
launch kubelet "$bins/kubelet" --config "$CLUSTER_DIR/kubelet.yaml" --kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" \
  --root-dir "$CLUSTER_DIR/kubelet" --cert-dir "$CLUSTER_DIR/kubelet/pki" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1

# --- kube-proxy: Services as iptables rules
cat >"$CLUSTER_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$proxy_healthz
metricsBindAddress: 127.0.0.1:$proxy_metrics
nodePortAddresses: [$NODE_IP/32]
iptables: {masqueradeAll: true}
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
launch kube-proxy "$bins/kube-proxy" --config "$CLUSTER_DIR/kube-proxy.yaml"

wait_for kubelet 90 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
wait_for scheduler 30 curl -skf "https://127.0.0.1:$sched_port/healthz"
wait_for controller-manager 30 curl -skf "https://127.0.0.1:$kcm_port/healthz"

sed "s#@VOLUMES_DIR@#$CLUSTER_DIR/volumes#g" "$root/tests/node/addons.yaml" |
  kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
for addon in coredns local-path-provisioner; do
  kubectl -n kube-system rollout status "deployment/$addon" --timeout=120s >/dev/null
done

echo "cluster $("$bins/kubectl" version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) ready in $((SECONDS - start))s"
echo "export KUBECONFIG=$KUBECONFIG"
