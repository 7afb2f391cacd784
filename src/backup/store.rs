//! The snapshot store: one folder, holding for each snapshot an encrypted data file
//! (`<id>.rdb.age` or `<id>.tar.age`) and its manifest (`<id>.manifest.json`).
//!
//! A snapshot is written under temporary names (`.<id>.*.partial`), fsynced, and renamed
//! into place, data first and manifest last: the manifest's presence is the commit. A crash
//! at any point leaves either partial files (never listed, never verified, removed by
//! [`Store::prune`] once stale) or a data file without a manifest, which `verify` reports as
//! such. Restore verifies everything while decrypting into a temporary file beside the
//! target, and renames it over the target only when every check passed.
//!
//! All of it is blocking file I/O; from async code run it in `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::error::{StoreError, VerifyError};
use super::key::BackupKey;
use super::manifest::{
    Content, DatabaseKeys, EncryptionInfo, FORMAT_VERSION, Manifest, RedisDetails, SnapshotKind,
    is_snapshot_id, snapshot_id,
};
use super::retention::{Candidate, RetentionPolicy, select_pruned};
use crate::redis::{self, CrcCheck, KeyCount, RdbInfo, RedisTarget, SnapshotOptions, Tee};

/// Suffix of files being written.
const PARTIAL: &str = ".partial";
/// Partial files older than this are left over from a crash, and [`Store::prune`] removes
/// them.
const STALE_PARTIAL: Duration = Duration::from_secs(6 * 3600);
/// Buffer between the encryptor and the file.
const FILE_BUFFER: usize = 1 << 20;

/// A folder of snapshots.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// The snapshots of a folder, and what is wrong in it.
#[derive(Debug, Default)]
pub struct Listing {
    /// Complete snapshots (manifest and data file present), newest first.
    pub snapshots: Vec<Manifest>,
    /// Incomplete or unreadable snapshots, newest first.
    pub problems: Vec<VerifyError>,
}

impl Store {
    /// The store in `dir`, which is created if missing.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| {
            StoreError::io(format!("creating {}", dir.display()), source, &dir)
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

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
            recipient: key.recipient(),
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

    /// Every snapshot in the folder, newest first, and every incomplete one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be read.
    pub fn list(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        let mut ids: Vec<String> = self.ids_present()?.into_iter().collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for id in ids {
            match self.read_manifest(&id) {
                Ok(manifest) => listing.snapshots.push(manifest),
                Err(problem) => listing.problems.push(problem),
            }
        }
        // Newest by start time; IDs are start seconds, this orders within one too.
        listing
            .snapshots
            .sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        Ok(listing)
    }

