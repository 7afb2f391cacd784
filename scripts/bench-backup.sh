#!/usr/bin/env bash
# Backup snapshot throughput and memory, in one run on the same redis-server and dataset:
#   - `redis-cli --rdb` to a file (the floor: Redis's own client);
#   - `titan-dr backup snapshot` to a folder, and to a folder and a real S3 server
#     (SeaweedFS's `weed mini` on loopback, built by scripts/build-seaweedfs.sh);
#   - `restic backup` (Debian package) of redis-cli's RDB file to the same S3 server;
#   - `titan-dr backup verify` of the snapshot.
# At each dataset size in SIZES (MiB), so that peak RSS can be compared as the data grows.
# Writes the section "Backup snapshot throughput" of BENCHMARKS.md.
#
#   scripts/bench-backup.sh                      # 64 MiB and 1 GiB, 1 round each
#   SIZES=256 ROUNDS=2 scripts/bench-backup.sh
#
# The server runs with `rdbcompression no`, so that the RDB is about as large as the
# dataset (DEBUG POPULATE values compress to almost nothing otherwise), and with
# `repl-diskless-sync-delay 0`, so that no tool waits 5 s for other replicas.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sizes=${SIZES:-64 1024}
value_size=${VALUE_SIZE:-1024}
rounds=${ROUNDS:-1}

command -v restic >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq restic >/dev/null; }
for tool in redis-server redis-cli restic curl python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench-backup: $tool is required" >&2; exit 1; }
done
if [ -z "${TITAN_DR_BIN:-}" ]; then
  (cd "$root" && cargo build --quiet --release --bin titan-dr)
  target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  TITAN_DR_BIN=$target_dir/release/titan-dr
fi
weed=$("$root/scripts/build-seaweedfs.sh")

work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  [ -f "$work/redis.pid" ] && kill -9 "$(cat "$work/redis.pid")" 2>/dev/null || true
  [ -n "${weed_pid:-}" ] && kill "$weed_pid" 2>/dev/null && wait "$weed_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --enable-debug-command local --repl-diskless-sync-delay 0 --rdbcompression no \
  --logfile "$work/redis.log" --daemonize yes --pidfile "$work/redis.pid"
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The S3 server, with one identity and one bucket, every port on loopback.
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key
echo '{"identities":[{"name":"bench","credentials":[{"accessKey":"bench","secretKey":"bench-secret-key"}],"actions":["Admin","Read","List","Tagging","Write"]}]}' > "$work/s3.json"
mkdir -p "$work/weed"
s3_port=$(free_port)
ports=""
for flag in s3.port.grpc master.port master.port.grpc volume.port volume.port.grpc filer.port \
  filer.port.grpc admin.port admin.port.grpc; do ports="$ports -$flag=$(free_port)"; done
# shellcheck disable=SC2086
"$weed" mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$work/s3.json" \
  -bucket=bench -s3.port="$s3_port" $ports -admin.port.legacy=0 -s3.port.iceberg=0 \
  -webdav=false -admin.ui=false >"$work/weed.log" 2>&1 &
weed_pid=$!
endpoint=http://127.0.0.1:$s3_port
for _ in $(seq 360); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "$endpoint/bench" || true)
  [ "$code" = 403 ] || [ "$code" = 200 ] && break
  sleep 0.25
done
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=s3:$endpoint/bench/restic
restic init --quiet >/dev/null

"$TITAN_DR_BIN" backup keygen --output "$work/key.txt" 2>/dev/null

