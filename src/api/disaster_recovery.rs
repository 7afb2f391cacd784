//! The `DisasterRecovery` resource: one recovery scenario, its component graph,
//! its steps, validations and rollback, and the status of its current run.

use k8s_openapi::api::core::v1::{EnvVar, PodSecurityContext, SecurityContext};

use kube::{CustomResource, KubeSchema, ResourceExt};
use serde::{Deserialize, Serialize};

use super::backup::SecretKeyRef;
use super::duration::GoDuration;
use super::probe::Probe;
pub use super::recovery_run::RunStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// A DNS-1123 label, as Kubernetes requires for names that end up in Job names and labels.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Upper bounds keep the CEL rules cheap and the status small.
pub const MAX_STEPS: usize = 100;
pub const MAX_COMPONENTS: usize = 64;

/// A disaster-recovery scenario that the operator executes as ordered Kubernetes Jobs, once per
/// RecoveryRun.
///
/// A RecoveryRun starts a run; so do changing the `dr.titan.io/run-now` annotation and, with
/// `runOnCreate`, creating the resource. The status tells where the newest run stands and
/// whether it met its objectives.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "dr.titan.io",
    version = "v1alpha1",
    kind = "DisasterRecovery",
    namespaced,
    status = "DisasterRecoveryStatus",
    shortname = "dr",
    category = "titan",
    printcolumn = r#"{"name":"Scenario","type":"string","jsonPath":".spec.scenario"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Run","type":"string","jsonPath":".status.runId"}"#,
    printcolumn = r#"{"name":"RTO","type":"string","description":"Achieved recovery time","jsonPath":".status.achievedRTO"}"#,
    printcolumn = r#"{"name":"Objective","type":"string","priority":1,"jsonPath":".spec.objectives.rto"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: it is the dr.titan.io/recovery label of every Job")
)]
#[serde(rename_all = "camelCase")]
pub struct DisasterRecoverySpec {
    /// The scenario's ID, as in the runbook (e.g. `complete-system-failure`).
    #[schemars(length(min = 1, max = 253))]
    pub scenario: String,

    /// How severe the failure this scenario recovers from is.
    #[serde(default)]
    pub severity: Severity,

    /// What failure this scenario recovers from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,

    /// Recovery time and recovery point objectives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,

    /// Names of `Backup` resources in this namespace whose newest snapshot age is measured
    /// against `objectives.rpo` (the RPOMet condition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub backups: Vec<String>,

    /// The dependency graph of the system being recovered. A step that names a component runs
    /// after every step of the components it depends on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMPONENTS))]
    // Unique names: the API server rejects a duplicate and names it.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub components: Vec<Component>,

    /// The namespace this scenario recovers (default: this resource's own). The steps' Jobs
    /// run here, beside the resource (so the Backups and their keys outlive a disaster that
    /// deletes the target namespace); each step gets it as `TITAN_TARGET_NAMESPACE`, and
    /// configuration restores apply to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub target_namespace: Option<String>,

    /// Defaults for every Job this resource creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<JobTemplate>,

    /// What a run requested while another is active does: `Forbid` refuses it with a reason,
    /// and it never runs beside the active one nor later; `Replace` aborts the active one
    /// (its rollback runs), then starts.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,

    /// Whether creating this resource starts a run (default false: a Git sync, a restore of
    /// the cluster's objects or a copy to a new cluster never executes a runbook).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_on_create: bool,

    /// When runs start by themselves: a cron schedule (`0 3 1 * *`, `@monthly`), read in
    /// `timeZone`. Only the latest tick since the last runs, never a burst of missed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,

    /// The IANA time zone of `schedule` (default UTC), e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,

    /// Holds the schedule: no scheduled run starts while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// How late a tick may start; a tick found later than this is recorded as missed
    /// (`status.lastMissedScheduleTime`, a Warning Event) and does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0), extend("format" = "int64"))]
    pub starting_deadline_seconds: Option<i64>,

    /// The mode of scheduled runs: `Drill` (default) or `Recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_mode: Option<super::recovery_run::RunMode>,

