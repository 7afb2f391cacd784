//! Redis snapshots against real `redis-server`s: every value type round-trips, Debian's
//! `age` decrypts the files, writes during a snapshot do not break it, and every kind of
//! damage is named by `verify` and refused by `restore` with the target left as it was.

mod redis_server;
mod s3_server;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Connection, Value};
use redis_server::RedisServer;
use titan_dr::backup::{BackupKey, Manifest, Store, StoreError, VerifyError};
use titan_dr::redis::{RedisTarget, SnapshotError, SnapshotOptions};

fn target(server: &RedisServer) -> RedisTarget {
    RedisTarget {
        address: server.address(),
        ..RedisTarget::default()
    }
}

fn query<T: redis::FromRedisValue>(con: &mut Connection, cmd: &mut redis::Cmd) -> T {
    cmd.query(con).expect("redis command")
}

/// A few thousand keys of every type, in two databases, many with TTLs.
fn load_every_type(server: &RedisServer) {
    for db in [0, 1] {
        let mut con = server.client_db(db);
        let mut pipe = redis::pipe();
        for i in 0..1500 {
            pipe.set(
                format!("str:{i}"),
                format!("value-{i}-{}", "x".repeat(i % 70)),
            )
            .ignore();
        }
        for i in 0..200 {
            pipe.set(format!("int:{i}"), i as i64 * 1000 - 7).ignore();
            pipe.hset_multiple(
                format!("hash:{i}"),
                &[
                    ("a", i.to_string()),
                    ("b", "two".into()),
                    ("c", "x".repeat(i)),
                ],
            )
            .ignore();
            pipe.rpush(format!("list:{i}"), (0..(i % 20 + 1)).collect::<Vec<_>>())
                .ignore();
            pipe.sadd(format!("intset:{i}"), (0..(i % 10 + 1)).collect::<Vec<_>>())
                .ignore();
            pipe.sadd(format!("set:{i}"), &["alpha", "beta", &format!("m{i}")])
                .ignore();
            pipe.zadd_multiple(
                format!("zset:{i}"),
                &[(1.5, "one"), (i as f64, "i"), (-3.25, "neg")],
            )
            .ignore();
        }
        // Large ones take the non-compact encodings (hashtable, quicklist, skiplist).
        for j in 0..2000 {
            pipe.hset("big:hash", format!("field{j}"), "v".repeat(j % 100))
                .ignore();
            pipe.rpush("big:list", format!("element-{j}-{}", "y".repeat(j % 90)))
                .ignore();
            pipe.sadd("big:set", format!("member-{j}")).ignore();
            pipe.zadd("big:zset", format!("member-{j}"), j as f64 / 3.0)
                .ignore();
        }
        pipe.zadd("zset:inf", "top", "+inf").ignore();
        for s in 0..30 {
            let key = format!("stream:{s}");
            for e in 0..(s + 5) {
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("n")
                    .arg(e)
                    .arg("payload")
                    .arg("z".repeat(e * 3))
                    .ignore();
            }
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg("g1")
                .arg("0")
                .ignore();
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(&key)
                .arg("g2")
                .arg("$")
                .ignore();
            // Pending entries owned by a consumer.
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg("g1")
                .arg("alice")
                .arg("COUNT")
                .arg(3)
                .arg("STREAMS")
                .arg(&key)
                .arg(">")
                .ignore();
        }
        // TTLs from a minute to a day, on keys of every type.
        for i in 0..200 {
            let ms = 60_000 + i * 400_000;
            for prefix in ["str", "hash", "list", "set", "zset"] {
                pipe.cmd("PEXPIRE")
                    .arg(format!("{prefix}:{i}"))
                    .arg(ms)
                    .ignore();
            }
        }
        let () = pipe.query(&mut con).expect("loading the dataset");
    }
}

