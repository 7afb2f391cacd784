//! The evidence of an ended run: who or what started it and why, what it executed (the
//! scenario's generation), every step's outcome with a SHA-256 of its recorded output, and the
//! achieved RTO and RPO against the objectives and the plan's predicted worst case — sealed
//! by a SHA-256 over all of it, so that a changed byte of the record or of a step's output is
//! found by [`verify`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::disaster_recovery::{DisasterRecoverySpec, StepStatus};
use crate::api::duration::format_duration;
pub use crate::api::evidence::{Evidence, Objective, StepEvidence};
use crate::api::{RecoveryRun, RunStatus};
use crate::backup::BackupKey;
use crate::plan::Plan;

/// The evidence of `run`, ended with `status`, which executed `scenario` (planned as `plan`).
pub fn record(
    run: &RecoveryRun,
    scenario: &DisasterRecoverySpec,
    generation: Option<i64>,
    plan: &Plan,
    status: &RunStatus,
    approvals: Vec<String>,
) -> Evidence {
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let met = |c: Option<&Condition>| c.map_or("Unknown".to_owned(), |c| c.status.clone());
    let objectives = scenario.objectives.as_ref();
    let kinds = [
        ("step", &status.steps),
        ("validation", &status.validations),
        ("rollback", &status.rollback),
    ];
    let mut evidence = Evidence {
        run: run.metadata.name.clone().unwrap_or_default(),
        recovery: run.spec.recovery.clone(),
        scenario: scenario.scenario.clone(),
        target_namespace: scenario.target_namespace.clone(),
        mode: run.spec.mode,
        trigger: run.spec.trigger,
        requested_by: run.spec.requested_by.clone(),
        reason: run.spec.reason.clone(),
        approvals,
        scenario_generation: generation,
        started_at: status.started_at.clone(),
        finished_at: status.finished_at.clone(),
        outcome: status.phase.unwrap_or_default(),
        outcome_reason: condition("Ready")
            .map(|c| c.reason.clone())
            .unwrap_or_default(),
        steps: kinds
            .iter()
            .flat_map(|(kind, list)| list.iter().map(move |s| step(kind, s)))
            .collect(),
        rto: Objective {
            objective: objectives
                .and_then(|o| o.rto.as_ref())
                .map(|d| d.to_string()),
            achieved: status.achieved_rto.clone(),
            met: met(condition("RTOMet")),
        },
        rpo: Objective {
            objective: objectives
                .and_then(|o| o.rpo.as_ref())
                .map(|d| d.to_string()),
            achieved: condition("RPOMet").map(|c| c.message.clone()),
            met: met(condition("RPOMet")),
        },
        predicted_worst_case: format_duration(plan.critical_path().worst_case),
        seal_sha256: String::new(),
    };
    evidence.seal_sha256 = seal(&evidence);
    evidence
}

fn step(kind: &str, status: &StepStatus) -> StepEvidence {
    StepEvidence {
        name: status.name.clone(),
        kind: kind.to_owned(),
        phase: status.phase,
        attempts: status.attempts,
        started_at: status.started_at.clone(),
        finished_at: status.finished_at.clone(),
        exit_code: status.exit_code,
        output_sha256: status.output.as_deref().map(sha256),
    }
}

fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The seal of `evidence`: SHA-256 of its JSON with the seal itself empty.
fn seal(evidence: &Evidence) -> String {
    let unsealed = Evidence {
        seal_sha256: String::new(),
        ..evidence.clone()
    };
    let json = serde_json::to_vec(&unsealed).expect("evidence always serializes");
    hex::encode(Sha256::digest(&json))
}

/// The copy of a record kept beside a Backup's snapshots in object storage, where it outlives
/// the cluster and the run's history limit: the record and its MAC under the Backup's key, as
/// a snapshot's manifest is authenticated, so that only a holder of the key can make one.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuthenticatedCopy {
    pub evidence: Evidence,
    /// HMAC-SHA256 (hex) of the record's JSON under the Backup's key.
    pub mac: String,
}

/// The object name of run `run`'s copy (with its UID, as a run may be made again under its
/// name), under the Backup's folder.
pub fn copy_name(run: &str, uid: &str) -> String {
    format!("evidence/{run}-{uid}.json")
}

/// `evidence`, authenticated by `key`, as the JSON kept in object storage.
pub fn authenticate(evidence: &Evidence, key: &BackupKey) -> Vec<u8> {
    let json = serde_json::to_vec(evidence).expect("evidence always serializes");
    let copy = AuthenticatedCopy {
        evidence: evidence.clone(),
        mac: key.mac(&json),
    };
    serde_json::to_vec_pretty(&copy).expect("evidence always serializes")
}

/// The record in a copy, when `key` authenticates it and its seal holds; else what is wrong.
pub fn open_copy(bytes: &[u8], key: &BackupKey) -> Result<Evidence, String> {
    let copy: AuthenticatedCopy =
        serde_json::from_slice(bytes).map_err(|e| format!("not an evidence copy: {e}"))?;
    let json = serde_json::to_vec(&copy.evidence).expect("evidence always serializes");
    if !key.verifies_mac(&json, &copy.mac) {
        return Err(
            "the copy is not authenticated by this key: it was changed, or made with another key"
                .to_owned(),
        );
    }
    if seal(&copy.evidence) != copy.evidence.seal_sha256 {
        return Err("the record does not match its seal: it was changed".to_owned());
    }
    Ok(copy.evidence)
}

