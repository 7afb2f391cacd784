//! A Backup's Jobs, in its namespace and controlled by it: snapshots and restore checks.
//!
//! A snapshot Job runs `titan-dr backup snapshot` from the operator's image. It reads Redis
//! and the key (mounted from the Backup's Secret), writes the snapshot into its own emptyDir,
//! delivers it to the operator's snapshot endpoint with its pod-bound token, and copies it to
//! object storage with the credentials of the S3 Secret. The operator only schedules, and
//! records what the Job reports.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::Backup;
use crate::backup::manifest::snapshot_id;
use crate::names::{LABEL_BACKUP, LABEL_KIND, LABEL_OWNER_UID};

/// The annotation of a Backup's Job: the attempt it is (`status.lastScheduleTime`, or
/// `status.lastVerifyTime`).
pub const ATTEMPT_ANNOTATION: &str = "dr.titan.io/attempt";
/// The annotation of a verify Job: the snapshot it restores.
pub const SNAPSHOT_ANNOTATION: &str = "dr.titan.io/snapshot";
pub use crate::names::{KIND_SNAPSHOT, KIND_VERIFY};
/// How long one snapshot may take before its Job fails.
pub const SNAPSHOT_DEADLINE_SECONDS: i64 = 3600;

const KEY_MOUNT: &str = "/var/run/titan-dr/key";
const TOKEN_MOUNT: &str = "/var/run/titan-dr/token";
const WORK_MOUNT: &str = "/var/run/titan-dr/work";
const AUTH_MOUNT: &str = "/var/run/titan-dr/redis-auth";
const REDIS_DATA_MOUNT: &str = "/data";

/// What every snapshot Job is built with.
pub struct SnapshotJobSetup<'a> {
    pub image: &'a str,
    /// The `titan-dr` binary in that image.
    pub titan_dr: &'a str,
    /// The operator's snapshot endpoint as pods reach it.
    pub snapshot_url: &'a str,
}

/// The Job of `backup`'s attempt of `kind` started at `attempt`: a name a restarted operator
/// finds again, at most 63 characters (it becomes a label of the pod), and this Backup's
/// alone (see [`crate::job::owned_name`]: `a-verify`'s snapshots and `a`'s checks once
/// shared their names).
pub fn job_name(backup: &Backup, kind: &str, attempt: Timestamp) -> String {
    let id = snapshot_id(attempt).to_ascii_lowercase();
    let readable = match kind {
        KIND_VERIFY => format!("{}-verify-{id}", backup.name_any()),
        _ => format!("{}-{id}", backup.name_any()),
    };
    crate::job::owned_name(&readable, &backup.uid().unwrap_or_default())
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
    let (mut pod, key) = PodParts::with_key_and_token(backup);
    pod.args = vec![
        setup.titan_dr.into(),
        "backup".into(),
        "snapshot".into(),
        format!("--redis={}", redis.address),
    ];
    delivery_args(&mut pod, backup, setup, &key);
    if let Some(auth) = &redis.password_secret_ref {
        pod.mount(
            crate::job::secret_volume("redis-auth", &auth.name),
            AUTH_MOUNT,
            true,
        );
        pod.args
            .push(format!("--password-file={AUTH_MOUNT}/{}", auth.key));
    }
    Ok(job(backup, attempt, setup, pod, KIND_SNAPSHOT))
}

/// What a configuration snapshot reads: the namespace, and the label selectors (as
/// `kubectl -l` takes them) of its ConfigMaps and Secrets.
pub struct ConfigSelection<'a> {
    pub namespace: &'a str,
    pub config_maps: Option<String>,
    pub secrets: Option<String>,
    /// The ServiceAccount that may list them ([`super::access`]).
    pub account: &'a str,
}

/// The configuration snapshot Job of `backup`: `titan-dr backup snapshot-config`, as the
/// Backup's own ServiceAccount, which may list only the kinds it selects, in that namespace.
pub fn config_snapshot_job(
    backup: &Backup,
    attempt: Timestamp,
    selection: &ConfigSelection,
    setup: &SnapshotJobSetup,
) -> Job {
    let (mut pod, key) = PodParts::with_key_and_token(backup);
    pod.args = vec![
        setup.titan_dr.into(),
        "backup".into(),
        "snapshot-config".into(),
        format!("--namespace={}", selection.namespace),
    ];
    pod.args.extend(
        selection
            .config_maps
            .iter()
            .map(|s| format!("--config-maps={s}")),
    );
    pod.args
        .extend(selection.secrets.iter().map(|s| format!("--secrets={s}")));
    delivery_args(&mut pod, backup, setup, &key);
    let mut job = job(backup, attempt, setup, pod, KIND_SNAPSHOT);
    if let Some(spec) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        spec.service_account_name = Some(selection.account.to_owned());
        // This one lists objects: it needs its API token.
        spec.automount_service_account_token = Some(true);
    }
    job
}

