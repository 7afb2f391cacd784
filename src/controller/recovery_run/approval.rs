//! Approval gates, decided from the run's spec (its approvals) and the gates' recorded state:
//! a gated step that is ready to start waits until one of its approvers, never the run's
//! requester, approves it, or its timeout passes (then the run aborts, or the step goes on).
//! Pure: the controller records the result in `status.gates` and holds the waiting steps.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::RecoveryRun;
use crate::api::approval::{ApprovalGate, GateState, GateStatus, OnApprovalTimeout, StepApproval};
use crate::api::disaster_recovery::DisasterRecoverySpec;

/// How long a gate waits when it names no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The gates of a run at this reconcile.
#[derive(Debug, Default, PartialEq)]
pub struct Gates {
    /// Every gate reached so far, in the spec's order.
    pub status: Vec<GateStatus>,
    /// Steps that may not start yet.
    pub held: BTreeSet<String>,
    /// Why the run aborts, when a gate timed out with `onTimeout: Abort`.
    pub abort: Option<String>,
    /// The soonest a waiting gate times out.
    pub next_timeout: Option<Duration>,
}

/// The gates of `run` (executing `spec`) when `ready` steps could start now, given the gates
/// recorded before.
pub fn evaluate(
    spec: &DisasterRecoverySpec,
    run: &RecoveryRun,
    recorded: &[GateStatus],
    ready: &BTreeSet<&str>,
    now: Timestamp,
) -> Gates {
    let mut gates = Gates::default();
    let steps = spec.steps.iter().chain(&spec.validations);
    for (name, gate) in steps.filter_map(|s| Some((s.name.as_str(), s.approval.as_ref()?))) {
        if !gate.required {
            continue;
        }
        let before = recorded.iter().find(|g| g.step == name);
        let Some(status) = decide(name, gate, run, before, ready.contains(name), now) else {
            continue;
        };
        match status.state {
            GateState::Waiting => {
                gates.held.insert(name.to_owned());
                let since = status.waiting_since.as_ref().map_or(now, |t| t.0);
                let left = timeout(gate).saturating_sub(elapsed_duration(since, now));
                gates.next_timeout = Some(gates.next_timeout.map_or(left, |n| n.min(left)));
            }
            GateState::TimedOut if gate.on_timeout == OnApprovalTimeout::Abort => {
                gates.held.insert(name.to_owned());
                gates.abort.get_or_insert(format!(
                    "the approval of step {name} timed out after {}",
                    crate::api::duration::format_duration(timeout(gate))
                ));
            }
            GateState::TimedOut | GateState::Approved => {}
        }
        gates.status.push(status);
    }
    gates
}

/// Where the gate of step `name` stands; none before the step first became ready.
fn decide(
    name: &str,
    gate: &ApprovalGate,
    run: &RecoveryRun,
    before: Option<&GateStatus>,
    ready: bool,
    now: Timestamp,
) -> Option<GateStatus> {
    // An approval or a timeout is final.
    if let Some(done) = before.filter(|g| g.state != GateState::Waiting) {
        return Some(done.clone());
    }
    let (valid, refused) = approvals_of(name, gate, run);
    let since = before.and_then(|g| g.waiting_since.clone());
    if before.is_none() && !ready && valid.is_none() {
        return None;
    }
    let now_time = Some(Time(now));
    let since = since.or(now_time.clone());
    if let Some(approval) = valid {
        return Some(GateStatus {
            step: name.to_owned(),
            state: GateState::Approved,
            waiting_since: since,
            decided_at: now_time,
            approved_by: Some(approval.approved_by.clone()),
            message: Some(format!("approved by {}", approval.approved_by)),
        });
    }
    let waited = elapsed_duration(since.as_ref().map_or(now, |t| t.0), now);
    let timed_out = waited >= timeout(gate);
    let mut message = format!("waits for one of {}", gate.approvers.join(", "));
    if let Some(why) = refused {
        message = format!("{message}; {why}");
    }
    if timed_out {
        message = format!(
            "no approval in time ({:?} on timeout); {message}",
            gate.on_timeout
        );
    }
    Some(GateStatus {
        step: name.to_owned(),
        state: if timed_out {
            GateState::TimedOut
        } else {
            GateState::Waiting
        },
        waiting_since: since,
        decided_at: timed_out.then_some(Time(now)),
        approved_by: None,
        message: Some(message),
    })
}

/// The approval of step `name` that counts (by a listed approver who is not the requester),
/// and why the others of it do not.
fn approvals_of<'r>(
    name: &str,
    gate: &ApprovalGate,
    run: &'r RecoveryRun,
) -> (Option<&'r StepApproval>, Option<String>) {
    let requester = run.spec.requested_by.as_deref();
    let listed = |a: &StepApproval| {
        gate.approvers
            .iter()
            .any(|who| match who.strip_prefix("group:") {
                Some(group) => a.groups.iter().any(|g| g == group),
                None => *who == a.approved_by,
            })
    };
    let mut refused = Vec::new();
    for approval in run.spec.approvals.iter().filter(|a| a.step == name) {
        if Some(approval.approved_by.as_str()) == requester {
            refused.push(format!(
                "the approval by {} is refused: the requester cannot approve (four eyes)",
                approval.approved_by
            ));
        } else if !listed(approval) {
            refused.push(format!(
                "the approval by {} is refused: not among the approvers",
                approval.approved_by
            ));
        } else {
            return (Some(approval), None);
        }
    }
    (None, (!refused.is_empty()).then(|| refused.join("; ")))
}

/// The condition of a run's gates.
pub const APPROVED: &str = "Approved";