    /// How many succeeded RecoveryRuns are kept, with their Jobs (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub successful_runs_history_limit: Option<u32>,

    /// How many failed RecoveryRuns are kept, with their Jobs (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100), extend("format" = "int32"))]
    pub failed_runs_history_limit: Option<u32>,

    /// The recovery steps, in runbook order.
    #[schemars(length(min = 1, max = MAX_STEPS))]
    // Unique names: the API server rejects a duplicate and names it.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub steps: Vec<Step>,

    /// Checks run in parallel once every step ended without a critical failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STEPS))]
    // Unique names: the API server rejects a duplicate and names it.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub validations: Vec<Step>,

    /// Steps run in order when a critical step fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STEPS))]
    // Unique names: the API server rejects a duplicate and names it.
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rollback: Vec<Step>,
}

impl DisasterRecovery {
    /// The namespace the scenario recovers: `spec.targetNamespace`, or the resource's own.
    pub fn target_namespace(&self) -> String {
        self.spec
            .target_namespace
            .clone()
            .or_else(|| self.namespace())
            .unwrap_or_default()
    }

    /// The recovery time objective, if the scenario sets one.
    pub fn rto_objective(&self) -> Option<std::time::Duration> {
        Some(self.spec.objectives.as_ref()?.rto.as_ref()?.duration())
    }
}

/// What a run requested while another is active does.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum ConcurrencyPolicy {
    /// Refused with a reason (an Event, and the refused run ends Failed, reason Refused).
    #[default]
    Forbid,
    /// The active run is aborted (its rollback runs), then the new one starts.
    Replace,
}

/// Severity of the failure a scenario recovers from.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Severity {
    Critical,
    High,
    #[default]
    Medium,
    Low,
}

/// Recovery objectives, as durations (`15m`, `1h30m`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Objectives {
    /// Recovery time objective: the longest a run may take from start to validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<GoDuration>,
    /// Recovery point objective: the oldest the newest backup may be when a run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<GoDuration>,
    /// RPOMet counts only the snapshot each Backup's restore check last verified
    /// (`status.lastVerifiedSnapshot`, set by its `spec.verify`), not merely the newest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified_snapshots_only: bool,
}

/// A component of the recovered system and the components it depends on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    /// The component's name, referenced by `steps[].component`.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// Components that must be recovered before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMPONENTS))]
    pub depends_on: Vec<String>,
}

/// Defaults applied to every Job of this resource.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// Container image that runs the steps' commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Service account the step Pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Environment variables set in every step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
    /// Security settings of every step's container, laid field by field over the operator's
    /// restricted defaults (runAsNonRoot, no privilege escalation, all capabilities dropped);
    /// a step's own `securityContext` is laid over these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Security settings of every step's Pod, laid field by field over the operator's
    /// restricted defaults (runAsNonRoot, seccomp RuntimeDefault); a step's own
    /// `podSecurityContext` is laid over these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
}

/// One recovery step, validation or rollback step: a command (or a restore, or a probe) run as
/// a Kubernetes Job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.command), has(self.args), has(self.restore), has(self.probe)].filter(x, x).size() == 1").message("exactly one of command, args, restore or probe must be set"))]
pub struct Step {
    /// Unique name of the step (a DNS label); part of the Job name.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,
    /// A shell command line, run with `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// An exec array, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub args: Option<Vec<String>>,
    /// Restore a snapshot of a Backup instead of running a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStep>,
    /// A typed check (http, redis or kubernetes) instead of a command, run by `titan-dr probe`
    /// in the operator's image; `expect` judges its output like a command's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// Container image for this step; overrides `template.image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The component this step recovers; orders it in the component graph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Names of steps that must end before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STEPS))]
    pub after: Vec<String>,
    /// Longest one attempt may run (becomes the Job's `activeDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Whether a failure of this step stops the run and triggers rollback (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<bool>,
    /// How many more attempts after a failed one (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10), extend("format" = "int32"))]
    pub retries: Option<u32>,
    /// What a successful run of the command looks like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Free text for the on-call engineer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// A person must approve the step before it starts (see `titan-dr approve`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<super::approval::ApprovalGate>,
    /// Environment variables for this step, added to `template.env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
    /// Security settings of this step's container (e.g. `runAsUser`), laid field by field
    /// over `template.securityContext` and the operator's restricted defaults, which stay for
    /// every field not set here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Security settings of this step's Pod (e.g. `fsGroup`), laid field by field over
    /// `template.podSecurityContext` and the operator's restricted defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
}

