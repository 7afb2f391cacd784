//! A planned attempt of a step, turned into the Kubernetes Job that runs it.
//! Pure: names, labels and the pod spec follow only from the resource, the run
//! and the attempt, so the same attempt always yields the same Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::disaster_recovery::{RestoreStep, Step};
use crate::api::{Backup, DisasterRecovery};
use crate::plan::{StepKind, parse_duration};

pub const LABEL_RECOVERY: &str = "dr.titan.io/recovery";
pub const LABEL_RUN: &str = "dr.titan.io/run";
pub const LABEL_STEP: &str = "dr.titan.io/step";
pub const LABEL_KIND: &str = "dr.titan.io/kind";
pub const LABEL_ATTEMPT: &str = "dr.titan.io/attempt";
/// Keeps a cluster-autoscaler scale-down from evicting a recovery step.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";

/// Bytes of output kept in the termination message (the kubelet allows 4096).
pub const OUTPUT_TAIL_BYTES: usize = 3072;

/// Runs the step's command with its output both in the pod log and, tail only,
/// in the termination message, and exits with the command's own exit code.
const WRAPPER: &str = r#"dir=$(mktemp -d 2>/dev/null || echo /tmp)
{ "$@" 2>&1; echo $? > "$dir/rc"; } | tee "$dir/out"
rc=$(cat "$dir/rc" 2>/dev/null || echo 1)
tail -c 3072 "$dir/out" > /dev/termination-log 2>/dev/null
exit "$rc""#;

/// The deterministic name of an attempt's Job: `<resource>-<run>-<step>-<index>`,
/// shortened with a hash when longer than a DNS label allows.
pub fn job_name(recovery: &str, run: &str, step: &str, attempt_index: u32) -> String {
    let name = format!("{recovery}-{run}-{step}-{attempt_index}");
    if name.len() <= 63 {
        return name;
    }
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    let keep = 63 - hash.len() - 1;
    let prefix = name[..keep].trim_end_matches('-');
    format!("{prefix}-{hash}")
}

/// Text of a StepKind for the `dr.titan.io/kind` label.
pub fn kind_label(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Step => "step",
        StepKind::Validation => "validation",
        StepKind::Rollback => "rollback",
    }
}

/// Where a restore Job finds the snapshots and the `titan-dr` binary.
#[derive(Debug, Clone)]
pub struct RestoreSetup {
    /// Image holding `titan-dr` (the operator's own).
    pub image: String,
    /// The `titan-dr` command inside that image.
    pub command: String,
    /// The operator's backup volume (a PVC, or a hostPath on a local node).
    pub backup_volume: Volume,
    /// The Backup named by the step, if it exists.
    pub backup: Option<Backup>,
}

const BACKUPS_MOUNT: &str = "/var/run/titan-dr/backups";
const KEY_MOUNT: &str = "/var/run/titan-dr/key";
const REDIS_DATA_MOUNT: &str = "/var/run/titan-dr/redis-data";
const REDIS_AUTH_MOUNT: &str = "/var/run/titan-dr/redis-auth";

/// Command line, volumes and mounts of a restore step's container.
type RestoreParts = (Vec<String>, Vec<Volume>, Vec<VolumeMount>);

