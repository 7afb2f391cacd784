#!/usr/bin/env bash
# Regenerates tests/fuzz/rdb/: RDB files written by a real redis-server (every value type,
# expiries, several databases, listpack and hashtable encodings), the seeds the RDB scanner's
# fuzz target mutates; and tests/fuzz/archive/, configuration archives in tar's three formats.
# The runbook target's seeds are tests/fixtures/runbooks/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/fuzz/rdb
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no --daemonize no \
  > "$dir/log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
cli() { redis-cli -p "$port" "$@" > /dev/null; }
for _ in $(seq 50); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.1; done

save_as() { cli save; cp "$dir/dump.rdb" "$out/$1.rdb"; }
cli flushall; save_as empty
cli set k v; cli set n 12345; cli set big "$(head -c 3000 /dev/zero | tr '\0' x)"; save_as strings
cli flushall
cli rpush list a b c 1 2 3; cli hset hash f1 v1 f2 v2; cli sadd set x y z; cli sadd ints 1 2 3
cli zadd zset 1 a 2.5 b; cli set ttl v ex 3600; cli pexpire hash 7200000
cli xadd stream '*' field value; cli xadd stream '*' other 2; cli xgroup create stream g 0
save_as types
cli flushall
for i in $(seq 200); do cli rpush long "element-$i-$(head -c 40 /dev/zero | tr '\0' y)"; done
for i in $(seq 200); do cli hset wide "field$i" "value$i"; done
for i in $(seq 200); do cli zadd ranks "$i" "member$i"; done
cli select 3; cli set other-db 1; cli set ttl2 v px 99999999
save_as encodings
kill "$server"; wait "$server" 2>/dev/null || true

# Configuration archives as tar writes them in its three formats (the operator's own writer is
# the fuzz target's fourth seed, made at run time): a ConfigMap, a Secret, a long path.
mkdir -p tests/fuzz/archive
python3 - <<'PY'
import io, tarfile
objects = {
    "configmaps/titan-config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: titan-config\ndata:\n  a: b\n",
    "secrets/redis-auth.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-auth\ndata:\n  password: cGFzcw==\n",
    "configmaps/" + "n" * 120 + ".yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: long\n",
}
for name, form in [("ustar", tarfile.USTAR_FORMAT), ("gnu", tarfile.GNU_FORMAT), ("pax", tarfile.PAX_FORMAT)]:
    with tarfile.open(f"tests/fuzz/archive/{name}.tar", "w", format=form) as tar:
        for path, text in objects.items():
            if form == tarfile.USTAR_FORMAT and len(path) > 100:
                continue
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o600, 0
            tar.addfile(info, io.BytesIO(data))
PY
ls -l "$out" tests/fuzz/archive
