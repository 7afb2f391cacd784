#!/usr/bin/env bash
# Checks the machine can host the system and lays out its folders.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cpus=$(nproc); mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
echo "host: ${cpus} CPUs, ${mem_mb} MB memory"
[ "$mem_mb" -ge 1024 ] || { echo "not enough memory: ${mem_mb} MB" >&2; exit 1; }
mkdir -p "$TITAN_HOME"/{redis,config,app,run,logs}
echo "provisioned $TITAN_HOME"
