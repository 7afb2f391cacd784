#!/usr/bin/env bash
# Starts Redis and reports like `systemctl status`.
set -euo pipefail
. "$(dirname "$0")/env.sh"
redis-server "$TITAN_HOME/config/redis.conf" --daemonize yes --pidfile "$TITAN_HOME/run/redis.pid" \
  --logfile "$TITAN_HOME/logs/redis.log"
for _ in $(seq 1 50); do
  if [ "$(redis-cli -p "$TITAN_REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
    echo "redis.service - Redis on port $TITAN_REDIS_PORT"
    echo "   Active: active (running)"
    exit 0
  fi
  sleep 0.1
done
echo "redis did not answer on port $TITAN_REDIS_PORT" >&2
exit 1