# /usr/bin/time -v prints "Elapsed (wall clock) time (h:mm:ss or m:ss): 0:01.23" and
# "Maximum resident set size (kbytes): N".
seconds() { awk -F': ' '/Elapsed/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$1"; }
cpu_s() { awk -F': ' '/User time|System time/ {s+=$2} END {printf "%.2f", s}' "$1"; }
rss_mib() { awk -F': ' '/Maximum resident/ {printf "%.1f", $2/1024}' "$1"; }
mbps() { python3 -c "print(f'{$1/1e6/$2:.0f}')"; }
# measure LABEL BYTES COMMAND...: runs it under /usr/bin/time and adds a row.
measure() {
  local label=$1 bytes=$2
  shift 2
  /usr/bin/time -v -o "$work/run.time" "$@" >"$work/run.out" 2>&1 ||
    { cat "$work/run.out" >&2; exit 1; }
  local s
  s=$(seconds "$work/run.time")
  rows+=("| $size_mb MiB | $label | $bytes | $s | $(mbps "$bytes" "$s") | $(cpu_s "$work/run.time") | $(rss_mib "$work/run.time") |")
}

rows=()
for size_mb in $sizes; do
  keys=$((size_mb * 1024 * 1024 / value_size))
  echo "loading $keys keys of $value_size bytes (~$size_mb MiB)..."
  redis-cli -p "$port" flushall >/dev/null
  redis-cli -p "$port" debug populate "$keys" bench "$value_size" >/dev/null
  for _ in $(seq "$rounds"); do
    rm -f "$work/cli.rdb"
    /usr/bin/time -v -o "$work/run.time" redis-cli -p "$port" --rdb "$work/cli.rdb" >/dev/null 2>&1
    bytes=$(stat -c %s "$work/cli.rdb")
    s=$(seconds "$work/run.time")
    rows+=("| $size_mb MiB | \`redis-cli --rdb\` to a file | $bytes | $s | $(mbps "$bytes" "$s") | $(cpu_s "$work/run.time") | $(rss_mib "$work/run.time") |")

    rm -rf "$work/store"
    measure "\`titan-dr backup snapshot\` to a folder" "$bytes" \
      "$TITAN_DR_BIN" backup snapshot --redis "127.0.0.1:$port" --dir "$work/store" --key-file "$work/key.txt"
    measure "\`titan-dr backup verify\` of it" "$bytes" \
      "$TITAN_DR_BIN" backup verify --dir "$work/store" --key-file "$work/key.txt"
    rm -rf "$work/store"
    measure "\`titan-dr backup snapshot\` to a folder and S3" "$bytes" \
      "$TITAN_DR_BIN" backup snapshot --redis "127.0.0.1:$port" --dir "$work/store" --key-file "$work/key.txt" \
      --s3 "s3://bench/titan-$size_mb" --s3-endpoint "$endpoint"
    measure "\`restic backup\` of redis-cli's RDB file to S3" "$bytes" \
      restic backup --quiet "$work/cli.rdb"
  done
done

cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
section=$(cat <<EOF
## Backup snapshot throughput

\`scripts/bench-backup.sh\` (SIZES="$sizes", VALUE_SIZE=$value_size, ROUNDS=$rounds), run on
$(date -u +%Y-%m-%d): $(nproc) cores ($cpu), $(free -g | awk '/Mem:/ {print $2}') GiB, redis-server
$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'), $(restic version | cut -d' ' -f1-2), SeaweedFS \`weed mini\`,
release build. Keys of $value_size bytes (DEBUG POPULATE), \`rdbcompression no\`, diskless
sync, everything on loopback and one local disk. MB/s is RDB bytes (10^6) per wall-clock
second. The snapshot rows include the server's fork and serialisation; titan-dr also
computes CRC64, key counts and two SHA-256, encrypts (age), fsyncs and, to S3, uploads the
encrypted file in parts after the snapshot. restic starts from the finished RDB file (add
the redis-cli row for Redis to S3 that way); it chunks, deduplicates, compresses and
encrypts. CPU and peak RSS from \`/usr/bin/time -v\`: titan-dr's RSS staying flat from the
small dataset to the large one is its fixed-buffer streaming.

| data | tool | RDB bytes | seconds | MB/s | CPU s (user+sys) | peak RSS (MiB) |
| --- | --- | ---: | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${rows[@]}")
EOF
)
echo "$section"

mkdir -p "$root/target/bench"
printf '%s\n' "$section" > "$root/target/bench/backup.md"
python3 "$root/scripts/bench-section.py" "$root/BENCHMARKS.md" "$root/target/bench/backup.md"
echo "wrote $root/BENCHMARKS.md"
