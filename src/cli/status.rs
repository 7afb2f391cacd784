//! `titan-dr status` and `titan-dr report`: a DisasterRecovery's run in the cluster, told
//! with the display and the report of `titan-dr run`. The run is rebuilt from the resource's
//! status (one record per step: its last attempt, numbered by `attempts`, spanning from the
//! first attempt's start to the last one's end), so a run seen live and a run looked at
//! after the fact read the same as a local one.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::Exit;
use crate::api::disaster_recovery::{DisasterRecovery, RunPhase, RunStatus, StepPhase, StepStatus};
use crate::local::display::Display;
use crate::local::executor::{AttemptRecord, Logs, Observer, StepRecord};
use crate::local::{RunOutcome, RunRecord, report};
use crate::plan::{Plan, PlannedStep, StepKind};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The DisasterRecovery.
    pub name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Follow the run until it ends, then print the summary. Exits 0 when it succeeded, 1
    /// when it failed.
    #[arg(short, long)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The DisasterRecovery whose last run is reported.
    pub name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The markdown file; the SVG timeline is written beside it.
    #[arg(long)]
    pub out: PathBuf,
}

/// `titan-dr status`.
pub async fn status(args: &StatusArgs) -> Exit {
    let (api, dr, plan) = match fetch(&args.name, args.namespace.as_deref()).await {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    let mut shown = Shown::default();
    let mut display = Display::new();
    let mut latest = dr;
    if args.watch && !ended(&latest) {
        show(&mut display, &mut shown, &latest, &plan);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", args.name));
        let mut changes = watcher(api, config).applied_objects().boxed();
        loop {
            match changes.try_next().await {
                Ok(Some(dr)) => latest = dr,
                Ok(None) => break,
                Err(error) => {
                    eprintln!("error: watching {}: {error}", args.name);
                    return Exit::Failed;
                }
            }
            show(&mut display, &mut shown, &latest, &plan);
            if ended(&latest) {
                break;
            }
        }
    }
    show(&mut display, &mut shown, &latest, &plan);
    let record = record(&latest, &plan, Timestamp::now());
    if !ended(&latest) {
        let phase = latest.status.as_ref().and_then(|s| s.run.phase);
        display.line(&format!("Run is {phase:?}; --watch follows it to its end"));
        return Exit::Succeeded;
    }
    display.summary(&record, latest.rto_objective());
    exit_of(&record)
}

/// `titan-dr report`.
pub async fn report(args: &ReportArgs) -> Exit {
    let (_, dr, plan) = match fetch(&args.name, args.namespace.as_deref()).await {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    if !ended(&dr) {
        eprintln!(
            "error: {} has no ended run to report (see titan-dr status --watch)",
            args.name
        );
        return Exit::Failed;
    }
    let record = record(&dr, &plan, Timestamp::now());
    match report::write(&args.out, &record, &dr, &plan) {
        Ok(svg) => {
            println!(
                "report: {} (timeline: {})",
                args.out.display(),
                svg.display()
            );
            exit_of(&record)
        }
        Err(error) => {
            eprintln!(
                "error: cannot write the report {}: {error}",
                args.out.display()
            );
            Exit::Failed
        }
    }
}

/// The DisasterRecovery and its plan; an error is printed, and its exit returned.
async fn fetch(
    name: &str,
    namespace: Option<&str>,
) -> Result<(Api<DisasterRecovery>, DisasterRecovery, Plan), Exit> {
    let client = Client::try_default().await.map_err(|error| {
        eprintln!("error: no cluster: {error}");
        Exit::Failed
    })?;
    let namespace = namespace.unwrap_or(client.default_namespace()).to_owned();
    let api: Api<DisasterRecovery> = Api::namespaced(client, &namespace);
    let dr = match api.get_opt(name).await {
        Ok(Some(dr)) => dr,
        Ok(None) => {
            eprintln!("error: no DisasterRecovery {name} in namespace {namespace}");
            return Err(Exit::InvalidInput);
        }
        Err(error) => {
            eprintln!("error: reading DisasterRecovery {namespace}/{name}: {error}");
            return Err(Exit::Failed);
        }
    };
    match Plan::new(&dr.spec) {
        Ok(plan) => Ok((api, dr, plan)),
        Err(error) => {
            eprintln!("error: the DisasterRecovery is invalid: {error}");
            Err(Exit::InvalidInput)
        }
    }
}

fn ended(dr: &DisasterRecovery) -> bool {
    dr.status.as_ref().is_some_and(|s| s.run.has_ended())
}

fn exit_of(record: &RunRecord) -> Exit {
    match record.outcome {
        RunOutcome::Succeeded => Exit::Succeeded,
        _ => Exit::Failed,
    }
}

/// The events of a run already printed: (run, step, attempt, whether it ended).
#[derive(Default)]
struct Shown {
    run: Option<String>,
    events: BTreeSet<(String, u32, bool)>,
}

/// Prints what happened since the last call, in the order it happened.
fn show(display: &mut Display, shown: &mut Shown, dr: &DisasterRecovery, plan: &Plan) {
    let status = dr.status.clone().unwrap_or_default().run;
    if shown.run != status.run_id {
        shown.run = status.run_id.clone();
        shown.events.clear();
        let started = status.started_at.as_ref().map(|t| t.0.to_string());
        display.line(&format!(
            "Run {} of {} ({}), started {}",
            status.run_id.as_deref().unwrap_or("-"),
            dr.metadata.name.as_deref().unwrap_or_default(),
            dr.spec.scenario,
            started.as_deref().unwrap_or("-")
        ));
    }
    let record = record(dr, plan, Timestamp::now());
    let mut events: Vec<(Duration, &StepRecord, bool)> = Vec::new();
    for step in &record.steps {
        if let Some(since) = step.running_since {
            events.push((since, step, false));
        } else if let Some(attempt) = step.last_attempt() {
            events.push((attempt.start, step, false));
            events.push((attempt.end(), step, true));
        } else if step.phase == StepPhase::Skipped {
            events.push((record.elapsed, step, true));
        }
    }
    events.sort_by_key(|(at, _, end)| (*at, *end));
    for (_, step, end) in events {
        // Names are unique across the three lists, so the name finds the step's state.
        let number = [&status.steps, &status.validations, &status.rollback]
            .into_iter()
            .flatten()
            .find(|s| s.name == step.name)
            .map_or(1, |s| s.attempts.max(1));
        if !shown.events.insert((step.name.clone(), number, end)) {
            continue;
        }
        match (end, step.phase) {
            (true, StepPhase::Skipped) => display.skipped(step),
            (true, _) => display.attempt_ended(step),
            (false, _) => {
                // An ended attempt's start is told at the time it started.
                let mut started = step.clone();
                started.running_since = started
                    .running_since
                    .or(step.last_attempt().map(|a| a.start));
                display.attempt_started(&started, number);
            }
        }
    }
}

/// The run in `dr`'s status as a local run's record; `now` ends a run still going.
pub fn record(dr: &DisasterRecovery, plan: &Plan, now: Timestamp) -> RunRecord {
    let status = dr.status.clone().unwrap_or_default().run;
    let start = status.started_at.as_ref().map_or(now, |t| t.0);
    let end = status.finished_at.as_ref().map_or(now, |t| t.0);
    let lists = [
        (StepKind::Step, plan.steps(), &status.steps),
        (
            StepKind::Validation,
            plan.validations(),
            &status.validations,
        ),
        (StepKind::Rollback, plan.rollback(), &status.rollback),
    ];
    let steps = lists
        .into_iter()
        .flat_map(|(kind, planned, observed)| {
            planned
                .iter()
                .map(move |step| step_record(kind, step, observed, start, now))
        })
        .collect();
    let degraded = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True");
    RunRecord {
        scenario: dr.spec.scenario.clone(),
        started_at: start,
        elapsed: since(start, end),
        outcome: outcome(&status),
        degraded,
        steps,
        logs: Logs::Jobs {
            namespace: dr.metadata.namespace.clone().unwrap_or_default(),
        },
    }
}

fn outcome(status: &RunStatus) -> RunOutcome {
    match status.phase {
        Some(RunPhase::Succeeded) => RunOutcome::Succeeded,
        Some(RunPhase::Failed) => RunOutcome::Failed,
        // Not ended: no outcome yet, and none that looks like success.
        _ => RunOutcome::Interrupted,
    }
}

fn step_record(
    kind: StepKind,
    step: &PlannedStep,
    observed: &[StepStatus],
    run_start: Timestamp,
    now: Timestamp,
) -> StepRecord {
    let mut record = StepRecord::new(kind, step);
    let Some(state) = observed.iter().find(|s| s.name == step.name) else {
        return record;
    };
    record.phase = state.phase;
    let started = state.started_at.as_ref().map(|t| since(run_start, t.0));
    let ended = matches!(
        state.phase,
        StepPhase::Succeeded | StepPhase::Failed | StepPhase::TimedOut
    );
    if state.phase == StepPhase::Running {
        record.running_since = started;
    }
    if ended && state.attempts > 0 {
        let start = started.unwrap_or_default();
        let finished = state.finished_at.as_ref().map_or(now, |t| t.0);
        let message = match state.phase {
            StepPhase::Succeeded => String::new(),
            _ => state.message.clone().unwrap_or_default(),
        };
        record.attempts.push(AttemptRecord {
            number: state.attempts,
            start,
            duration: since(run_start, finished).saturating_sub(start),
            exit_code: state.exit_code,
            phase: state.phase,
            message,
            output: state.output.clone().unwrap_or_default(),
            log: PathBuf::from(format!("job/{}", state.job.as_deref().unwrap_or_default())),
            interrupted: false,
        });
    }
    record
}

fn since(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recovery(status: &str) -> DisasterRecovery {
        let yaml = format!(
            "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: r, namespace: ns}}\nspec:\n  scenario: s\n  template: {{image: i}}\n  steps:\n    - {{name: a, command: 'true', retries: 2}}\n    - {{name: b, after: [a], command: 'true', critical: false}}\n  validations:\n    - {{name: v, command: 'true'}}\n  rollback:\n    - {{name: undo, command: 'true'}}\nstatus: {status}\n"
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    #[test]
    fn a_cluster_run_reads_as_a_local_runs_record() {
        let dr = recovery(concat!(
            "{phase: Succeeded, runId: '1', startedAt: '2026-12-01T10:00:00Z', ",
            "finishedAt: '2026-12-01T10:00:30Z', ",
            "conditions: [{type: Degraded, status: 'True', reason: NonCriticalStepFailed, ",
            "message: m, lastTransitionTime: '2026-12-01T10:00:30Z'}], ",
            "steps: [{name: a, phase: Succeeded, attempts: 3, job: r-1-a-2-x, ",
            "startedAt: '2026-12-01T10:00:02Z', finishedAt: '2026-12-01T10:00:12Z', exitCode: 0}, ",
            "{name: b, phase: Failed, attempts: 1, exitCode: 1, message: 'expected exit code 0, got 1', ",
            "startedAt: '2026-12-01T10:00:12Z', finishedAt: '2026-12-01T10:00:20Z'}], ",
            "validations: [{name: v, phase: Running, attempts: 1, startedAt: '2026-12-01T10:00:20Z'}], ",
            "rollback: [{name: undo, phase: Pending, attempts: 0}]}"
        ));
        let plan = Plan::new(&dr.spec).unwrap();
        let record = record(&dr, &plan, Timestamp::now());
        assert_eq!(record.outcome, RunOutcome::Succeeded);
        assert!(record.degraded);
        assert_eq!(record.elapsed, Duration::from_secs(30));
        let names: Vec<_> = record
            .steps
            .iter()
            .map(|s| (s.kind, s.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                (StepKind::Step, "a"),
                (StepKind::Step, "b"),
                (StepKind::Validation, "v"),
                (StepKind::Rollback, "undo")
            ]
        );
        let a = record.steps[0].last_attempt().unwrap();
        assert_eq!(
            (a.number, a.start, a.end()),
            (3, Duration::from_secs(2), Duration::from_secs(12))
        );
        assert!(a.message.is_empty(), "a success says nothing: {a:?}");
        assert_eq!(a.log, PathBuf::from("job/r-1-a-2-x"));
        let b = &record.steps[1];
        assert!(!b.critical);
        assert_eq!(
            b.last_attempt().unwrap().message,
            "expected exit code 0, got 1"
        );
        assert_eq!(record.tolerated_failures().count(), 1);
        assert_eq!(record.steps[2].running_since, Some(Duration::from_secs(20)));
        assert!(record.steps[3].attempts.is_empty());
        assert_eq!(record.achieved_rto(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_run_not_ended_has_no_outcome_of_success() {
        let dr = recovery("{phase: Running, runId: '2', startedAt: '2026-12-01T10:00:00Z'}");
        let plan = Plan::new(&dr.spec).unwrap();
        let record = record(&dr, &plan, Timestamp::now());
        assert_eq!(record.outcome, RunOutcome::Interrupted);
        assert_eq!(record.achieved_rto(), None);
        assert!(record.steps.iter().all(|s| s.attempts.is_empty()));
    }
}
