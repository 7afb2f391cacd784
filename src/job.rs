//! A planned attempt of a step, turned into the Kubernetes Job that runs it.
//! Pure: names, labels and the pod spec follow only from the resource, the run
//! and the attempt, so the same attempt always yields the same Job.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::api::disaster_recovery::{JobTemplate, RedisRestart, RedisRestore, RestoreStep, Step};
use crate::api::duration::GoDuration;
use crate::api::{Backup, DisasterRecovery};
use crate::names::{AUDIENCE, REDIS_PASSWORD_ENV};
use crate::plan::StepKind;
use crate::probe::Probe;

pub use crate::names::{
    ATTEMPT_ENV, LABEL_ATTEMPT, LABEL_KIND, LABEL_OWNER_UID, LABEL_RECOVERY, LABEL_RUN,
    LABEL_RUN_NAME, LABEL_STEP, SAFE_TO_EVICT, TARGET_NAMESPACE_ENV,
};

/// The emptyDir through which the init container hands titan-step to the step's container.
pub const TITAN_STEP_VOLUME: &str = "titan-step";
const TITAN_STEP_DIR: &str = "/titan-step";
/// Where the step's container finds titan-step, its entrypoint.
pub const TITAN_STEP: &str = "/titan-step/titan-step";
/// The init container that copies titan-step out of the operator's image.
pub const INSTALL_CONTAINER: &str = "install-titan-step";
/// The container that runs the step.
pub const STEP_CONTAINER: &str = "step";

/// The deterministic name of an attempt's Job: `<resource>-<run>-<step>-<index>` (cut to fit)
/// and a hash of the owner's UID and those four, so that no other resource's Job has it
/// (`x` with step `1-zz` and `x-1` with step `zz` spell the same prefix) and a resource
/// deleted and made again under its name never meets its predecessor's Jobs.
pub fn job_name(recovery: &str, uid: &str, run: &str, step: &str, attempt_index: u32) -> String {
    owned_name(&format!("{recovery}-{run}-{step}-{attempt_index}"), uid)
}

/// `readable`, cut to leave room, then `-` and 8 hex digits of SHA-256 over the owner's UID
/// and `readable`: at most 63 characters, a DNS label, and a label value.
pub fn owned_name(readable: &str, owner_uid: &str) -> String {
    let digest = Sha256::digest(format!("{owner_uid}/{readable}").as_bytes());
    let hash = hex::encode(&digest[..4]);
    let keep = 63 - hash.len() - 1;
    let prefix: String = readable.chars().take(keep).collect();
    format!("{}-{hash}", prefix.trim_end_matches(['-', '.']))
}

/// Text of a StepKind for the `dr.titan.io/kind` label.
pub fn kind_label(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Step => "step",
        StepKind::Validation => "validation",
        StepKind::Rollback => "rollback",
    }
}

/// What every Job is built with besides the resource: the operator's settings, and for a
/// restore step what the controller looked up.
#[derive(Debug, Clone)]
pub struct JobSetup {
    /// The operator's own image: it runs the init container that installs titan-step, and
    /// restore and probe steps.
    pub operator_image: String,
    /// The `titan-dr` command inside the operator's image, run by restore and probe steps.
    pub titan_dr_command: String,
    /// Path of titan-step inside the operator's image.
    pub titan_step_path: String,
    /// `activeDeadlineSeconds` of a step without `timeout`; zero sets none.
    pub default_timeout: Duration,
    /// How restore steps run; a restore step without it fails saying so.
    pub restore: Option<RestoreSetup>,
}

/// Where a restore Job finds the snapshots.
#[derive(Debug, Clone)]
pub struct RestoreSetup {
    /// The operator's snapshot endpoint, as restore Jobs reach it (`None`: not served).
    pub snapshot_url: Option<String>,
    /// The Backup named by the step, if it exists.
    pub backup: Option<Backup>,
    /// When the run started: `latest` is the newest snapshot started by then.
    pub not_after: Option<k8s_openapi::jiff::Timestamp>,
}

const TOKEN_MOUNT: &str = "/var/run/titan-dr/token";
const WORK_MOUNT: &str = "/var/run/titan-dr/work";
const KEY_MOUNT: &str = "/var/run/titan-dr/key";
const REDIS_DATA_MOUNT: &str = "/var/run/titan-dr/redis-data";
const REDIS_AUTH_MOUNT: &str = "/var/run/titan-dr/redis-auth";
/// How long the token a restore Job shows the snapshot endpoint lives; the kubelet renews it.
const TOKEN_SECONDS: i64 = 600;

/// The container of a restore step, beside its image.
#[derive(Default)]
struct RestoreParts {
    argv: Vec<String>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    env: Vec<EnvVar>,
}

