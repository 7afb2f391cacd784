//! Writing a snapshot: plaintext in, encrypted (age, to the key's recipient) and hashed on
//! its way to a partial file; committed by fsyncing and renaming the data file and then the
//! manifest into place. Until then nothing is a snapshot, and an abandoned writer removes
//! what it wrote.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{Cleanup, FILE_BUFFER, PARTIAL, Store, database_keys, sync_dir};
use crate::backup::error::StoreError;
use crate::backup::key::BackupKey;
use crate::backup::manifest::{
    Content, EncryptionInfo, FORMAT_VERSION, Manifest, Owner, RedisDetails, SnapshotKind,
    snapshot_id,
};
use crate::redis::{self, KeyCount, RedisTarget, SnapshotOptions};

impl Store {
    /// Takes a snapshot of a Redis server into the store. Blocking; returns once the
    /// snapshot is checked (complete, CRC64 valid), encrypted, fsynced and committed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Source`] for anything on the Redis side (unreachable, auth failed,
    /// refused, connection lost, bad RDB), [`StoreError::DiskFull`], [`StoreError::Exists`],
    /// [`StoreError::Io`]. No file that looks like a snapshot is left behind.
    pub fn snapshot_redis(
        &self,
        target: &RedisTarget,
        key: &BackupKey,
        options: &SnapshotOptions,
    ) -> Result<Manifest, StoreError> {
        let mut writer = self.begin_now(SnapshotKind::Redis, key)?;
        writer.source = target.address.clone();
        let snapshot = match redis::snapshot_to(target, options, &mut writer) {
            Ok(snapshot) => snapshot,
            Err(redis::SnapshotError::Destination(err)) => {
                return Err(StoreError::io("writing the snapshot", err, &self.dir));
            }
            Err(err) => return Err(StoreError::Source(err)),
        };
        let keys = snapshot.info.total_keys();
        let (replication_id, replication_offset) = snapshot.replication.clone().unzip();
        let details = RedisDetails {
            source: target.address.clone(),
            rdb_version: snapshot.info.version,
            redis_version: snapshot.info.aux.get("redis-ver").cloned(),
            crc64: snapshot.crc64.map(|crc| format!("{crc:016x}")),
            databases: database_keys(&snapshot.info),
            key_count: key_count_text(&snapshot.info.key_count),
            functions: snapshot.info.functions,
            replication_id,
            replication_offset,
            diskless: snapshot.diskless,
        };
        writer.commit(Some(keys), Some(details))
    }

    /// Starts a snapshot of any kind; write the plaintext into the returned writer, then
    /// [`SnapshotWriter::commit`]. Dropping it uncommitted removes what was written. This
    /// is how a configuration archive (a tar stream) goes into the store.
    ///
    /// # Errors
    ///
    /// [`StoreError::Exists`] when a snapshot with this start second exists or is being
    /// written; [`StoreError::Io`] or [`StoreError::DiskFull`].
    pub fn begin(
        &self,
        kind: SnapshotKind,
        started_at: Timestamp,
        key: &BackupKey,
    ) -> Result<SnapshotWriter, StoreError> {
        let id = snapshot_id(started_at);
        if self.ids_present()?.contains(&id) {
            return Err(StoreError::Exists { id });
        }
        let file = format!("{id}.{}", kind.extension());
        let partial = self.dir.join(format!(".{file}{PARTIAL}"));
        // `create_new` makes a second writer of the same ID fail here rather than clobber.
        let output = match File::options().write(true).create_new(true).open(&partial) {
            Ok(output) => output,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists { id });
            }
            Err(err) => {
                let context = format!("creating {}", partial.display());
                return Err(StoreError::io(context, err, &self.dir));
            }
        };
        let cleanup = Cleanup(vec![partial.clone()]);
        let hashed = HashingWriter::new(BufWriter::with_capacity(FILE_BUFFER, output));
        let stream = key.encryptor().wrap_output(hashed).map_err(|err| {
            StoreError::io(format!("writing {}", partial.display()), err, &self.dir)
        })?;
        Ok(SnapshotWriter {
            dir: self.dir.clone(),
            id,
            kind,
            file,
            started_at,
            key: key.clone(),
            owner: self.owner.clone(),
            source: String::new(),
            stream: Some(stream),
            plaintext: Sha256::new(),
            plaintext_bytes: 0,
            details: Default::default(),
            cleanup: cleanup.keep(),
        })
    }

    /// [`Store::begin`] at the current time; when a snapshot already holds this second's
    /// ID, waits for the next second (a snapshot taken right after another one).
    ///
    /// # Errors
    ///
    /// As [`Store::begin`].
    pub fn begin_now(
        &self,
        kind: SnapshotKind,
        key: &BackupKey,
    ) -> Result<SnapshotWriter, StoreError> {
        let mut tries = 0;
        loop {
            let now = Timestamp::now();
            match self.begin(kind, now, key) {
                Err(StoreError::Exists { .. }) if tries < 2 => {
                    tries += 1;
                    let into_second = u64::from(now.subsec_nanosecond().unsigned_abs());
                    std::thread::sleep(Duration::from_nanos(1_000_000_000 - into_second));
                }
                other => return other,
            }
        }
    }
}

