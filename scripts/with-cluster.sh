#!/usr/bin/env bash
# Runs a command with the local control plane up and KUBECONFIG pointing at it.
# Stops the control plane afterwards only if this script started it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pidfile=$root/target/cluster/apiserver.pid
started=no
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
  started=yes
fi
"$root/scripts/cluster-up.sh"
[ $started = yes ] && trap '"$root/scripts/cluster-down.sh"' EXIT
export KUBECONFIG=$root/target/cluster/kubeconfig
export PATH=$("$root/scripts/build-control-plane.sh"):$PATH
"$@"