impl RestoreParts {
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

pub(crate) fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The command line and volumes of a restore step: `titan-dr backup restore` (or
/// `restore-config`), which downloads the snapshot from the operator's endpoint with the
/// pod's own ServiceAccount token and verifies it before it touches anything. A Redis
/// restore then loads it over replication (no `dataVolume`), or writes it into the data
/// volume and restarts Redis; either way it checks the restored Redis.
fn restore_parts(
    restore: &RestoreStep,
    setup: &RestoreSetup,
    titan_dr: &str,
    target_namespace: &str,
) -> Result<RestoreParts, String> {
    let backup = setup.backup.as_ref().ok_or_else(|| {
        format!(
            "restore names Backup {}, which does not exist in this namespace",
            restore.backup
        )
    })?;
    let url = setup.snapshot_url.as_deref().ok_or(
        "this operator serves no snapshots to restore Jobs (set --snapshot-url, TITAN_SNAPSHOT_URL)",
    )?;
    let mut parts = RestoreParts::default();
    let source = snapshot_source(&mut parts, restore, setup, backup, url);
    let Some(redis) = &restore.redis else {
        parts.argv = vec![titan_dr.into(), "backup".into(), "restore-config".into()];
        parts.argv.extend(source);
        parts.argv.push(format!("--namespace={target_namespace}"));
        return Ok(parts);
    };
    parts.argv = vec![titan_dr.into(), "backup".into(), "restore".into()];
    parts.argv.extend(source);
    redis_restore(&mut parts, redis, backup)?;
    Ok(parts)
}

/// The pod's own ServiceAccount token for the operator's snapshot endpoint (audience
/// [`AUDIENCE`], bound to the pod and renewed by the kubelet), as volume `token`.
pub(crate) fn endpoint_token_volume() -> Volume {
    Volume {
        name: "token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(AUDIENCE.into()),
                    expiration_seconds: Some(TOKEN_SECONDS),
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

/// Mounts what a restore Job needs to fetch the snapshot (its ServiceAccount token for the
/// endpoint, the key, a work folder) and returns the arguments that name the snapshot.
fn snapshot_source(
    parts: &mut RestoreParts,
    restore: &RestoreStep,
    setup: &RestoreSetup,
    backup: &Backup,
    url: &str,
) -> Vec<String> {
    let key_ref = &backup.spec.encryption.secret_ref;
    let key = key_ref.key.clone().unwrap_or_else(|| "key".into());
    let token = endpoint_token_volume();
    parts.mount(token, TOKEN_MOUNT, true);
    parts.mount(secret_volume("key", &key_ref.name), KEY_MOUNT, true);
    let work = Volume {
        name: "work".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    parts.mount(work, WORK_MOUNT, false);
    let snapshot = restore.snapshot.as_deref().unwrap_or("latest");
    let namespace = backup.namespace().unwrap_or_default();
    let mut args = vec![
        format!("--from={url}"),
        format!("--backup={namespace}/{}", backup.name_any()),
        format!("--token-file={TOKEN_MOUNT}/token"),
        format!("--work-dir={WORK_MOUNT}"),
        format!("--key-file={KEY_MOUNT}/{key}"),
        format!("--snapshot={snapshot}"),
    ];
    args.extend(
        setup
            .not_after
            .filter(|_| snapshot == "latest")
            .map(|at| format!("--not-after={at}")),
    );
    args
}

/// The rest of a Redis restore's command line: how the snapshot gets into Redis, how long
/// to wait for it, and the password to check it with.
fn redis_restore(
    parts: &mut RestoreParts,
    redis: &RedisRestore,
    backup: &Backup,
) -> Result<(), String> {
    let wait = redis
        .wait
        .as_ref()
        .map_or(std::time::Duration::from_secs(60), GoDuration::duration);
    match &redis.data_volume {
        None => replicate_to(parts, redis),
        Some(data_volume) => into_data_volume(parts, redis, data_volume)?,
    }
    parts
        .argv
        .push(format!("--check-timeout={}", wait.as_secs().max(1)));
    let auth = redis.password_secret_ref.as_ref().or(backup
        .spec
        .source
        .redis
        .as_ref()
        .and_then(|r| r.password_secret_ref.as_ref()));
    if let Some(auth) = auth {
        parts.argv.push(format!(
            "--check-password-file={REDIS_AUTH_MOUNT}/{}",
            auth.key
        ));
        parts.mount(
            secret_volume("redis-auth", &auth.name),
            REDIS_AUTH_MOUNT,
            true,
        );
    }
    Ok(())
}

/// Without a data volume: the snapshot is loaded over replication, Redis connecting back to
/// this pod for the sync.
fn replicate_to(parts: &mut RestoreParts, redis: &RedisRestore) {
    parts.argv.push(format!("--replicate-to={}", redis.address));
    parts.env.push(EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// With a data volume: the snapshot is written into it, then Redis restarted on it (shut
/// down, or by the step's command, or by someone else).
fn into_data_volume(
    parts: &mut RestoreParts,
    redis: &RedisRestore,
    data_volume: &Value,
) -> Result<(), String> {
    let file = redis.file.clone().unwrap_or_else(|| "dump.rdb".into());
    let mut data_volume: Volume = serde_json::from_value(data_volume.clone())
        .map_err(|e| format!("restore.redis.dataVolume is not a volume source: {e}"))?;
    data_volume.name = "redis-data".into();
    parts.mount(data_volume, REDIS_DATA_MOUNT, false);
    parts.argv.extend([
        format!("--to={REDIS_DATA_MOUNT}/{file}"),
        format!("--check-redis={}", redis.address),
    ]);
    match (&redis.restart_command, redis.restart) {
        (Some(_), Some(_)) => return Err("set restart or restartCommand, not both".into()),
        (Some(command), None) => parts.argv.push(format!("--then={command}")),
        (None, None | Some(RedisRestart::Shutdown)) => {
            parts.argv.push("--shutdown-redis".into());
        }
        (None, Some(RedisRestart::External)) => {}
    }
    Ok(())
}

/// The command line of a probe step, `titan-dr probe --spec JSON`, and the env its probe
/// reads: a redis password from its Secret.
fn probe_parts(
    step: &Step,
    probe: &Probe,
    titan_dr: &str,
) -> Result<(Vec<String>, Vec<EnvVar>), String> {
    let argv = step.argv(titan_dr).ok_or("the probe does not serialize")?;
    let password = probe
        .redis
        .as_ref()
        .and_then(|r| r.password_secret_ref.as_ref());
    let env = password.map(|secret| EnvVar {
        name: REDIS_PASSWORD_ENV.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    Ok((argv, env.into_iter().collect()))
}

/// The restricted defaults of every step pod (what Pod Security `restricted` asks), under the
/// template's and the step's own settings.
fn pod_security_context(template: &JobTemplate, step: &Step) -> PodSecurityContext {
    overlay(
        restricted_pod(),
        [
            template.pod_security_context.as_ref(),
            step.pod_security_context.as_ref(),
        ],
    )
}

/// What Pod Security `restricted` asks of a pod.
pub(crate) fn restricted_pod() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What Pod Security `restricted` asks of a container. The init container that hands over
/// titan-step keeps exactly this: what a step loosens for itself is not lent to it.
pub(crate) fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

/// The restricted defaults of the step's container, under the template's and the step's.
fn container_security_context(template: &JobTemplate, step: &Step) -> SecurityContext {
    overlay(
        restricted_container(),
        [
            template.security_context.as_ref(),
            step.security_context.as_ref(),
        ],
    )
}

/// `base` with every field a layer sets taken from that layer, one layer after the other:
/// objects merge field by field, anything else (a list, a number) is replaced, as a JSON
/// merge patch of the serialized objects does.
fn overlay<'a, T>(base: T, layers: impl IntoIterator<Item = Option<&'a T>>) -> T
where
    T: Serialize + DeserializeOwned + 'a,
{
    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(into), Value::Object(from)) => {
                for (key, value) in from {
                    merge(into.entry(key).or_insert(Value::Null), value);
                }
            }
            (into, from) => *into = from,
        }
    }
    let Ok(mut merged) = serde_json::to_value(&base) else {
        return base;
    };
    for layer in layers.into_iter().flatten() {
        if let Ok(layer) = serde_json::to_value(layer) {
            merge(&mut merged, layer);
        }
    }
    // The merge of two objects of one type is of that type; the fallback is only a guard.
    serde_json::from_value(merged).unwrap_or(base)
}

/// The run a Job belongs to: its ID (in the Job's name and the `dr.titan.io/run` label) and its
/// RecoveryRun, the Job's owner (whose UID and name the Job's labels carry).
#[derive(Debug, Clone)]
pub struct JobRun {
    pub id: String,
    pub owner: OwnerReference,
}

/// The Job for one attempt (numbered from 1) of a step of the given run.
///
/// No shell is needed in the step's image: an init container copies titan-step from the
/// operator's image into an emptyDir, and the step's container runs its program through it,
/// which keeps the output's tail as the termination message and the program's exit code.
pub fn build_job(
    dr: &DisasterRecovery,
    run: &JobRun,
    kind: StepKind,
    step: &Step,
    attempt: u32,
    setup: &JobSetup,
) -> Job {
    let recovery = dr.name_any();
    let index = attempt.saturating_sub(1);
    let uid = &run.owner.uid;
    let mut labels = job_labels(&recovery, uid, &run.id, kind, step, index);
    labels.insert(LABEL_RUN_NAME.into(), run.owner.name.clone());
    let template = dr.spec.template.clone().unwrap_or_default();
    let target_namespace = dr.target_namespace();
    let mut program = step_program(step, &template, setup, &target_namespace);
    let env = step_env(
        attempt,
        target_namespace,
        &template,
        step,
        program.parts.env,
    );
    program.parts.env = env;
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&recovery, uid, &run.id, &step.name, index)),
            namespace: dr.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![run.owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            pod_failure_policy: Some(disruptions_not_counted()),
            active_deadline_seconds: step_deadline(step, setup),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        SAFE_TO_EVICT.to_string(),
                        "false".to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(step_pod(&template, step, setup, program)),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// A pod that a node drain, a preemption or an eviction took (the kubelet and the API server
/// give it the `DisruptionTarget` condition) is replaced rather than counted, so that
/// `backoffLimit: 0` still makes the step's own failure final while a drained node fails no step.
pub fn disruptions_not_counted() -> PodFailurePolicy {
    PodFailurePolicy {
        rules: vec![PodFailurePolicyRule {
            action: "Ignore".into(),
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                type_: "DisruptionTarget".into(),
                status: Some("True".into()),
            }]),
            on_exit_codes: None,
        }],
    }
}

/// `pods`, newest first: a Job whose pod was disrupted made another one, and that one decides.
pub fn newest_first<'p>(pods: impl IntoIterator<Item = &'p Pod>) -> Vec<&'p Pod> {
    let mut pods: Vec<&Pod> = pods.into_iter().collect();
    pods.sort_by_key(|pod| std::cmp::Reverse(pod.creation_timestamp().map(|t| t.0)));
    pods
}

