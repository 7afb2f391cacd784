//! The `Backup` resource: encrypted, checksummed snapshots of Redis or of
//! configuration, on a schedule, with retention.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::duration::RetentionAge;

pub use crate::names::BACKUP_NAMESPACES_ANNOTATION;
/// Five cron fields, or a CronJob macro such as `@daily`.
pub const CRON_PATTERN: &str =
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$";

/// Snapshots of one source, taken on create and then on `schedule`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "dr.titan.io",
    version = "v1alpha1",
    kind = "Backup",
    namespaced,
    status = "BackupStatus",
    category = "titan",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Last Success","type":"date","jsonPath":".status.lastSuccessfulTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: it is the dr.titan.io/backup label of every snapshot Job")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.verify) || has(self.source.redis)").message("verify restores Redis snapshots into a throwaway Redis: set it only with source.redis"))]
pub struct BackupSpec {
    /// What to snapshot.
    pub source: BackupSource,
    /// Cron schedule, as CronJob understands it. Absent: one backup on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: Option<String>,
    /// Which snapshots to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Where snapshots are written.
    pub destination: Destination,
    /// How snapshots are encrypted.
    pub encryption: Encryption,
    /// Restores of the newest snapshot into a throwaway Redis, on a schedule: condition
    /// `Verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
}

/// A restore of the newest snapshot into a throwaway Redis in the Backup's namespace, by a
/// Job: verified (sizes, checksums, MAC, RDB CRC), replicated into the Redis, and every key
/// of the snapshot checked there; then the Job and its Redis are deleted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Cron schedule, as CronJob understands it.
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// The image of the throwaway Redis (default: the operator's `--verify-redis-image`);
    /// it runs `redis-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The source of a Backup: a Redis server, or configuration objects.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.redis) != (has(self.configMaps) || has(self.secrets))").message("set either redis, or configMaps and/or secrets"))]
pub struct BackupSource {
    /// A Redis server, snapshotted over the replication protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSource>,
    /// The namespace of the ConfigMaps and Secrets, or of the Redis Service (default: this
    /// Backup's). A namespace other than the Backup's must consent, by naming the Backup's
    /// namespace in its annotation `dr.titan.io/backup-namespaces` (comma-separated): the
    /// operator's rights are not lent to whoever may create a Backup. The chart's admission
    /// policy lets a Redis address name only a Service of these two namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
    /// ConfigMaps selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_maps: Option<ObjectSelector>,
    /// Secrets selected by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<ObjectSelector>,
}

/// A Redis server to snapshot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedisSource {
    /// `host:port` of the Redis server.
    #[schemars(length(min = 1))]
    pub address: String,
    /// Secret key holding the Redis password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Objects selected by label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ObjectSelector {
    /// Label selector of the objects to include.
    pub selector: LabelSelector,
}

/// A key of a Secret in the resource's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// Which snapshots to keep; a snapshot is pruned when either rule drops it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000), extend("format" = "int32"))]
    pub keep_last: Option<u32>,
    /// Drop snapshots older than this (`7d`, `36h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<RetentionAge>,
}

/// Where snapshots are written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct Destination {
    /// Folder under the operator's backup volume (relative, no `..`).
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    )]
    #[x_kube(validation = kube::core::Rule::new("!self.split('/').exists(p, p == '..')").message("path must stay under the backup volume (no '..')"))]
    pub path: String,
    /// A copy of every snapshot in S3 or an S3-compatible server, off the cluster: under
    /// `<prefix>/<namespace>/<backup uid>/`, with the same retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
}

/// A bucket of S3 or of an S3-compatible server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Folder in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 512),
        regex(pattern = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
    )]
    pub prefix: Option<String>,
    /// The server's URL (`https://...`, or `http://...` inside a trusted network); none for
    /// AWS itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/]+(/.*)?$"))]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret in the Backup's namespace with `accessKeyId` and `secretAccessKey`.
    pub credentials_secret_ref: SecretName,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want;
    /// default true when an endpoint is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
}

/// A Secret, by name, in the object's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SecretName {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Encryption of snapshots; key material only ever comes from a Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Secret holding the key.
    pub secret_ref: EncryptionKeyRef,
}

/// The Secret (and key within it) holding the encryption key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct EncryptionKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key within the Secret (default `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The observed state of a Backup.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the newest attempt (successful or not) started; the schedule counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// Failed attempts since the newest success: the next retry waits 10 s, doubling with
    /// each, at most an hour, or until the schedule's next tick if that is sooner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int32"))]
    pub failed_attempts: Option<u32>,
    /// When the newest successful snapshot completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// Where the copies off the cluster are (`s3://bucket/prefix/<namespace>/<uid>`), for
    /// `titan-dr backup restore --s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite: Option<String>,
    /// When the newest restore check (successful or not) started; its schedule counts
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify_time: Option<Time>,
    /// When a restore check last succeeded, and of which snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_snapshot: Option<String>,
    /// Snapshots on disk, newest first, bounded by retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<Snapshot>,
    /// Ready is False with a reason when the newest attempt failed; Verified says how the
    /// newest restore check ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One stored snapshot.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Snapshot ID, its UTC start time (`20261125T020000Z`).
    pub id: String,
    /// When the snapshot started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the snapshot completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Size of the encrypted file.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    pub size_bytes: u64,
    /// SHA-256 of the encrypted file as stored, so that `sha256sum` checks it without the
    /// key; the manifest beside the file also holds the SHA-256 of the decrypted content.
    #[serde(default)]
    pub sha256: String,
    /// Number of keys (Redis) or objects (configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "int64"))]
    pub keys: Option<u64>,
    /// Path of the encrypted file under the backup volume.
    pub location: String,
}
