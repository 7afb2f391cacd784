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
pub mod remote;
pub mod restore;
pub mod retention;
pub mod store;

pub use error::{StoreError, VerifyError};
pub use key::{BackupKey, KeyError};
pub use manifest::{Manifest, SnapshotKind};
pub use retention::RetentionPolicy;
pub use store::{Listing, SnapshotWriter, Store};

#[cfg(test)]
mod tests;