/// The labels of an attempt's Job and pod.
fn job_labels(
    recovery: &str,
    uid: &str,
    run: &str,
    kind: StepKind,
    step: &Step,
    index: u32,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_RECOVERY.to_string(), recovery.to_string()),
        (LABEL_OWNER_UID.to_string(), uid.to_string()),
        (LABEL_RUN.to_string(), run.to_string()),
        (LABEL_STEP.to_string(), step.name.clone()),
        (LABEL_KIND.to_string(), kind_label(kind).to_string()),
        (LABEL_ATTEMPT.to_string(), index.to_string()),
    ])
}

/// What the step's container runs: its image, and its command line through titan-step with
/// the volumes and env a restore or probe adds (`parts.argv` is unused).
struct StepProgram {
    image: Option<String>,
    command: Vec<String>,
    parts: RestoreParts,
}

/// The program of a step of any kind: a shell command, args, a restore or a probe. A step
/// that cannot run (a restore without its Backup, say) gets `titan-step fail` with why, so
/// that the failure shows in its status.
fn step_program(
    step: &Step,
    template: &JobTemplate,
    setup: &JobSetup,
    target_namespace: &str,
) -> StepProgram {
    let mut image = step.image.clone().or(template.image.clone());
    let mut parts = RestoreParts::default();
    let argv = match (&step.command, &step.args, &step.restore, &step.probe) {
        (Some(_), ..) | (None, Some(_), ..) => {
            Ok(step.argv(&setup.titan_dr_command).unwrap_or_default())
        }
        (None, None, Some(spec), _) => {
            // Restore steps run `titan-dr`, which only the operator's image holds.
            image = Some(setup.operator_image.clone());
            match &setup.restore {
                Some(restore) => {
                    restore_parts(spec, restore, &setup.titan_dr_command, target_namespace).map(
                        |mut restore| {
                            let argv = std::mem::take(&mut restore.argv);
                            parts = restore;
                            argv
                        },
                    )
                }
                None => Err("restore steps are not set up in this operator".to_string()),
            }
        }
        (None, None, None, Some(probe)) => {
            // Probes are run by `titan-dr` too.
            image = Some(setup.operator_image.clone());
            probe_parts(step, probe, &setup.titan_dr_command).map(|(argv, env)| {
                parts.env = env;
                argv
            })
        }
        (None, None, None, None) => {
            Err("the step has neither command, args, restore nor probe".to_string())
        }
    };
    let command = match argv {
        Ok(argv) => [TITAN_STEP, "run", "--"]
            .map(String::from)
            .into_iter()
            .chain(argv)
            .collect(),
        // Reported by the step itself, so the failure shows in its status.
        Err(problem) => vec![TITAN_STEP.to_string(), "fail".to_string(), problem],
    };
    StepProgram {
        image,
        command,
        parts,
    }
}