/// Every key of a database with its type, value and absolute expiry (ms, -1 for none).
fn dataset(con: &mut Connection) -> BTreeMap<Vec<u8>, (String, String, i64)> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) =
            query(con, redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000));
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut entries = BTreeMap::new();
    for key in keys {
        let kind: String = query(con, redis::cmd("TYPE").arg(&key));
        let value = match kind.as_str() {
            "string" => format!("{:?}", query::<Value>(con, redis::cmd("GET").arg(&key))),
            "hash" => {
                let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                    query(con, redis::cmd("HGETALL").arg(&key));
                pairs.sort();
                format!("{pairs:?}")
            }
            "list" => format!(
                "{:?}",
                query::<Vec<Vec<u8>>>(con, redis::cmd("LRANGE").arg(&key).arg(0).arg(-1))
            ),
            "set" => {
                let mut members: Vec<Vec<u8>> = query(con, redis::cmd("SMEMBERS").arg(&key));
                members.sort();
                format!("{members:?}")
            }
            "zset" => format!(
                "{:?}",
                query::<Vec<(Vec<u8>, String)>>(
                    con,
                    redis::cmd("ZRANGE")
                        .arg(&key)
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                )
            ),
            "stream" => {
                let entries: Value = query(con, redis::cmd("XRANGE").arg(&key).arg("-").arg("+"));
                let groups: Value = query(con, redis::cmd("XINFO").arg("GROUPS").arg(&key));
                let pending: Value = query(con, redis::cmd("XPENDING").arg(&key).arg("g1"));
                format!("{entries:?} {groups:?} {pending:?}")
            }
            other => panic!("unexpected type {other}"),
        };
        let expires_at: i64 = query(con, redis::cmd("PEXPIRETIME").arg(&key));
        entries.insert(key, (kind, value, expires_at));
    }
    entries
}

fn unix_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// Starts a fresh server on the RDB that `restore` wrote.
fn load_restored(store: &Store, id: &str, key: &BackupKey) -> (RedisServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    store
        .restore(id, key, &dir.path().join("dump.rdb"))
        .unwrap();
    (RedisServer::start_in(dir.path(), &[]), dir)
}

fn assert_same_data(source: &RedisServer, copy: &RedisServer, dbs: &[i64]) {
    for &db in dbs {
        let before = dataset(&mut source.client_db(db));
        let mut copy_con = copy.client_db(db);
        let after = dataset(&mut copy_con);
        assert!(before.len() > 1000, "db{db} is too small a test");
        assert_eq!(before.len(), after.len(), "db{db} key count");
        let mut with_ttl = 0;
        for (key, value) in &before {
            // Types, values and absolute expiry times are identical...
            assert_eq!(Some(value), after.get(key), "db{db} key {key:?}");
            // ...so the remaining TTL is what the source's expiry leaves, within a second.
            let expires_at = value.2;
            if expires_at >= 0 {
                with_ttl += 1;
                let ttl: i64 = query(&mut copy_con, redis::cmd("PTTL").arg(key));
                let expected = expires_at - unix_ms();
                assert!(
                    (ttl - expected).abs() <= 1000,
                    "db{db} {key:?}: TTL {ttl} ms, expected {expected}"
                );
            }
        }
        assert_eq!(with_ttl, 1000, "db{db} keys with a TTL");
    }
}

#[test]
fn every_type_round_trips_and_the_age_cli_decrypts_it() {
    let source = RedisServer::start(&[]);
    load_every_type(&source);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();

    let manifest = store
        .snapshot_redis(&target(&source), &key, &SnapshotOptions::default())
        .unwrap();
    let redis = manifest.redis.as_ref().unwrap();
    assert!(redis.diskless, "the default of Redis 7 is a diskless sync");
    assert_eq!(redis.key_count, "exact");
    assert!(redis.crc64.is_some());
    // The key counts are the server's.
    for db in &redis.databases {
        let size: u64 = query(
            &mut source.client_db(i64::from(db.db)),
            &mut redis::cmd("DBSIZE"),
        );
        assert_eq!(db.keys, size, "db{}", db.db);
        assert_eq!(db.expires, 1000, "db{}", db.db);
    }
    assert_eq!(redis.databases.len(), 2);
    assert_eq!(store.verify(&manifest.id, &key).unwrap(), manifest);

    let (copy, _copy_dir) = load_restored(&store, &manifest.id, &key);
    assert_same_data(&source, &copy, &[0, 1]);

    // Debian's age decrypts the file with the same key, to the same RDB.
    let key_file = dir.path().join("key.txt");
    fs::write(&key_file, key.to_key_file()).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key_file)
        .arg(dir.path().join(&manifest.file))
        .output()
        .expect("the age CLI is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() as u64, manifest.plaintext.size_bytes);
    assert_eq!(sha256_hex(&out.stdout), manifest.plaintext.sha256);
    assert!(out.stdout.starts_with(b"REDIS0010"));
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn a_disk_based_sync_with_a_password_works_and_bad_credentials_are_named() {
    let source = RedisServer::start(&["--repl-diskless-sync", "no", "--requirepass", "s3cret"]);
    load_every_type(&source);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let options = SnapshotOptions::default();

    let mut good = target(&source);
    good.password = Some("s3cret".into());
    let manifest = store.snapshot_redis(&good, &key, &options).unwrap();
    assert!(!manifest.redis.as_ref().unwrap().diskless);
    let (copy, _copy_dir) = load_restored(&store, &manifest.id, &key);
    // The copy has no password: compare through a client of each.
    let mut copy_con = copy.client();
    let copied: u64 = query(&mut copy_con, &mut redis::cmd("DBSIZE"));
    let original: u64 = query(&mut source.client(), &mut redis::cmd("DBSIZE"));
    assert_eq!(copied, original);

    let mut wrong = good.clone();
    wrong.password = Some("guess".into());
    let err = store.snapshot_redis(&wrong, &key, &options).unwrap_err();
    assert!(
        matches!(err, StoreError::Source(SnapshotError::AuthFailed { .. })),
        "{err}"
    );
    let err = store
        .snapshot_redis(&target(&source), &key, &options)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Source(SnapshotError::AuthFailed { .. })),
        "{err}"
    );
    assert!(err.to_string().contains(&source.address()), "{err}");

    let closed = RedisTarget {
        address: "127.0.0.1:1".into(),
        ..RedisTarget::default()
    };
    let err = store.snapshot_redis(&closed, &key, &options).unwrap_err();
    assert!(
        matches!(err, StoreError::Source(SnapshotError::Unreachable { .. })),
        "{err}"
    );
    assert_eq!(store.list().unwrap().snapshots.len(), 1);
}

