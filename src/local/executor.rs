//! Runs a scenario on this machine: every attempt of a step is a local process instead of a
//! Job. What to start, skip and roll back is decided by the shared planner ([`Plan::next`])
//! and every attempt is judged by [`crate::expect::judge`], so a local run and a run in the
//! cluster follow the same semantics; only the place the commands run differs.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::api::disaster_recovery::{DisasterRecovery, Step, StepPhase};
use crate::expect::{self, Finished};
use crate::plan::{Attempt, Outcome, Plan, PlannedStep, RunState, StepKind};
use crate::process::{self, ProcessSpec, Stopped};

/// How often a running run reports [`Observer::tick`], for a live display.
const TICK: Duration = Duration::from_millis(200);

/// Where and how a local run runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The working directory of every command.
    pub workdir: PathBuf,
    /// Where each attempt's combined output is written, as `<step>-<attempt>.log`.
    pub log_dir: PathBuf,
    /// Cancelling stops the running attempts (their process groups are terminated) and ends
    /// the run as [`RunOutcome::Interrupted`], without rollback: whoever interrupted a
    /// recovery wants it to stop, not to do more.
    pub cancel: CancellationToken,
}

/// How a local run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Every critical step and validation succeeded.
    Succeeded,
    /// A critical step or validation failed after its retries.
    Failed,
    /// The run was cancelled before it ended.
    Interrupted,
}

impl From<Outcome> for RunOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => RunOutcome::Succeeded,
            Outcome::Failed => RunOutcome::Failed,
        }
    }
}

/// Everything a run did, for the summary and the report.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The scenario's ID.
    pub scenario: String,
    /// When the run started.
    pub started_at: Timestamp,
    /// How long the run took, start to end.
    pub elapsed: Duration,
    /// How the run ended.
    pub outcome: RunOutcome,
    /// Whether a non-critical step or validation failed after its retries.
    pub degraded: bool,
    /// Steps, then validations, then rollback steps, each list in written order.
    pub steps: Vec<StepRecord>,
    /// Where the attempts' logs are.
    pub logs: Logs,
}

/// Where a run's attempts wrote their full output.
#[derive(Debug, Clone)]
pub enum Logs {
    /// A local run: `<step>-<attempt>.log` files in this folder.
    Dir(PathBuf),
    /// A run in the cluster: the logs of each attempt's Job, while the Job is kept.
    Jobs { namespace: String },
}

impl std::fmt::Display for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Logs::Dir(dir) => write!(f, "{}", dir.display()),
            Logs::Jobs { namespace } => write!(f, "kubectl logs -n {namespace} job/<step's job>"),
        }
    }
}

impl RunRecord {
    /// The steps of one list, in written order.
    pub fn of_kind(&self, kind: StepKind) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(move |s| s.kind == kind)
    }

    /// Steps and validations whose failure, after their retries, failed the run.
    pub fn critical_failures(&self) -> impl Iterator<Item = &StepRecord> {
        self.failures().filter(|s| s.critical)
    }

    /// Non-critical steps and validations that failed: why the run is degraded.
    pub fn tolerated_failures(&self) -> impl Iterator<Item = &StepRecord> {
        self.failures().filter(|s| !s.critical)
    }

    /// Steps whose attempt was stopped by an interruption, not failed by its own doing.
    pub fn interrupted(&self) -> impl Iterator<Item = &StepRecord> {
        self.steps
            .iter()
            .filter(|s| s.last_attempt().is_some_and(|a| a.interrupted))
    }

    fn failures(&self) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(|s| {
            s.kind != StepKind::Rollback
                && s.has_failed()
                && !s.last_attempt().is_some_and(|a| a.interrupted)
        })
    }

    /// The time to recovery, for a run that recovered (as the operator's `achievedRTO`).
    pub fn achieved_rto(&self) -> Option<Duration> {
        (self.outcome == RunOutcome::Succeeded).then_some(self.elapsed)
    }
}

/// What became of one step, validation or rollback step.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// The list the step comes from.
    pub kind: StepKind,
    pub name: String,
    pub critical: bool,
    /// Attempts allowed after a failed one.
    pub retries: u32,
    /// The longest one attempt may run.
    pub timeout: Option<Duration>,
    /// Where the step stands: its latest attempt's phase, `Skipped`, or `Pending` if it never
    /// started.
    pub phase: StepPhase,
    /// When the attempt that is running now started, since the start of the run.
    pub running_since: Option<Duration>,
    /// The attempts that ended, in order.
    pub attempts: Vec<AttemptRecord>,
}