impl Step {
    /// What the step runs, the same in a Job and in a local process: `command` through
    /// `/bin/sh -c`, `args` as they are, a probe as `<titan_dr> probe --spec <json>`. `None`
    /// for a restore (which the cluster builds from what it looks up) or a step with nothing.
    pub fn argv(&self, titan_dr: &str) -> Option<Vec<String>> {
        match (&self.command, &self.args, &self.restore, &self.probe) {
            (Some(command), ..) => Some(vec!["/bin/sh".into(), "-c".into(), command.clone()]),
            (None, Some(args), ..) => Some(args.clone()),
            (None, None, None, Some(probe)) => {
                let spec = serde_json::to_string(probe).ok()?;
                Some(vec![titan_dr.into(), "probe".into(), "--spec".into(), spec])
            }
            _ => None,
        }
    }

    /// Steps are critical unless they say otherwise.
    pub fn is_critical(&self) -> bool {
        self.critical.unwrap_or(true)
    }

    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(0)
    }
}

/// A restore: verifies a snapshot (checksum and decryption) before anything is
/// touched, then puts it in place and checks the result.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.redis) != has(self.configuration)").message("set exactly one of redis or configuration"))]
pub struct RestoreStep {
    /// Name of the Backup (in this namespace) whose snapshot is restored.
    #[schemars(length(min = 1, max = 253))]
    pub backup: String,
    /// `latest` (default) or a snapshot ID such as `20261125T020000Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(latest|[0-9]{8}T[0-9]{6}Z)$"))]
    pub snapshot: Option<String>,
    /// Where a Redis snapshot goes, how Redis is restarted on it and how the restored Redis
    /// is checked. The verified RDB is written into `dataVolume` while Redis runs, then Redis
    /// is restarted. Between the two Redis must not save (no `save` rule may fire, nothing may
    /// call `BGSAVE`: run it with `--save ""`), or it writes its own dataset over the restored
    /// file; and AOF must be off (`--appendonly no`), or Redis loads its append-only file at
    /// start instead of the RDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisRestore>,
    /// Restore a configuration snapshot: its ConfigMaps and Secrets are server-side
    /// applied to this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<ConfigurationRestore>,
}

/// Restoring configuration objects; the Job's service account needs to apply them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ConfigurationRestore {}

/// The Redis a snapshot is restored to, and how it gets the snapshot.
///
/// Without `dataVolume` (the way for a Redis whose volume is in use, e.g. a StatefulSet's):
/// over replication. The restore Job serves the verified RDB as a Redis primary; the Redis at
/// `address` is made its replica (`CONFIG SET masterauth` a one-time secret, `REPLICAOF`),
/// which replaces its whole dataset with the snapshot, then is promoted back (`REPLICAOF NO
/// ONE`, its `masterauth` put back) and made to `SAVE`. Nothing but Redis touches its volume;
/// Redis must accept `CONFIG` and `REPLICAOF` from the password's user, and reach the restore
/// pod.
///
/// With `dataVolume`: the restore Job writes the verified RDB into that volume while Redis
/// runs, then makes it load the file by restarting it (`restart`, or `restartCommand`); see
/// `RestoreStep.redis` for what Redis must not do in between.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.restart) && has(self.restartCommand))").message("set restart or restartCommand, not both"))]
#[x_kube(validation = kube::core::Rule::new("has(self.dataVolume) || !(has(self.restart) || has(self.restartCommand) || has(self.file))").message("restart, restartCommand and file need dataVolume; without it the snapshot is loaded over replication"))]
pub struct RedisRestore {
    /// The volume holding Redis's data directory (e.g. a persistentVolumeClaim or hostPath);
    /// absent: the snapshot is loaded over replication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "volume_source_schema")]
    pub data_volume: Option<serde_json::Value>,
    /// Path of the RDB file inside that volume (default `dump.rdb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `host:port` of the Redis restored to (e.g. its Service, `redis:6379`): `restart:
    /// Shutdown` stops it there, and once it has restarted its key count must equal the
    /// snapshot's.
    pub address: String,
    /// The password of that Redis, a Secret key in this namespace (default: the Backup's
    /// `source.redis.passwordSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// How Redis is made to load the restored file: see [`RedisRestart`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RedisRestart>,
    /// A shell command, run with `/bin/sh -c` in the restore Job once the file is in place,
    /// that restarts Redis; instead of `restart`. The restore Job runs the operator's image,
    /// which as shipped has no shell: this needs an operator image that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_command: Option<String>,
    /// How long to wait for the restarted Redis (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<GoDuration>,
}