/// Where a snapshot Job writes and delivers, and whose snapshot it is.
fn delivery_args(pod: &mut PodParts, backup: &Backup, setup: &SnapshotJobSetup, key: &str) {
    let owner = crate::backup::owner_of(backup);
    pod.args.extend([
        format!("--dir={WORK_MOUNT}"),
        format!("--key-file={KEY_MOUNT}/{key}"),
        format!("--owner={}/{}/{}", owner.namespace, owner.name, owner.uid),
        format!("--push-to={}", setup.snapshot_url),
        format!("--token-file={TOKEN_MOUNT}/token"),
        "--termination-log=/dev/termination-log".into(),
    ]);
    offsite_args(pod, backup);
}

/// The Job that checks snapshot `snapshot` of `backup` by restoring it: a throwaway Redis
/// (`image`) as a sidecar on the pod's loopback, into which `titan-dr backup restore`
/// replicates the verified snapshot and then checks every key. The snapshot comes from the
/// operator's endpoint, which lets a pod of this Job read it.
pub fn verify_job(
    backup: &Backup,
    attempt: Timestamp,
    snapshot: &str,
    image: &str,
    setup: &SnapshotJobSetup,
) -> Job {
    let (mut pod, key) = PodParts::with_key_and_token(backup);
    pod.args = vec![
        setup.titan_dr.into(),
        "backup".into(),
        "restore".into(),
        format!("--from={}", setup.snapshot_url),
        format!(
            "--backup={}/{}",
            backup.namespace().unwrap_or_default(),
            backup.name_any()
        ),
        format!("--token-file={TOKEN_MOUNT}/token"),
        format!("--work-dir={WORK_MOUNT}"),
        format!("--key-file={KEY_MOUNT}/{key}"),
        format!("--snapshot={snapshot}"),
        "--replicate-to=127.0.0.1:6379".into(),
        "--advertise-host=127.0.0.1".into(),
        "--check-timeout=120".into(),
    ];
    let redis = Container {
        name: "redis".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        // Only this pod reaches it; it keeps nothing.
        command: Some(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                REDIS_DATA_MOUNT,
            ]
            .map(String::from)
            .to_vec(),
        ),
        // A sidecar: up before the restore starts, stopped when it ends.
        restart_policy: Some("Always".into()),
        volume_mounts: Some(vec![VolumeMount {
            name: "redis-data".into(),
            mount_path: REDIS_DATA_MOUNT.into(),
            ..Default::default()
        }]),
        security_context: Some(SecurityContext {
            // Whatever user the image names: Pod Security wants a non-root one.
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            ..crate::job::restricted_container()
        }),
        ..Default::default()
    };
    pod.volumes.push(empty_dir("redis-data"));
    pod.init_containers.push(redis);
    let mut job = job(backup, attempt, setup, pod, KIND_VERIFY);
    job.annotations_mut()
        .insert(SNAPSHOT_ANNOTATION.into(), snapshot.into());
    job
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
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
    init_containers: Vec<Container>,
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl PodParts {
    /// The mounts every Backup Job has: the key, the pod's token for the snapshot endpoint,
    /// and a work folder; with the key's file name.
    fn with_key_and_token(backup: &Backup) -> (Self, String) {
        let key_ref = &backup.spec.encryption.secret_ref;
        let mut pod = PodParts::default();
        pod.mount(
            crate::job::secret_volume("key", &key_ref.name),
            KEY_MOUNT,
            true,
        );
        pod.mount(crate::job::endpoint_token_volume(), TOKEN_MOUNT, true);
        pod.mount(empty_dir("work"), WORK_MOUNT, false);
        (pod, key_ref.key.clone().unwrap_or_else(|| "key".into()))
    }

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

fn job(
    backup: &Backup,
    attempt: Timestamp,
    setup: &SnapshotJobSetup,
    pod: PodParts,
    kind: &str,
) -> Job {
    let name = job_name(backup, kind, attempt);
    let labels = BTreeMap::from([
        (LABEL_BACKUP.to_string(), backup.name_any()),
        (
            LABEL_OWNER_UID.to_string(),
            backup.uid().unwrap_or_default(),
        ),
        (LABEL_KIND.to_string(), kind.to_string()),
    ]);
    let container = Container {
        name: kind.into(),
        image: Some(setup.image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(pod.args),
        env: (!pod.env.is_empty()).then_some(pod.env),
        volume_mounts: Some(pod.mounts),
        security_context: Some(crate::job::restricted_container()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(name),
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
            pod_failure_policy: Some(crate::job::disruptions_not_counted()),
            active_deadline_seconds: Some(SNAPSHOT_DEADLINE_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    init_containers: (!pod.init_containers.is_empty())
                        .then_some(pod.init_containers),
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
    // Otherwise the end of the container's log, which the kubelet puts there instead.
    let log = termination_message
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(|text| format!("{job_failure}; the snapshot said: {text}"));
    from_container.unwrap_or_else(|| match job_failure.split_once(": ") {
        Some(("DeadlineExceeded", _)) => (
            "Timeout".into(),
            format!("the snapshot took longer than {SNAPSHOT_DEADLINE_SECONDS} s"),
        ),
        _ => (
            "SnapshotFailed".into(),
            log.unwrap_or_else(|| job_failure.to_owned()),
        ),
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
        assert!(
            job.name_any().starts_with("redis-20261202t041500z-"),
            "{}",
            job.name_any()
        );
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
        assert_eq!(
            spec.pod_failure_policy,
            Some(crate::job::disruptions_not_counted())
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let args = pod.containers[0].command.clone().unwrap().join(" ");
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
    fn the_check_restores_the_named_snapshot_into_a_sidecar_redis_on_loopback() {
        let at: Timestamp = "2026-12-02T05:00:00Z".parse().unwrap();
        let setup = SnapshotJobSetup {
            image: "titan-dr:local",
            titan_dr: "/titan-dr",
            snapshot_url: "http://titan-dr.system.svc:8081",
        };
        let job = verify_job(&backup(REDIS), at, "20261202T045500Z", "redis:7.4", &setup);
        assert!(job.name_any().starts_with("redis-verify-20261202t050000z-"));
        assert_eq!(job.labels()[LABEL_KIND], KIND_VERIFY);
        assert_eq!(job.annotations()[SNAPSHOT_ANNOTATION], "20261202T045500Z");
        let pod = job.spec.unwrap().template.spec.unwrap();
        let redis = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(redis.restart_policy.as_deref(), Some("Always"), "a sidecar");
        let serve = redis.command.clone().unwrap().join(" ");
        assert!(serve.contains("--bind 127.0.0.1"), "{serve}");
        let security = redis.security_context.as_ref().unwrap();
        assert_eq!(security.run_as_user, Some(65532));
        let restore = pod.containers[0].command.clone().unwrap().join(" ");
        for expected in [
            "/titan-dr backup restore --from=http://titan-dr.system.svc:8081",
            "--backup=titan/redis",
            "--snapshot=20261202T045500Z",
            "--replicate-to=127.0.0.1:6379",
        ] {
            assert!(restore.contains(expected), "{expected} in {restore}");
        }
    }

    #[test]
    fn a_configuration_snapshot_lists_as_the_backups_own_account() {
        let at: Timestamp = "2026-12-02T05:00:00Z".parse().unwrap();
        let setup = SnapshotJobSetup {
            image: "titan-dr:local",
            titan_dr: "/titan-dr",
            snapshot_url: "http://titan-dr.system.svc:8081",
        };
        let selection = ConfigSelection {
            namespace: "titan",
            config_maps: Some("app=titan".into()),
            secrets: None,
            account: "titan-dr-snapshot-config",
        };
        let job = config_snapshot_job(&backup(REDIS), at, &selection, &setup);
        assert_eq!(job.labels()[LABEL_KIND], KIND_SNAPSHOT);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("titan-dr-snapshot-config")
        );
        assert_eq!(pod.automount_service_account_token, Some(true));
        let args = pod.containers[0].command.clone().unwrap().join(" ");
        for expected in [
            "/titan-dr backup snapshot-config --namespace=titan --config-maps=app=titan",
            "--owner=titan/redis/6f1c",
            "--push-to=http://titan-dr.system.svc:8081",
        ] {
            assert!(args.contains(expected), "{expected} in {args}");
        }
        assert!(!args.contains("--secrets"), "{args}");
    }

    #[test]
    fn a_long_backup_name_still_gives_a_label_sized_job_name() {
        let at: Timestamp = "2026-12-02T04:15:00Z".parse().unwrap();
        let mut backup = Backup::new(&"a".repeat(253), Default::default());
        backup.metadata.uid = Some("u1".into());
        let name = job_name(&backup, KIND_SNAPSHOT, at);
        assert_eq!(name.len(), 63);
        assert_eq!(name, job_name(&backup, KIND_SNAPSHOT, at));
    }

    #[test]
    fn a_backups_job_names_are_its_own() {
        let at: Timestamp = "2026-12-02T04:15:00Z".parse().unwrap();
        let named = |name: &str, uid: &str| {
            let mut backup = Backup::new(name, Default::default());
            backup.metadata.uid = Some(uid.into());
            backup
        };
        let (a, a_verify) = (named("a", "u1"), named("a-verify", "u2"));
        assert!(job_name(&a, KIND_SNAPSHOT, at).starts_with("a-20261202t041500z-"));
        assert_ne!(
            job_name(&a, KIND_VERIFY, at),
            job_name(&a_verify, KIND_SNAPSHOT, at)
        );
        assert_ne!(
            job_name(&a, KIND_SNAPSHOT, at),
            job_name(&named("a", "u3"), KIND_SNAPSHOT, at)
        );
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
        let (_, message) = failure_of(Some("error: unexpected argument\n"), "Failed: x");
        assert_eq!(
            message,
            "Failed: x; the snapshot said: error: unexpected argument"
        );
    }
}
