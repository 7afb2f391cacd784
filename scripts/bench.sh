#!/usr/bin/env bash
# Runs every benchmark on the local control plane and writes BENCHMARKS.md.
# Expects KUBECONFIG from scripts/with-cluster.sh (`make bench`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p target/bench
cargo bench --bench operator
python3 scripts/bench-section.py BENCHMARKS.md target/bench/operator.md
scripts/bench-backup.sh
echo "wrote BENCHMARKS.md"
