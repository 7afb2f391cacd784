//! Plans built from the YAML fixtures in `tests/fixtures/plan/`, and runs driven through them.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::api::disaster_recovery::{
    DisasterRecovery, DisasterRecoverySpec, DisasterRecoveryStatus, RunPhase, StepPhase,
};
use crate::api::duration::format_duration;
use StepPhase::{Failed, TimedOut};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/plan/",
            $name
        ))
    };
}

fn spec(yaml: &str) -> DisasterRecoverySpec {
    serde_yaml::from_str(yaml).expect("fixture is a DisasterRecoverySpec")
}

fn plan(yaml: &str) -> Plan {
    Plan::new(&spec(yaml)).expect("fixture is a valid spec")
}

fn titan() -> Plan {
    let resource: DisasterRecovery =
        serde_yaml::from_str(fixture!("titan.yaml")).expect("fixture is a DisasterRecovery");
    Plan::new(&resource.spec).expect("the Titan spec is valid")
}

fn needs<'a>(plan: &'a Plan, name: &str) -> Vec<&'a str> {
    let step = plan.find(name).expect("step exists");
    step.needs.iter().map(String::as_str).collect()
}

/// A run driven to its end: every attempt started in one decision ends before the next one,
/// as `script` says (an unscripted attempt succeeds).
struct Run {
    /// Attempts started by each decision, `name` for a first attempt and `name#n` after.
    batches: Vec<Vec<String>>,
    skipped: Vec<String>,
    state: RunState,
    last: Decision,
}

fn run(plan: &Plan, script: &[(&str, &[StepPhase])]) -> Run {
    let script: HashMap<&str, &[StepPhase]> = script.iter().copied().collect();
    let mut state = RunState::default();
    let mut batches = Vec::new();
    let mut skipped = Vec::new();
    for _ in 0..100 {
        let decision = plan.next(&state);
        assert_eq!(decision, plan.next(&state), "deciding is repeatable");
        for name in &decision.skip {
            state.set(name, StepPhase::Skipped, 0);
            skipped.push(name.clone());
        }
        if decision.outcome.is_some() {
            return Run {
                batches,
                skipped,
                state,
                last: decision,
            };
        }
        assert!(
            !decision.start.is_empty(),
            "a run with nothing running must start something: {decision:?}"
        );
        let mut batch = Vec::new();
        for attempt in &decision.start {
            state.set(&attempt.name, StepPhase::Running, attempt.number);
            batch.push(if attempt.number == 1 {
                attempt.name.clone()
            } else {
                format!("{}#{}", attempt.name, attempt.number)
            });
        }
        for attempt in &decision.start {
            let ending = script
                .get(attempt.name.as_str())
                .and_then(|endings| endings.get(attempt.number as usize - 1))
                .copied()
                .unwrap_or(StepPhase::Succeeded);
            state.set(&attempt.name, ending, attempt.number);
        }
        batches.push(batch);
    }
    panic!("the run did not end within 100 decisions");
}

fn batches(expected: &[&[&str]]) -> Vec<Vec<String>> {
    expected
        .iter()
        .map(|batch| batch.iter().map(|s| s.to_string()).collect())
        .collect()
}

// --- The graph -------------------------------------------------------------------------------

#[test]
fn titan_phases_start_together_after_shared() {
    let plan = titan();
    assert_eq!(
        plan.stages(),
        vec![
            vec!["provision-infrastructure"],
            vec!["start-redis"],
            vec!["restore-redis"],
            vec!["start-brain"],
            vec!["start-shared"],
            vec!["start-phase1", "start-phase2", "start-phase3"],
        ]
    );
    // Only direct needs: start-brain's wait for start-redis goes through restore-redis.
    assert_eq!(needs(&plan, "start-redis"), ["provision-infrastructure"]);
    assert_eq!(needs(&plan, "restore-redis"), ["start-redis"]);
    assert_eq!(needs(&plan, "start-brain"), ["restore-redis"]);
    assert_eq!(needs(&plan, "start-shared"), ["start-brain"]);
    for phase in ["start-phase1", "start-phase2", "start-phase3"] {
        assert_eq!(needs(&plan, phase), ["start-shared"]);
    }
}