    /// IDs of every snapshot present (complete or not), newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be read.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.ids_present()?.into_iter().rev().collect())
    }

    /// The files of snapshot `id` that are present: its manifest and its data file.
    pub fn files_of(&self, id: &str) -> Vec<String> {
        let manifest = Manifest::file_name(id);
        let manifest = self.dir.join(&manifest).exists().then_some(manifest);
        manifest.into_iter().chain(self.data_file(id)).collect()
    }

    /// The snapshot ID that `which` names: an ID, or `latest` for the newest snapshot in the
    /// folder, complete or not (so that an incomplete newest one is reported, not skipped).
    ///
    /// # Errors
    ///
    /// [`VerifyError::InvalidId`], [`VerifyError::Empty`], [`VerifyError::NotFound`].
    pub fn resolve(&self, which: &str) -> Result<String, VerifyError> {
        let ids = self.ids_present().map_err(|err| VerifyError::Io {
            id: which.to_owned(),
            context: format!("reading {}", self.dir.display()),
            source: io::Error::other(err.to_string()),
        })?;
        if which == "latest" {
            return ids.into_iter().max().ok_or_else(|| VerifyError::Empty {
                dir: self.dir.clone(),
            });
        }
        if !is_snapshot_id(which) {
            return Err(VerifyError::InvalidId {
                id: which.to_owned(),
            });
        }
        if !ids.contains(which) {
            return Err(VerifyError::NotFound {
                id: which.to_owned(),
                dir: self.dir.clone(),
            });
        }
        Ok(which.to_owned())
    }

    /// Checks snapshot `id` completely: manifest present and readable, data file present
    /// with the manifest's size and SHA-256, encrypted to `key`, decrypting without error to
    /// content with the manifest's size and SHA-256; for Redis, a well-formed RDB whose
    /// CRC64 trailer matches and whose key counts are the manifest's.
    ///
    /// # Errors
    ///
    /// [`VerifyError`], naming the snapshot and the problem.
    pub fn verify(&self, id: &str, key: &BackupKey) -> Result<Manifest, VerifyError> {
        self.verify_into(id, key, &mut io::sink())
    }

    /// Restores snapshot `id` to the file `to` (for Redis, the server's `dump.rdb`, with
    /// the server stopped). The snapshot is decrypted into a temporary file beside `to` and
    /// verified as by [`Store::verify`]; only then is it renamed over `to`. On any problem
    /// `to` is untouched.
    ///
    /// # Errors
    ///
    /// [`VerifyError`], naming the snapshot and the problem.
    pub fn restore(&self, id: &str, key: &BackupKey, to: &Path) -> Result<Manifest, VerifyError> {
        let io_error = |context: String, source: io::Error| VerifyError::Io {
            id: id.to_owned(),
            context,
            source,
        };
        let name = to
            .file_name()
            .ok_or_else(|| {
                let err = io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
                io_error(format!("restoring to {}", to.display()), err)
            })?
            .to_string_lossy()
            .into_owned();
        if to.is_dir() {
            let err = io::Error::new(io::ErrorKind::IsADirectory, "give the file to write");
            return Err(io_error(format!("restoring to {}", to.display()), err));
        }
        let parent = match to.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = parent.join(format!(".{name}.titan-dr-restore-{id}{PARTIAL}"));
        let output = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|err| io_error(format!("creating {}", temp.display()), err))?;
        let cleanup = Cleanup(vec![temp.clone()]);
        let mut writer = BufWriter::with_capacity(FILE_BUFFER, output);
        let manifest = self.verify_into(id, key, &mut writer)?;
        let output = writer
            .into_inner()
            .map_err(|err| io_error(format!("writing {}", temp.display()), err.into_error()))?;
        output
            .sync_all()
            .map_err(|err| io_error(format!("syncing {}", temp.display()), err))?;
        fs::rename(&temp, to).map_err(|err| {
            io_error(
                format!("renaming {} to {}", temp.display(), to.display()),
                err,
            )
        })?;
        cleanup.disarm();
        sync_dir(&parent).map_err(|err| io_error(format!("syncing {}", parent.display()), err))?;
        Ok(manifest)
    }

    /// The snapshots that `policy` drops at `now`, oldest first (nothing is deleted).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be read.
    pub fn select_pruned(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<Candidate> = self
            .list()?
            .snapshots
            .into_iter()
            .map(|m| Candidate {
                id: m.id,
                started_at: m.started_at,
            })
            .collect();
        Ok(select_pruned(&candidates, policy, now))
    }

    /// Deletes the snapshots that `policy` drops at `now`, and partial files left over from
    /// crashes; returns the IDs deleted. Incomplete snapshots (data without manifest) are
    /// left for a person to look at: they are listed as problems.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when a file cannot be deleted.
    pub fn prune(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let pruned = self.select_pruned(policy, now)?;
        for id in &pruned {
            self.delete(id)?;
        }
        self.remove_stale_partials()?;
        Ok(pruned)
    }

    /// Deletes snapshot `id`: the manifest first, so that it stops being a snapshot before
    /// its data goes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when a file cannot be deleted.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut names = vec![Manifest::file_name(id)];
        names.extend(
            SnapshotKind::all()
                .iter()
                .map(|kind| format!("{id}.{}", kind.extension())),
        );
        for name in names {
            let path = self.dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    let context = format!("deleting {}", path.display());
                    return Err(StoreError::io(context, err, &self.dir));
                }
            }
        }
        sync_dir(&self.dir).map_err(|err| StoreError::io("syncing the folder", err, &self.dir))
    }

    fn remove_stale_partials(&self) -> Result<(), StoreError> {
        for entry in self.read_dir()? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.ends_with(PARTIAL)) {
                continue;
            }
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age > STALE_PARTIAL);
            if stale {
                let path = entry.path();
                fs::remove_file(&path).map_err(|err| {
                    StoreError::io(format!("deleting {}", path.display()), err, &self.dir)
                })?;
            }
        }
        Ok(())
    }

    fn read_dir(&self) -> Result<Vec<fs::DirEntry>, StoreError> {
        let context = || format!("reading {}", self.dir.display());
        fs::read_dir(&self.dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|err| StoreError::io(context(), err, &self.dir))
    }

    /// IDs that have a manifest or a data file (partial files are not snapshots).
    fn ids_present(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut ids = std::collections::BTreeSet::new();
        for entry in self.read_dir()? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.split_once('.').map(|(id, _)| id).unwrap_or_default();
            let known_suffix = name.ends_with(".manifest.json")
                || SnapshotKind::all()
                    .iter()
                    .any(|kind| name.ends_with(&format!(".{}", kind.extension())));
            if is_snapshot_id(id) && known_suffix {
                ids.insert(id.to_owned());
            }
        }
        Ok(ids)
    }

    /// The data file of `id` that exists, if any.
    fn data_file(&self, id: &str) -> Option<String> {
        SnapshotKind::all()
            .iter()
            .map(|kind| format!("{id}.{}", kind.extension()))
            .find(|name| self.dir.join(name).exists())
    }

    /// The manifest of `id`, checked for consistency with its name and data file.
    fn read_manifest(&self, id: &str) -> Result<Manifest, VerifyError> {
        let manifest_name = Manifest::file_name(id);
        let bad = |reason: String| VerifyError::BadManifest {
            id: id.to_owned(),
            manifest: manifest_name.clone(),
            reason,
        };
        let text = match fs::read(self.dir.join(&manifest_name)) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(match self.data_file(id) {
                    Some(file) => VerifyError::MissingManifest {
                        id: id.to_owned(),
                        manifest: manifest_name.clone(),
                        file,
                    },
                    None => VerifyError::NotFound {
                        id: id.to_owned(),
                        dir: self.dir.clone(),
                    },
                });
            }
            Err(err) => return Err(bad(err.to_string())),
        };
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|err| bad(err.to_string()))?;
        if manifest.format != FORMAT_VERSION {
            return Err(bad(format!("unknown format version {}", manifest.format)));
        }
        // The manifest names its data file; it must be this snapshot's, in this folder.
        let expected_file = format!("{id}.{}", manifest.kind.extension());
        if manifest.id != id || manifest.file != expected_file {
            return Err(bad(format!(
                "it describes {} ({}), not {id}",
                manifest.id, manifest.file
            )));
        }
        if !self.dir.join(&manifest.file).exists() {
            return Err(VerifyError::MissingData {
                id: id.to_owned(),
                file: manifest.file,
            });
        }
        Ok(manifest)
    }

    /// Verifies `id` while writing its plaintext into `sink`.
    fn verify_into(
        &self,
        id: &str,
        key: &BackupKey,
        sink: &mut dyn Write,
    ) -> Result<Manifest, VerifyError> {
        let manifest = self.read_manifest(id)?;
        let file = manifest.file.clone();
        let path = self.dir.join(&file);
        let io_error = |context: &str, source: io::Error| VerifyError::Io {
            id: id.to_owned(),
            context: format!("{context} {file}"),
            source,
        };

        let actual = fs::metadata(&path)
            .map_err(|err| io_error("reading", err))?
            .len();
        let expected = manifest.size_bytes;
        if actual != expected {
            let (id, file) = (id.to_owned(), file.clone());
            return Err(if actual < expected {
                VerifyError::Truncated {
                    id,
                    file,
                    actual,
                    expected,
                }
            } else {
                VerifyError::SizeMismatch {
                    id,
                    file,
                    actual,
                    expected,
                }
            });
        }
        // The stored file's checksum first: it names damage precisely, without the key.
        let actual = sha256_file(&path).map_err(|err| io_error("reading", err))?;
        if actual != manifest.sha256 {
            return Err(VerifyError::ChecksumMismatch {
                id: id.to_owned(),
                file,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        let wrong_key = || VerifyError::WrongKey {
            id: id.to_owned(),
            snapshot_recipient: manifest.encryption.recipient.clone(),
            key_recipient: key.recipient(),
        };
        if manifest.encryption.recipient != key.recipient() {
            return Err(wrong_key());
        }

        let undecryptable = |reason: String| VerifyError::Undecryptable {
            id: id.to_owned(),
            file: file.clone(),
            reason,
        };
        let input = File::open(&path).map_err(|err| io_error("opening", err))?;
        let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(FILE_BUFFER, input))
            .map_err(|err| undecryptable(err.to_string()))?;
        let identity = key.identity() as &dyn age::Identity;
        let plaintext = decryptor
            .decrypt(std::iter::once(identity))
            .map_err(|err| match err {
                age::DecryptError::NoMatchingKeys => wrong_key(),
                other => undecryptable(other.to_string()),
            })?;

        let mut tee = Tee::new(plaintext, sink, true);
        let scanned = match manifest.kind {
            SnapshotKind::Redis => Some(redis::scan_through(&mut tee)),
            SnapshotKind::Configuration => {
                let copied = io::copy(&mut tee, &mut io::sink());
                copied.map_err(|err| undecryptable(err.to_string()))?;
                None
            }
        };
        if let Some(err) = tee.sink_error.take() {
            return Err(io_error("writing the plaintext of", err));
        }
        if let Some(err) = tee.source_error.take() {
            return Err(undecryptable(err.to_string()));
        }
        let plaintext_sha = tee.sha.take().map(|sha| hex::encode(sha.finalize()));
        let mismatch = |reason: String| VerifyError::ContentMismatch {
            id: id.to_owned(),
            reason,
        };
        if tee.bytes != manifest.plaintext.size_bytes {
            return Err(mismatch(format!(
                "{} bytes, the manifest says {}",
                tee.bytes, manifest.plaintext.size_bytes
            )));
        }
        if plaintext_sha.as_deref() != Some(manifest.plaintext.sha256.as_str()) {
            return Err(mismatch("the SHA-256 differs".into()));
        }
        if let Some(scanned) = scanned {
            let bad_rdb = |reason: String| VerifyError::BadRdb {
                id: id.to_owned(),
                reason,
            };
            let (info, _) = scanned.map_err(|err| bad_rdb(err.to_string()))?;
            let crc = match tee.crc.finish() {
                CrcCheck::Valid(crc) => Some(format!("{crc:016x}")),
                CrcCheck::Disabled => None,
                CrcCheck::Mismatch { stored, computed } => {
                    return Err(bad_rdb(format!(
                        "CRC64 mismatch: trailer {stored:016x}, content {computed:016x}"
                    )));
                }
                CrcCheck::Missing => return Err(bad_rdb("no CRC64 trailer".into())),
            };
            let details = manifest.redis.as_ref();
            if crc != details.and_then(|d| d.crc64.clone()) {
                return Err(mismatch("the RDB's CRC64 is not the manifest's".into()));
            }
            let keys = database_keys(&info);
            if Some(&keys) != details.map(|d| &d.databases) {
                return Err(mismatch(format!(
                    "keys per database {} differ from the manifest's",
                    format_databases(&keys)
                )));
            }
        }
        Ok(manifest)
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
    recipient: String,
    stream: Option<age::stream::StreamWriter<HashingWriter<BufWriter<File>>>>,
    plaintext: Sha256,
    plaintext_bytes: u64,
    details: std::collections::BTreeMap<String, serde_json::Value>,
    /// Files to remove unless committed.
    cleanup: Vec<PathBuf>,
}

impl SnapshotWriter {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Free-form details for the manifest (e.g. the objects of a configuration archive).
    pub fn details_mut(&mut self) -> &mut std::collections::BTreeMap<String, serde_json::Value> {
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

        let manifest = Manifest {
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
                recipient: self.recipient.clone(),
            },
            keys,
            redis,
            details: std::mem::take(&mut self.details),
        };
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

/// Removes files when dropped, unless disarmed.
struct Cleanup(Vec<PathBuf>);

impl Cleanup {
    fn disarm(mut self) {
        self.0.clear();
    }

    /// Hands the paths over to another owner, without removing them.
    fn keep(mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
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

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; FILE_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(sha.finalize()));
        }
        sha.update(&buf[..n]);
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn database_keys(info: &RdbInfo) -> Vec<DatabaseKeys> {
    info.databases
        .iter()
        .map(|(&db, keys)| DatabaseKeys {
            db,
            keys: keys.keys,
            expires: keys.expires,
        })
        .collect()
}

fn key_count_text(count: &KeyCount) -> String {
    match count {
        KeyCount::Exact => "exact".into(),
        KeyCount::Hints { reason } => format!("RESIZEDB hints: {reason}"),
    }
}

/// `db0=12 (3 with TTL), db3=1`, for messages.
pub fn format_databases(databases: &[DatabaseKeys]) -> String {
    if databases.is_empty() {
        return "none".into();
    }
    databases
        .iter()
        .map(|db| {
            if db.expires > 0 {
                format!("db{}={} ({} with TTL)", db.db, db.keys, db.expires)
            } else {
                format!("db{}={}", db.db, db.keys)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
