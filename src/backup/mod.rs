//! Encrypted, checksummed, verified snapshots in a folder; the `titan-dr backup` command
//! line over them is [`crate::cli::backup`].
//!
//! - [`Store`]: the folder. [`Store::snapshot_redis`] takes a Redis snapshot over the
//!   replication protocol (see [`crate::redis`]); [`Store::begin`] takes any other content
//!   (a configuration archive); [`Store::list`], [`Store::verify`], [`Store::restore`] and
//!   [`Store::prune`] work on what is there.
//! - [`BackupKey`]: the age X25519 identity that encrypts (to its recipient) and decrypts.
//!   Files are standard age files: `age -d -i KEYFILE <id>.rdb.age` decrypts one.
//! - [`Manifest`]: what each snapshot holds, stored beside it as `<id>.manifest.json`.
//! - [`retention`]: which snapshots `keepLast`/`maxAge` drop, as a pure function.
//!
//! Checksums: the manifest's `sha256` is of the encrypted file as stored (so `sha256sum`
//! checks it without the key) and `plaintext.sha256` of the decrypted content; age's own
//! authentication (ChaCha20-Poly1305 per 64 KiB chunk, with a last-chunk flag) also rejects
//! any modified or truncated ciphertext, and a Redis RDB carries its CRC64 trailer.

pub mod config_archive;
pub mod error;
pub mod key;
pub mod manifest;
pub mod offsite;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod store;

pub use error::{StoreError, VerifyError};
pub use key::{BackupKey, KeyError};
pub use manifest::{Manifest, SnapshotKind};
pub use retention::RetentionPolicy;
pub use store::{Listing, SnapshotWriter, Store};

/// The folder of a Backup's snapshots, relative to the backup volume:
/// `<destination.path>/<namespace>/<uid>`. Two Backups with the same path, in two namespaces
/// or one after another under one name, never share a folder.
pub fn backup_folder(backup: &crate::api::Backup) -> std::path::PathBuf {
    use kube::ResourceExt;
    let path = backup.spec.destination.path.trim_matches('/');
    let namespace = backup.namespace().unwrap_or_default();
    let uid = backup.uid().unwrap_or_default();
    std::path::Path::new(path).join(namespace).join(uid)
}

/// The folder of a Backup's copies in its bucket, `<prefix>/<namespace>/<uid>`, when it keeps
/// any.
pub fn offsite_prefix(backup: &crate::api::Backup) -> Option<String> {
    use kube::ResourceExt;
    let s3 = backup.spec.destination.s3.as_ref()?;
    let mut parts: Vec<String> = s3
        .prefix
        .iter()
        .map(|p| p.trim_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    parts.push(backup.namespace().unwrap_or_default());
    parts.push(backup.uid().unwrap_or_default());
    Some(parts.join("/"))
}

/// The location of a Backup's copies, `s3://bucket/<prefix>/<namespace>/<uid>`, as
/// `titan-dr backup --s3` takes it; credentials are the caller's to add.
pub fn offsite_url(backup: &crate::api::Backup) -> Option<String> {
    let s3 = backup.spec.destination.s3.as_ref()?;
    Some(format!("s3://{}/{}", s3.bucket, offsite_prefix(backup)?))
}

/// The Backup as the owner its snapshots name.
pub fn owner_of(backup: &crate::api::Backup) -> manifest::Owner {
    use kube::ResourceExt;
    manifest::Owner {
        namespace: backup.namespace().unwrap_or_default(),
        name: backup.name_any(),
        uid: backup.uid().unwrap_or_default(),
    }
}

/// The store of a Backup on the backup volume `volume`.
///
/// # Errors
///
/// [`StoreError::Io`] when the folder cannot be created.
pub fn backup_store(
    volume: &std::path::Path,
    backup: &crate::api::Backup,
) -> Result<Store, StoreError> {
    Store::owned(volume.join(backup_folder(backup)), owner_of(backup))
}

#[cfg(test)]
mod tests;
