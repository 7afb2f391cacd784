//! The status of a run, computed from the plan's decision and the observed
//! steps. Pure, so the same observations always give the same status and a
//! reconcile that observes nothing new writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::disaster_recovery::{
    DisasterRecoverySpec, Expect, RunPhase, Step, StepPhase, StepStatus,
};
use crate::api::duration::format_duration;
use crate::controller::conditions::{Conditions, FALSE, TRUE, UNKNOWN};
use crate::plan::{Decision, Outcome};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const VALIDATED: &str = "Validated";
pub const RTO_MET: &str = "RTOMet";
pub const RPO_MET: &str = "RPOMet";
pub const VALIDATION_PREFIX: &str = "validation.dr.titan.io/";
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// An RPOMet condition, worked out from the Backups by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpoVerdict {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// Status of each step of a list, in written order.
pub fn list_status(
    list: &[Step],
    observed: &BTreeMap<String, StepStatus>,
    skipped: &BTreeSet<&str>,
) -> Vec<StepStatus> {
    list.iter()
        .map(|step| match observed.get(&step.name) {
            Some(status) => status.clone(),
            None => StepStatus {
                name: step.name.clone(),
                phase: if skipped.contains(step.name.as_str()) {
                    StepPhase::Skipped
                } else {
                    StepPhase::Pending
                },
                ..Default::default()
            },
        })
        .collect()
}

/// The latest end of any step: when a finished run finished.
pub fn last_finish<'s>(statuses: impl Iterator<Item = &'s StepStatus>) -> Option<Time> {
    statuses
        .filter_map(|s| s.finished_at.clone())
        .max_by_key(|t| t.0)
}

/// Time between two instants, never negative.
pub fn elapsed(from: &Time, to: &Time) -> Duration {
    Duration::try_from(to.0.duration_since(from.0)).unwrap_or_default()
}

/// Everything the conditions of a run are made from.
pub struct RunFacts<'a> {
    pub spec: &'a DisasterRecoverySpec,
    pub decision: &'a Decision,
    pub steps: &'a [StepStatus],
    pub validations: &'a [StepStatus],
    pub achieved_rto: Option<Duration>,
    pub rpo: RpoVerdict,
}

/// One condition per validation, `validation.dr.titan.io/<name>`, reason Passed, Failed,
/// TimedOut (or Unknown while it has not ended).
fn set_validations(c: &mut Conditions, facts: &RunFacts) {
    for (step, status) in facts.spec.validations.iter().zip(facts.validations) {
        let (cond, reason) = match status.phase {
            StepPhase::Succeeded => (TRUE, "Passed"),
            StepPhase::Failed => (FALSE, "Failed"),
            StepPhase::TimedOut => (FALSE, "TimedOut"),
            StepPhase::Skipped => (UNKNOWN, "Skipped"),
            StepPhase::Running => (UNKNOWN, "Running"),
            StepPhase::Pending => (UNKNOWN, "Pending"),
        };
        let message = match status.phase {
            StepPhase::Succeeded => format!(
                "expected {}; got {}",
                describe(step.expect.as_ref()),
                got(status)
            ),
            _ => status.message.clone().unwrap_or_default(),
        };
        c.set(
            &format!("{VALIDATION_PREFIX}{}", step.name),
            cond,
            reason,
            message,
        );
    }
}

/// The conditions of a run.
pub fn run_conditions(
    facts: &RunFacts,
    previous: &[Condition],
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut c = Conditions::new(previous, generation);
    let phase = facts.decision.phase;
    let done = facts
        .steps
        .iter()
        .filter(|s| s.phase != StepPhase::Pending && s.phase != StepPhase::Running)
        .count();
    let progress = format!("{done} of {} steps ended", facts.steps.len());
    match facts.decision.outcome {
        Some(Outcome::Succeeded) => {
            let took = facts.achieved_rto.map(format_duration).unwrap_or_default();
            c.set(
                READY,
                TRUE,
                "Succeeded",
                format!("recovery succeeded in {took}"),
            );
            c.set(PROGRESSING, FALSE, "Finished", progress);
        }
        Some(Outcome::Failed) => {
            c.set(READY, FALSE, "Failed", failure_message(facts));
            c.set(PROGRESSING, FALSE, "Finished", progress);
        }
        None => {
            c.set(READY, FALSE, phase_name(phase), progress.clone());
            c.set(PROGRESSING, TRUE, phase_name(phase), progress);
        }
    }
    let non_critical_failures: Vec<&str> = failed(facts.steps)
        .filter(|s| !critical(facts.spec.steps.iter(), &s.name))
        .map(|s| s.name.as_str())
        .collect();
    if facts.decision.degraded || !non_critical_failures.is_empty() {
        c.set(
            DEGRADED,
            TRUE,
            "NonCriticalStepFailed",
            format!("failed: {}", non_critical_failures.join(", ")),
        );
    } else {
        c.set(DEGRADED, FALSE, "NoFailures", "");
    }
    set_validated(&mut c, facts);
    set_rto(&mut c, facts);
    c.set(
        RPO_MET,
        facts.rpo.status,
        facts.rpo.reason,
        facts.rpo.message.clone(),
    );
    set_validations(&mut c, facts);
    c.build()
}