impl StepRecord {
    /// A step that has not started.
    pub fn new(kind: StepKind, step: &PlannedStep) -> Self {
        StepRecord {
            kind,
            name: step.name.clone(),
            critical: step.critical,
            retries: step.retries,
            timeout: step.timeout,
            phase: StepPhase::Pending,
            running_since: None,
            attempts: Vec::new(),
        }
    }

    /// Whether the step ended failed or timed out.
    pub fn has_failed(&self) -> bool {
        matches!(self.phase, StepPhase::Failed | StepPhase::TimedOut)
    }

    /// The latest attempt that ended.
    pub fn last_attempt(&self) -> Option<&AttemptRecord> {
        self.attempts.last()
    }
}

/// One attempt of a step: one process.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Which attempt, counting from 1.
    pub number: u32,
    /// When it started, since the start of the run.
    pub start: Duration,
    /// How long it ran.
    pub duration: Duration,
    /// `None` when the process could not be started.
    pub exit_code: Option<i32>,
    /// The verdict: `Succeeded`, `Failed` or `TimedOut`.
    pub phase: StepPhase,
    /// Why it failed; empty when it succeeded.
    pub message: String,
    /// The tail of its combined output, as judged.
    pub output: String,
    /// Its full output.
    pub log: PathBuf,
    /// Whether the run was interrupted while it ran.
    pub interrupted: bool,
}

impl AttemptRecord {
    /// When it ended, since the start of the run.
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }
}

/// Hears what a run does as it does it, for a live display. Every method has a default that
/// ignores the event.
pub trait Observer {
    /// An attempt started; `step.running_since` says when.
    fn attempt_started(&mut self, _step: &StepRecord, _number: u32) {}
    /// An attempt ended and was judged; it is `step.last_attempt()`.
    fn attempt_ended(&mut self, _step: &StepRecord) {}
    /// A step will never start, because a critical step failed.
    fn skipped(&mut self, _step: &StepRecord) {}
    /// Time passes; `record` shows what is running.
    fn tick(&mut self, _elapsed: Duration, _record: &[StepRecord]) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// Env vars that a local run cannot set: those taken `valueFrom` a Secret, ConfigMap or field
/// of the Pod, which exist only in a cluster. As `step/VAR`, `template/VAR` for the template.
pub fn unavailable_env(resource: &DisasterRecovery) -> Vec<String> {
    let spec = &resource.spec;
    let template = spec.template.iter().flat_map(|t| &t.env);
    let steps = spec
        .steps
        .iter()
        .chain(&spec.validations)
        .chain(&spec.rollback)
        .flat_map(|s| s.env.iter().map(move |e| (s.name.as_str(), e)));
    template
        .map(|e| ("template", e))
        .chain(steps)
        .filter(|(_, e)| e.value_from.is_some())
        .map(|(owner, e)| format!("{owner}/{}", e.name))
        .collect()
}

/// Runs the scenario to its end (or until cancelled) and returns what it did.
pub async fn execute(
    resource: &DisasterRecovery,
    plan: &Plan,
    options: &Options,
    observer: &mut dyn Observer,
) -> RunRecord {
    Run::new(resource, plan, options).execute(observer).await
}

/// A run in progress.
struct Run<'a> {
    resource: &'a DisasterRecovery,
    plan: &'a Plan,
    options: &'a Options,
    record: RunRecord,
    /// Index into `record.steps` by name; names are unique across the three lists.
    index: HashMap<String, usize>,
    state: RunState,
    clock: Instant,
}

/// What comes back from one attempt's process.
struct Ended {
    index: usize,
    number: u32,
    start: Duration,
    end: Duration,
    log: PathBuf,
    result: std::io::Result<process::Outcome>,
}

impl<'a> Run<'a> {
    fn new(resource: &'a DisasterRecovery, plan: &'a Plan, options: &'a Options) -> Self {
        let lists = [
            (StepKind::Step, plan.steps()),
            (StepKind::Validation, plan.validations()),
            (StepKind::Rollback, plan.rollback()),
        ];
        let steps: Vec<StepRecord> = lists
            .iter()
            .flat_map(|(kind, list)| list.iter().map(|step| StepRecord::new(*kind, step)))
            .collect();
        let index = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        Run {
            resource,
            plan,
            options,
            record: RunRecord {
                scenario: resource.spec.scenario.clone(),
                started_at: Timestamp::now(),
                elapsed: Duration::ZERO,
                outcome: RunOutcome::Interrupted,
                degraded: false,
                steps,
                logs: Logs::Dir(options.log_dir.clone()),
            },
            index,
            state: RunState::default(),
            clock: Instant::now(),
        }
    }

