//! Errors of the snapshot store. Every message names the snapshot and the problem, since an
//! operator reads them on a system that is already broken.

use std::io;
use std::path::PathBuf;

use super::key::KeyError;
use crate::redis::SnapshotError;

/// Why a snapshot could not be taken, or the store could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Source(SnapshotError),
    #[error("the disk holding {} is full; the partial snapshot was removed", dir.display())]
    DiskFull { dir: PathBuf },
    #[error(
        "snapshot {id} already exists (or is being written); snapshot IDs are start times to the second"
    )]
    Exists { id: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// The reason a Backup's Ready condition gives for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::DiskFull { .. } => "DestinationFull",
            Self::Source(SnapshotError::Unreachable { .. } | SnapshotError::Timeout { .. }) => {
                "RedisUnreachable"
            }
            Self::Source(SnapshotError::AuthFailed { .. }) => "AuthFailed",
            Self::Source(SnapshotError::ConnectionLost { .. }) => "ConnectionLost",
            Self::Source(SnapshotError::BadRdb { .. }) => "BadSnapshot",
            Self::Source(SnapshotError::PastDeadline { .. }) => "DeadlineExceeded",
            Self::Source(_) => "SnapshotFailed",
            Self::Exists { .. } | Self::Io { .. } => "DestinationError",
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error, dir: &std::path::Path) -> Self {
        if crate::redis::is_disk_full(&source) {
            Self::DiskFull {
                dir: dir.to_owned(),
            }
        } else {
            Self::Io {
                context: context.into(),
                source,
            }
        }
    }
}

/// Why a snapshot does not verify, or cannot be restored. Restore refuses on every one of
/// these before it touches the target.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no snapshot {id} in {}", dir.display())]
    NotFound { id: String, dir: PathBuf },
    #[error("no snapshots in {}", dir.display())]
    Empty { dir: PathBuf },
    #[error("{id:?} is not a snapshot ID (like 20261125T020000Z) or \"latest\"")]
    InvalidId { id: String },
    #[error(
        "snapshot {id}: the manifest {manifest} is missing, so nothing vouches for {file} \
         (an interrupted snapshot, or a deleted manifest)"
    )]
    MissingManifest {
        id: String,
        manifest: String,
        file: String,
    },
    #[error("snapshot {id}: the manifest {manifest} is unreadable: {reason}")]
    BadManifest {
        id: String,
        manifest: String,
        reason: String,
    },
    #[error("snapshot {id}: the data file {file} is missing")]
    MissingData { id: String, file: String },
    #[error("snapshot {id}: {file} is truncated: {actual} bytes, the manifest says {expected}")]
    Truncated {
        id: String,
        file: String,
        actual: u64,
        expected: u64,
    },
    #[error("snapshot {id}: {file} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        id: String,
        file: String,
        actual: u64,
        expected: u64,
    },
    #[error(
        "snapshot {id}: {file} does not match its SHA-256 (manifest {expected}, file {actual}): \
         the file was modified or damaged"
    )]
    ChecksumMismatch {
        id: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "snapshot {id}: wrong key: the snapshot is encrypted to {snapshot_recipient}, \
         the key given is for {key_recipient}"
    )]
    WrongKey {
        id: String,
        snapshot_recipient: String,
        key_recipient: String,
    },
    #[error("snapshot {id}: {file} does not decrypt: {reason}")]
    Undecryptable {
        id: String,
        file: String,
        reason: String,
    },
    #[error(
        "snapshot {id} is not authentic: its manifest's MAC does not match the key (forged, \
         altered, or made with another key); refused"
    )]
    NotAuthentic { id: String },
    #[error(
        "snapshot {id} belongs to {}, not to {expected}; refused",
        owner.as_deref().unwrap_or("no Backup")
    )]
    ForeignOwner {
        id: String,
        owner: Option<String>,
        expected: String,
    },
    #[error("snapshot {id}: the decrypted content does not match the manifest: {reason}")]
    ContentMismatch { id: String, reason: String },
    #[error("snapshot {id}: the decrypted RDB is bad: {reason}")]
    BadRdb { id: String, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("snapshot {id}: {context}: {source}")]
    Io {
        id: String,
        context: String,
        #[source]
        source: io::Error,
    },
}
