//! The `RecoveryRun` resource: one execution of a DisasterRecovery's scenario, started by a
//! person (`kubectl apply`), the run-now annotation, `runOnCreate`, a schedule or an alert.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::disaster_recovery::{DNS_LABEL_PATTERN, DisasterRecoverySpec, RunPhase, StepStatus};

/// One run of a DisasterRecovery. The run copies the scenario's spec when it starts, so a later
/// edit of the DisasterRecovery never changes a run in flight; its Jobs are its own.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "dr.titan.io",
    version = "v1alpha1",
    kind = "RecoveryRun",
    namespaced,
    status = "RecoveryRunStatus",
    shortname = "rrun",
    category = "titan",
    printcolumn = r#"{"name":"Recovery","type":"string","jsonPath":".spec.recovery"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Trigger","type":"string","jsonPath":".spec.trigger"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"RTO","type":"string","description":"Achieved recovery time","jsonPath":".status.achievedRTO"}"#,
    printcolumn = r#"{"name":"Started","type":"date","jsonPath":".status.startedAt"}"#,
    printcolumn = r#"{"name":"Requested by","type":"string","priority":1,"jsonPath":".spec.requestedBy"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".spec.reason"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters: it is the dr.titan.io/run-name label of every Job")
)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRunSpec {
    /// The DisasterRecovery (same namespace) whose scenario runs.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("recovery cannot change once the run exists"))]
    pub recovery: String,
    /// `Recovery` (default) recovers the target; `Drill` rehearses in a throwaway namespace.
    #[serde(default)]
    pub mode: RunMode,
    /// What started the run (default `Manual`).
    #[serde(default)]
    pub trigger: RunTrigger,
    /// Who asked for the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub requested_by: Option<String>,
    /// Why, e.g. an incident's ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// `Pause` starts no further attempt, `Resume` (or no action) goes on, `Abort` stops the
    /// running steps and runs rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RunAction>,
    /// Approvals of gated steps (`titan-dr approve RUN STEP`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["step", "approvedBy"]))]
    pub approvals: Vec<super::approval::StepApproval>,
}

/// Whether a run recovers the target or rehearses in a throwaway namespace.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RunMode {
    #[default]
    Recovery,
    Drill,
}

/// What started a run.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RunTrigger {
    /// A person created the RecoveryRun.
    #[default]
    Manual,
    Schedule,
    Alert,
    /// A change of the DisasterRecovery's `dr.titan.io/run-now` annotation.
    RunNow,
    /// The DisasterRecovery was created with `runOnCreate: true`.
    Create,
}

/// What a person asks of a run in flight.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAction {
    Pause,
    Resume,
    Abort,
}

/// The observed state of a run: what the DisasterRecovery's status held in the first stage.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Phase of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// ID of the run (its number when the run is named `<recovery>-<number>`, else its
    /// name); part of every Job name and the `dr.titan.io/run` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Time from start to the end of a successful run, e.g. `4m12s`.
    #[serde(
        default,
        rename = "achievedRTO",
        skip_serializing_if = "Option::is_none"
    )]
    pub achieved_rto: Option<String>,
    /// State of every recovery step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
    /// State of every validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<StepStatus>,
    /// State of every rollback step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback: Vec<StepStatus>,
    /// Ready, Progressing, Degraded, Validated, RTOMet, RPOMet and one
    /// `validation.dr.titan.io/<name>` per validation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl RunStatus {
    /// The number of the run. `runId` is a string in the API (`"1"`), so that it need not be
    /// a counter; it is one for the runs the operator names.
    pub fn run_number(&self) -> Option<u64> {
        self.run_id.as_deref()?.parse().ok()
    }

    /// Whether the run has ended.
    pub fn has_ended(&self) -> bool {
        self.finished_at.is_some()
            && matches!(self.phase, Some(RunPhase::Succeeded | RunPhase::Failed))
    }

    /// Whether the run ended in success.
    pub fn succeeded(&self) -> bool {
        self.has_ended() && self.phase == Some(RunPhase::Succeeded)
    }
}

/// The observed state of a RecoveryRun.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRunStatus {
    #[serde(flatten)]
    pub run: RunStatus,
    /// The scenario as it was when the run started: what the run executes, whatever the
    /// DisasterRecovery says later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "scenario_schema")]
    pub scenario: Option<Box<DisasterRecoverySpec>>,
    /// The DisasterRecovery's generation the scenario was copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_generation: Option<i64>,
    /// The record of the ended run, sealed (see `titan-dr evidence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<super::evidence::Evidence>,
    /// Where the evidence is kept off the cluster: beside the snapshots of each Backup of the
    /// scenario with object storage, authenticated by its key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence_copies: Vec<String>,
    /// A drill's throwaway namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillStatus>,
    /// The approval gates the run has reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<super::approval::GateStatus>,
}

/// The namespace a drill runs in (`<run>-drill`, labelled `dr.titan.io/drill`): created
/// before its first step, deleted when the run has ended, whatever the outcome.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DrillStatus {
    pub namespace: String,
    /// The real target namespace, which the drill stands in for and never touches.
    pub stands_in_for: String,
    /// When the namespace was found gone after the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<Time>,
}

/// The copied scenario is kept as written: it was validated as the DisasterRecovery's spec,
/// and a second copy of that schema would double the CRD's size.
fn scenario_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "The DisasterRecovery's spec when the run started.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl RecoveryRun {
    /// The run's status so far (empty before the operator first looked at it).
    pub fn run_status(&self) -> RunStatus {
        self.status
            .as_ref()
            .map(|s| s.run.clone())
            .unwrap_or_default()
    }
}

/// The ID of run `run` of recovery `recovery`: the number of a run named
/// `<recovery>-<number>`, else the run's name.
pub fn run_id(recovery: &str, run: &str) -> String {
    run.strip_prefix(recovery)
        .and_then(|rest| rest.strip_prefix('-'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0'))
        .unwrap_or(run)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_number_is_read_from_the_run_id_string() {
        let status = |run_id: Option<&str>| RunStatus {
            run_id: run_id.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(status(Some("12")).run_number(), Some(12));
        assert_eq!(status(Some("run-12")).run_number(), None);
        assert_eq!(status(None).run_number(), None);
        let json = serde_json::to_value(status(Some("1"))).unwrap();
        assert_eq!(json["runId"], "1", "a string, as the API says");
    }

    #[test]
    fn a_run_named_after_its_recovery_and_a_number_has_that_number_as_id() {
        assert_eq!(run_id("titan", "titan-7"), "7");
        assert_eq!(run_id("titan", "titan-07"), "titan-07");
        assert_eq!(run_id("titan", "titan-x"), "titan-x");
        assert_eq!(run_id("titan", "titan-"), "titan-");
        assert_eq!(run_id("titan", "other-7"), "other-7");
        assert_eq!(run_id("titan-1", "titan-1-2"), "2");
    }

    #[test]
    fn the_status_flattens_the_run_beside_the_scenario() {
        let status = RecoveryRunStatus {
            run: RunStatus {
                run_id: Some("3".into()),
                ..Default::default()
            },
            scenario_generation: Some(2),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"runId": "3", "scenarioGeneration": 2})
        );
        let back: RecoveryRunStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