#[test]
fn titan_critical_path_counts_retries_and_the_slowest_validation() {
    let path = titan().critical_path();
    assert_eq!(
        path.steps,
        [
            "provision-infrastructure",
            "start-redis",
            "restore-redis",
            "start-brain",
            "start-shared",
            "start-phase1",
            "brain-health",
        ]
    );
    // 300 + 30 + 120 + 60 + 60 + 60 × 3 attempts, then 10 for brain-health.
    assert_eq!(path.worst_case, Duration::from_secs(760));
    assert_eq!(format_duration(path.worst_case), "12m40s");
}

#[test]
fn titan_run_goes_component_by_component_then_validates() {
    let plan = titan();
    let run = run(&plan, &[]);
    assert_eq!(
        run.batches,
        batches(&[
            &["provision-infrastructure"],
            &["start-redis"],
            &["restore-redis"],
            &["start-brain"],
            &["start-shared"],
            &["start-phase1", "start-phase2", "start-phase3"],
            &["redis-connectivity", "brain-health"],
        ])
    );
    assert_eq!(run.last.outcome, Some(Outcome::Succeeded));
    assert_eq!(run.last.phase, RunPhase::Succeeded);
    assert!(!run.last.degraded);
    assert!(run.skipped.is_empty());
}

#[test]
fn titan_status_midrun_retries_the_failed_phase() {
    let plan = titan();
    let status: DisasterRecoveryStatus =
        serde_yaml::from_str(fixture!("titan-midrun-status.yaml")).expect("fixture is a status");
    let mut state = RunState::from_status(&status.run);

    let decision = plan.next(&state);
    assert_eq!(decision.phase, RunPhase::Running);
    assert_eq!(
        decision.start,
        [Attempt {
            kind: StepKind::Step,
            name: "start-phase1".into(),
            number: 2,
        }]
    );
    assert!(decision.skip.is_empty() && decision.outcome.is_none() && !decision.degraded);

    // The last retry fails too, while phase2 still runs: nothing to start, degraded already.
    state.set("start-phase1", TimedOut, 3);
    let decision = plan.next(&state);
    assert_eq!(decision.phase, RunPhase::Running);
    assert!(decision.start.is_empty());
    assert!(decision.degraded);

    // phase1 was not critical: once phase2 ends the validations start.
    state.set("start-phase2", StepPhase::Succeeded, 1);
    let decision = plan.next(&state);
    assert_eq!(decision.phase, RunPhase::Validating);
    let started: Vec<_> = decision
        .start
        .iter()
        .map(|a| (a.kind, a.name.as_str()))
        .collect();
    assert_eq!(
        started,
        [
            (StepKind::Validation, "redis-connectivity"),
            (StepKind::Validation, "brain-health"),
        ]
    );
}

#[test]
fn imported_runbook_runs_in_written_order() {
    let plan = plan(fixture!("imported.yaml"));
    assert_eq!(
        plan.stages(),
        vec![
            vec!["stop-writers"],
            vec!["restore-snapshot"],
            vec!["replay-journal"],
            vec!["start-writers"],
        ]
    );
    assert_eq!(needs(&plan, "start-writers"), ["replay-journal"]);
    assert_eq!(
        run(&plan, &[]).batches,
        batches(&[
            &["stop-writers"],
            &["restore-snapshot"],
            &["replay-journal"],
            &["start-writers"]
        ])
    );
    // DEFAULT_TIMEOUT for stop-writers, 10m, 5m × 2 attempts, 30s.
    let path = plan.critical_path();
    assert_eq!(path.steps.len(), 4);
    assert_eq!(
        path.worst_case,
        DEFAULT_TIMEOUT + Duration::from_secs(600 + 600 + 30)
    );
}

