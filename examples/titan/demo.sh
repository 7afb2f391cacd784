#!/usr/bin/env bash
# The demo: Titan runs on the local cluster with its data in Redis and backups taken by the
# operator; a drill rehearses the recovery beside it, in a namespace of its own, and leaves
# it untouched; the disaster deletes its namespace; the operator — installed by its own chart, as
# its own ServiceAccount — brings it back from the snapshots in dependency order, proves it
# with the runbook's validations, and the data is checked to be what it was.
# Expects KUBECONFIG and kubectl from scripts/with-cluster.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
helm=$("$root/scripts/build-helm.sh")/helm
kit=examples/titan/kubernetes
part_of=app.kubernetes.io/part-of=titan
began=$SECONDS
say() { printf '\n== %s\n' "$*"; }
redis() { kubectl -n titan exec -i titan-redis-0 -c redis -- redis-cli --no-auth-warning "$@"; }
# Prints a run's steps as they change, until it ends; sets $phase.
steps='{range .status.steps[*]}{.name}={.phase} {end}{range .status.validations[*]}{.name}={.phase} {end}'
follow() {
  local run=$1 last="" start=$SECONDS deadline=$((SECONDS + 600)) now
  while :; do
    phase=$(kubectl -n titan-recovery get "$run" -o jsonpath='{.status.phase}')
    now=$(kubectl -n titan-recovery get "$run" -o jsonpath="$steps")
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
    [ $SECONDS -lt $deadline ] || { echo "$run did not finish in 600s" >&2; exit 1; }
    sleep 0.5
  done
}

say "1. The operator, by helm install of charts/titan-dr with the local image"
"$helm" upgrade --install titan-dr charts/titan-dr --namespace titan-dr-system --create-namespace \
  --skip-crds --wait --timeout 180s \
  --set image.repository=localhost/titan-dr,image.tag=local,image.pullPolicy=Never >/dev/null
kubectl -n titan-dr-system get pods,services

say "2. Titan on Kubernetes ($kit/titan) in namespace titan"
# A fresh start: no earlier run of the demo left behind.
kubectl delete namespace titan titan-recovery --ignore-not-found --wait=true >/dev/null
kubectl apply --server-side -k "$kit/titan" >/dev/null
for workload in $(kubectl -n titan get deployments,statefulsets -l "$part_of" -o name); do
  kubectl -n titan rollout status "$workload" --timeout=180s >/dev/null
done
kubectl -n titan get statefulsets,deployments,services

say "3. Trading data written to Redis"
{
  for i in $(seq 1 2000); do printf 'SET order:%d "{\\"id\\":%d,\\"qty\\":%d}"\n' "$i" "$i" $((i % 97)); done
  for i in $(seq 1 500); do printf 'HSET position:%d symbol SYM%d size %d\n' "$i" "$i" $((i * 3)); done
  for i in $(seq 1 300); do printf 'SET session:%d token-%d EX 7200\n' "$i" "$i"; done
} | redis --pipe | tail -1
redis DBSIZE

say "4. The recovery kit ($kit) in namespace titan-recovery: Backups, key, ServiceAccount"
kubectl create namespace titan-recovery --dry-run=client -o yaml | kubectl apply -f - >/dev/null
key=$(target/debug/titan-dr backup keygen)
kubectl -n titan-recovery create secret generic titan-backup-key --from-literal=key="$key" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply --server-side -k "$kit" >/dev/null
for backup in redis config; do
  kubectl -n titan-recovery wait "backup/$backup" --for=condition=Ready --timeout=120s >/dev/null
done
kubectl -n titan-recovery get backups
kubectl -n titan-recovery get backup redis -o jsonpath='{range .status.snapshots[*]}  {.id}: {.keys} keys, {.sizeBytes} bytes, sha256 {.sha256}{"\n"}{end}'

# What the data looked like when it was backed up: compared after the recovery.
fingerprint() {
  echo "keys $(redis DBSIZE)"
  redis MGET order:1 order:777 order:2000 | tr '\n' ' '
  echo
  redis HGETALL position:250 | tr '\n' ' '
  echo
  # An absolute time, so the comparison does not depend on when it is made.
  echo "session:42 expires at $(date -u -d "@$(redis EXPIRETIME session:42)" +%FT%TZ)"
}
before=$(fingerprint)