#[test]
fn writes_during_a_snapshot_do_not_break_it() {
    let source = RedisServer::start(&[]);
    let mut con = source.client();
    let () = query(
        &mut con,
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(20_000)
            .arg("bulk")
            .arg(64),
    );
    // Slow the fork's serialisation down (50 µs a key: about a second), so that the
    // writes below certainly overlap the snapshot.
    let () = query(
        &mut con,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("rdb-key-save-delay")
            .arg(50),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let mut con = source.client();
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A counter and a list length that every transaction moves together.
                let () = redis::pipe()
                    .atomic()
                    .incr("counter", 1)
                    .ignore()
                    .rpush("events", rounds)
                    .ignore()
                    .set(format!("churn:{}", rounds % 500), rounds)
                    .ignore()
                    .query(&mut con)
                    .expect("writing during the snapshot");
                rounds += 1;
            }
            rounds
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let started = Instant::now();
    let manifest = store
        .snapshot_redis(&target(&source), &key, &SnapshotOptions::default())
        .unwrap();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(
        took > Duration::from_millis(500),
        "the snapshot took only {took:?}"
    );

    let (copy, _copy_dir) = load_restored(&store, &manifest.id, &key);
    let mut copy_con = copy.client();
    let counter: u64 = query(&mut copy_con, redis::cmd("GET").arg("counter"));
    let events: u64 = query(&mut copy_con, redis::cmd("LLEN").arg("events"));
    assert_eq!(counter, events, "the snapshot split a transaction");
    assert!(
        counter > 0,
        "the snapshot should hold writes from before it"
    );
    assert!(
        rounds > counter,
        "writes went on after the fork: {rounds} > {counter}"
    );
    let keys: u64 = query(&mut copy_con, &mut redis::cmd("DBSIZE"));
    assert_eq!(manifest.keys, Some(keys));
}

