//! The store on content of its own (a configuration-like archive), without Redis: the
//! Redis path is covered against a real server in `tests/backup_store.rs`.

use std::fs;
use std::io::Write;
use std::path::Path;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::*;

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_795_000_000 + seconds).unwrap()
}

/// A committed configuration snapshot started at `at(seconds)`.
fn put(store: &Store, key: &BackupKey, seconds: i64, data: &[u8]) -> Manifest {
    let mut writer = store
        .begin(SnapshotKind::Configuration, at(seconds), key)
        .unwrap();
    writer.write_all(data).unwrap();
    writer.details_mut().insert(
        "objects".into(),
        serde_json::json!(["configmap/a", "configmap/b", "secret/c"]),
    );
    writer.commit(Some(3), None).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_snapshot_round_trips_and_is_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let data = content(300_000);
    put(&store, &key, 0, b"older");
    let manifest = put(&store, &key, 60, &data);
    assert_eq!(manifest.file, format!("{}.tar.age", manifest.id));
    assert_eq!(manifest.plaintext.size_bytes, data.len() as u64);
    assert_eq!(manifest.details["objects"][2], "secret/c");

    let listing = store.list().unwrap();
    assert!(listing.problems.is_empty());
    let ids: Vec<&str> = listing.snapshots.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [manifest.id.as_str(), &listing.snapshots[1].id]);
    assert_eq!(store.resolve("latest").unwrap(), manifest.id);

    store.verify(&manifest.id, &key).unwrap();
    let target = dir.path().join("restored.tar");
    store.restore(&manifest.id, &key, &target).unwrap();
    assert_eq!(fs::read(&target).unwrap(), data);

    let status = manifest.to_status("config");
    assert_eq!(status.location, format!("config/{}", manifest.file));
    assert_eq!(status.sha256, manifest.sha256);
}

/// Restore must refuse and leave the target as it was.
fn assert_refused(store: &Store, id: &str, key: &BackupKey, expect: &str) {
    let target_dir = tempfile::tempdir().unwrap();
    let target = target_dir.path().join("dump.rdb");
    fs::write(&target, b"the live data").unwrap();
    let err = store.restore(id, key, &target).unwrap_err();
    assert!(err.to_string().contains(expect), "{err}");
    assert!(err.to_string().contains(id), "{err}");
    assert_eq!(fs::read(&target).unwrap(), b"the live data");
    assert_eq!(files(target_dir.path()), ["dump.rdb"]);
}

#[test]
fn damage_is_named_by_verify_and_refused_by_restore() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let m = put(&store, &key, 0, &content(200_000));
    let path = dir.path().join(&m.file);
    let original = fs::read(&path).unwrap();

    // A flipped byte in the middle of the ciphertext.
    let mut flipped = original.clone();
    flipped[100_000] ^= 0x01;
    fs::write(&path, &flipped).unwrap();
    let err = store.verify(&m.id, &key).unwrap_err();
    assert!(matches!(err, VerifyError::ChecksumMismatch { .. }), "{err}");
    assert_refused(&store, &m.id, &key, "does not match its SHA-256");

    // A truncated file.
    fs::write(&path, &original[..original.len() - 1000]).unwrap();
    let err = store.verify(&m.id, &key).unwrap_err();
    assert!(matches!(err, VerifyError::Truncated { .. }), "{err}");
    assert_refused(&store, &m.id, &key, "truncated");

    // The wrong key.
    fs::write(&path, &original).unwrap();
    let other = BackupKey::generate();
    let err = store.verify(&m.id, &other).unwrap_err();
    assert!(matches!(err, VerifyError::WrongKey { .. }), "{err}");
    assert_refused(&store, &m.id, &other, "wrong key");

    // A missing manifest.
    store.verify(&m.id, &key).unwrap();
    fs::remove_file(dir.path().join(Manifest::file_name(&m.id))).unwrap();
    assert_eq!(store.resolve("latest").unwrap(), m.id);
    let err = store.verify(&m.id, &key).unwrap_err();
    assert!(matches!(err, VerifyError::MissingManifest { .. }), "{err}");
    assert_refused(&store, &m.id, &key, "manifest");
    let listing = store.list().unwrap();
    assert!(listing.snapshots.is_empty());
    assert_eq!(listing.problems.len(), 1);
}

#[test]
fn a_manifest_that_lies_about_the_content_is_caught_after_decryption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let m = put(&store, &key, 0, &content(1000));
    let manifest_path = dir.path().join(Manifest::file_name(&m.id));
    let mut lying = m.clone();
    lying.plaintext.sha256 = "00".repeat(32);
    fs::write(&manifest_path, serde_json::to_vec(&lying).unwrap()).unwrap();
    let err = store.verify(&m.id, &key).unwrap_err();
    assert!(matches!(err, VerifyError::ContentMismatch { .. }), "{err}");

    fs::write(&manifest_path, b"{not json").unwrap();
    let err = store.verify(&m.id, &key).unwrap_err();
    assert!(matches!(err, VerifyError::BadManifest { .. }), "{err}");
}

#[test]
fn an_uncommitted_snapshot_leaves_nothing_and_ids_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    {
        let mut writer = store.begin(SnapshotKind::Redis, at(0), &key).unwrap();
        writer.write_all(&content(10_000)).unwrap();
        // A second writer of the same second is refused while the first is open.
        let second = store.begin(SnapshotKind::Redis, at(0), &key);
        assert!(matches!(second, Err(StoreError::Exists { .. })));
    }
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    assert!(matches!(
        store.resolve("latest"),
        Err(VerifyError::Empty { .. })
    ));

    put(&store, &key, 0, b"x");
    let again = store.begin(SnapshotKind::Configuration, at(0), &key);
    assert!(matches!(again, Err(StoreError::Exists { .. })));
}

#[test]
fn prune_deletes_what_retention_drops() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    for minute in 0..5 {
        put(&store, &key, minute * 60, b"data");
    }
    // keepLast 3 drops the two oldest; maxAge 100s at 250s also drops the one of 120s.
    let policy = RetentionPolicy {
        keep_last: Some(3),
        max_age: Some(std::time::Duration::from_secs(100)),
    };
    let now = at(4 * 60) + SignedDuration::from_secs(10);
    let dropped = store.select_pruned(&policy, now).unwrap();
    let expected: Vec<String> = [0, 60, 120]
        .iter()
        .map(|&s| manifest::snapshot_id(at(s)))
        .collect();
    assert_eq!(dropped, expected);
    let deleted = store.prune(&policy, now).unwrap();
    assert_eq!(deleted, dropped);
    assert_eq!(store.list().unwrap().snapshots.len(), 2);
    assert_eq!(files(dir.path()).len(), 4);
}

#[test]
fn invalid_ids_are_refused_before_any_file_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for bad in ["../x", "2026", "20261125T020000Z/.."] {
        assert!(matches!(
            store.resolve(bad),
            Err(VerifyError::InvalidId { .. })
        ));
    }
    assert!(matches!(
        store.resolve("20261125T020000Z"),
        Err(VerifyError::NotFound { .. })
    ));
}

#[test]
fn a_full_disk_is_named_as_such() {
    let err = StoreError::io(
        "writing",
        std::io::Error::from_raw_os_error(libc::ENOSPC),
        Path::new("/backups/redis"),
    );
    assert!(matches!(err, StoreError::DiskFull { .. }));
    assert!(err.to_string().contains("full"), "{err}");
}
