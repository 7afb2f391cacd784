//! A Redis Backup's snapshot as a Job: in the Backup's namespace, controlled by it, running
//! `titan-dr backup snapshot` from the operator's image. The Job reads Redis and the key
//! (mounted from the Backup's Secret: the operator never holds it), writes the snapshot into
//! its own emptyDir, delivers it to the operator's snapshot endpoint with its pod-bound token,
//! and copies it to object storage with the credentials of the S3 Secret. The operator only
//! schedules, and records what the Job reports.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
    ProjectedVolumeSource, SecretKeySelector, SecretVolumeSource, ServiceAccountTokenProjection,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::Backup;
use crate::backup::manifest::snapshot_id;
use crate::names::{AUDIENCE, LABEL_BACKUP};

/// The annotation of a snapshot Job: the attempt it is (`status.lastScheduleTime`).
pub const ATTEMPT_ANNOTATION: &str = "dr.titan.io/attempt";
/// How long one snapshot may take before its Job fails.
pub const SNAPSHOT_DEADLINE_SECONDS: i64 = 3600;

const KEY_MOUNT: &str = "/var/run/titan-dr/key";
const TOKEN_MOUNT: &str = "/var/run/titan-dr/token";
const WORK_MOUNT: &str = "/var/run/titan-dr/work";
const AUTH_MOUNT: &str = "/var/run/titan-dr/redis-auth";

/// What every snapshot Job is built with.
pub struct SnapshotJobSetup<'a> {
    pub image: &'a str,
    /// The `titan-dr` binary in that image.
    pub titan_dr: &'a str,
    /// The operator's snapshot endpoint as pods reach it.
    pub snapshot_url: &'a str,
}

/// The Job of `backup`'s attempt started at `attempt`: a name a restarted operator finds
/// again, at most 63 characters (it becomes a label of the pod).
pub fn job_name(backup: &str, attempt: Timestamp) -> String {
    let id = snapshot_id(attempt).to_ascii_lowercase();
    let prefix: String = backup.chars().take(63 - id.len() - 1).collect();
    format!("{}-{id}", prefix.trim_end_matches(['-', '.']))
}

