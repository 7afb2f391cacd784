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
    assert!(matches!(err, VerifyError::NotAuthentic { .. }), "{err}");
    // Made by the key holder (a writer's bug, not a forgery): caught after decryption.
    lying.mac = key.mac(&lying.authenticated_bytes());
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

/// What someone who can write the store but holds only the public recipient can make: a
/// valid age file of their own content, and a manifest whose checksums match it.
fn forge(store: &Store, genuine: &Manifest, content: &[u8]) {
    let recipient: age::x25519::Recipient = genuine.encryption.recipient.parse().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut encrypted = Vec::new();
    let mut writer = encryptor.wrap_output(&mut encrypted).unwrap();
    writer.write_all(content).unwrap();
    writer.finish().unwrap();
    let sha = |bytes: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    let mut forged = genuine.clone();
    forged.size_bytes = encrypted.len() as u64;
    forged.sha256 = sha(&encrypted);
    forged.plaintext.size_bytes = content.len() as u64;
    forged.plaintext.sha256 = sha(content);
    fs::write(store.dir().join(&forged.file), &encrypted).unwrap();
    let manifest = store.dir().join(Manifest::file_name(&forged.id));
    fs::write(manifest, serde_json::to_vec(&forged).unwrap()).unwrap();
}

#[test]
fn a_snapshot_forged_with_the_public_recipient_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let genuine = put(&store, &key, 0, &content(1000));
    forge(&store, &genuine, b"FLUSHALL");
    let err = store.verify(&genuine.id, &key).unwrap_err();
    assert!(matches!(err, VerifyError::NotAuthentic { .. }), "{err}");
    assert!(err.to_string().contains("forged"), "{err}");
    let target = dir.path().join("restored");
    assert!(store.restore(&genuine.id, &key, &target).is_err());
    assert!(!target.exists(), "nothing restored");
}

#[test]
fn a_manifest_without_a_mac_from_format_1_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let key = BackupKey::generate();
    let m = put(&store, &key, 0, &content(100));
    let path = dir.path().join(Manifest::file_name(&m.id));
    let mut old: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    old["format"] = 1.into();
    old.as_object_mut().unwrap().remove("mac");
    fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
    let err = store.verify(&m.id, &key).unwrap_err();
    assert!(
        err.to_string().contains("format version 1 has no MAC"),
        "{err}"
    );
}

fn owner(namespace: &str, uid: &str) -> manifest::Owner {
    manifest::Owner {
        namespace: namespace.into(),
        name: "redis".into(),
        uid: uid.into(),
    }
}

#[test]
fn a_backup_store_keeps_lists_and_prunes_only_its_own_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let key = BackupKey::generate();
    let ours = Store::owned(dir.path(), owner("titan", "1")).unwrap();
    let theirs = Store::owned(dir.path(), owner("other", "2")).unwrap();
    let mine = put(&ours, &key, 0, b"ours");
    assert_eq!(mine.owner, Some(owner("titan", "1")));
    let foreign = put(&theirs, &key, 60, b"theirs");

    let listing = ours.list().unwrap();
    let ids: Vec<&str> = listing.snapshots.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [mine.id.as_str()],
        "the other Backup's snapshot is not ours"
    );
    assert!(matches!(
        listing.problems[..],
        [VerifyError::ForeignOwner { .. }]
    ));
    let err = ours.verify(&foreign.id, &key).unwrap_err();
    assert!(
        err.to_string()
            .contains("belongs to Backup other/redis (uid 2), not to Backup titan/redis (uid 1)"),
        "{err}"
    );

    // Were the other Backup's newer snapshot a candidate, keepLast 1 would keep it alone.
    let second = put(&ours, &key, 30, b"ours again");
    let keep_one = RetentionPolicy {
        keep_last: Some(1),
        max_age: None,
    };
    assert_eq!(ours.prune(&keep_one, at(120)).unwrap(), [mine.id]);
    let kept: Vec<String> = ours
        .list()
        .unwrap()
        .snapshots
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(kept, [second.id]);
    let left: Vec<String> = theirs
        .list()
        .unwrap()
        .snapshots
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        left,
        [foreign.id],
        "retention never deletes another Backup's snapshot"
    );
}