    async fn execute(mut self, observer: &mut dyn Observer) -> RunRecord {
        let cancel = self.options.cancel.clone();
        let mut running = FuturesUnordered::new();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        let outcome = loop {
            if cancel.is_cancelled() {
                // The attempts see the same token and stop; wait for them to be recorded.
                while let Some(ended) = running.next().await {
                    self.finish(ended, observer);
                }
                break RunOutcome::Interrupted;
            }
            let decision = self.plan.next(&self.state);
            self.record.degraded = decision.degraded;
            for name in &decision.skip {
                self.skip(name, observer);
            }
            if let Some(outcome) = decision.outcome {
                break outcome.into();
            }
            for attempt in &decision.start {
                if let Some(launch) = self.launch(attempt, observer) {
                    running.push(launch);
                }
            }
            if running.is_empty() {
                // The planner ends every run it starts nothing more for; this is the guard
                // that keeps a broken plan from spinning forever.
                break RunOutcome::Failed;
            }
            tokio::select! {
                Some(ended) = running.next() => self.finish(ended, observer),
                _ = ticker.tick() => observer.tick(self.clock.elapsed(), &self.record.steps),
                () = cancel.cancelled() => {}
            }
        };
        self.record.outcome = outcome;
        self.record.elapsed = self.clock.elapsed();
        self.record
    }

    fn skip(&mut self, name: &str, observer: &mut dyn Observer) {
        if self.state.get(name).phase == StepPhase::Skipped {
            return;
        }
        self.state.set(name, StepPhase::Skipped, 0);
        if let Some(&i) = self.index.get(name) {
            self.record.steps[i].phase = StepPhase::Skipped;
            observer.skipped(&self.record.steps[i]);
        }
    }

    /// Starts an attempt and records it as running; `None` if the name is unknown, which
    /// the planner never does.
    fn launch(
        &mut self,
        attempt: &Attempt,
        observer: &mut dyn Observer,
    ) -> Option<impl Future<Output = Ended> + use<>> {
        let &index = self.index.get(&attempt.name)?;
        let step = self.spec_step(attempt.kind, &attempt.name)?;
        let log = self
            .options
            .log_dir
            .join(format!("{}-{}.log", attempt.name, attempt.number));
        let spec = ProcessSpec {
            argv: argv(step),
            env: self.env(step, attempt.number),
            working_dir: Some(self.options.workdir.clone()),
            log_path: log.clone(),
            mounts: Vec::new(),
        };
        let deadline = self.record.steps[index].timeout;
        let start = self.clock.elapsed();

        self.state
            .set(&attempt.name, StepPhase::Running, attempt.number);
        let record = &mut self.record.steps[index];
        record.phase = StepPhase::Running;
        record.running_since = Some(start);
        observer.attempt_started(record, attempt.number);

        let (cancel, clock, number) = (self.options.cancel.clone(), self.clock, attempt.number);
        Some(async move {
            let result = process::run(&spec, &cancel, deadline).await;
            Ended {
                index,
                number,
                start,
                end: clock.elapsed(),
                log,
                result,
            }
        })
    }

    /// Judges an ended attempt and records the verdict where the planner and the report see it.
    fn finish(&mut self, ended: Ended, observer: &mut dyn Observer) {
        let Some(record) = self.record.steps.get(ended.index) else {
            return;
        };
        let step = self.spec_step(record.kind, &record.name);
        let output = output_tail(&ended.log);
        let (exit_code, phase, message, interrupted) = match &ended.result {
            Err(error) => (
                None,
                StepPhase::Failed,
                format!("could not start: {error}"),
                false,
            ),
            Ok(outcome) if outcome.stopped == Some(Stopped::Cancelled) => (
                Some(outcome.exit_code),
                StepPhase::Failed,
                "interrupted".to_owned(),
                true,
            ),
            Ok(outcome) => {
                let timed_out = outcome.stopped == Some(Stopped::DeadlineExceeded);
                let finished = Finished {
                    // A process killed at its deadline reports a signal, not an exit code.
                    exit_code: (!timed_out).then_some(outcome.exit_code),
                    output: output.clone(),
                    timed_out,
                };
                let expect = step.and_then(|s| s.expect.as_ref());
                let timeout = step.and_then(|s| s.timeout.as_ref());
                let verdict = expect::judge(expect, &finished, timeout);
                (finished.exit_code, verdict.phase, verdict.message, false)
            }
        };

        let name = record.name.clone();
        self.state.set(&name, phase, ended.number);
        let record = &mut self.record.steps[ended.index];
        record.phase = phase;
        record.running_since = None;
        record.attempts.push(AttemptRecord {
            number: ended.number,
            start: ended.start,
            duration: ended.end.saturating_sub(ended.start),
            exit_code,
            phase,
            message,
            output,
            log: ended.log,
            interrupted,
        });
        observer.attempt_ended(record);
    }