#[test]
fn a_killed_redis_fails_the_snapshot_and_leaves_nothing_that_verifies() {
    let mut source = RedisServer::start(&[]);
    let mut con = source.client();
    let () = query(
        &mut con,
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(300_000)
            .arg("big")
            .arg(200),
    );
    // About 3 seconds of serialisation: long enough to kill the server half-way.
    let () = query(
        &mut con,
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("rdb-key-save-delay")
            .arg(10),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let snapshot = {
        let store = store.clone();
        let key = key.clone();
        let target = target(&source);
        std::thread::spawn(move || store.snapshot_redis(&target, &key, &SnapshotOptions::default()))
    };
    // Kill it once part of the RDB has arrived.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let partial_bytes: u64 = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        if partial_bytes > 256 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "no data arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    source.kill();
    let err = snapshot.join().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Source(SnapshotError::ConnectionLost { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("lost the connection"), "{err}");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(matches!(
        store.resolve("latest"),
        Err(VerifyError::Empty { .. })
    ));
    let listing = store.list().unwrap();
    assert!(listing.snapshots.is_empty() && listing.problems.is_empty());
}

fn titan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_titan-dr"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running titan-dr")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The folder's files and their contents, to show that nothing changed.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_cli_names_every_kind_of_damage_and_restore_leaves_the_target_redis_alone() {
    let source = RedisServer::start(&["--requirepass", "pw"]);
    let () = query(
        &mut source.client(),
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(5000)
            .arg("k")
            .arg(32),
    );
    let work = tempfile::tempdir().unwrap();
    let backups = work.path().join("backups");
    let key_file = work.path().join("key.txt");
    let password_file = work.path().join("password");
    fs::write(&password_file, "pw\n").unwrap();
    let out = titan(&["backup", "keygen", "--output", key_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let dir = backups.to_str().unwrap();
    let keys = key_file.to_str().unwrap();
    let out = titan(&[
        "backup",
        "snapshot",
        "--redis",
        &source.address(),
        "--password-file",
        password_file.to_str().unwrap(),
        "--dir",
        dir,
        "--key-file",
        keys,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("5000 keys"), "{}", text(&out));
    let out = titan(&["backup", "list", "--dir", dir]);
    assert!(
        out.status.success() && text(&out).contains("redis"),
        "{}",
        text(&out)
    );
    let out = titan(&["backup", "verify", "--dir", dir, "--key-file", keys]);
    assert!(
        out.status.success() && text(&out).contains("OK "),
        "{}",
        text(&out)
    );

    // The target: a running Redis whose data dir holds its own dump.rdb.
    let target = RedisServer::start(&[]);
    let () = query(
        &mut target.client(),
        redis::cmd("SET").arg("precious").arg("yes"),
    );
    let () = query(&mut target.client(), &mut redis::cmd("SAVE"));
    let target_dump = target.dir.join("dump.rdb");
    let target_files = contents(&target.dir);

    let store = Store::open(&backups).unwrap();
    let manifest: Manifest = store.list().unwrap().snapshots.remove(0);
    let data = backups.join(&manifest.file);
    let original = fs::read(&data).unwrap();
    let other_key = work.path().join("other.txt");
    fs::write(&other_key, BackupKey::generate().to_key_file()).unwrap();

    let check = |what: &str, key: &str, expect: &str| {
        let out = titan(&[
            "backup",
            "verify",
            "--dir",
            dir,
            "--key-file",
            key,
            &manifest.id,
        ]);
        assert!(!out.status.success(), "{what}: verify passed");
        assert!(text(&out).contains(expect), "{what}: {}", text(&out));
        assert!(text(&out).contains(&manifest.id), "{what}: {}", text(&out));
        let out = titan(&[
            "backup",
            "restore",
            "--dir",
            dir,
            "--key-file",
            key,
            "--snapshot",
            &manifest.id,
            "--to",
            target_dump.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{what}: restore went ahead");
        assert!(text(&out).contains(expect), "{what}: {}", text(&out));
        assert!(text(&out).contains("untouched"), "{what}: {}", text(&out));
        assert_eq!(
            contents(&target.dir),
            target_files,
            "{what}: the target changed"
        );
        let value: String = query(&mut target.client(), redis::cmd("GET").arg("precious"));
        assert_eq!(value, "yes");
    };

    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x20;
    fs::write(&data, &flipped).unwrap();
    check("a flipped byte", keys, "does not match its SHA-256");

    fs::write(&data, &original[..original.len() / 3]).unwrap();
    check("a truncated file", keys, "truncated");

    fs::write(&data, &original).unwrap();
    check("a wrong key", other_key.to_str().unwrap(), "wrong key");

    let manifest_path = backups.join(Manifest::file_name(&manifest.id));
    let manifest_text = fs::read(&manifest_path).unwrap();
    fs::remove_file(&manifest_path).unwrap();
    check("a missing manifest", keys, "manifest");
    let out = titan(&["backup", "list", "--dir", dir]);
    assert!(text(&out).contains("INCOMPLETE"), "{}", text(&out));

    // Intact again: restore goes ahead and the file is the snapshot's RDB.
    fs::write(&manifest_path, manifest_text).unwrap();
    let restored = work.path().join("restored.rdb");
    let out = titan(&[
        "backup",
        "restore",
        "--dir",
        dir,
        "--key-file",
        keys,
        "--to",
        restored.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sha256_hex(&fs::read(&restored).unwrap()),
        manifest.plaintext.sha256
    );
}

#[test]
fn a_full_disk_fails_the_snapshot_and_leaves_nothing() {
    // A 1 MiB tmpfs in a private mount namespace; skipped where one cannot be made.
    let probe = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        eprintln!("skipped: cannot mount a tmpfs in a private mount namespace here");
        return;
    }
    let source = RedisServer::start(&["--rdbcompression", "no"]);
    let () = query(
        &mut source.client(),
        redis::cmd("DEBUG")
            .arg("POPULATE")
            .arg(50_000)
            .arg("k")
            .arg(100),
    );
    let work = tempfile::tempdir().unwrap();
    let key_file = work.path().join("key.txt");
    fs::write(&key_file, BackupKey::generate().to_key_file()).unwrap();
    let mount = work.path().join("small");
    fs::create_dir(&mount).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs '{m}' && mkdir '{m}/redis' && \
         '{bin}' backup snapshot --redis {addr} --dir '{m}/redis' --key-file '{k}'; \
         status=$?; echo \"left: $(ls -A '{m}/redis' | wc -l)\"; exit $status",
        m = mount.display(),
        bin = env!("CARGO_BIN_EXE_titan-dr"),
        addr = source.address(),
        k = key_file.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is full"), "{}", text(&out));
    assert!(text(&out).contains("left: 0"), "{}", text(&out));
}

/// A password that breaks any `redis://` URL built by concatenation.
const AWKWARD_PASSWORD: &str = "p/w%2F#frag@x";

#[test]
fn a_replication_restore_replaces_a_running_redis_and_skips_a_tampered_newest_snapshot() {
    let source = RedisServer::start(&[]);
    load_every_type(&source);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backups");
    let key_file = work.path().join("key.txt");
    let key = BackupKey::generate();
    fs::write(&key_file, key.to_key_file()).unwrap();
    let store = Store::open(&dir).unwrap();
    let older = store
        .snapshot_redis(&target(&source), &key, &SnapshotOptions::default())
        .unwrap();
    let older_data = dataset(&mut source.client());
    // IDs are start seconds: the newer snapshot starts in the next one.
    std::thread::sleep(Duration::from_millis(1100));
    let () = query(
        &mut source.client(),
        redis::cmd("SET").arg("only-in-the-newer").arg("1"),
    );
    let newer = store
        .snapshot_redis(&target(&source), &key, &SnapshotOptions::default())
        .unwrap();
    assert!(newer.id > older.id);

    // The Redis restored to runs, with a password, its own data and its own dump.rdb.
    let restored = RedisServer::start(&["--requirepass", AWKWARD_PASSWORD]);
    let () = query(
        &mut restored.client(),
        redis::cmd("SET").arg("precious").arg("yes"),
    );
    let password_file = work.path().join("password");
    fs::write(&password_file, format!("{AWKWARD_PASSWORD}\n")).unwrap();
    let restore = |snapshot: &str| {
        titan(&[
            "backup",
            "restore",
            "--dir",
            dir.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--snapshot",
            snapshot,
            "--replicate-to",
            &restored.address(),
            "--advertise-host",
            "127.0.0.1",
            "--check-password-file",
            password_file.to_str().unwrap(),
        ])
    };

    let out = restore("latest");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("promoted"), "{}", text(&out));
    assert_same_data(&source, &restored, &[0, 1]);
    let role: Vec<Value> = query(&mut restored.client(), &mut redis::cmd("ROLE"));
    assert_eq!(
        role[0],
        Value::BulkString(b"master".to_vec()),
        "promoted back"
    );
    let masterauth: Vec<String> = query(
        &mut restored.client(),
        redis::cmd("CONFIG").arg("GET").arg("masterauth"),
    );
    assert_eq!(masterauth[1], "", "the one-time secret is not left behind");
    // Saved into its own data dir: a restart comes back with the restored data.
    let () = query(&mut restored.client(), &mut redis::cmd("SAVE"));
    let dump = fs::read(restored.dir.join("dump.rdb")).unwrap();
    let info = titan_dr::redis::rdb::scan(&dump[..]).unwrap();
    assert_eq!(info.total_keys(), newer.keys.unwrap());

    // The newest snapshot tampered with: `latest` names it, refuses it and restores the
    // previous one, which verifies.
    let newer_file = dir.join(&newer.file);
    let original = fs::read(&newer_file).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 1;
    fs::write(&newer_file, &flipped).unwrap();
    let out = restore("latest");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("refusing snapshot {}", newer.id)),
        "{}",
        text(&out)
    );
    assert_eq!(dataset(&mut restored.client()), older_data);

    // Named explicitly, a tampered snapshot is refused with no fallback, and Redis is
    // untouched.
    let () = query(
        &mut restored.client(),
        redis::cmd("SET").arg("precious").arg("still"),
    );
    let before = dataset(&mut restored.client());
    let out = restore(&newer.id);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SHA-256"), "{}", text(&out));
    assert_eq!(dataset(&mut restored.client()), before);

    // Every snapshot tampered with: nothing is restored.
    let older_file = dir.join(&older.file);
    let mut older_bytes = fs::read(&older_file).unwrap();
    let last = older_bytes.len() - 1;
    older_bytes[last] ^= 1;
    fs::write(&older_file, &older_bytes).unwrap();
    let out = restore("latest");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no snapshot verified (2 refused)"),
        "{}",
        text(&out)
    );
    assert_eq!(dataset(&mut restored.client()), before);
}

/// `titan-dr` with the S3 server's credentials in the environment, as the AWS tools take them.
fn titan_s3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_titan-dr"))
        .args(args)
        .env("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", s3_server::SECRET_KEY)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running titan-dr")
}