/// The command line and volumes of a restore step: `titan-dr backup restore`
/// (or `restore-config`), which verifies before it touches anything; a Redis
/// restore then checks the restarted Redis.
fn restore_parts(
    restore: &RestoreStep,
    setup: &RestoreSetup,
    namespace: &str,
) -> Result<RestoreParts, String> {
    let backup = setup
        .backup
        .as_ref()
        .ok_or_else(|| format!("Backup {} does not exist", restore.backup))?;
    let key_ref = &backup.spec.encryption.secret_ref;
    let key = key_ref.key.clone().unwrap_or_else(|| "key".into());
    let mut backup_volume = setup.backup_volume.clone();
    backup_volume.name = "backups".into();
    let secret_volume = |name: &str, secret: &str| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let snapshot = restore.snapshot.as_deref().unwrap_or("latest");
    let common = [
        format!("--dir={BACKUPS_MOUNT}/{}", backup.spec.destination.path),
        format!("--key-file={KEY_MOUNT}/{key}"),
        format!("--snapshot={snapshot}"),
    ];
    let mut volumes = vec![backup_volume, secret_volume("key", &key_ref.name)];
    let mut mounts = vec![
        mount("backups", BACKUPS_MOUNT, true),
        mount("key", KEY_MOUNT, true),
    ];
    let Some(redis) = &restore.redis else {
        let mut argv = vec![
            setup.command.clone(),
            "backup".into(),
            "restore-config".into(),
        ];
        argv.extend(common);
        argv.push(format!("--namespace={namespace}"));
        return Ok((argv, volumes, mounts));
    };
    let file = redis.file.clone().unwrap_or_else(|| "dump.rdb".into());
    let wait = redis
        .wait
        .as_deref()
        .and_then(|w| parse_duration(w).ok())
        .unwrap_or(std::time::Duration::from_secs(60));
    let mut data_volume: Volume = serde_json::from_value(redis.data_volume.clone())
        .map_err(|e| format!("restore.redis.dataVolume is not a volume source: {e}"))?;
    data_volume.name = "redis-data".into();
    let mut argv = vec![setup.command.clone(), "backup".into(), "restore".into()];
    argv.extend(common);
    argv.extend([
        format!("--to={REDIS_DATA_MOUNT}/{file}"),
        format!("--check-redis={}", redis.address),
        format!("--check-timeout={}", wait.as_secs().max(1)),
    ]);
    if let Some(command) = &redis.restart_command {
        argv.push(format!("--then={command}"));
    }
    volumes.push(data_volume);
    mounts.push(mount("redis-data", REDIS_DATA_MOUNT, false));
    let auth = backup
        .spec
        .source
        .redis
        .as_ref()
        .and_then(|r| r.password_secret_ref.as_ref());
    if let Some(auth) = auth {
        argv.push(format!(
            "--check-password-file={REDIS_AUTH_MOUNT}/{}",
            auth.key
        ));
        volumes.push(secret_volume("redis-auth", &auth.name));
        mounts.push(mount("redis-auth", REDIS_AUTH_MOUNT, true));
    }
    Ok((argv, volumes, mounts))
}

