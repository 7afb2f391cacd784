#!/usr/bin/env bash
# Lists the services like `pm2 status`; with --json, one JSON summary line.
set -uo pipefail
. "$(dirname "$0")/env.sh"
online=0; total=0
for service in $SERVICES; do
  total=$((total + 1))
  pid=$(cat "$TITAN_HOME/run/$service.pid" 2>/dev/null || echo 0)
  if [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; then state=online; online=$((online + 1)); else state=stopped; fi
  [ "${1:-}" = --json ] || printf '%-14s %-8s pid %s\n' "$service" "$state" "$pid"
done
if [ "${1:-}" = --json ]; then
  all=false; [ $online -eq $total ] && all=true
  printf '{"online": %d, "total": %d, "allOnline": %s}\n' "$online" "$total" "$all"
fi
[ $online -eq $total ]