/// The `Approved` condition of `gates` (status, reason, message); none for a run that has
/// reached no gate.
pub fn condition(gates: &[GateStatus]) -> Option<(&'static str, &'static str, String)> {
    let describe =
        |g: &GateStatus| format!("step {}: {}", g.step, g.message.clone().unwrap_or_default());
    if gates.is_empty() {
        return None;
    }
    if let Some(timed_out) = gates.iter().find(|g| g.state == GateState::TimedOut) {
        return Some(("False", "TimedOut", describe(timed_out)));
    }
    let waiting: Vec<String> = gates
        .iter()
        .filter(|g| g.state == GateState::Waiting)
        .map(describe)
        .collect();
    if !waiting.is_empty() {
        return Some(("False", "WaitingForApproval", waiting.join("; ")));
    }
    let approved: Vec<String> = gates.iter().map(describe).collect();
    Some(("True", "Approved", approved.join("; ")))
}

/// The evidence's account of every gate: who approved it and when, or that it timed out.
pub fn evidence(gates: &[GateStatus]) -> Vec<String> {
    gates
        .iter()
        .map(|g| {
            let when = g
                .decided_at
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            match g.state {
                GateState::Approved => format!(
                    "{}: approved by {} at {when}",
                    g.step,
                    g.approved_by.clone().unwrap_or_default()
                ),
                GateState::TimedOut => format!(
                    "{}: not approved; timed out at {when} ({})",
                    g.step,
                    g.message.clone().unwrap_or_default()
                ),
                GateState::Waiting => format!("{}: still waiting at the end", g.step),
            }
        })
        .collect()
}

/// Time from `from` to `to`, none when `to` is earlier.
fn elapsed_duration(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

fn timeout(gate: &ApprovalGate) -> Duration {
    gate.timeout
        .as_ref()
        .map_or(DEFAULT_TIMEOUT, |t| t.duration())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DisasterRecoverySpec {
        serde_yaml::from_str(
            "scenario: s\nsteps:\n  - {name: a, command: 'true'}\n  - {name: overwrite, after: [a], command: 'true', approval: {approvers: [bob, group:dba], timeout: 10m}}\n  - {name: later, after: [overwrite], command: 'true', approval: {approvers: [bob], timeout: 1m, onTimeout: Continue}}\n",
        )
        .unwrap()
    }

    fn run(approvals: &str) -> RecoveryRun {
        serde_yaml::from_str(&format!(
            "apiVersion: dr.titan.io/v1alpha1\nkind: RecoveryRun\nmetadata: {{name: r}}\nspec: {{recovery: s, requestedBy: alice, approvals: {approvals}}}\n"
        ))
        .unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn a_ready_gated_step_waits_and_the_requester_cannot_approve_it() {
        let ready = BTreeSet::from(["overwrite"]);
        let none = evaluate(&spec(), &run("[]"), &[], &BTreeSet::new(), at(0));
        assert_eq!(
            none,
            Gates::default(),
            "no gate reached before its step is ready"
        );
        let mine = run("[{step: overwrite, approvedBy: alice}]");
        let gates = evaluate(&spec(), &mine, &[], &ready, at(0));
        assert_eq!(gates.held, BTreeSet::from(["overwrite".to_owned()]));
        assert_eq!(gates.status[0].state, GateState::Waiting);
        let message = gates.status[0].message.clone().unwrap();
        assert!(
            message.contains("waits for one of bob, group:dba"),
            "{message}"
        );
        assert!(
            message.contains("the requester cannot approve (four eyes)"),
            "{message}"
        );
        assert_eq!(gates.next_timeout, Some(Duration::from_secs(600)));
        let outsider = run("[{step: overwrite, approvedBy: mallory}]");
        let gates = evaluate(&spec(), &outsider, &gates.status, &ready, at(60));
        assert!(
            gates.status[0]
                .message
                .clone()
                .unwrap()
                .contains("mallory is refused: not among the approvers")
        );
        assert_eq!(gates.next_timeout, Some(Duration::from_secs(540)));
    }

    #[test]
    fn a_listed_user_or_group_member_approves_and_an_approval_is_final() {
        let ready = BTreeSet::from(["overwrite"]);
        let waiting = evaluate(&spec(), &run("[]"), &[], &ready, at(0)).status;
        for approvals in [
            "[{step: overwrite, approvedBy: bob}]",
            "[{step: overwrite, approvedBy: carol, groups: [dba]}]",
        ] {
            let gates = evaluate(&spec(), &run(approvals), &waiting, &ready, at(30));
            assert!(gates.held.is_empty(), "{approvals}");
            assert_eq!(gates.status[0].state, GateState::Approved);
            assert_eq!(gates.status[0].waiting_since, Some(Time(at(0))));
            let again = evaluate(
                &spec(),
                &run("[]"),
                &gates.status,
                &BTreeSet::new(),
                at(9999),
            );
            assert_eq!(again.status, gates.status, "final");
        }
    }

    #[test]
    fn a_timeout_aborts_or_goes_on_as_the_gate_says() {
        let ready = BTreeSet::from(["overwrite"]);
        let waiting = evaluate(&spec(), &run("[]"), &[], &ready, at(0)).status;
        let gates = evaluate(&spec(), &run("[]"), &waiting, &ready, at(600));
        assert_eq!(gates.status[0].state, GateState::TimedOut);
        assert_eq!(
            gates.abort.as_deref(),
            Some("the approval of step overwrite timed out after 10m0s")
        );
        let later = BTreeSet::from(["later"]);
        let waiting = evaluate(&spec(), &run("[]"), &[], &later, at(0)).status;
        let gates = evaluate(&spec(), &run("[]"), &waiting, &later, at(61));
        assert_eq!(gates.status[0].state, GateState::TimedOut);
        assert!(
            gates.held.is_empty() && gates.abort.is_none(),
            "Continue lets it start"
        );
    }
}
