#!/usr/bin/env bash
# Starts a real control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager (Job, garbage-collector, namespace and TTL controllers)
# and the local node agent, then applies crds/ and waits until they are
# Established. Writes an admin kubeconfig to $CLUSTER_DIR/kubeconfig.
# Idempotent: returns at once when the cluster in $CLUSTER_DIR already answers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$root/target/cluster}
# Pods run from the repository root, so example commands can use relative paths.
cd "$root"
mkdir -p "$CLUSTER_DIR"
CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
pki=$CLUSTER_DIR/pki

# One start at a time per folder (test binaries may race to start it).
exec 9>"$CLUSTER_DIR/.lock"
flock 9

bins=$("$root/scripts/build-control-plane.sh")
kubectl() { "$bins/kubectl" "$@"; }

answers() {
  [ -f "$KUBECONFIG" ] && [ -f "$CLUSTER_DIR/apiserver.port" ] &&
    curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
      "https://127.0.0.1:$(cat "$CLUSTER_DIR/apiserver.port")/readyz" >/dev/null
}
if answers && [ -f "$CLUSTER_DIR/node-agent.pid" ] && kill -0 "$(cat "$CLUSTER_DIR/node-agent.pid")" 2>/dev/null; then
  # The CRDs may have changed since it started.
  kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
  echo "control plane already running: KUBECONFIG=$KUBECONFIG"
  exit 0
fi
"$root/scripts/cluster-down.sh" >/dev/null 2>&1 || true
# A half-started control plane is stopped, not left behind.
trap '[ $? -eq 0 ] || "$root/scripts/cluster-down.sh" >/dev/null 2>&1' EXIT

echo "building the node agent" >&2
(cd "$root" && cargo build --quiet --bin titan-local-node)
start=$SECONDS

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- certificates: a CA, a serving cert, an admin client cert, a service-account key
if [ ! -f "$pki/admin.crt" ]; then
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt -subj "/CN=titan-dr-local-ca" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' > apiserver.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=titan-admin" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
fi

etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
echo "$api_port" > "$CLUSTER_DIR/apiserver.port"

cat > "$KUBECONFIG" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: titan-local
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: titan-admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: titan-local
  context: {cluster: titan-local, user: titan-admin, namespace: default}
current-context: titan-local
EOF

launch() { # name command...
  local name=$1; shift
  nohup "$@" >"$CLUSTER_DIR/$name.log" 2>&1 9>&- &
  echo $! >"$CLUSTER_DIR/$name.pid"
}
wait_for() { # what seconds command...
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$(cat "$CLUSTER_DIR/$what.pid")" 2>/dev/null; then
      echo "$what did not become ready within ${limit}s (or exited); last log lines:" >&2
      tail -n 30 "$CLUSTER_DIR/$what.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

rm -rf "$CLUSTER_DIR/etcd-data"
launch etcd "$bins/etcd" --name titan-local --data-dir "$CLUSTER_DIR/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "titan-local=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync --log-level warn
wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

launch apiserver "$bins/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --cert-dir "$CLUSTER_DIR/apiserver-certs" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC \
  --disable-admission-plugins ServiceAccount --endpoint-reconciler-type none
wait_for apiserver 120 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
  "https://127.0.0.1:$api_port/readyz"

launch controller-manager "$bins/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
  --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$kcm_port" --cert-dir "$CLUSTER_DIR/kcm-certs" \
  --controllers job-controller,garbage-collector-controller,namespace-controller,ttl-after-finished-controller
wait_for controller-manager 60 curl -skf "https://127.0.0.1:$kcm_port/healthz"

launch node-agent "$root/target/debug/titan-local-node" --work-dir "$CLUSTER_DIR/node"
wait_for node-agent 30 kubectl wait --for=condition=Ready node/titan-local-node --timeout=1s

kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null

echo "control plane $("$bins/kubectl" version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) ready in $((SECONDS - start))s"
echo "export KUBECONFIG=$KUBECONFIG"