/// The step's environment: the attempt and target namespace, the template's, the step's,
/// and last what the operator sets for a restore or probe (`extra`), which is what the step
/// sees.
fn step_env(
    attempt: u32,
    target_namespace: String,
    template: &JobTemplate,
    step: &Step,
    extra: Vec<EnvVar>,
) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    };
    let mut env = vec![
        value(ATTEMPT_ENV, attempt.to_string()),
        value(TARGET_NAMESPACE_ENV, target_namespace),
    ];
    env.extend(template.env.iter().cloned());
    env.extend(step.env.iter().cloned());
    env.extend(extra);
    env
}

/// `activeDeadlineSeconds`: the step's `timeout`, else the operator's default (none if
/// zero); whole seconds, rounded up, at least one.
fn step_deadline(step: &Step, setup: &JobSetup) -> Option<i64> {
    step.timeout
        .as_ref()
        .map(GoDuration::duration)
        .or(Some(setup.default_timeout).filter(|d| !d.is_zero()))
        .map(|d| d.as_secs_f64().ceil().max(1.0) as i64)
}

/// The step's pod: the init container that installs titan-step into the shared emptyDir,
/// then the step's container running its program through it.
fn step_pod(
    template: &JobTemplate,
    step: &Step,
    setup: &JobSetup,
    program: StepProgram,
) -> PodSpec {
    let StepProgram {
        image,
        command,
        parts,
    } = program;
    let (mut volumes, mut mounts) = (parts.volumes, parts.mounts);
    volumes.push(Volume {
        name: TITAN_STEP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    mounts.push(titan_step_mount(true));
    PodSpec {
        restart_policy: Some("Never".into()),
        volumes: Some(volumes),
        service_account_name: template.service_account_name.clone(),
        security_context: Some(pod_security_context(template, step)),
        init_containers: Some(vec![install_container(setup)]),
        containers: vec![Container {
            name: STEP_CONTAINER.into(),
            image,
            command: Some(command),
            env: Some(parts.env),
            termination_message_policy: Some("FallbackToLogsOnError".into()),
            volume_mounts: Some(mounts),
            security_context: Some(container_security_context(template, step)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The init container that copies titan-step out of the operator's image, with exactly the
/// restricted security context.
fn install_container(setup: &JobSetup) -> Container {
    Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(setup.operator_image.clone()),
        command: Some(vec![
            setup.titan_step_path.clone(),
            "install".into(),
            TITAN_STEP.into(),
        ]),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![titan_step_mount(false)]),
        security_context: Some(restricted_container()),
        ..Default::default()
    }
}

fn titan_step_mount(read_only: bool) -> VolumeMount {
    VolumeMount {
        name: TITAN_STEP_VOLUME.into(),
        mount_path: TITAN_STEP_DIR.into(),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// The Job that stands for an attempt whose own Job the API server refused as invalid (a
/// step's securityContext out of range, say): the same name, labels, owner and deadline, one
/// restricted container of the operator's image that prints why and exits 1. The attempt then
/// fails like any other, recorded by a Job, so retries, `critical` and rollback apply and an
/// operator restarted later judges it the same way.
pub fn refused_job(job: &Job, why: &str, setup: &JobSetup) -> Job {
    let mut refused = job.clone();
    let message = format!("the API server refused this step's Job: {why}");
    if let Some(pod) = refused.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        *pod = PodSpec {
            restart_policy: Some("Never".into()),
            security_context: Some(restricted_pod()),
            containers: vec![Container {
                name: STEP_CONTAINER.into(),
                image: Some(setup.operator_image.clone()),
                command: Some(vec![setup.titan_step_path.clone(), "fail".into(), message]),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                security_context: Some(restricted_container()),
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_pod_of_a_job_comes_first() {
        let pod = |name: &str, second: i64| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_795_000_000 + second).unwrap(),
                )),
                ..Default::default()
            },
            ..Default::default()
        };
        let pods = [
            pod("evicted", 0),
            pod("replacement", 30),
            pod("between", 10),
        ];
        let order: Vec<String> = newest_first(&pods).iter().map(|p| p.name_any()).collect();
        assert_eq!(order, ["replacement", "between", "evicted"]);
    }

    /// The first run of [`recovery`].
    fn run_one() -> JobRun {
        JobRun {
            id: "1".into(),
            owner: OwnerReference {
                api_version: "dr.titan.io/v1alpha1".into(),
                kind: "RecoveryRun".into(),
                name: "complete-system-failure-1".into(),
                uid: "0000-1111".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

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
        let name = job_name("complete-system-failure", "u1", "1", "start-redis", 0);
        assert!(
            name.starts_with("complete-system-failure-1-start-redis-0-"),
            "{name}"
        );
        assert_eq!(
            name,
            job_name("complete-system-failure", "u1", "1", "start-redis", 0)
        );
        let long = job_name(&"r".repeat(40), "u1", "12", &"s".repeat(40), 3);
        assert_eq!(long.len(), 63);
        assert_ne!(
            long,
            job_name(&"r".repeat(40), "u1", "12", &"s".repeat(40), 4)
        );
    }

    #[test]
    fn names_differ_between_owners_even_when_their_parts_spell_the_same() {
        // `x` with step `1-zz` and `x-1` with step `zz`: once the same name, and a 409.
        assert_ne!(
            job_name("x", "u1", "1", "1-zz", 0),
            job_name("x-1", "u2", "1", "zz", 0)
        );
        // The same resource made again under its name (a new UID) never meets the old Jobs.
        assert_ne!(
            job_name("x", "u1", "1", "a", 0),
            job_name("x", "u3", "1", "a", 0)
        );
    }

    fn setup() -> JobSetup {
        JobSetup {
            operator_image: "titan-dr:0.1.0".into(),
            titan_dr_command: "/usr/local/bin/titan-dr".into(),
            titan_step_path: "/usr/local/bin/titan-step".into(),
            default_timeout: Duration::from_secs(30 * 60),
            restore: None,
        }
    }

    fn pod_of(job: Job) -> PodSpec {
        job.spec.unwrap().template.spec.unwrap()
    }

    /// The Job of attempt `attempt` of the first step of run 1, with [`setup`].
    fn first_step_job(dr: &DisasterRecovery, attempt: u32) -> Job {
        build_job(
            dr,
            &run_one(),
            StepKind::Step,
            &dr.spec.steps[0],
            attempt,
            &setup(),
        )
    }

    /// The pod of the first attempt of `dr.spec.steps[index]`, with [`setup`].
    fn step_pod(dr: &DisasterRecovery, index: usize) -> PodSpec {
        let step = &dr.spec.steps[index];
        pod_of(build_job(dr, &run_one(), StepKind::Step, step, 1, &setup()))
    }

    #[test]
    fn a_refused_job_keeps_its_identity_and_only_says_why() {
        let dr = recovery();
        let job = first_step_job(&dr, 1);
        let refused = refused_job(&job, "runAsUser: Invalid value: -1", &setup());
        assert_eq!(
            refused.metadata, job.metadata,
            "name, labels and owner stay"
        );
        let spec = refused.spec.unwrap();
        assert_eq!(
            spec.active_deadline_seconds,
            job.spec.as_ref().unwrap().active_deadline_seconds
        );
        let pod = spec.template.spec.unwrap();
        assert!(pod.init_containers.is_none() && pod.volumes.is_none());
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("titan-dr:0.1.0"));
        let command = container.command.as_ref().unwrap();
        assert_eq!(&command[..2], ["/usr/local/bin/titan-step", "fail"]);
        assert!(command[2].contains("refused") && command[2].contains("runAsUser"));
        assert_eq!(container.security_context, Some(restricted_container()));
        assert!(container.env.is_none(), "nothing of the step reaches it");
    }

    #[test]
    fn a_job_carries_labels_owner_deadline_and_the_step_command() {
        let dr = recovery();
        let job = first_step_job(&dr, 2);
        let name = job.metadata.name.clone().unwrap();
        assert!(
            name.starts_with("complete-system-failure-1-start-redis-1-"),
            "{name}"
        );
        let labels = job.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_RECOVERY], "complete-system-failure");
        assert_eq!(labels[LABEL_RUN], "1");
        assert_eq!(labels[LABEL_STEP], "start-redis");
        assert_eq!(labels[LABEL_ATTEMPT], "1");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("RecoveryRun", Some(true))
        );
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let rule = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(
            rule.action, "Ignore",
            "a disrupted pod is replaced, not counted"
        );
        assert_eq!(
            rule.on_pod_conditions.as_ref().unwrap()[0].type_,
            "DisruptionTarget"
        );
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let template = spec.template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(annotations[SAFE_TO_EVICT], "false");
        let pod = template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("titan-recovery"));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("toolbox:1.0"));
        assert_eq!(
            container.command.as_deref().unwrap(),
            [
                TITAN_STEP,
                "run",
                "--",
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
        assert_eq!(env, [ATTEMPT_ENV, TARGET_NAMESPACE_ENV, "A", "B"]);
    }

    #[test]
    fn args_run_without_a_shell_and_the_step_image_wins() {
        let dr = recovery();
        let run = JobRun {
            id: "3".into(),
            ..run_one()
        };
        let job = build_job(
            &dr,
            &run,
            StepKind::Validation,
            &dr.spec.steps[1],
            1,
            &setup(),
        );
        let pod = pod_of(job);
        assert_eq!(pod.containers[0].image.as_deref(), Some("redis:7"));
        let command = pod.containers[0].command.clone().unwrap();
        assert_eq!(command, [TITAN_STEP, "run", "--", "redis-cli", "ping"]);
        // Neither the step nor the init container needs a shell in its image.
        let init = &pod.init_containers.as_ref().unwrap()[0];
        for argv in [&command, init.command.as_ref().unwrap()] {
            assert!(!argv.iter().any(|a| a.contains("sh")), "{argv:?}");
        }
    }

    #[test]
    fn an_init_container_hands_titan_step_to_the_step_through_an_empty_dir() {
        let dr = recovery();
        let pod = step_pod(&dr, 0);
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == TITAN_STEP_VOLUME)
            .expect("the titan-step volume");
        assert!(volume.empty_dir.is_some());

        let init = pod.init_containers.as_deref().unwrap();
        assert_eq!(init.len(), 1);
        let init = &init[0];
        assert_eq!(init.name, INSTALL_CONTAINER);
        assert_eq!(init.image.as_deref(), Some("titan-dr:0.1.0"));
        assert_eq!(
            init.command.as_deref().unwrap(),
            ["/usr/local/bin/titan-step", "install", TITAN_STEP]
        );
        let step = &pod.containers[0];
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(step.name, STEP_CONTAINER);
        assert_eq!(
            step.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
        let mount_of = |c: &Container| {
            c.volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == TITAN_STEP_VOLUME)
                .map(|m| (m.mount_path.clone(), m.read_only))
        };
        assert_eq!(mount_of(init), Some(("/titan-step".into(), Some(false))));
        assert_eq!(mount_of(step), Some(("/titan-step".into(), Some(true))));
        assert!(TITAN_STEP.starts_with("/titan-step/"));
        // Restricted, like the step by default.
        assert_eq!(init.security_context, step.security_context);
        assert_eq!(init.security_context, Some(restricted_container()));
        assert_eq!(
            init.termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn a_step_without_timeout_gets_the_default_deadline() {
        let mut dr = recovery();
        dr.spec.steps[0].timeout = None;
        let step = &dr.spec.steps[0];
        let job = build_job(&dr, &run_one(), StepKind::Step, step, 1, &setup());
        assert_eq!(job.spec.unwrap().active_deadline_seconds, Some(1800));
        let none = JobSetup {
            default_timeout: Duration::ZERO,
            ..setup()
        };
        let job = build_job(&dr, &run_one(), StepKind::Step, step, 1, &none);
        assert_eq!(job.spec.unwrap().active_deadline_seconds, None);
    }

    #[test]
    fn a_restore_step_that_cannot_be_built_fails_through_titan_step() {
        let mut dr = recovery();
        dr.spec.steps[0] = serde_yaml::from_str(
            "{name: restore-redis, restore: {backup: redis, configuration: {}}}",
        )
        .unwrap();
        let step = &dr.spec.steps[0];
        let with_restore = JobSetup {
            restore: Some(RestoreSetup {
                snapshot_url: Some(URL.into()),
                backup: None,
                not_after: None,
            }),
            ..setup()
        };
        let pod = pod_of(build_job(
            &dr,
            &run_one(),
            StepKind::Step,
            step,
            1,
            &with_restore,
        ));
        let container = &pod.containers[0];
        // The operator's image, which has no shell.
        assert_eq!(container.image.as_deref(), Some("titan-dr:0.1.0"));
        assert_eq!(
            container.command.as_deref().unwrap(),
            [
                TITAN_STEP,
                "fail",
                "restore names Backup redis, which does not exist in this namespace"
            ]
        );
        assert!(pod.init_containers.is_some());
    }

    const URL: &str = "http://titan-dr.titan-dr-system.svc:8081";

    #[test]
    fn a_probe_step_runs_titan_dr_probe_in_the_operators_image_with_the_password_secret() {
        let mut dr = recovery();
        dr.spec.steps[0] = serde_yaml::from_str(
            "{name: redis-keys, probe: {redis: {address: 'redis:6379', check: KeyCount, \
             passwordSecretRef: {name: redis-auth, key: password}}}, env: [{name: B, value: '2'}]}",
        )
        .unwrap();
        let pod = step_pod(&dr, 0);
        let container = &pod.containers[0];
        // Not the template's toolbox image: only the operator's has titan-dr.
        assert_eq!(container.image.as_deref(), Some("titan-dr:0.1.0"));
        let spec = r#"{"redis":{"address":"redis:6379","passwordSecretRef":{"name":"redis-auth","key":"password"},"check":"KeyCount"}}"#;
        assert_eq!(
            container.command.as_deref().unwrap(),
            [
                TITAN_STEP,
                "run",
                "--",
                "/usr/local/bin/titan-dr",
                "probe",
                "--spec",
                spec
            ]
        );
        let probe: crate::probe::Probe = serde_json::from_str(spec).unwrap();
        assert_eq!(
            Some(&probe),
            dr.spec.steps[0].probe.as_ref(),
            "the spec round-trips"
        );
        let env = container.env.as_ref().unwrap();
        let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                ATTEMPT_ENV,
                TARGET_NAMESPACE_ENV,
                "A",
                "B",
                REDIS_PASSWORD_ENV
            ]
        );
        let secret = env[4].value_from.as_ref().unwrap().secret_key_ref.as_ref();
        assert_eq!(
            secret.map(|s| (s.name.as_str(), s.key.as_str())),
            Some(("redis-auth", "password"))
        );
        assert_eq!(env[4].value, None, "the password is not in the Job");

        // An http probe gets no env of its own.
        dr.spec.steps[0] = serde_yaml::from_str(
            "{name: health, probe: {http: {url: 'http://brain:3000/health'}}}",
        )
        .unwrap();
        let pod = step_pod(&dr, 0);
        let command = pod.containers[0].command.clone().unwrap();
        assert_eq!(
            command[3..],
            [
                "/usr/local/bin/titan-dr",
                "probe",
                "--spec",
                r#"{"http":{"url":"http://brain:3000/health"}}"#
            ]
        );
        let env = pod.containers[0].env.clone().unwrap();
        assert!(env.iter().all(|e| e.name != REDIS_PASSWORD_ENV), "{env:?}");
    }

    /// The pod of a restore step whose `restore.redis` is `redis` (YAML flow mapping), of a
    /// Backup with a password, in the recovery's namespace.
    fn redis_restore_pod(redis: &str) -> PodSpec {
        let mut dr = recovery();
        dr.spec.steps[0] = serde_yaml::from_str(&format!(
            "{{name: restore-redis, restore: {{backup: redis, redis: {redis}}}}}"
        ))
        .unwrap();
        let source = "{redis: {address: 'redis:6379', passwordSecretRef: {name: redis-auth, key: password}}}";
        pod_of(restore_job(&dr, "redis", source, Some(URL)))
    }

    /// The Job of the first step of `dr`, a restore of Backup `name` (in namespace titan)
    /// with `source`, by an operator whose snapshot endpoint is `url`.
    fn restore_job(dr: &DisasterRecovery, name: &str, source: &str, url: Option<&str>) -> Job {
        let backup: Backup = serde_yaml::from_str(&format!(
            "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {{name: {name}, namespace: titan}}\nspec:\n  source: {source}\n  destination: {{path: {name}}}\n  encryption: {{secretRef: {{name: backup-key}}}}\n",
        ))
        .unwrap();
        let with_restore = JobSetup {
            restore: Some(RestoreSetup {
                snapshot_url: url.map(String::from),
                backup: Some(backup),
                not_after: Some("2026-12-01T22:00:00Z".parse().unwrap()),
            }),
            ..setup()
        };
        build_job(
            dr,
            &run_one(),
            StepKind::Step,
            &dr.spec.steps[0],
            1,
            &with_restore,
        )
    }

    const DATA: &str = "dataVolume: {persistentVolumeClaim: {claimName: redis-data}}";

    /// The pod's volumes as (name, source without the name).
    fn volumes(pod: &PodSpec) -> Vec<(String, serde_json::Value)> {
        pod.volumes
            .iter()
            .flatten()
            .map(|v| {
                let mut source = serde_json::to_value(v).unwrap();
                source.as_object_mut().unwrap().remove("name");
                (v.name.clone(), source)
            })
            .collect()
    }

    const DOWNLOAD: [&str; 7] = [
        "--from=http://titan-dr.titan-dr-system.svc:8081",
        "--backup=titan/redis",
        "--token-file=/var/run/titan-dr/token/token",
        "--work-dir=/var/run/titan-dr/work",
        "--key-file=/var/run/titan-dr/key/key",
        "--snapshot=latest",
        "--not-after=2026-12-01T22:00:00Z",
    ];

    /// The command of a Redis restore step: titan-step running `titan-dr backup restore`
    /// with the download arguments, then `tail`.
    fn restore_argv<'a>(tail: &[&'a str]) -> Vec<&'a str> {
        let head = [
            TITAN_STEP,
            "run",
            "--",
            "/usr/local/bin/titan-dr",
            "backup",
            "restore",
        ];
        head.into_iter()
            .chain(DOWNLOAD)
            .chain(tail.iter().copied())
            .collect()
    }

    #[test]
    fn a_redis_restore_replicates_into_the_running_redis_by_default() {
        let pod = redis_restore_pod("{address: 'titan-redis:6379', wait: 90s}");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("titan-dr:0.1.0"));
        let expected = restore_argv(&[
            "--replicate-to=titan-redis:6379",
            "--check-timeout=90",
            "--check-password-file=/var/run/titan-dr/redis-auth/password",
        ]);
        assert_eq!(container.command.as_deref().unwrap(), expected);
        // Redis connects back to the pod's IP.
        let env = container.env.as_ref().unwrap();
        let pod_ip = env.iter().find(|e| e.name == "POD_IP").unwrap();
        let field = pod_ip.value_from.as_ref().unwrap().field_ref.as_ref();
        assert_eq!(field.unwrap().field_path, "status.podIP");
        // No volume of Redis, nor of the operator: the snapshot comes over HTTP, shown the
        // pod's own token for the audience titan-dr.
        let secret = |name: &str| serde_json::json!({"secret": {"secretName": name}});
        let token = serde_json::json!({"projected": {"sources": [{"serviceAccountToken":
            {"audience": "titan-dr", "expirationSeconds": 600, "path": "token"}}]}});
        let names = |v: &[(&str, serde_json::Value)]| -> Vec<(String, serde_json::Value)> {
            v.iter().map(|(n, s)| (n.to_string(), s.clone())).collect()
        };
        assert_eq!(
            volumes(&pod),
            names(&[
                ("token", token),
                ("key", secret("backup-key")),
                ("work", serde_json::json!({"emptyDir": {}})),
                ("redis-auth", secret("redis-auth")),
                (TITAN_STEP_VOLUME, serde_json::json!({"emptyDir": {}})),
            ])
        );
    }

    #[test]
    fn a_redis_restore_into_a_volume_shuts_redis_down_by_default_without_a_shell() {
        let pod = redis_restore_pod(&format!("{{{DATA}, address: 'redis:6379', wait: 90s}}"));
        let container = &pod.containers[0];
        let expected = restore_argv(&[
            "--to=/var/run/titan-dr/redis-data/dump.rdb",
            "--check-redis=redis:6379",
            "--shutdown-redis",
            "--check-timeout=90",
            "--check-password-file=/var/run/titan-dr/redis-auth/password",
        ]);
        assert_eq!(container.command.as_deref().unwrap(), expected);
        let claim = serde_json::json!({"persistentVolumeClaim": {"claimName": "redis-data"}});
        assert!(volumes(&pod).contains(&("redis-data".into(), claim)));
        let mounts: Vec<(&str, &str, Option<bool>)> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            mounts,
            [
                ("token", "/var/run/titan-dr/token", Some(true)),
                ("key", "/var/run/titan-dr/key", Some(true)),
                ("work", "/var/run/titan-dr/work", Some(false)),
                ("redis-data", "/var/run/titan-dr/redis-data", Some(false)),
                ("redis-auth", "/var/run/titan-dr/redis-auth", Some(true)),
                (TITAN_STEP_VOLUME, "/titan-step", Some(true)),
            ]
        );
    }

    #[test]
    fn a_configuration_restore_applies_to_the_target_namespace() {
        let mut dr = recovery();
        dr.spec.target_namespace = Some("titan-prod".into());
        dr.spec.steps[0] = serde_yaml::from_str(
            "{name: restore-config, restore: {backup: config, configuration: {}}}",
        )
        .unwrap();
        let job = restore_job(&dr, "config", "{configMaps: {selector: {}}}", Some(URL));
        assert_eq!(
            job.metadata.namespace.as_deref(),
            Some("titan"),
            "beside the resource"
        );
        let container = &pod_of(job).containers[0];
        let argv = container.command.as_ref().unwrap();
        assert_eq!(
            argv[3..6],
            ["/usr/local/bin/titan-dr", "backup", "restore-config"]
        );
        assert_eq!(argv.last().unwrap(), "--namespace=titan-prod");
        let env = container.env.as_ref().unwrap();
        let target = env.iter().find(|e| e.name == TARGET_NAMESPACE_ENV).unwrap();
        assert_eq!(target.value.as_deref(), Some("titan-prod"));
        // Without the endpoint the step fails saying so.
        let job = restore_job(&dr, "config", "{configMaps: {selector: {}}}", None);
        let argv = pod_of(job).containers[0].command.clone().unwrap();
        assert_eq!(argv[1], "fail");
        assert!(argv[2].contains("TITAN_SNAPSHOT_URL"), "{argv:?}");
    }

    #[test]
    fn a_redis_restore_restarts_as_told() {
        let argv = |redis: &str| {
            let pod = redis_restore_pod(&format!("{{{DATA}, address: 'redis:6379', {redis}}}"));
            pod.containers[0].command.clone().unwrap()
        };
        let shutdown = "--shutdown-redis".to_string();
        assert!(argv("restart: Shutdown").contains(&shutdown));
        let external = argv("restart: External");
        assert!(!external.contains(&shutdown), "{external:?}");
        assert!(
            !external.iter().any(|a| a.starts_with("--then")),
            "{external:?}"
        );
        let command = argv("restartCommand: 'systemctl restart redis'");
        assert!(!command.contains(&shutdown), "{command:?}");
        assert!(command.contains(&"--then=systemctl restart redis".to_string()));
        assert_eq!(
            argv("restart: Shutdown, restartCommand: 'true'"),
            [
                TITAN_STEP,
                "fail",
                "set restart or restartCommand, not both"
            ]
        );
    }

    #[test]
    fn the_restricted_defaults_stay_under_a_steps_run_as_user() {
        let mut dr = recovery();
        dr.spec.steps[0].security_context =
            Some(serde_yaml::from_str("{runAsUser: 1000}").unwrap());
        let pod = step_pod(&dr, 0);
        let security = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(security.run_as_user, Some(1000));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let drop = security.capabilities.unwrap().drop.unwrap();
        assert_eq!(drop, ["ALL"]);
        let pod_security = pod.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
    }

    #[test]
    fn the_step_overlays_the_template_which_overlays_the_defaults() {
        let mut dr = recovery();
        let template = dr.spec.template.as_mut().unwrap();
        template.security_context = Some(
            serde_yaml::from_str(
                "{runAsUser: 100, runAsGroup: 100, capabilities: {add: [NET_BIND_SERVICE]}}",
            )
            .unwrap(),
        );
        template.pod_security_context =
            Some(serde_yaml::from_str("{fsGroup: 100, runAsNonRoot: false}").unwrap());
        let step = &mut dr.spec.steps[0];
        step.security_context = Some(serde_yaml::from_str("{runAsUser: 200}").unwrap());
        step.pod_security_context = Some(serde_yaml::from_str("{fsGroup: 200}").unwrap());
        let pod = step_pod(&dr, 0);

        let security = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(security.run_as_user, Some(200), "the step wins");
        assert_eq!(security.run_as_group, Some(100), "the template stays");
        assert_eq!(security.run_as_non_root, Some(true), "the default stays");
        let capabilities = security.capabilities.unwrap();
        assert_eq!(capabilities.add.unwrap(), ["NET_BIND_SERVICE"]);
        assert_eq!(capabilities.drop.unwrap(), ["ALL"], "merged field by field");
        let pod_security = pod.security_context.unwrap();
        assert_eq!(pod_security.fs_group, Some(200));
        assert_eq!(
            pod_security.run_as_non_root,
            Some(false),
            "the template wins"
        );
        assert!(pod_security.seccomp_profile.is_some());
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(
            init.security_context,
            Some(restricted_container()),
            "nothing a step loosens reaches the init container"
        );

        // The other step sets nothing: the template's settings over the defaults.
        let pod = step_pod(&dr, 1);
        let security = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(security.run_as_user, Some(100));
        assert_eq!(pod.security_context.unwrap().fs_group, Some(100));
    }
}
