#!/usr/bin/env bash
# The demo: Titan runs on the local cluster, a complete system failure takes every workload
# down, and the operator — installed by its own chart, in its own namespace, as its own
# ServiceAccount — brings the system back in dependency order and proves it with the
# runbook's validations. Expects KUBECONFIG and kubectl from scripts/with-cluster.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ns=titan-demo
helm=$("$root/scripts/build-helm.sh")/helm
part_of=app.kubernetes.io/part-of=titan

echo "== 1. Titan on Kubernetes (examples/titan/kubernetes) in namespace $ns"
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
kubectl -n "$ns" delete disasterrecovery --all --wait=true >/dev/null
overlay=$root/target/overlays/demo
mkdir -p "$overlay"
printf 'namespace: %s\nresources: [../../../examples/titan/kubernetes]\n' "$ns" >"$overlay/kustomization.yaml"
kubectl apply --server-side -k "$overlay" >/dev/null
for workload in $(kubectl -n "$ns" get deployments,statefulsets -l "$part_of" -o name); do
  kubectl -n "$ns" rollout status "$workload" --timeout=180s >/dev/null
done
kubectl -n "$ns" get deployments,statefulsets,services -l "$part_of"

echo
echo "== 2. The disaster: every Titan workload is gone"
kubectl -n "$ns" scale deployments,statefulsets -l "$part_of" --replicas=0 >/dev/null
kubectl -n "$ns" wait pods -l "$part_of" --for=delete --timeout=120s >/dev/null
kubectl -n "$ns" get deployments,statefulsets -l "$part_of"

echo
echo "== 3. The operator, by helm install of charts/titan-dr with the local image"
"$helm" upgrade --install titan-dr charts/titan-dr --namespace titan-dr-system --create-namespace \
  --skip-crds --wait --timeout 180s \
  --set image.repository=localhost/titan-dr,image.tag=local,image.pullPolicy=Never >/dev/null
kubectl -n titan-dr-system get pods -o wide

echo
echo "== 4. kubectl apply -f examples/titan/kubernetes/recovery.yaml"
kubectl -n "$ns" apply -f examples/titan/kubernetes/recovery.yaml
steps='{range .status.steps[*]}{.name}={.phase} {end}{range .status.validations[*]}{.name}={.phase} {end}'
last=""
start=$SECONDS
deadline=$((SECONDS + 600))
while :; do
  phase=$(kubectl -n "$ns" get dr complete-system-failure -o jsonpath='{.status.phase}')
  now=$(kubectl -n "$ns" get dr complete-system-failure -o jsonpath="$steps")
  if [ "$now" != "$last" ]; then
    printf '[%3ss] %-10s' "$((SECONDS - start))" "${phase:-Pending}"
    for s in $now; do
      case ${s#*=} in
        Succeeded) mark="✔" ;; Running) mark="▶" ;; Failed|TimedOut) mark="✘" ;; Skipped) mark="-" ;; *) mark="·" ;;
      esac
      printf ' %s%s' "$mark" "${s%%=*}"
    done
    echo
    last=$now
  fi
  case $phase in Succeeded|Failed) break ;; esac
  [ $SECONDS -lt $deadline ] || { echo "the recovery did not finish in 600s" >&2; exit 1; }
  sleep 0.5
done
echo
kubectl -n "$ns" get dr
echo
kubectl -n "$ns" get dr complete-system-failure \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
echo
kubectl -n "$ns" get jobs -L dr.titan.io/step
echo
kubectl -n "$ns" get deployments,statefulsets -l "$part_of"
[ "$phase" = Succeeded ]
