#!/usr/bin/env bash
# Restores the application code.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cp "$example/app/titan-service.py" "$TITAN_HOME/app/"
echo "restored application to $TITAN_HOME/app"
