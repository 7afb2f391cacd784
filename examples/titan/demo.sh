#!/usr/bin/env bash
# The demo: the operator recovers the Titan system on the local control plane.
# Expects KUBECONFIG and kubectl from scripts/with-cluster.sh (`make demo`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ns=titan-demo
export TITAN_HOME=/tmp/titan-demo
log=$root/target/demo-operator.log

kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" delete disasterrecovery --all --wait=true >/dev/null
bash examples/titan/scripts/stop-all.sh >/dev/null

echo "starting the operator (log: $log)"
# Step pods install titan-step from "the operator's image", which on the local node is this
# machine (`make build` builds it).
"$root/target/debug/titan-dr" operator --namespace "$ns" --metrics-addr 127.0.0.1:0 \
  --titan-step-path "$root/target/debug/titan-step" >"$log" 2>&1 &
operator=$!
cleanup() {
  kill "$operator" 2>/dev/null || true
  bash examples/titan/scripts/stop-all.sh >/dev/null
}
trap cleanup EXIT

echo "applying examples/titan/recovery.yaml"
kubectl -n "$ns" apply -f examples/titan/recovery.yaml
echo
steps='{range .status.steps[*]}{.name}={.phase} {end}{range .status.validations[*]}{.name}={.phase} {end}'
last=""
deadline=$((SECONDS + 300))
while :; do
  phase=$(kubectl -n "$ns" get dr complete-system-failure -o jsonpath='{.status.phase}')
  now=$(kubectl -n "$ns" get dr complete-system-failure -o jsonpath="$steps")
  if [ "$now" != "$last" ]; then
    printf '[%3ss] %-10s' "$SECONDS" "${phase:-Pending}"
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
  [ $SECONDS -lt $deadline ] || { echo "the recovery did not finish in 300s" >&2; exit 1; }
  sleep 0.5
done
echo
kubectl -n "$ns" get dr
echo
kubectl -n "$ns" get dr complete-system-failure \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'
echo
kubectl -n "$ns" get jobs -L dr.titan.io/step
[ "$phase" = Succeeded ]