/// The snapshot Job of `backup` for the attempt started at `attempt`.
///
/// # Errors
///
/// The Backup has no Redis source.
pub fn snapshot_job(
    backup: &Backup,
    attempt: Timestamp,
    setup: &SnapshotJobSetup,
) -> Result<Job, String> {
    let redis = backup
        .spec
        .source
        .redis
        .as_ref()
        .ok_or("a snapshot Job snapshots Redis")?;
    let owner = crate::backup::owner_of(backup);
    let key_ref = &backup.spec.encryption.secret_ref;
    let key = key_ref.key.as_deref().unwrap_or("key");
    let mut pod = PodParts::default();
    pod.mount(secret_volume("key", &key_ref.name), KEY_MOUNT, true);
    pod.mount(token_volume(), TOKEN_MOUNT, true);
    let work = Volume {
        name: "work".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    pod.mount(work, WORK_MOUNT, false);
    pod.args = vec![
        setup.titan_dr.into(),
        "backup".into(),
        "snapshot".into(),
        format!("--redis={}", redis.address),
        format!("--dir={WORK_MOUNT}"),
        format!("--key-file={KEY_MOUNT}/{key}"),
        format!("--owner={}/{}/{}", owner.namespace, owner.name, owner.uid),
        format!("--push-to={}", setup.snapshot_url),
        format!("--token-file={TOKEN_MOUNT}/token"),
        "--termination-log=/dev/termination-log".into(),
    ];
    if let Some(auth) = &redis.password_secret_ref {
        pod.mount(secret_volume("redis-auth", &auth.name), AUTH_MOUNT, true);
        pod.args
            .push(format!("--password-file={AUTH_MOUNT}/{}", auth.key));
    }
    offsite_args(&mut pod, backup);
    Ok(job(backup, attempt, setup, pod))
}

/// The copy to object storage: where, the retention there, and the credentials as the AWS
/// environment variables, from the Backup's Secret.
fn offsite_args(pod: &mut PodParts, backup: &Backup) {
    let (Some(s3), Some(url)) = (
        &backup.spec.destination.s3,
        crate::backup::offsite_url(backup),
    ) else {
        return;
    };
    pod.args.push(format!("--s3={url}"));
    pod.args
        .extend(s3.endpoint.iter().map(|e| format!("--s3-endpoint={e}")));
    pod.args
        .extend(s3.region.iter().map(|r| format!("--s3-region={r}")));
    if !s3.force_path_style.unwrap_or(s3.endpoint.is_some()) {
        pod.args.push("--s3-virtual-hosted".into());
    }
    if let Some(retention) = &backup.spec.retention {
        pod.args
            .extend(retention.keep_last.map(|n| format!("--keep-last={n}")));
        pod.args
            .extend(retention.max_age.as_ref().map(|a| format!("--max-age={a}")));
    }
    for (env, key) in [
        ("AWS_ACCESS_KEY_ID", "accessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "secretAccessKey"),
    ] {
        pod.env.push(EnvVar {
            name: env.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s3.credentials_secret_ref.name.clone(),
                    key: key.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
}

#[derive(Default)]
struct PodParts {
    args: Vec<String>,
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl PodParts {
    fn mount(&mut self, volume: Volume, path: &str, read_only: bool) {
        self.mounts.push(VolumeMount {
            name: volume.name.clone(),
            mount_path: path.into(),
            read_only: Some(read_only),
            ..Default::default()
        });
        self.volumes.push(volume);
    }
}

fn job(backup: &Backup, attempt: Timestamp, setup: &SnapshotJobSetup, pod: PodParts) -> Job {
    let labels = BTreeMap::from([(LABEL_BACKUP.to_string(), backup.name_any())]);
    let container = Container {
        name: "snapshot".into(),
        image: Some(setup.image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(pod.args),
        env: (!pod.env.is_empty()).then_some(pod.env),
        volume_mounts: Some(pod.mounts),
        security_context: Some(crate::job::restricted_container()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&backup.name_any(), attempt)),
            namespace: backup.namespace(),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                ATTEMPT_ANNOTATION.to_string(),
                attempt.to_string(),
            )])),
            owner_references: backup.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // One attempt per tick: a failure is recorded, and the schedule tries again.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(SNAPSHOT_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    // The pod talks to Redis and to the operator, not to the API server.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(crate::job::restricted_pod()),
                    volumes: Some(pod.volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's token for the snapshot endpoint, bound to the pod: the operator learns from it
/// which pod (and so which Job) delivers.
fn token_volume() -> Volume {
    Volume {
        name: "token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(AUDIENCE.into()),
                    expiration_seconds: Some(600),
                    path: "token".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How a finished snapshot Job ended: `None` while it runs.
pub fn outcome(job: &Job) -> Option<Result<(), String>> {
    let status = job.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if holds("Complete").is_some() {
        return Some(Ok(()));
    }
    holds("Failed").map(|c| {
        Err(format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or("Failed"),
            c.message.as_deref().unwrap_or_default()
        ))
    })
}

/// The reason and message of a failed snapshot, from its container's termination message
/// (`Reason: message`, as `titan-dr backup snapshot --termination-log` writes it), or the
/// Job's own failure.
pub fn failure_of(termination_message: Option<&str>, job_failure: &str) -> (String, String) {
    let from_container = termination_message.and_then(|text| {
        let (reason, message) = text.trim().split_once(": ")?;
        let camel = reason
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase())
            && reason.chars().all(|c| c.is_ascii_alphanumeric());
        camel.then(|| (reason.to_owned(), message.to_owned()))
    });
    from_container.unwrap_or_else(|| match job_failure.split_once(": ") {
        Some(("DeadlineExceeded", _)) => (
            "Timeout".into(),
            format!("the snapshot took longer than {SNAPSHOT_DEADLINE_SECONDS} s"),
        ),
        _ => ("SnapshotFailed".into(), job_failure.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(yaml: &str) -> Backup {
        let mut b: Backup = serde_yaml::from_str(yaml).unwrap();
        b.metadata.namespace = Some("titan".into());
        b.metadata.uid = Some("6f1c".into());
        b
    }

    const REDIS: &str = "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {name: redis}\nspec:\n  source: {redis: {address: 'titan-redis:6379', passwordSecretRef: {name: redis-auth, key: password}}}\n  retention: {keepLast: 3, maxAge: 7d}\n  destination: {path: redis, s3: {bucket: titan, endpoint: 'http://s3:8333', credentialsSecretRef: {name: s3}}}\n  encryption: {secretRef: {name: backup-key}}\n";

    #[test]
    fn the_job_snapshots_with_mounted_secrets_and_delivers_to_the_operator() {
        let at: Timestamp = "2026-12-02T04:15:00Z".parse().unwrap();
        let setup = SnapshotJobSetup {
            image: "titan-dr:local",
            titan_dr: "/titan-dr",
            snapshot_url: "http://titan-dr.system.svc:8081",
        };
        let job = snapshot_job(&backup(REDIS), at, &setup).unwrap();
        assert_eq!(job.name_any(), "redis-20261202t041500z");
        assert_eq!(
            job.annotations()[ATTEMPT_ANNOTATION],
            "2026-12-02T04:15:00Z"
        );
        let owner = &job.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Backup", "6f1c")
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        for expected in [
            "/titan-dr backup snapshot --redis=titan-redis:6379",
            "--key-file=/var/run/titan-dr/key/key",
            "--owner=titan/redis/6f1c",
            "--push-to=http://titan-dr.system.svc:8081",
            "--password-file=/var/run/titan-dr/redis-auth/password",
            "--s3=s3://titan/titan/6f1c --s3-endpoint=http://s3:8333",
            "--keep-last=3 --max-age=7d",
        ] {
            assert!(args.contains(expected), "{expected} in {args}");
        }
        let env = pod.containers[0].env.clone().unwrap();
        let from = env[0].value_from.as_ref().unwrap().secret_key_ref.as_ref();
        assert_eq!(from.map(|s| s.name.as_str()), Some("s3"));
        assert!(
            !args.contains("AWS"),
            "credentials never on the command line"
        );
    }

    #[test]
    fn a_long_backup_name_still_gives_a_label_sized_job_name() {
        let at: Timestamp = "2026-12-02T04:15:00Z".parse().unwrap();
        let name = job_name(&"a".repeat(253), at);
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-20261202t041500z"));
    }

    #[test]
    fn a_failure_names_the_reason_the_snapshot_gave_or_the_jobs() {
        let (reason, message) = failure_of(
            Some("ConnectionLost: Redis closed the connection after 3 MiB\n"),
            "BackoffLimitExceeded: Job has reached the specified backoff limit",
        );
        assert_eq!(reason, "ConnectionLost");
        assert_eq!(message, "Redis closed the connection after 3 MiB");
        let (reason, _) = failure_of(Some("panicked at src/x.rs"), "DeadlineExceeded: late");
        assert_eq!(reason, "Timeout");
        let (reason, message) = failure_of(None, "PodFailurePolicy: x");
        assert_eq!(
            (reason.as_str(), message.as_str()),
            ("SnapshotFailed", "PodFailurePolicy: x")
        );
    }
}