/// A snapshot being written: plaintext in, encrypted and hashed on its way to a partial
/// file. Commit to make it a snapshot; drop to discard it.
pub struct SnapshotWriter {
    dir: PathBuf,
    id: String,
    kind: SnapshotKind,
    file: String,
    started_at: Timestamp,
    /// Encrypts (its recipient) and authenticates (its MAC) the snapshot.
    key: BackupKey,
    owner: Option<Owner>,
    source: String,
    stream: Option<age::stream::StreamWriter<HashingWriter<BufWriter<File>>>>,
    plaintext: Sha256,
    plaintext_bytes: u64,
    details: BTreeMap<String, serde_json::Value>,
    /// Files to remove unless committed.
    cleanup: Vec<PathBuf>,
}

impl SnapshotWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What is being snapshotted, for the manifest.
    pub fn set_source(&mut self, source: impl Into<String>) {
        self.source = source.into();
    }

    /// Free-form details for the manifest (e.g. the objects of a configuration archive).
    pub fn details_mut(&mut self) -> &mut BTreeMap<String, serde_json::Value> {
        &mut self.details
    }

    /// Finishes the encryption, fsyncs, writes the manifest and renames both into place
    /// (data first, manifest last).
    ///
    /// # Errors
    ///
    /// [`StoreError::DiskFull`], [`StoreError::Io`]; nothing is left behind.
    pub fn commit(
        mut self,
        keys: Option<u64>,
        redis: Option<RedisDetails>,
    ) -> Result<Manifest, StoreError> {
        let dir = self.dir.clone();
        let partial_data = dir.join(format!(".{}{PARTIAL}", self.file));
        let io = |context: &str, err: io::Error| {
            StoreError::io(format!("{context} {}", partial_data.display()), err, &dir)
        };
        let stream = self
            .stream
            .take()
            .ok_or_else(|| io("writing", io::Error::other("the writer failed earlier")))?;
        let hashed = stream.finish().map_err(|err| io("writing", err))?;
        let (buffered, size_bytes, sha256) = hashed.finish();
        let output = buffered
            .into_inner()
            .map_err(|err| io("writing", err.into_error()))?;
        output.sync_all().map_err(|err| io("syncing", err))?;
        drop(output);

        let mut manifest = Manifest {
            format: FORMAT_VERSION,
            id: self.id.clone(),
            kind: self.kind,
            file: self.file.clone(),
            started_at: self.started_at,
            completed_at: Timestamp::now(),
            size_bytes,
            sha256,
            plaintext: Content {
                size_bytes: self.plaintext_bytes,
                sha256: hex::encode(std::mem::take(&mut self.plaintext).finalize()),
            },
            encryption: EncryptionInfo {
                format: "age".into(),
                recipient: self.key.recipient(),
            },
            keys,
            redis,
            details: std::mem::take(&mut self.details),
            owner: self.owner.clone(),
            source: std::mem::take(&mut self.source),
            mac: String::new(),
        };
        manifest.mac = self.key.mac(&manifest.authenticated_bytes());
        let manifest_name = Manifest::file_name(&self.id);
        let partial_manifest = dir.join(format!(".{manifest_name}{PARTIAL}"));
        self.cleanup.push(partial_manifest.clone());
        let json = serde_json::to_vec_pretty(&manifest).map_err(io::Error::other);
        let written = json.and_then(|json| {
            let mut file = File::create(&partial_manifest)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
        written.map_err(|err| io("writing the manifest beside", err))?;

        // The data file takes its name first; a crash before the manifest follows leaves a
        // data file without manifest, which verify reports. Were the data renamed first
        // while the manifest fails, remove it again: a lone data file is no snapshot.
        let final_data = dir.join(&self.file);
        fs::rename(&partial_data, &final_data).map_err(|err| io("renaming", err))?;
        self.cleanup.push(final_data);
        fs::rename(&partial_manifest, dir.join(&manifest_name))
            .map_err(|err| io("renaming the manifest beside", err))?;
        self.cleanup.clear();
        sync_dir(&dir).map_err(|err| io("syncing the folder of", err))?;
        Ok(manifest)
    }
}

impl Write for SnapshotWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("the snapshot writer was finished"))?;
        let n = stream.write(buf)?;
        self.plaintext.update(&buf[..n]);
        self.plaintext_bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        drop(self.stream.take()); // closes the file before it is removed
        drop(Cleanup(std::mem::take(&mut self.cleanup)));
    }
}

/// Counts bytes and computes the SHA-256 of what passes into the file.
struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            sha: Sha256::new(),
            bytes: 0,
        }
    }

    fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.sha.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn key_count_text(count: &KeyCount) -> String {
    match count {
        KeyCount::Exact => "exact".into(),
        KeyCount::Hints { reason } => format!("RESIZEDB hints: {reason}"),
    }
}
