//! Snapshots arriving from snapshot Jobs: `PUT .../snapshots/{file}`, the data file first and
//! the manifest last, as the store writes its own.
//!
//! A data file is kept under a partial name until its manifest arrives; the manifest is
//! accepted only if it names this Backup as owner and the received file's size and SHA-256
//! (of the ciphertext, checkable without the key) are the ones it records. Then the data file
//! is renamed into place and the manifest written beside it: a Job killed at any point leaves
//! only partial files, which neither `latest` nor retention counts, and which the next
//! attempt removes. A snapshot present is never replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

use http_body_util::BodyExt;
use hyper::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::Refusal;
use crate::backup::manifest::{Manifest, Owner, SnapshotKind, is_snapshot_id};

/// A manifest is a few KiB; anything far larger is not one.
const MANIFEST_LIMIT: usize = 1 << 20;

/// What a file name in an upload is.
#[derive(Debug, PartialEq, Eq)]
enum Upload {
    Data { id: String },
    Manifest { id: String },
}

fn classify(file: &str) -> Result<Upload, Refusal> {
    let refuse = || {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("{file:?} is not a snapshot file name (<id>.manifest.json or <id>.<kind>.age)"),
        )
    };
    let (id, suffix) = file.split_once('.').ok_or_else(refuse)?;
    if !is_snapshot_id(id) {
        return Err(refuse());
    }
    let id = id.to_owned();
    if suffix == "manifest.json" {
        return Ok(Upload::Manifest { id });
    }
    if SnapshotKind::all().iter().any(|k| k.extension() == suffix) {
        return Ok(Upload::Data { id });
    }
    Err(refuse())
}

/// Where a data file waits for its manifest.
fn pending(dir: &Path, file: &str) -> PathBuf {
    dir.join(format!(".{file}.upload.partial"))
}

/// Receives `file` of a snapshot of `owner` into the store folder `dir`.
pub(super) async fn receive<B>(
    dir: &Path,
    owner: &Owner,
    file: &str,
    body: B,
) -> Result<String, Refusal>
where
    B: hyper::body::Body<Data = hyper::body::Bytes>,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let upload = classify(file)?;
    if dir.join(file).exists() {
        return Err(Refusal(
            StatusCode::CONFLICT,
            format!("{file} exists: a stored snapshot is never replaced"),
        ));
    }
    tokio::fs::create_dir_all(dir).await.map_err(internal)?;
    match upload {
        Upload::Data { id } => {
            let path = pending(dir, file);
            let written = write_body(&path, body).await;
            if written.is_err() {
                let _ = tokio::fs::remove_file(&path).await;
            }
            let bytes = written?;
            Ok(format!(
                "received {bytes} bytes of snapshot {id}; send its manifest"
            ))
        }
        Upload::Manifest { id } => {
            let bytes = read_limited(body).await?;
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                Refusal(
                    StatusCode::BAD_REQUEST,
                    format!("{file} is no manifest: {e}"),
                )
            })?;
            let dir = dir.to_owned();
            let owner = owner.clone();
            tokio::task::spawn_blocking(move || commit(&dir, &owner, &id, &manifest, &bytes))
                .await
                .map_err(internal)?
        }
    }
}

/// Streams the body into a new file, fsynced; returns its length.
async fn write_body<B>(path: &Path, body: B) -> Result<u64, Refusal>
where
    B: hyper::body::Body<Data = hyper::body::Bytes>,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut out = tokio::fs::File::create(path).await.map_err(internal)?;
    let mut body = std::pin::pin!(body);
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Refusal(
                StatusCode::BAD_REQUEST,
                format!("the upload broke off after {length} bytes: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            length += data.len() as u64;
            out.write_all(&data).await.map_err(internal)?;
        }
    }
    out.sync_all().await.map_err(internal)?;
    Ok(length)
}

async fn read_limited<B>(body: B) -> Result<Vec<u8>, Refusal>
where
    B: hyper::body::Body<Data = hyper::body::Bytes>,
    B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, MANIFEST_LIMIT);
    let collected = limited.collect().await.map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("reading the manifest (at most {MANIFEST_LIMIT} bytes): {e}"),
        )
    })?;
    Ok(collected.to_bytes().to_vec())
}

