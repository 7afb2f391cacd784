#!/usr/bin/env bash
# Restores the service configuration files.
set -euo pipefail
. "$(dirname "$0")/env.sh"
for service in $SERVICES; do
  printf '{"service": "%s", "port": %s, "redis": "127.0.0.1:%s"}\n' \
    "$service" "$(service_port "$service")" "$TITAN_REDIS_PORT" > "$TITAN_HOME/config/$service.config.json"
done
printf 'port %s\nbind 127.0.0.1\ndir %s/redis\nsave ""\nappendonly no\n' "$TITAN_REDIS_PORT" "$TITAN_HOME" > "$TITAN_HOME/config/redis.conf"
ls "$TITAN_HOME/config"
