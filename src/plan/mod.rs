//! The plan of a recovery run, and what the run does next. Pure code: no Kubernetes client,
//! no I/O, so the controller, the `titan-dr plan` command and tests all share one reading of
//! the ordering rules of the API.
//!
//! [`Plan::new`] checks a spec and builds its step graph; [`Plan::stages`] and
//! [`Plan::critical_path`] describe it; [`Plan::next`] turns the state of a run into a
//! [`Decision`].

mod decision;
mod error;
mod graph;
#[cfg(test)]
mod tests;

pub use decision::{Attempt, Decision, Outcome, RunState, StepKind, StepState};
pub use error::PlanError;
pub use graph::{CriticalPath, DEFAULT_TIMEOUT, Plan, PlannedStep};