/// How Redis is made to load the restored file, when `restartCommand` is not set.
/// `Shutdown` (the default): the restore Job sends `SHUTDOWN NOSAVE` to `address` (with the
/// Backup's `passwordSecretRef`, if any), so Redis exits without saving over the file, and
/// whatever runs it starts it again on that file: the kubelet, for a Pod or StatefulSet
/// (`restartPolicy: Always`) whose Redis container mounts `dataVolume` at its `dir`. Needs
/// no shell. `External`: nothing is sent; the step waits for Redis to be restarted by
/// something else.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RedisRestart {
    /// `SHUTDOWN NOSAVE` over the Redis protocol; its supervisor starts it again.
    #[default]
    Shutdown,
    /// Nothing: something else restarts Redis.
    External,
}

/// A core/v1 volume source (`hostPath`, `persistentVolumeClaim`, ...), kept as given.
fn volume_source_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "A core/v1 volume source, e.g. {persistentVolumeClaim: {claimName: redis-data}}.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Expectations checked against a finished attempt. All that are set must hold.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Expect {
    /// Expected exit code (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Text the output must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contains: Option<String>,
    /// A regular expression the output must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_matches: Option<String>,
    /// A field of JSON output and the value it must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<JsonExpect>,
}

/// A JSON field of the output and its expected value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct JsonExpect {
    /// Dot-separated path into the JSON output, e.g. `status` or `services.0.state`.
    #[schemars(length(min = 1))]
    pub path: String,
    /// The expected value, compared with the field's text (strings without quotes).
    pub equals: String,
}

/// Where a run stands.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RunPhase {
    #[default]
    Pending,
    Running,
    /// `spec.action: Pause`: no attempt starts; those running go on.
    Paused,
    /// A step waits for its approval; the steps that do not need it go on.
    WaitingForApproval,
    Validating,
    RollingBack,
    Succeeded,
    Failed,
}

/// Where one step (or validation, or rollback step) stands.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum StepPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
}

/// The observed state of a DisasterRecovery: its newest run (every field of the first stage,
/// copied from that RecoveryRun) and its history.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DisasterRecoveryStatus {
    /// The newest run, as its RecoveryRun's status has it; `observedGeneration` and the
    /// InvalidSpec condition are this resource's own.
    #[serde(flatten)]
    pub run: RunStatus,
    /// The `dr.titan.io/run-now` annotation value last acted on (started or refused a run, or
    /// was there when the resource was created): a run starts when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_trigger: Option<String>,
    /// The latest `dr.titan.io/run-now` value refused because a run was active: it starts
    /// nothing, then or later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_run_trigger: Option<String>,
    /// The newest RecoveryRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The newest RecoveryRun that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run: Option<String>,
    /// The RecoveryRuns started and not ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// The latest tick of `schedule` dealt with (run, refused or missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next tick of `schedule` (absent while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The latest tick that was past `startingDeadlineSeconds` when seen, and so did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_missed_schedule_time: Option<Time>,
}

/// The observed state of one step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// The step's name.
    pub name: String,
    /// Where the step stands.
    pub phase: StepPhase,
    /// The Job of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Attempts made so far.
    #[serde(default)]
    #[schemars(extend("format" = "int32"))]
    pub attempts: u32,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the last attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Exit code of the latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Tail of the latest attempt's combined output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Why the step ended the way it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
