//! The evidence record of an ended run, as it is kept in the RecoveryRun's status; how it is
//! made and verified is `crate::evidence`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::disaster_recovery::{RunPhase, StepPhase};
use super::recovery_run::{RunMode, RunTrigger};

/// The record of one ended run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The RecoveryRun and its DisasterRecovery.
    pub run: String,
    pub recovery: String,
    pub scenario: String,
    /// The namespace the run acted on (a drill's own namespace in a drill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    pub mode: RunMode,
    pub trigger: RunTrigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every approval gate the run reached: who approved it, or that it timed out.
    #[serde(default)]
    pub approvals: Vec<String>,
    /// The DisasterRecovery's generation the run executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scenario_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// `Succeeded` or `Failed`, and why (the Ready condition's reason).
    pub outcome: RunPhase,
    pub outcome_reason: String,
    /// Every step, validation and rollback step, in that order.
    pub steps: Vec<StepEvidence>,
    pub rto: Objective,
    pub rpo: Objective,
    /// The plan's worst case along its critical path: how long the run could have taken.
    pub predicted_worst_case: String,
    /// SHA-256 (hex) of this record serialized as JSON with this field empty.
    #[serde(default)]
    pub seal_sha256: String,
}

/// One step's outcome.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepEvidence {
    pub name: String,
    /// `step`, `validation` or `rollback`.
    pub kind: String,
    pub phase: StepPhase,
    #[schemars(extend("format" = "int32"))]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// SHA-256 (hex) of the output the run recorded (the last 4000 bytes of the latest
    /// attempt, the text `expect` judged); absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
}

/// An objective and what the run achieved.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Objective {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    /// What was achieved, in words (a duration, or the snapshot ages of RPOMet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub achieved: Option<String>,
    /// `True`, `False` or `Unknown`, as the RTOMet or RPOMet condition says.
    pub met: String,
}
