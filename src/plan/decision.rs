//! What a run does next, decided from where each of its steps stands. Pure: the controller
//! observes Jobs, records their phases in a [`RunState`], asks [`Plan::next`] and carries the
//! [`Decision`] out.

use std::collections::BTreeMap;

use super::{Plan, PlannedStep};
use crate::api::disaster_recovery::{RunPhase, RunStatus, StepPhase};

/// Where one step, validation or rollback step stands.
///
/// A `Failed` or `TimedOut` step with `attempts <= retries` is not over: it is due another
/// attempt. A timed-out attempt counts as a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StepState {
    /// The phase of the latest attempt.
    pub phase: StepPhase,
    /// Attempts made so far, the one running included.
    pub attempts: u32,
}

/// Where every step of a run stands, by name. A name without an entry is `Pending` with no
/// attempts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunState(BTreeMap<String, StepState>);

impl RunState {
    /// The state recorded in a resource's status: its steps, validations and rollback steps.
    pub fn from_status(status: &RunStatus) -> Self {
        let recorded = status
            .steps
            .iter()
            .chain(&status.validations)
            .chain(&status.rollback)
            .map(|s| {
                let state = StepState {
                    phase: s.phase,
                    attempts: s.attempts,
                };
                (s.name.clone(), state)
            });
        RunState(recorded.collect())
    }

    /// Records where a step stands.
    pub fn set(&mut self, name: &str, phase: StepPhase, attempts: u32) -> &mut Self {
        self.0
            .insert(name.to_owned(), StepState { phase, attempts });
        self
    }

    /// Where a step stands.
    pub fn get(&self, name: &str) -> StepState {
        self.0.get(name).copied().unwrap_or_default()
    }
}

/// Which list of the spec a step comes from, and so which list of the status records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// One of `steps`.
    Step,
    /// One of `validations`.
    Validation,
    /// One of `rollback`.
    Rollback,
}

/// An attempt the controller should start now: one Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The list the step comes from.
    pub kind: StepKind,
    /// The step's name.
    pub name: String,
    /// Which attempt this is, counting from 1: the step's `attempts` once it has started.
    pub number: u32,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every critical step and validation succeeded.
    Succeeded,
    /// A critical step or validation failed after its retries.
    Failed,
}

impl From<Outcome> for RunPhase {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Succeeded => RunPhase::Succeeded,
            Outcome::Failed => RunPhase::Failed,
        }
    }
}

/// What the controller does next. Deciding again on the same state gives the same decision,
/// so a controller that crashed halfway through carrying one out can simply decide again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The run's phase once the decision is carried out.
    pub phase: RunPhase,
    /// Attempts to start now, in written order: ready steps, due validations, or the next
    /// rollback step — never a mix.
    pub start: Vec<Attempt>,
    /// Steps and validations that will never start because a critical step failed; the
    /// controller marks them `Skipped`.
    pub skip: Vec<String>,
    /// How the run ended, once it has.
    pub outcome: Option<Outcome>,
    /// Whether a non-critical step or validation failed after its retries (the `Degraded`
    /// condition).
    pub degraded: bool,
}

/// What a step's state means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    NotStarted,
    Running,
    RetryDue,
    Succeeded,
    Failed,
    Skipped,
}

impl Standing {
    fn of(step: &PlannedStep, state: StepState) -> Self {
        match state.phase {
            StepPhase::Pending => Standing::NotStarted,
            StepPhase::Running => Standing::Running,
            StepPhase::Succeeded => Standing::Succeeded,
            StepPhase::Skipped => Standing::Skipped,
            // A failed phase means at least one attempt, whatever the count says.
            StepPhase::Failed | StepPhase::TimedOut if state.attempts.max(1) <= step.retries => {
                Standing::RetryDue
            }
            StepPhase::Failed | StepPhase::TimedOut => Standing::Failed,
        }
    }

    fn has_ended(self) -> bool {
        matches!(
            self,
            Standing::Succeeded | Standing::Failed | Standing::Skipped
        )
    }

    fn may_start(self) -> bool {
        matches!(self, Standing::NotStarted | Standing::RetryDue)
    }
}

