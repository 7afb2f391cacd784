#!/usr/bin/env bash
# Starts one Titan service (pm2 start --only NAME) and waits until it is healthy.
set -euo pipefail
. "$(dirname "$0")/env.sh"
service=$1
port=$(service_port "$service")
case $service in
  titan-brain) deps=() ;;
  titan-shared) deps=("http://127.0.0.1:$(service_port titan-brain)") ;;
  *) deps=("http://127.0.0.1:$(service_port titan-shared)") ;;
esac
redis-cli -p "$TITAN_REDIS_PORT" ping >/dev/null || { echo "$service needs redis on $TITAN_REDIS_PORT" >&2; exit 1; }
# Its own session: the service outlives the step that started it.
setsid nohup python3 "$TITAN_HOME/app/titan-service.py" "$service" "$port" "${deps[@]}" \
  >"$TITAN_HOME/logs/$service.log" 2>&1 < /dev/null &
echo $! > "$TITAN_HOME/run/$service.pid"
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null; then
    echo "[PM2] $service online on port $port"
    exit 0
  fi
  sleep 0.1
done
echo "$service did not become healthy on port $port" >&2
exit 1
