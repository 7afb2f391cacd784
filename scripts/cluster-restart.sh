#!/usr/bin/env bash
# Stops one process of the cluster started by cluster-up.sh (etcd, apiserver, kubelet, …),
# keeps it down for SECONDS, then starts it again with the command line, environment and
# working directory it had, appending to its log: the fault suite's outages and restarts.
# With `pause`, the process is stopped (SIGSTOP) and continued instead: it answers nothing
# meanwhile, and keeps its connections and caches.
# Usage: cluster-restart.sh NAME [SECONDS] [pause]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CLUSTER_DIR=${CLUSTER_DIR:-$root/target/cluster}
name=$1 down=${2:-0} mode=${3:-restart}
pidfile=$CLUSTER_DIR/$name.pid
[ -f "$pidfile" ] || { echo "no $pidfile: is the cluster up, and is $name one of its processes?" >&2; exit 1; }
pid=$(cat "$pidfile")
kill -0 "$pid" 2>/dev/null || { echo "$name (pid $pid) is not running" >&2; exit 1; }
if [ "$mode" = pause ]; then
  kill -STOP "$pid"
  sleep "$down"
  kill -CONT "$pid"
  exit 0
fi
mapfile -d '' command <"/proc/$pid/cmdline"
mapfile -d '' environment <"/proc/$pid/environ"
workdir=$(readlink "/proc/$pid/cwd")

kill "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -9 "$pid" 2>/dev/null || true
echo "$(date -u +%FT%TZ) cluster-restart.sh: stopped for ${down}s" >>"$CLUSTER_DIR/$name.log"
sleep "$down"
cd "$workdir"
nohup env -i "${environment[@]}" "${command[@]}" >>"$CLUSTER_DIR/$name.log" 2>&1 9>&- &
echo $! >"$pidfile"
