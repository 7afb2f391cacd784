#!/usr/bin/env bash
# Stops every service and Redis (rollback, and the end of the demo).
set -uo pipefail
. "$(dirname "$0")/env.sh"
for pidfile in "$TITAN_HOME"/run/*.pid; do
  [ -f "$pidfile" ] || continue
  kill "$(cat "$pidfile")" 2>/dev/null && echo "stopped $(basename "$pidfile" .pid)"
  rm -f "$pidfile"
done
exit 0