#[test]
fn barriers_split_component_steps() {
    let plan = plan(fixture!("barriers.yaml"));
    assert_eq!(
        plan.stages(),
        vec![
            vec!["start-db", "start-cache"],
            vec!["checkpoint"],
            vec!["migrate-db", "warm-cache"],
            vec!["start-app"],
            vec!["announce"],
        ]
    );
    assert_eq!(needs(&plan, "checkpoint"), ["start-db", "start-cache"]);
    assert_eq!(needs(&plan, "migrate-db"), ["checkpoint"]);
    assert_eq!(needs(&plan, "start-app"), ["migrate-db", "warm-cache"]);
    assert_eq!(needs(&plan, "announce"), ["start-app"]);
}

#[test]
fn after_orders_independent_components_even_against_written_order() {
    let plan = plan(fixture!("after.yaml"));
    assert_eq!(needs(&plan, "c1"), ["b2"]);
    assert_eq!(needs(&plan, "b1"), ["a1"]);
    assert_eq!(
        plan.stages(),
        vec![vec!["a1"], vec!["a2", "b1"], vec!["b2"], vec!["c1"]]
    );
    assert_eq!(
        run(&plan, &[]).batches,
        batches(&[&["a1"], &["a2", "b1"], &["b2"], &["c1"]])
    );
}

#[test]
fn component_dependencies_are_transitive_and_ignore_written_order() {
    let plan = plan(fixture!("transitive.yaml"));
    assert_eq!(needs(&plan, "start-shared"), ["start-redis"]);
    assert!(needs(&plan, "start-metrics").is_empty());
    assert_eq!(
        plan.stages(),
        vec![vec!["start-metrics", "start-redis"], vec!["start-shared"]]
    );
}

// --- Runs ------------------------------------------------------------------------------------

#[test]
fn everything_succeeds() {
    let run = run(&plan(fixture!("failures.yaml")), &[]);
    assert_eq!(
        run.batches,
        batches(&[
            &["prepare"],
            &["left-optional", "right-critical"],
            &["after-left"],
            &["finish"],
            &["check-a", "check-b"],
        ])
    );
    assert_eq!(run.last.outcome, Some(Outcome::Succeeded));
    assert!(!run.last.degraded);
}

#[test]
fn non_critical_failure_is_retried_then_the_run_goes_on_degraded() {
    let run = run(
        &plan(fixture!("failures.yaml")),
        &[("left-optional", &[Failed, Failed])],
    );
    assert_eq!(
        run.batches,
        batches(&[
            &["prepare"],
            &["left-optional", "right-critical"],
            // Its dependant waits while a retry is due...
            &["left-optional#2"],
            // ...and runs once the failure is final.
            &["after-left"],
            &["finish"],
            &["check-a", "check-b"],
        ])
    );
    assert_eq!(run.last.outcome, Some(Outcome::Succeeded));
    assert_eq!(run.last.phase, RunPhase::Succeeded);
    assert!(run.last.degraded);
    assert!(run.skipped.is_empty());
}

#[test]
fn critical_step_succeeding_on_its_last_retry_is_a_success() {
    let run = run(
        &plan(fixture!("failures.yaml")),
        &[("right-critical", &[Failed, TimedOut])],
    );
    assert_eq!(
        run.batches,
        batches(&[
            &["prepare"],
            &["left-optional", "right-critical"],
            &["right-critical#2", "after-left"],
            &["right-critical#3"],
            &["finish"],
            &["check-a", "check-b"],
        ])
    );
    assert_eq!(run.state.get("right-critical").attempts, 3);
    assert_eq!(run.last.outcome, Some(Outcome::Succeeded));
    assert!(!run.last.degraded);
}

#[test]
fn critical_failure_skips_the_rest_and_rolls_back_in_order() {
    let run = run(
        &plan(fixture!("failures.yaml")),
        &[
            ("right-critical", &[Failed, Failed, TimedOut]),
            ("undo-1", &[Failed]),
            ("undo-2", &[Failed]),
        ],
    );
    assert_eq!(
        run.batches,
        batches(&[
            &["prepare"],
            &["left-optional", "right-critical"],
            &["right-critical#2", "after-left"],
            &["right-critical#3"],
            // One rollback step at a time; undo-1 is retried, undo-2's failure stops nothing.
            &["undo-1"],
            &["undo-1#2"],
            &["undo-2"],
            &["undo-3"],
        ])
    );
    assert_eq!(run.skipped, ["finish", "check-a", "check-b"]);
    assert_eq!(run.last.outcome, Some(Outcome::Failed));
    assert_eq!(run.last.phase, RunPhase::Failed);
    assert!(!run.last.degraded);
}

