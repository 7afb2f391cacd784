//! The manifest stored beside each snapshot (`<id>.manifest.json`): what was snapshotted,
//! when, sizes, checksums, key counts. Writing it is the last step of a snapshot, so a
//! snapshot without one is incomplete by definition.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::api::backup::Snapshot;

/// The manifest format this code writes and reads. Version 2 added the owner, the source
/// and the MAC; a version-1 manifest cannot be authenticated and is refused.
pub const FORMAT_VERSION: u32 = 2;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SnapshotKind {
    /// A Redis RDB: `<id>.rdb.age`.
    Redis,
    /// An archive of configuration objects: `<id>.tar.age`.
    Configuration,
}

impl SnapshotKind {
    /// Extension of the encrypted data file.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Redis => "rdb.age",
            Self::Configuration => "tar.age",
        }
    }

    pub(crate) fn all() -> [Self; 2] {
        [Self::Redis, Self::Configuration]
    }
}

/// Everything known about one stored snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// The UTC start time, `20261125T020000Z`.
    pub id: String,
    pub kind: SnapshotKind,
    /// Name of the encrypted data file, in the same folder.
    pub file: String,
    pub started_at: Timestamp,
    pub completed_at: Timestamp,
    /// Size of the encrypted file.
    pub size_bytes: u64,
    /// SHA-256 of the encrypted file as stored: `sha256sum <file>` shows it, and it can be
    /// checked without the key.
    pub sha256: String,
    /// The decrypted content.
    pub plaintext: Content,
    pub encryption: EncryptionInfo,
    /// Keys (Redis) or objects (configuration) in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Details of a Redis snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisDetails>,
    /// Free-form details of other kinds (e.g. the objects of a configuration archive).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
    /// The Backup the snapshot belongs to; none for one the CLI took into a folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// What was snapshotted: the Redis address, or the configuration selection.
    #[serde(default)]
    pub source: String,
    /// HMAC-SHA256 of the manifest without this field, keyed from the backup key
    /// ([`BackupKey::mac`](super::key::BackupKey::mac)). It covers the data file too, through
    /// `sha256`.
    #[serde(default)]
    pub mac: String,
}

/// The Backup a snapshot belongs to. The UID tells a Backup from a later one of the same
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Backup {}/{} (uid {})",
            self.namespace, self.name, self.uid
        )
    }
}

/// Size and checksum of the decrypted content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub size_bytes: u64,
    /// SHA-256 of the decrypted content, checked by `verify` after decryption.
    pub sha256: String,
}

/// How the data file is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInfo {
    /// Always `age`: the v1 format of age-encryption.org, readable with `age -d -i KEYFILE`.
    pub format: String,
    /// The age recipient (public key) the file is encrypted to.
    pub recipient: String,
}

/// What a Redis snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisDetails {
    /// The address snapshotted.
    pub source: String,
    /// RDB format version.
    pub rdb_version: u32,
    /// `redis-ver` from the RDB's auxiliary fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_version: Option<String>,
    /// The RDB's CRC64 trailer (hex); absent when the server has `rdbchecksum no`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64: Option<String>,
    /// Keys per database.
    pub databases: Vec<DatabaseKeys>,
    /// `exact` when every key entry was counted; otherwise why the counts are the
    /// server's RESIZEDB hints.
    pub key_count: String,
    /// Function libraries in the RDB.
    #[serde(default)]
    pub functions: u64,
    /// Replication ID and offset the snapshot corresponds to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_offset: Option<u64>,
    /// Whether the server streamed the RDB straight from its fork (diskless sync).
    #[serde(default)]
    pub diskless: bool,
}

/// Keys of one Redis database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseKeys {
    pub db: u32,
    pub keys: u64,
    /// Keys with a TTL.
    pub expires: u64,
}

impl Manifest {
    /// What the MAC covers: the manifest as JSON without its MAC.
    pub fn authenticated_bytes(&self) -> Vec<u8> {
        let unsigned = Manifest {
            mac: String::new(),
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).expect("a manifest always serializes")
    }

    /// Name of the manifest file of snapshot `id`.
    pub fn file_name(id: &str) -> String {
        format!("{id}.manifest.json")
    }

    /// The entry for `Backup.status.snapshots`; `destination` is the Backup's store folder
    /// relative to the backup volume, so that `location` is too.
    pub fn to_status(&self, destination: &str) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            started_at: Some(Time(self.started_at)),
            completed_at: Some(Time(self.completed_at)),
            size_bytes: self.size_bytes,
            sha256: self.sha256.clone(),
            keys: self.keys,
            location: format!("{}/{}", destination.trim_end_matches('/'), self.file),
        }
    }
}

/// The snapshot ID of a start time: `20261125T020000Z` (UTC, to the second).
pub fn snapshot_id(started_at: Timestamp) -> String {
    started_at.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Whether `text` has the shape of a snapshot ID.
pub fn is_snapshot_id(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_utc_start_times() {
        let at: Timestamp = "2026-11-25T02:00:00.750Z".parse().unwrap();
        assert_eq!(snapshot_id(at), "20261125T020000Z");
        assert!(is_snapshot_id("20261125T020000Z"));
        assert!(!is_snapshot_id("20261125T020000"));
        assert!(!is_snapshot_id("2026112xT020000Z"));
        assert!(!is_snapshot_id("../etc/passwd"));
    }
}