impl Plan {
    /// Decides what the run does next, given where its steps stand.
    ///
    /// Steps start once all their `needs` have ended; a failed non-critical step counts as
    /// ended, so it blocks nothing. Once every step has ended without a critical failure, the
    /// validations start, all together. Once a critical step has failed after its retries,
    /// nothing else starts: steps and validations not yet started are skipped, steps still
    /// running are waited for, failed ones get no more retries, and then the rollback steps
    /// run one at a time in written order, each whatever became of the one before. A failed
    /// critical validation fails the run but does not roll it back: rollback undoes recovery
    /// steps, and all of those succeeded.
    pub fn next(&self, state: &RunState) -> Decision {
        let standing = |step: &PlannedStep| Standing::of(step, state.get(&step.name));
        let has_failed = |list: &[PlannedStep], critical: bool| {
            list.iter()
                .any(|step| step.critical == critical && standing(step) == Standing::Failed)
        };
        let degraded = has_failed(&self.steps, false) || has_failed(&self.validations, false);
        let decision = |phase, start, skip, outcome| Decision {
            phase,
            start,
            skip,
            outcome,
            degraded,
        };

        if has_failed(&self.steps, true) {
            return self.rolling_back(state, degraded);
        }

        if !self.steps.iter().all(|s| standing(s).has_ended()) {
            return decision(RunPhase::Running, self.ready_steps(state), Vec::new(), None);
        }

        if self.validations.iter().all(|v| standing(v).has_ended()) {
            let outcome = if has_failed(&self.validations, true) {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
            return decision(outcome.into(), Vec::new(), Vec::new(), Some(outcome));
        }
        let due = attempts(StepKind::Validation, &self.validations, state, |_| true);
        decision(RunPhase::Validating, due, Vec::new(), None)
    }

    /// What an aborted run does next: what it does after a critical failure. Nothing else
    /// starts (no retry either), steps and validations not yet started are skipped, those
    /// still running (which the controller stops) are waited for, then the rollback runs.
    pub fn next_aborted(&self, state: &RunState) -> Decision {
        // A failure due a retry gets none: it is as failed as one past its retries.
        let failed = |step: &PlannedStep| {
            let standing = Standing::of(step, state.get(&step.name));
            !step.critical && matches!(standing, Standing::Failed | Standing::RetryDue)
        };
        let degraded = self.steps.iter().chain(&self.validations).any(failed);
        self.rolling_back(state, degraded)
    }

    /// Rolling back: skip what never started, wait for what runs, then the rollback steps.
    fn rolling_back(&self, state: &RunState, degraded: bool) -> Decision {
        let skip = self.not_started(state);
        let running = self
            .steps
            .iter()
            .chain(&self.validations)
            .any(|s| Standing::of(s, state.get(&s.name)) == Standing::Running);
        let (phase, start, outcome) = match self.next_rollback_step(state) {
            _ if running => (RunPhase::RollingBack, Vec::new(), None),
            Some(attempt) => (RunPhase::RollingBack, attempt, None),
            None => (RunPhase::Failed, Vec::new(), Some(Outcome::Failed)),
        };
        Decision {
            phase,
            start,
            skip,
            outcome,
            degraded,
        }
    }

    /// Steps not started or due a retry whose needs have all ended.
    fn ready_steps(&self, state: &RunState) -> Vec<Attempt> {
        let has_ended = |j: usize| {
            let step = &self.steps[j];
            Standing::of(step, state.get(&step.name)).has_ended()
        };
        attempts(StepKind::Step, &self.steps, state, |i| {
            self.needs[i].iter().all(|&j| has_ended(j))
        })
    }

    /// Steps and validations that never started, to be skipped after a critical failure.
    fn not_started(&self, state: &RunState) -> Vec<String> {
        self.steps
            .iter()
            .chain(&self.validations)
            .filter(|step| Standing::of(step, state.get(&step.name)) == Standing::NotStarted)
            .map(|step| step.name.clone())
            .collect()
    }

    /// The first rollback step that has not ended, to start (or retry) unless it is running —
    /// then nothing starts. `None` once every rollback step has ended.
    fn next_rollback_step(&self, state: &RunState) -> Option<Vec<Attempt>> {
        let current = self
            .rollback
            .iter()
            .position(|step| !Standing::of(step, state.get(&step.name)).has_ended())?;
        Some(attempts(
            StepKind::Rollback,
            &self.rollback[current..=current],
            state,
            |_| true,
        ))
    }
}

/// The next attempt of every step of `list` that may start and whose position passes `ready`.
fn attempts(
    kind: StepKind,
    list: &[PlannedStep],
    state: &RunState,
    ready: impl Fn(usize) -> bool,
) -> Vec<Attempt> {
    list.iter()
        .enumerate()
        .filter_map(|(i, step)| {
            let current = state.get(&step.name);
            (Standing::of(step, current).may_start() && ready(i)).then(|| Attempt {
                kind,
                name: step.name.clone(),
                number: current.attempts + 1,
            })
        })
        .collect()
}