/// Checks the manifest against its owner and the received data file, then puts both in place:
/// the data file first, the manifest (the commit) last.
fn commit(
    dir: &Path,
    owner: &Owner,
    id: &str,
    manifest: &Manifest,
    bytes: &[u8],
) -> Result<String, Refusal> {
    let refuse = |why: String| Refusal(StatusCode::UNPROCESSABLE_ENTITY, why);
    if manifest.id != id || !manifest.file.starts_with(&format!("{id}.")) {
        return Err(refuse(format!(
            "the manifest of {id} describes snapshot {} ({})",
            manifest.id, manifest.file
        )));
    }
    if classify(&manifest.file)? != (Upload::Data { id: id.to_owned() }) {
        return Err(refuse(format!(
            "the manifest names a data file {:?}",
            manifest.file
        )));
    }
    if manifest.owner.as_ref() != Some(owner) {
        let named = manifest
            .owner
            .as_ref()
            .map_or("no owner".into(), |o| o.to_string());
        return Err(refuse(format!(
            "the manifest of {id} names {named}, not {owner}"
        )));
    }
    let data = pending(dir, &manifest.file);
    let (size, sha256) = digest(&data).map_err(|e| {
        refuse(format!(
            "no data file {} was received before its manifest: {e}",
            manifest.file
        ))
    })?;
    if size != manifest.size_bytes || sha256 != manifest.sha256 {
        return Err(refuse(format!(
            "{} arrived as {size} bytes with SHA-256 {sha256}; its manifest records {} bytes \
             with SHA-256 {}",
            manifest.file, manifest.size_bytes, manifest.sha256
        )));
    }
    std::fs::rename(&data, dir.join(&manifest.file)).map_err(internal)?;
    let staged = dir.join(format!(".{id}.manifest.json.upload.partial"));
    let mut out = std::fs::File::create(&staged).map_err(internal)?;
    out.write_all(bytes)
        .and_then(|()| out.sync_all())
        .map_err(internal)?;
    std::fs::rename(&staged, dir.join(Manifest::file_name(id))).map_err(internal)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(internal)?;
    Ok(format!("stored snapshot {id}"))
}

fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    Ok((size, hex::encode(hasher.finalize())))
}

fn internal(error: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupKey, Store};
    use http_body_util::Full;
    use hyper::body::Bytes;

    fn owner(name: &str) -> Owner {
        Owner {
            namespace: "titan".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    /// A real snapshot in its own folder, as a Job would have it before pushing.
    fn snapshot(dir: &Path, owner: &Owner) -> (Manifest, BackupKey) {
        let key = BackupKey::generate();
        let store = Store::owned(dir, owner.clone()).unwrap();
        let mut writer = store.begin_now(SnapshotKind::Configuration, &key).unwrap();
        writer.write_all(b"some configuration").unwrap();
        (writer.commit(Some(1), None).unwrap(), key)
    }

    async fn put(dir: &Path, owner: &Owner, file: &str, bytes: Vec<u8>) -> Result<String, Refusal> {
        receive(dir, owner, file, Full::new(Bytes::from(bytes))).await
    }

    #[tokio::test]
    async fn a_pushed_snapshot_appears_only_with_its_manifest_and_then_verifies() {
        let (job, volume) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let me = owner("config");
        let (manifest, key) = snapshot(job.path(), &me);
        let data = std::fs::read(job.path().join(&manifest.file)).unwrap();
        put(volume.path(), &me, &manifest.file, data).await.unwrap();
        let store = Store::owned(volume.path(), me.clone()).unwrap();
        assert!(
            store.ids().unwrap().is_empty(),
            "a data file without manifest is listed"
        );

        let manifest_file = Manifest::file_name(&manifest.id);
        let text = std::fs::read(job.path().join(&manifest_file)).unwrap();
        put(volume.path(), &me, &manifest_file, text.clone())
            .await
            .unwrap();
        assert_eq!(store.ids().unwrap(), vec![manifest.id.clone()]);
        store.verify(&manifest.id, &key).unwrap();

        let again = put(volume.path(), &me, &manifest_file, text).await;
        assert_eq!(again.unwrap_err().0, StatusCode::CONFLICT);
    }

    #[tokio::test]
    async fn a_manifest_of_another_owner_or_other_bytes_is_refused_and_nothing_is_stored() {
        let (job, volume) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (me, them) = (owner("config"), owner("other"));
        let (manifest, _) = snapshot(job.path(), &them);
        let data = std::fs::read(job.path().join(&manifest.file)).unwrap();
        let manifest_file = Manifest::file_name(&manifest.id);
        let text = std::fs::read(job.path().join(&manifest_file)).unwrap();

        put(volume.path(), &me, &manifest.file, data.clone())
            .await
            .unwrap();
        let foreign = put(volume.path(), &me, &manifest_file, text.clone()).await;
        let Refusal(status, why) = foreign.unwrap_err();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(why.contains("not Backup titan/config"), "{why}");

        // The right owner, but the data file cut short on the way.
        let short = data[..data.len() - 1].to_vec();
        put(volume.path(), &them, &manifest.file, short)
            .await
            .unwrap();
        let Refusal(_, why) = put(volume.path(), &them, &manifest_file, text)
            .await
            .unwrap_err();
        assert!(why.contains("its manifest records"), "{why}");
        let store = Store::owned(volume.path(), them).unwrap();
        assert!(store.ids().unwrap().is_empty());
    }

    #[test]
    fn only_snapshot_file_names_are_taken() {
        assert!(classify("20261202T040000Z.rdb.age").is_ok());
        assert!(classify("20261202T040000Z.manifest.json").is_ok());
        for bad in [
            "../x.rdb.age",
            "20261202T040000Z.sh",
            ".20261202T040000Z.rdb.age",
            "x",
        ] {
            let Refusal(status, why) = classify(bad).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(why.contains(bad), "{why}");
        }
    }
}
