//! Approval gates: a step that waits for a person's approval before it starts.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

/// A step's gate: the run waits (`WaitingForApproval`) before the step starts until one of
/// `approvers` approves it (`titan-dr approve RUN STEP`), or `timeout` passes. The approver is
/// never the run's requester (four eyes).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalGate {
    /// Whether the gate holds the step (default true).
    #[serde(default = "yes")]
    pub required: bool,
    /// Who may approve: user names, and `group:<name>` for the members of a group.
    #[schemars(length(min = 1, max = 32))]
    pub approvers: Vec<String>,
    /// How long the step waits for an approval (default `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// What a timeout does: `Abort` (default: the run stops and rolls back) or `Continue`
    /// (the step starts unapproved, and the evidence says so).
    #[serde(default)]
    pub on_timeout: OnApprovalTimeout,
}

fn yes() -> bool {
    true
}

/// What a gate's timeout does.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum OnApprovalTimeout {
    #[default]
    Abort,
    Continue,
}

/// One approval, as `titan-dr approve` records it in the run's spec. Admission (the chart's
/// `<release>-run-requester` policy) holds `approvedBy` and `groups` to the user who wrote it,
/// and refuses the requester.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepApproval {
    /// The gated step.
    #[schemars(length(min = 1, max = 63))]
    pub step: String,
    #[schemars(length(min = 1, max = 253))]
    pub approved_by: String,
    /// The approver's groups, for approvers listed by group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
}

/// Where one gate of a run stands.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GateStatus {
    pub step: String,
    pub state: GateState,
    /// When the step became ready and began to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// When it was approved or timed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Who may approve, or why an approval was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A gate's state.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum GateState {
    #[default]
    Waiting,
    Approved,
    /// The timeout passed: the run aborted, or the step went on (`onTimeout`).
    TimedOut,
}