/// The Job for one attempt (numbered from 1) of a step of the given run.
pub fn build_job(
    dr: &DisasterRecovery,
    run: &str,
    kind: StepKind,
    step: &Step,
    attempt: u32,
    restore: Option<&RestoreSetup>,
) -> Job {
    let recovery = dr.name_any();
    let index = attempt.saturating_sub(1);
    let labels = BTreeMap::from([
        (LABEL_RECOVERY.to_string(), recovery.clone()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_STEP.to_string(), step.name.clone()),
        (LABEL_KIND.to_string(), kind_label(kind).to_string()),
        (LABEL_ATTEMPT.to_string(), index.to_string()),
    ]);
    let template = dr.spec.template.clone().unwrap_or_default();
    let mut image = step.image.clone().or(template.image).unwrap_or_default();
    let (mut volumes, mut mounts) = (Vec::new(), Vec::new());
    let argv = match (&step.command, &step.args, &step.restore, restore) {
        (Some(command), _, _, _) => vec!["/bin/sh".to_string(), "-c".to_string(), command.clone()],
        (None, Some(args), _, _) => args.clone(),
        (None, None, Some(spec), Some(setup)) => {
            match restore_parts(spec, setup, &dr.namespace().unwrap_or_default()) {
                Ok((argv, v, m)) => {
                    image = setup.image.clone();
                    (volumes, mounts) = (v, m);
                    argv
                }
                // Reported by the step itself, so the failure shows in its status.
                Err(problem) => vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("echo {problem:?} >&2; exit 1"),
                ],
            }
        }
        _ => Vec::new(),
    };
    let mut command = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        WRAPPER.to_string(),
        "titan-step".to_string(),
    ];
    command.extend(argv);
    let mut env: Vec<EnvVar> = template.env;
    env.extend(step.env.iter().cloned());
    let deadline = step
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .map(|d| d.as_secs_f64().ceil().max(1.0) as i64);

    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&recovery, run, &step.name, index)),
            namespace: dr.namespace(),
            labels: Some(labels.clone()),
            owner_references: dr.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: deadline,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        SAFE_TO_EVICT.to_string(),
                        "false".to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    service_account_name: template.service_account_name,
                    // What Pod Security `restricted` asks of a pod.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "step".into(),
                        image: Some(image),
                        command: Some(command),
                        env: (!env.is_empty()).then_some(env),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        volume_mounts: (!mounts.is_empty()).then_some(mounts),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Default::default()
                            }),
                            run_as_non_root: Some(true),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery() -> DisasterRecovery {
        let mut dr: DisasterRecovery = serde_yaml::from_str(
            r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {name: complete-system-failure, namespace: titan, uid: 0000-1111}
spec:
  scenario: complete-system-failure
  template: {image: toolbox:1.0, serviceAccountName: titan-recovery, env: [{name: A, value: "1"}]}
  steps:
    - name: start-redis
      command: redis-server --daemonize yes
      timeout: 1m30s
      env: [{name: B, value: "2"}]
    - name: ping
      args: [redis-cli, ping]
      image: redis:7
"#,
        )
        .unwrap();
        dr.metadata.uid = Some("0000-1111".into());
        dr
    }

    #[test]
    fn names_are_deterministic_and_fit_a_dns_label() {
        assert_eq!(
            job_name("complete-system-failure", "1", "start-redis", 0),
            "complete-system-failure-1-start-redis-0"
        );
        let long = job_name(&"r".repeat(40), "12", &"s".repeat(40), 3);
        assert_eq!(long.len(), 63);
        assert_eq!(long, job_name(&"r".repeat(40), "12", &"s".repeat(40), 3));
        assert_ne!(long, job_name(&"r".repeat(40), "12", &"s".repeat(40), 4));
    }

    #[test]
    fn a_job_carries_labels_owner_deadline_and_the_wrapped_command() {
        let dr = recovery();
        let job = build_job(&dr, "1", StepKind::Step, &dr.spec.steps[0], 2, None);
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("complete-system-failure-1-start-redis-1")
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_RECOVERY], "complete-system-failure");
        assert_eq!(labels[LABEL_RUN], "1");
        assert_eq!(labels[LABEL_STEP], "start-redis");
        assert_eq!(labels[LABEL_ATTEMPT], "1");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DisasterRecovery", Some(true))
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let template = spec.template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[SAFE_TO_EVICT], "false");
        let pod = template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("titan-recovery"));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("toolbox:1.0"));
        let command = container.command.as_ref().unwrap();
        assert_eq!(
            &command[3..],
            [
                "titan-step",
                "/bin/sh",
                "-c",
                "redis-server --daemonize yes"
            ]
        );
        let env: Vec<_> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(env, ["A", "B"]);
    }

    #[test]
    fn args_run_without_a_shell_and_the_step_image_wins() {
        let dr = recovery();
        let job = build_job(&dr, "3", StepKind::Validation, &dr.spec.steps[1], 1, None);
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("redis:7"));
        assert_eq!(
            &pod.containers[0].command.as_ref().unwrap()[3..],
            ["titan-step", "redis-cli", "ping"]
        );
    }

    #[tokio::test]
    async fn the_wrapper_keeps_the_exit_code_and_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let script = WRAPPER.replace(
            "/dev/termination-log",
            &dir.path().join("msg").display().to_string(),
        );
        let status = tokio::process::Command::new("/bin/sh")
            .args([
                "-c",
                &script,
                "titan-step",
                "/bin/sh",
                "-c",
                "echo to-out; echo to-err >&2; exit 7",
            ])
            .stdout(std::fs::File::create(&out).unwrap())
            .status()
            .await
            .unwrap();
        assert_eq!(status.code(), Some(7));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "to-out\nto-err\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("msg")).unwrap(),
            "to-out\nto-err\n"
        );
    }
}