    /// The step of the spec that an attempt runs.
    fn spec_step(&self, kind: StepKind, name: &str) -> Option<&'a Step> {
        let spec = &self.resource.spec;
        let list = match kind {
            StepKind::Step => &spec.steps,
            StepKind::Validation => &spec.validations,
            StepKind::Rollback => &spec.rollback,
        };
        list.iter().find(|s| s.name == name)
    }

    /// Which attempt it is, the template's env, then the step's, which wins for a name in both
    /// (as in a Pod, where the later entry of a duplicate name wins). Only literal values: see
    /// [`unavailable_env`].
    fn env(&self, step: &Step, attempt: u32) -> Vec<(String, String)> {
        let template = self.resource.spec.template.iter().flat_map(|t| &t.env);
        let literal = template
            .chain(&step.env)
            .filter(|e| e.value_from.is_none())
            .map(|EnvVar { name, value, .. }| (name.clone(), value.clone().unwrap_or_default()));
        std::iter::once((crate::names::ATTEMPT_ENV.to_string(), attempt.to_string()))
            .chain(literal)
            .collect()
    }
}

/// What `expect` judges of an attempt: the tail of its log, kept by the same [`titan_step::Tail`]
/// and [`titan_step::OUTPUT_TAIL_BYTES`] as titan-step keeps it in a step's container, so a
/// local run and a run in the cluster judge the same text. A missing log is empty.
fn output_tail(log: &Path) -> String {
    let mut tail = titan_step::Tail::new(titan_step::OUTPUT_TAIL_BYTES);
    if let Ok(mut file) = std::fs::File::open(log) {
        // A log that cannot be read to its end keeps the tail of what was read.
        let _ = std::io::copy(&mut file, &mut tail);
    }
    tail.text()
}

/// `command` runs with `/bin/sh -c`, as in the step's container; `args` runs as it is; a
/// `probe` is `titan-dr probe --spec JSON` of this very binary, as in the step's Job.
fn argv(step: &Step) -> Vec<String> {
    // An empty argv fails the attempt, saying it could not start; restore steps are rejected
    // when the file is loaded.
    let titan_dr = std::env::current_exe().map(|exe| exe.to_string_lossy().into_owned());
    titan_dr
        .ok()
        .and_then(|exe| step.argv(&exe))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_from_cluster_sources_is_listed_as_unavailable() {
        let resource: DisasterRecovery = serde_yaml::from_str(
            "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {name: x}\n\
             spec:\n  scenario: x\n  template:\n    env:\n      - {name: PLAIN, value: v}\n\
             \x20     - name: TOKEN\n        valueFrom: {secretKeyRef: {name: s, key: k}}\n\
             \x20 steps:\n    - name: a\n      command: 'true'\n      env:\n\
             \x20       - name: POD\n          valueFrom: {fieldRef: {fieldPath: metadata.name}}\n",
        )
        .expect("the resource parses");
        assert_eq!(unavailable_env(&resource), ["template/TOKEN", "a/POD"]);
    }

    #[test]
    fn the_judged_output_is_the_tail_titan_step_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("step-1.log");
        let output: Vec<u8> = "é".repeat(3000).into_bytes();
        std::fs::write(&log, &output).unwrap();
        let tail = output_tail(&log);
        assert_eq!(
            tail,
            titan_step::tail_text(&output, titan_step::OUTPUT_TAIL_BYTES)
        );
        assert_eq!(tail, "é".repeat(2000));
        assert_eq!(output_tail(&dir.path().join("missing.log")), "");
    }

    #[test]
    fn a_command_runs_in_a_shell_and_args_as_they_are() {
        let command = Step {
            command: Some("echo $HOME".into()),
            ..Default::default()
        };
        assert_eq!(argv(&command), ["/bin/sh", "-c", "echo $HOME"]);
        let args = Step {
            args: Some(vec!["echo".into(), "$HOME".into()]),
            ..Default::default()
        };
        assert_eq!(argv(&args), ["echo", "$HOME"]);
    }

    #[test]
    fn a_probe_runs_this_binary_with_its_spec() {
        let step: Step =
            serde_yaml::from_str("{name: health, probe: {http: {url: 'http://localhost:1/'}}}")
                .unwrap();
        let argv = argv(&step);
        assert_eq!(
            argv[0],
            std::env::current_exe().unwrap().to_string_lossy(),
            "{argv:?}"
        );
        assert_eq!(
            argv[1..],
            [
                "probe",
                "--spec",
                r#"{"http":{"url":"http://localhost:1/"}}"#
            ]
        );
    }
}
