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
//! Here: the folder and what is in it (list, resolve, read a manifest). The three ways of
//! changing or judging it are beside, each adding methods to [`Store`]:
//! - [`writer`]: [`Store::begin`] and [`Store::snapshot_redis`], the [`SnapshotWriter`]
//!   that encrypts and hashes into partial files and commits them;
//! - [`verify`]: [`Store::verify`] and [`Store::restore`], one function per check;
//! - [`prune`]: retention ([`Store::prune`]) and deletion.
//!
//! All of it is blocking file I/O; from async code run it in `spawn_blocking`.

mod prune;
mod verify;
mod writer;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{StoreError, VerifyError};
use super::manifest::{
    DatabaseKeys, FORMAT_VERSION, Manifest, Owner, SnapshotKind, is_snapshot_id,
};
use crate::redis::RdbInfo;

pub use writer::SnapshotWriter;

/// Suffix of files being written.
const PARTIAL: &str = ".partial";
/// Partial files older than this are left over from a crash, and [`Store::prune`] removes
/// them.
const STALE_PARTIAL: Duration = Duration::from_secs(6 * 3600);
/// Buffer between the encryptor and the file.
const FILE_BUFFER: usize = 1 << 20;

/// A folder of snapshots, and the Backup they belong to when it is a Backup's.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    owner: Option<Owner>,
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
        Ok(Self { dir, owner: None })
    }

    /// The store of one Backup: the snapshots it writes name `owner`, and it lists, keeps
    /// and prunes only snapshots that do.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn owned(dir: impl Into<PathBuf>, owner: Owner) -> Result<Self, StoreError> {
        let store = Self::open(dir)?;
        Ok(Self {
            owner: Some(owner),
            ..store
        })
    }

    pub fn owner(&self) -> Option<&Owner> {
        self.owner.as_ref()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    fn read_dir(&self) -> Result<Vec<fs::DirEntry>, StoreError> {
        let context = || format!("reading {}", self.dir.display());
        fs::read_dir(&self.dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|err| StoreError::io(context(), err, &self.dir))
    }

    /// IDs that have a manifest or a data file (partial files are not snapshots).
    fn ids_present(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut ids = BTreeSet::new();
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
        if manifest.format == 1 {
            return Err(bad(
                "format version 1 has no MAC, so it cannot be authenticated: refused".into(),
            ));
        }
        if manifest.format != FORMAT_VERSION {
            return Err(bad(format!("unknown format version {}", manifest.format)));
        }
        if let Some(owner) = &self.owner
            && manifest.owner.as_ref() != Some(owner)
        {
            return Err(VerifyError::ForeignOwner {
                id: id.to_owned(),
                owner: manifest.owner.map(|o| o.to_string()),
                expected: owner.to_string(),
            });
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
