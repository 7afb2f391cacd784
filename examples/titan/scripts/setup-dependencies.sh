#!/usr/bin/env bash
# Verifies the system's dependencies are installed.
set -euo pipefail
. "$(dirname "$0")/env.sh"
for tool in redis-server redis-cli python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing dependency: $tool" >&2; exit 1; }
  echo "ok: $tool"
done