fn set_validated(c: &mut Conditions, facts: &RunFacts) {
    let v = facts.validations;
    if v.is_empty() {
        c.set(
            VALIDATED,
            UNKNOWN,
            "NoValidations",
            "the scenario has no validations",
        );
    } else if v.iter().all(|s| s.phase == StepPhase::Succeeded) {
        c.set(
            VALIDATED,
            TRUE,
            "Passed",
            format!("{} validations passed", v.len()),
        );
    } else if v.iter().any(|s| s.phase == StepPhase::Skipped) {
        c.set(
            VALIDATED,
            FALSE,
            "NotRun",
            "the recovery failed before validating",
        );
    } else if facts.decision.outcome.is_some() {
        let names: Vec<&str> = failed(v).map(|s| s.name.as_str()).collect();
        c.set(
            VALIDATED,
            FALSE,
            "Failed",
            format!("failed: {}", names.join(", ")),
        );
    } else {
        c.set(
            VALIDATED,
            UNKNOWN,
            "Pending",
            "validations have not all ended",
        );
    }
}

fn set_rto(c: &mut Conditions, facts: &RunFacts) {
    let objective = facts.spec.objectives.as_ref().and_then(|o| o.rto.as_ref());
    let Some(objective) = objective else {
        c.set(RTO_MET, UNKNOWN, "NoObjective", "objectives.rto is not set");
        return;
    };
    match (facts.decision.outcome, facts.achieved_rto) {
        (Some(Outcome::Succeeded), Some(achieved)) => {
            let message = format!(
                "recovered in {} against an objective of {objective}",
                format_duration(achieved)
            );
            if achieved <= objective.duration() {
                c.set(RTO_MET, TRUE, "WithinObjective", message)
            } else {
                c.set(RTO_MET, FALSE, "ObjectiveMissed", message)
            }
        }
        (Some(_), _) => c.set(RTO_MET, FALSE, "RunFailed", "the recovery did not succeed"),
        (None, _) => c.set(RTO_MET, UNKNOWN, "Running", "the recovery has not finished"),
    };
}

fn failed(list: &[StepStatus]) -> impl Iterator<Item = &StepStatus> {
    list.iter()
        .filter(|s| matches!(s.phase, StepPhase::Failed | StepPhase::TimedOut))
}

fn critical<'s>(mut steps: impl Iterator<Item = &'s Step>, name: &str) -> bool {
    steps
        .find(|s| s.name == name)
        .is_some_and(Step::is_critical)
}

/// Names the failure that ended the run: the first failed critical step, or
/// the failed validations.
fn failure_message(facts: &RunFacts) -> String {
    if let Some(step) = failed(facts.steps).find(|s| critical(facts.spec.steps.iter(), &s.name)) {
        let why = step.message.clone().unwrap_or_default();
        return format!(
            "critical step {} {}: {why}",
            step.name,
            phase_name_step(step.phase)
        );
    }
    let names: Vec<&str> = failed(facts.validations).map(|s| s.name.as_str()).collect();
    format!("validation failed: {}", names.join(", "))
}

fn phase_name(phase: RunPhase) -> &'static str {
    match phase {
        RunPhase::Pending => "Pending",
        RunPhase::Running => "Running",
        RunPhase::Paused => "Paused",
        RunPhase::WaitingForApproval => "WaitingForApproval",
        RunPhase::Validating => "Validating",
        RunPhase::RollingBack => "RollingBack",
        RunPhase::Succeeded => "Succeeded",
        RunPhase::Failed => "Failed",
    }
}

fn phase_name_step(phase: StepPhase) -> &'static str {
    match phase {
        StepPhase::TimedOut => "timed out",
        _ => "failed",
    }
}

/// An expectation in words.
fn describe(expect: Option<&Expect>) -> String {
    let expect = expect.cloned().unwrap_or_default();
    let mut parts = vec![format!("exit code {}", expect.exit_code.unwrap_or(0))];
    if let Some(text) = &expect.output_contains {
        parts.push(format!("output containing {text:?}"));
    }
    if let Some(pattern) = &expect.output_matches {
        parts.push(format!("output matching /{pattern}/"));
    }
    if let Some(json) = &expect.json {
        parts.push(format!("JSON {} = {:?}", json.path, json.equals));
    }
    parts.join(", ")
}

fn got(status: &StepStatus) -> String {
    let code = status
        .exit_code
        .map(|c| c.to_string())
        .unwrap_or_else(|| "none".into());
    let output = status.output.as_deref().unwrap_or("").trim();
    let short: String = output
        .chars()
        .rev()
        .take(120)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("exit code {code}, output {short:?}")
}