say "5. A drill first, while Titan runs: the same scenario in a namespace of its own"
# Applying the scenario runs nothing; the drill restores the snapshots into <run>-drill,
# validates there, and deletes that namespace. titan itself is not touched.
kubectl -n titan-recovery apply -f "$kit/recovery/recovery.yaml"
untouched=$(kubectl -n titan get pods,deployments,statefulsets,services,configmaps,secrets \
  -o custom-columns=NAME:.metadata.name,VERSION:.metadata.resourceVersion --no-headers)
drill=rrun/$(target/debug/titan-dr trigger complete-system-failure -n titan-recovery --drill \
  --reason "monthly disaster-recovery test")
echo "   $drill"
follow "$drill"
[ "$phase" = Succeeded ] || { echo "the drill failed" >&2; exit 1; }
namespace=$(kubectl -n titan-recovery get "$drill" -o jsonpath='{.status.drill.namespace}')
for _ in $(seq 1 240); do
  deleted=$(kubectl -n titan-recovery get "$drill" -o jsonpath='{.status.drill.deletedAt}')
  [ -n "$deleted" ] && break
  sleep 0.5
done
[ -n "$deleted" ] || { echo "the drill namespace $namespace was not deleted" >&2; exit 1; }
echo "   drilled in $namespace in $(kubectl -n titan-recovery get "$drill" -o jsonpath='{.status.achievedRTO}'), which is gone since $deleted"
now=$(kubectl -n titan get pods,deployments,statefulsets,services,configmaps,secrets \
  -o custom-columns=NAME:.metadata.name,VERSION:.metadata.resourceVersion --no-headers)
[ "$now" = "$untouched" ] || { echo "the drill changed titan" >&2; exit 1; }
[ "$(fingerprint)" = "$before" ] || { echo "the drill changed titan's data" >&2; exit 1; }
echo "   titan: every object at the same resourceVersion, the data as it was"

say "6. The disaster: kubectl delete namespace titan"
kubectl delete namespace titan --wait=true
kubectl get namespace titan 2>&1 | sed 's/^/   /' || true

say "7. The recovery: kubectl create -f $kit/recovery/run.yaml (a RecoveryRun)"
run=$(kubectl -n titan-recovery create -f "$kit/recovery/run.yaml" -o name)
echo "   $run"
follow "$run"

say "8. The result"
kubectl -n titan-recovery get dr,rrun
kubectl -n titan-recovery get dr complete-system-failure \
  -o jsonpath='{range .status.conditions[*]}  {.type}={.status} ({.reason}) {.message}{"\n"}{end}'
echo
kubectl -n titan-recovery get dr complete-system-failure \
  -o jsonpath='{range .status.steps[?(@.name=="restore-redis")]}{.output}{end}' | sed 's/^/   restore-redis: /'
echo
kubectl -n titan get statefulsets,deployments

if [ "$phase" != Succeeded ]; then
  kubectl -n titan-recovery get dr complete-system-failure -o jsonpath='{range .status.steps[?(@.phase=="Failed")]}{.name}: {.message}{"\n"}{.output}{"\n"}{end}' >&2
  echo "the recovery failed" >&2
  exit 1
fi

say "9. The data, before the disaster and after the recovery"
after=$(fingerprint)
printf 'before:\n%s\nafter:\n%s\n' "$before" "$after" | sed 's/^/   /'
[ "$before" = "$after" ] || { echo "the restored data differs" >&2; exit 1; }
for condition in RTOMet RPOMet Validated; do
  status=$(kubectl -n titan-recovery get dr complete-system-failure \
    -o jsonpath="{.status.conditions[?(@.type==\"$condition\")].status}")
  [ "$status" = True ] || { echo "$condition is $status" >&2; exit 1; }
done
echo
echo "Recovered in $(kubectl -n titan-recovery get dr complete-system-failure -o jsonpath='{.status.achievedRTO}')" \
  "(objective 15m); the data is identical. The demo took $((SECONDS - began))s."