/// What does not hold between `evidence` and the run's recorded `status`: an empty list when
/// the record is sealed as it is and every step's output is the one it digested.
pub fn verify(evidence: &Evidence, status: &RunStatus) -> Vec<String> {
    let mut problems = Vec::new();
    if seal(evidence) != evidence.seal_sha256 {
        problems.push("the record does not match its seal: it was changed".to_owned());
    }
    let recorded = status
        .steps
        .iter()
        .chain(&status.validations)
        .chain(&status.rollback);
    for step in recorded {
        let digest = step.output.as_deref().map(sha256);
        match evidence.steps.iter().find(|e| e.name == step.name) {
            None => problems.push(format!("step {} is not in the evidence", step.name)),
            Some(e) if e.output_sha256 != digest => problems.push(format!(
                "the output of step {} is not the one the evidence digested",
                step.name
            )),
            Some(e) if e.phase != step.phase || e.attempts != step.attempts => {
                problems.push(format!(
                    "the outcome of step {} differs from the evidence",
                    step.name
                ))
            }
            Some(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::disaster_recovery::RunPhase;

    fn ended() -> (RecoveryRun, DisasterRecoverySpec, RunStatus) {
        let run: RecoveryRun = serde_yaml::from_str(
            "apiVersion: dr.titan.io/v1alpha1\nkind: RecoveryRun\nmetadata: {name: titan-3, namespace: ns}\nspec: {recovery: titan, requestedBy: alice, reason: INC-9}\n",
        )
        .unwrap();
        let spec: DisasterRecoverySpec = serde_yaml::from_str(
            "scenario: complete-system-failure\nobjectives: {rto: 15m, rpo: 5m}\nsteps:\n  - {name: a, command: 'echo a', timeout: 2m}\n  - {name: b, after: [a], command: 'echo b', timeout: 3m, retries: 1}\nvalidations:\n  - {name: v, command: 'true', timeout: 1m}\n",
        )
        .unwrap();
        let status: RunStatus = serde_yaml::from_str(
            "phase: Succeeded\nachievedRTO: 41s\nsteps:\n  - {name: a, phase: Succeeded, attempts: 1, exitCode: 0, output: \"a\\n\"}\n  - {name: b, phase: Succeeded, attempts: 2, exitCode: 0, output: \"b\\n\"}\nvalidations:\n  - {name: v, phase: Succeeded, attempts: 1, exitCode: 0}\nconditions:\n  - {type: Ready, status: 'True', reason: Succeeded, message: ok, lastTransitionTime: '2026-12-03T10:00:00Z'}\n  - {type: RTOMet, status: 'True', reason: WithinObjective, message: ok, lastTransitionTime: '2026-12-03T10:00:00Z'}\n",
        )
        .unwrap();
        (run, spec, status)
    }

    #[test]
    fn the_evidence_names_everything_and_verifies_against_the_outputs() {
        let (run, spec, status) = ended();
        let plan = Plan::new(&spec).unwrap();
        let evidence = record(&run, &spec, Some(4), &plan, &status, Vec::new());
        assert_eq!(evidence.requested_by.as_deref(), Some("alice"));
        assert_eq!(evidence.scenario_generation, Some(4));
        assert_eq!(evidence.outcome, RunPhase::Succeeded);
        assert_eq!(evidence.rto.met, "True");
        assert_eq!(evidence.rpo.met, "Unknown");
        // a (2m) then b (3m, twice) then v (1m).
        assert_eq!(evidence.predicted_worst_case, "9m0s");
        let a = &evidence.steps[0];
        assert_eq!(a.output_sha256.as_deref(), Some(sha256("a\n").as_str()));
        assert_eq!(evidence.steps[2].kind, "validation");
        assert!(evidence.steps[2].output_sha256.is_none());
        assert_eq!(verify(&evidence, &status), Vec::<String>::new());
    }

    #[test]
    fn a_copy_opens_with_its_key_only_and_a_changed_byte_is_found() {
        let (run, spec, status) = ended();
        let plan = Plan::new(&spec).unwrap();
        let evidence = record(&run, &spec, Some(4), &plan, &status, Vec::new());
        let key = BackupKey::generate();
        let copy = authenticate(&evidence, &key);
        assert_eq!(open_copy(&copy, &key), Ok(evidence.clone()));
        let other = BackupKey::generate();
        assert!(
            open_copy(&copy, &other)
                .unwrap_err()
                .contains("not authenticated by this key")
        );
        let text = String::from_utf8(copy).unwrap();
        let forged = text.replace("alice", "mallo");
        assert_ne!(forged, text);
        assert!(
            open_copy(forged.as_bytes(), &key)
                .unwrap_err()
                .contains("not authenticated")
        );
        assert_eq!(copy_name("titan-3", "u1"), "evidence/titan-3-u1.json");
    }

    #[test]
    fn a_changed_byte_of_an_output_or_of_the_record_is_found() {
        let (run, spec, status) = ended();
        let plan = Plan::new(&spec).unwrap();
        let evidence = record(&run, &spec, Some(4), &plan, &status, Vec::new());
        let mut changed = status.clone();
        changed.steps[1].output = Some("c\n".into());
        assert_eq!(
            verify(&evidence, &changed),
            ["the output of step b is not the one the evidence digested"]
        );
        let mut forged = evidence.clone();
        forged.requested_by = Some("mallory".into());
        assert_eq!(
            verify(&forged, &status),
            ["the record does not match its seal: it was changed"]
        );
    }
}