#[test]
fn rollback_waits_for_steps_still_running() {
    let plan = plan(fixture!("failures.yaml"));
    let mut state = RunState::default();
    state
        .set("prepare", StepPhase::Succeeded, 1)
        .set("left-optional", StepPhase::Running, 1)
        .set("right-critical", Failed, 3);

    let decision = plan.next(&state);
    assert_eq!(decision.phase, RunPhase::RollingBack);
    assert!(decision.start.is_empty());
    assert_eq!(
        decision.skip,
        ["after-left", "finish", "check-a", "check-b"]
    );
    assert_eq!(decision.outcome, None);

    // A non-critical step failing with a retry left gets no retry after a critical failure.
    state.set("left-optional", Failed, 1);
    let decision = plan.next(&state);
    let started: Vec<_> = decision
        .start
        .iter()
        .map(|a| (a.kind, a.name.as_str()))
        .collect();
    assert_eq!(started, [(StepKind::Rollback, "undo-1")]);

    // While a rollback step runs, the next one waits.
    state.set("undo-1", StepPhase::Running, 1);
    assert!(plan.next(&state).start.is_empty());
}

#[test]
fn an_aborted_run_skips_the_rest_waits_for_running_steps_then_rolls_back() {
    let plan = plan(fixture!("failures.yaml"));
    let mut state = RunState::default();
    state
        .set("prepare", StepPhase::Succeeded, 1)
        .set("left-optional", StepPhase::Running, 1)
        .set("right-critical", Failed, 1);
    // Unaborted, right-critical is due its retry.
    assert!(!plan.next(&state).start.is_empty());

    let decision = plan.next_aborted(&state);
    assert_eq!(decision.phase, RunPhase::RollingBack);
    assert!(decision.start.is_empty(), "no retry and nothing new");
    assert_eq!(
        decision.skip,
        ["after-left", "finish", "check-a", "check-b"]
    );
    // The running step, stopped by the controller, ends failed: the rollback starts.
    state.set("left-optional", Failed, 1);
    let decision = plan.next_aborted(&state);
    let started: Vec<_> = decision.start.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(started, ["undo-1"]);
    for undo in ["undo-1", "undo-2", "undo-3"] {
        state.set(undo, StepPhase::Succeeded, 1);
    }
    let decision = plan.next_aborted(&state);
    assert_eq!(decision.outcome, Some(Outcome::Failed));
    assert!(decision.degraded, "left-optional failed");
}

#[test]
fn critical_failure_without_rollback_ends_the_run_at_once() {
    let plan = plan(fixture!("imported.yaml"));
    let mut state = RunState::default();
    state.set("stop-writers", TimedOut, 1);
    let decision = plan.next(&state);
    assert_eq!(decision.outcome, Some(Outcome::Failed));
    assert_eq!(decision.phase, RunPhase::Failed);
    assert!(decision.start.is_empty());
    assert_eq!(
        decision.skip,
        ["restore-snapshot", "replay-journal", "start-writers"]
    );
}

#[test]
fn validations_wait_for_every_step() {
    let plan = plan(fixture!("failures.yaml"));
    let mut state = RunState::default();
    for step in ["prepare", "left-optional", "right-critical", "after-left"] {
        state.set(step, StepPhase::Succeeded, 1);
    }
    state.set("finish", StepPhase::Running, 1);
    let decision = plan.next(&state);
    assert_eq!(decision.phase, RunPhase::Running);
    assert!(decision.start.is_empty());

    state.set("finish", StepPhase::Succeeded, 1);
    let decision = plan.next(&state);
    assert_eq!(decision.phase, RunPhase::Validating);
    assert_eq!(decision.start.len(), 2);
    assert!(
        decision
            .start
            .iter()
            .all(|a| a.kind == StepKind::Validation)
    );
}

