#!/usr/bin/env bash
# Runs every benchmark on the local control plane and writes BENCHMARKS.md.
# Expects KUBECONFIG from scripts/with-cluster.sh (`make bench`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p target/bench
cargo bench --bench operator
{
  echo "# Benchmarks"
  echo
  echo "Rerun with \`make bench\` (release build, local control plane: kube-apiserver, etcd and"
  echo "kube-controller-manager v1.37.2 with the node agent, all on this machine)."
  echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(date -u +%Y-%m-%d)."
  echo
  cat target/bench/operator.md
} > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