#[test]
fn a_snapshot_in_object_storage_is_restored_from_there_when_the_volume_is_gone() {
    let s3 = s3_server::S3Server::start();
    let endpoint = s3.endpoint();
    let url = format!("s3://{}/titan/redis", s3_server::BUCKET);
    let server = RedisServer::start(&[]);
    load_every_type(&server);
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("key.txt");
    fs::write(&key, BackupKey::generate().to_key_file()).unwrap();
    let (key, volume) = (key.to_str().unwrap(), work.path().join("volume"));
    let s3_args = ["--s3", &url, "--s3-endpoint", &endpoint];

    let address = server.address();
    let mut snapshot = vec!["backup", "snapshot", "--redis", &address, "--key-file", key];
    snapshot.extend(["--dir", volume.to_str().unwrap()]);
    snapshot.extend(s3_args);
    let out = titan_s3(&snapshot);
    assert!(out.status.success(), "{}\n{}", text(&out), s3.log());
    assert!(text(&out).contains(&format!("to {url}")), "{}", text(&out));
    let manifest = Store::open(&volume).unwrap().list().unwrap().snapshots[0].clone();

    // The volume dies with the cluster: what is in object storage is all there is.
    fs::remove_dir_all(&volume).unwrap();
    let restored = work.path().join("restored.rdb");
    let mut restore = vec!["backup", "restore", "--key-file", key];
    restore.extend(["--to", restored.to_str().unwrap()]);
    restore.extend(["--work-dir", work.path().to_str().unwrap()]);
    restore.extend(s3_args);
    let out = titan_s3(&restore);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sha256_hex(&fs::read(&restored).unwrap()),
        manifest.plaintext.sha256,
        "the restored RDB is the snapshot's"
    );

    // Listed and verified there too, with no folder at all.
    let mut list = vec!["backup", "list"];
    list.extend(s3_args);
    let out = titan_s3(&list);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&manifest.id), "{}", text(&out));
    let mut verify = vec!["backup", "verify", "--key-file", key];
    verify.extend(["--work-dir", work.path().to_str().unwrap()]);
    verify.extend(s3_args);
    let out = titan_s3(&verify);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("OK {}", manifest.id)),
        "{}",
        text(&out)
    );

    // A second folder's snapshots are pushed; what is there already is not copied again.
    let other = work.path().join("other");
    let mut second = vec!["backup", "snapshot", "--redis", &address, "--key-file", key];
    second.extend(["--dir", other.to_str().unwrap()]);
    let out = titan_s3(&second);
    assert!(out.status.success(), "{}", text(&out));
    let mut push = vec!["backup", "push", "--dir", other.to_str().unwrap()];
    push.extend(s3_args);
    let out = titan_s3(&push);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("copied 1 snapshot(s)"),
        "{}",
        text(&out)
    );
    let out = titan_s3(&push);
    assert!(
        text(&out).contains("copied 0 snapshot(s)"),
        "{}",
        text(&out)
    );

    // Without credentials, the command says what it lacks.
    let out = titan(&restore);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("AWS_ACCESS_KEY_ID"), "{}", text(&out));
}