#[test]
fn failed_critical_validation_fails_the_run_without_rollback() {
    let run = run(&plan(fixture!("failures.yaml")), &[("check-a", &[Failed])]);
    assert_eq!(run.batches.last().unwrap(), &["check-a", "check-b"]);
    assert!(!run.batches.concat().iter().any(|s| s.starts_with("undo")));
    assert_eq!(run.last.outcome, Some(Outcome::Failed));
    assert!(!run.last.degraded);
}

#[test]
fn failed_non_critical_validation_degrades_a_successful_run() {
    let run = run(&plan(fixture!("failures.yaml")), &[("check-b", &[Failed])]);
    assert_eq!(run.last.outcome, Some(Outcome::Succeeded));
    assert!(run.last.degraded);
}

// --- Invalid specs ---------------------------------------------------------------------------

#[test]
fn invalid_specs_name_the_offenders() {
    let cases = [
        (
            fixture!("invalid/component-cycle.yaml"),
            "cycle between components: a -> c -> b -> a",
        ),
        (
            fixture!("invalid/component-self-dependency.yaml"),
            "cycle between components: redis -> redis",
        ),
        (
            fixture!("invalid/unknown-dependency.yaml"),
            r#"component "titan-brain" depends on unknown component "redis-cluster""#,
        ),
        (
            fixture!("invalid/unknown-component.yaml"),
            r#"step "x" names unknown component "nope""#,
        ),
        (
            fixture!("invalid/unknown-after.yaml"),
            r#"step "start-app" is after unknown step "start-db-typo""#,
        ),
        (
            fixture!("invalid/after-validation.yaml"),
            r#"step "start-db" is after unknown step "db-ping""#,
        ),
        (
            fixture!("invalid/duplicate-components.yaml"),
            "duplicate component names: redis",
        ),
        (
            fixture!("invalid/duplicate-steps.yaml"),
            "duplicate step names (names must be unique across steps, validations and rollback): \
             check-db, notify",
        ),
        (
            fixture!("invalid/bad-output-matches.yaml"),
            "step \"redis-ping\" has outputMatches /PONG(/, which is not a regular expression: \
             regex parse error:\n    PONG(\n        ^\nerror: unclosed group",
        ),
        (
            fixture!("invalid/step-cycle.yaml"),
            "cycle between steps: step-x -> step-y -> step-x",
        ),
        (
            fixture!("invalid/barrier-contradiction.yaml"),
            "cycle between steps: start-brain -> start-redis -> checkpoint -> start-brain",
        ),
    ];
    for (yaml, message) in cases {
        let error = Plan::new(&spec(yaml)).expect_err(message);
        assert_eq!(error.to_string(), message);
    }
}

/// Durations are typed: a bad one never reaches the planner (nor becomes zero there), the
/// spec does not even deserialize, and the error names the field.
#[test]
fn invalid_durations_are_refused_when_the_spec_is_read() {
    let cases = [
        (
            fixture!("invalid/bad-timeout.yaml"),
            r#"validations[0].timeout: "5 minutes" is not a duration like 300s, 5m, 1h30m or 1.5h"#,
        ),
        (
            fixture!("invalid/bad-rto.yaml"),
            r#"objectives.rto: "soon" is not a duration like 300s, 5m, 1h30m or 1.5h"#,
        ),
    ];
    for (yaml, message) in cases {
        let error = serde_yaml::from_str::<DisasterRecoverySpec>(yaml).expect_err(message);
        assert!(error.to_string().starts_with(message), "{error}");
    }
}

#[test]
fn an_empty_plan_succeeds_at_once() {
    let plan = plan("scenario: nothing\nsteps: []\n");
    assert!(plan.stages().is_empty());
    assert_eq!(plan.critical_path().worst_case, Duration::ZERO);
    assert_eq!(
        plan.next(&RunState::default()).outcome,
        Some(Outcome::Succeeded)
    );
}
