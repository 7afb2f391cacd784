//! The DisasterRecovery controller: a scenario and its runs.
//!
//! It executes nothing itself. It checks the spec, starts RecoveryRuns when asked (a change of
//! the run-now annotation, or creation with `runOnCreate`), refuses a run-now while a run is
//! active under `concurrencyPolicy: Forbid`, keeps the history limits, and mirrors the newest
//! run's status into its own, so that the first stage's status fields keep their meaning.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use self::schedule::{Due, Schedule};
use super::recovery_run::status::{self as run_status, READY};
use super::recovery_run::validate;
use crate::api::disaster_recovery::{ConcurrencyPolicy, RunPhase};
use crate::api::duration::format_duration;
use crate::api::recovery_run::{RecoveryRunSpec, RunMode, RunTrigger, run_id};
use crate::api::{DisasterRecovery, DisasterRecoveryStatus, RecoveryRun};
use crate::controller::conditions::{Conditions, FALSE, TRUE};
use crate::controller::{Context, Error, after_failure, apply_status, decoded};
use crate::names::LABEL_RECOVERY;
use crate::telemetry::RunOf;

mod schedule;

pub use crate::names::RUN_NOW;

/// On a scheduled RecoveryRun: the tick it runs for (RFC 3339), so that a tick is run once.
pub const SCHEDULED_AT: &str = "dr.titan.io/scheduled-at";

/// Runs kept per outcome when the spec sets no history limit.
const DEFAULT_HISTORY: u32 = 3;

#[tracing::instrument(skip_all, fields(dr = %dr.name_any(), ns = dr.namespace().unwrap_or_default()))]
pub async fn reconcile(dr: Arc<DisasterRecovery>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches_ready().await?;
    let previous = dr.status.clone().unwrap_or_default();
    let runs = runs_of(&ctx, &dr);
    let schedule = dr
        .spec
        .schedule
        .as_deref()
        .map(|text| Schedule::parse(text, dr.spec.time_zone.as_deref()));
    let invalid = match &schedule {
        Some(Err(message)) => Some(message.clone()),
        _ => validate(&dr).err(),
    };
    let mut status = mirror(&dr, &previous, &runs, invalid.as_deref());
    let mut said = Vec::new();
    let mut wake = None;
    // An invalid spec starts nothing; a request made meanwhile waits for a valid one.
    if invalid.is_none() {
        if let Some(refusal) = request_run(&ctx, &dr, &runs, &mut status).await? {
            said.push((EventType::Warning, "RunRefused", refusal));
        }
        if let Some(Ok(schedule)) = &schedule {
            wake = scheduled_run(&ctx, &dr, &runs, &mut status, schedule, &mut said).await?;
        }
    }
    if invalid.is_some() || dr.spec.schedule.is_none() || dr.spec.suspend {
        status.next_schedule_time = None;
    }
    if let (Some(message), false) = (&invalid, previous == status) {
        said.push((EventType::Warning, "InvalidSpec", message.clone()));
    }
    let drs: Api<DisasterRecovery> =
        Api::namespaced(ctx.client.clone(), &dr.namespace().unwrap_or_default());
    apply_status(&drs, &dr.name_any(), &previous, &status).await?;
    // After the write: an Event never tells of what the status does not hold.
    for (kind, reason, message) in said {
        ctx.publish(dr.object_ref(&()), kind, reason, &message)
            .await;
    }
    prune_history(&ctx, &dr, &runs).await?;
    success_gauges(&ctx, &dr, &runs);
    Ok(wake.map_or_else(Action::await_change, Action::requeue))
}

/// What a reconcile has to say in Events, once the status holds it.
type Said = Vec<(EventType, &'static str, String)>;

/// Starts the run the schedule asks for now, if any (or records the tick as missed, or
/// refused by Forbid), sets `nextScheduleTime`, and says when to look again: at the next
/// tick. Each tick is handled once: `lastScheduleTime` records it, and the run carries it.
async fn scheduled_run(
    ctx: &Context,
    dr: &DisasterRecovery,
    runs: &[Arc<RecoveryRun>],
    status: &mut DisasterRecoveryStatus,
    schedule: &Schedule,
    said: &mut Said,
) -> Result<Option<Duration>, Error> {
    if dr.spec.suspend {
        return Ok(None);
    }
    let now = Timestamp::now();
    let created = dr.creation_timestamp().map_or(now, |t| t.0);
    let handled = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
    let deadline = dr
        .spec
        .starting_deadline_seconds
        .map(|s| Duration::from_secs(s.max(0).unsigned_abs()));
    match schedule.due(handled, now, deadline) {
        Due::Nothing => {}
        Due::Missed { tick, late } => {
            status.last_schedule_time = Some(Time(tick));
            status.last_missed_schedule_time = Some(Time(tick));
            let message = format!(
                "the run due at {tick} was seen {} late, past startingDeadlineSeconds: not run",
                format_duration(late)
            );
            said.push((EventType::Warning, "ScheduleMissed", message));
        }
        Due::Run(tick) => {
            status.last_schedule_time = Some(Time(tick));
            let value = tick.to_string();
            let answered = runs
                .iter()
                .any(|r| r.annotations().get(SCHEDULED_AT) == Some(&value));
            let forbidden = !status.active.is_empty()
                && dr.spec.concurrency_policy == ConcurrencyPolicy::Forbid;
            if forbidden && !answered {
                let message = format!(
                    "the run scheduled at {tick} refused: run {} is active and concurrencyPolicy is Forbid",
                    status.active.join(", ")
                );
                said.push((EventType::Warning, "RunRefused", message));
            } else if !answered {
                let request = Request {
                    trigger: RunTrigger::Schedule,
                    mode: dr.spec.schedule_mode.unwrap_or(RunMode::Drill),
                    mark: (SCHEDULED_AT, value),
                    reason: format!(
                        "scheduled at {tick} ({})",
                        dr.spec.schedule.as_deref().unwrap_or_default()
                    ),
                };
                create_run(ctx, dr, runs, status, &request).await?;
            }
        }
    }
    let next = schedule.next_after(now);
    status.next_schedule_time = next.map(Time);
    Ok(next.map(|next| {
        let wait = Duration::try_from(next.duration_since(now)).unwrap_or_default();
        wait.max(Duration::from_secs(1))
    }))
}

/// The RecoveryRuns of this DisasterRecovery (this incarnation: owned by its UID), oldest
/// first, from the operator's cache.
fn runs_of(ctx: &Context, dr: &DisasterRecovery) -> Vec<Arc<RecoveryRun>> {
    let uid = dr.uid();
    let mut runs: Vec<Arc<RecoveryRun>> = ctx
        .runs
        .state()
        .into_iter()
        .filter(|run| run.namespace() == dr.namespace() && run.spec.recovery == dr.name_any())
        .filter(|run| {
            run.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    runs.sort_by_key(|run| order(run));
    runs
}

/// How runs are ordered: by creation, then by number, then by name.
fn order(run: &RecoveryRun) -> (Option<i64>, Option<u64>, String) {
    let number = run.status.as_ref().and_then(|s| s.run.run_number());
    let created = run.creation_timestamp().map(|t| t.0.as_second());
    (created, number, run.name_any())
}

/// Whether a run copied its scenario: the runs a refusal or a missing recovery ended never did.
fn begun(run: &RecoveryRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.scenario.is_some())
}

/// This resource's status from its runs: the newest begun run's status, the history fields,
/// and InvalidSpec when the spec (as it is now) is invalid.
fn mirror(
    dr: &DisasterRecovery,
    previous: &DisasterRecoveryStatus,
    runs: &[Arc<RecoveryRun>],
    invalid: Option<&str>,
) -> DisasterRecoveryStatus {
    let begun: Vec<&Arc<RecoveryRun>> = runs.iter().filter(|r| begun(r)).collect();
    let newest = begun.last();
    let mut run = match newest {
        Some(newest) => newest.run_status(),
        // No run left to copy (none yet, or deleted): what was recorded stands.
        None => previous.run.clone(),
    };
    run.observed_generation = dr.metadata.generation;
    let mut c = Conditions::new(&run.conditions, dr.metadata.generation);
    if let Some(message) = invalid {
        c.set(READY, FALSE, run_status::REASON_INVALID_SPEC, message);
        let no_job = "no Job is created for an invalid spec";
        c.set(
            run_status::PROGRESSING,
            FALSE,
            run_status::REASON_INVALID_SPEC,
            no_job,
        );
    } else if run.run_id.is_none() {
        c.set(
            READY,
            TRUE,
            "NoRunYet",
            "the scenario is valid and has not run yet",
        );
        c.set(
            run_status::PROGRESSING,
            FALSE,
            "NoRunYet",
            "no run is active",
        );
    }
    run.conditions = c.merged();
    if invalid.is_some() && run.run_id.is_none() {
        run.phase = Some(RunPhase::Failed);
    }
    let succeeded = begun.iter().rev().find(|r| r.run_status().succeeded());
    DisasterRecoveryStatus {
        run,
        last_run: newest.map(|r| r.name_any()).or(previous.last_run.clone()),
        last_successful_run: succeeded
            .map(|r| r.name_any())
            .or(previous.last_successful_run.clone()),
        active: begun
            .iter()
            .filter(|r| !r.run_status().has_ended())
            .map(|r| r.name_any())
            .collect(),
        ..previous.clone()
    }
}

/// Starts a run when one is asked for and records the request as handled (in `status`,
/// written by the caller); returns the refusal message of a run-now refused by Forbid.
///
/// The RecoveryRun carries the run-now value it answers, so a crash between its creation and
/// the status write is seen on the next reconcile and starts no second run.
async fn request_run(
    ctx: &Context,
    dr: &DisasterRecovery,
    runs: &[Arc<RecoveryRun>],
    status: &mut DisasterRecoveryStatus,
) -> Result<Option<String>, Error> {
    let value = dr.annotations().get(RUN_NOW).cloned().unwrap_or_default();
    let trigger = match status.run_trigger.as_deref() {
        // First look: what is there at creation starts nothing unless runOnCreate says so.
        None if dr.spec.run_on_create => RunTrigger::Create,
        None => {
            status.run_trigger = Some(value);
            return Ok(None);
        }
        Some(handled) if handled == value => return Ok(None),
        Some(_) => RunTrigger::RunNow,
    };
    status.run_trigger = Some(value.clone());
    let answered = runs
        .iter()
        .any(|r| r.annotations().get(RUN_NOW) == Some(&value) && r.spec.trigger == trigger);
    if answered {
        return Ok(None);
    }
    let active: Vec<String> = status.active.clone();
    if !active.is_empty() && dr.spec.concurrency_policy == ConcurrencyPolicy::Forbid {
        status.refused_run_trigger = Some(value.clone());
        return Ok(Some(format!(
            "{RUN_NOW}={value:?} refused: run {} is active and concurrencyPolicy is Forbid",
            active.join(", ")
        )));
    }
    let reason = match trigger {
        RunTrigger::Create => "created with runOnCreate".into(),
        _ => format!("{RUN_NOW}={value:?}"),
    };
    let request = Request {
        trigger,
        mode: RunMode::Recovery,
        mark: (RUN_NOW, value),
        reason,
    };
    create_run(ctx, dr, runs, status, &request).await?;
    Ok(None)
}

/// A run the recovery starts: what started it, in which mode, the annotation that marks
/// the request it answers, and the reason it gives.
struct Request {
    trigger: RunTrigger,
    mode: RunMode,
    mark: (&'static str, String),
    reason: String,
}

/// Creates the next run, `<recovery>-<n>`, the number after every run's and the recorded one;
/// a name taken by a run that is not this resource's (left by a predecessor of the same name,
/// or made by hand) moves on to the next number.
async fn create_run(
    ctx: &Context,
    dr: &DisasterRecovery,
    runs: &[Arc<RecoveryRun>],
    status: &DisasterRecoveryStatus,
    request: &Request,
) -> Result<(), Error> {
    let name = dr.name_any();
    let numbers = runs
        .iter()
        .filter_map(|r| run_id(&name, &r.name_any()).parse::<u64>().ok());
    let mut number = numbers.chain(status.run.run_number()).max().unwrap_or(0) + 1;
    let api: Api<RecoveryRun> =
        Api::namespaced(ctx.client.clone(), &dr.namespace().unwrap_or_default());
    let mut tries = 0;
    loop {
        let run = RecoveryRun {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{number}")),
                namespace: dr.namespace(),
                labels: Some([(LABEL_RECOVERY.to_string(), name.clone())].into()),
                annotations: Some([(request.mark.0.to_string(), request.mark.1.clone())].into()),
                owner_references: dr.controller_owner_ref(&()).map(|r| vec![r]),
                ..Default::default()
            },
            spec: RecoveryRunSpec {
                recovery: name.clone(),
                trigger: request.trigger,
                mode: request.mode,
                requested_by: Some(format!("{}/{name}", DisasterRecovery::kind(&()))),
                reason: Some(request.reason.clone()),
                ..Default::default()
            },
            status: None,
        };
        match api.create(&PostParams::default(), &run).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 8 => {
                tries += 1;
                number += 1;
            }
            Err(source) => {
                return Err(Error::WriteRun {
                    run: run.name_any(),
                    source,
                });
            }
        }
    }
}

/// Deletes the ended runs past the history limits (`successfulRunsHistoryLimit`,
/// `failedRunsHistoryLimit`, newest kept), and with them, by owner, their Jobs.
async fn prune_history(
    ctx: &Context,
    dr: &DisasterRecovery,
    runs: &[Arc<RecoveryRun>],
) -> Result<(), Error> {
    let keep_succeeded = dr
        .spec
        .successful_runs_history_limit
        .unwrap_or(DEFAULT_HISTORY);
    let keep_failed = dr.spec.failed_runs_history_limit.unwrap_or(DEFAULT_HISTORY);
    let (mut succeeded, mut failed) = (0, 0);
    let api: Api<RecoveryRun> =
        Api::namespaced(ctx.client.clone(), &dr.namespace().unwrap_or_default());
    for run in runs.iter().rev() {
        let status = run.run_status();
        if !status.has_ended() || run.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (count, keep) = match status.succeeded() {
            true => (&mut succeeded, keep_succeeded),
            false => (&mut failed, keep_failed),
        };
        *count += 1;
        if *count <= keep {
            continue;
        }
        tracing::info!(run = %run.name_any(), "deleting a run past the history limit");
        match api
            .delete(&run.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Prune(source)),
        }
    }
    Ok(())
}

/// Sets the newest success's gauges from its run, at every reconcile, so that a restarted
/// operator has them.
fn success_gauges(ctx: &Context, dr: &DisasterRecovery, runs: &[Arc<RecoveryRun>]) {
    let Some(run) = runs.iter().rev().find(|r| r.run_status().succeeded()) else {
        return;
    };
    let status = run.run_status();
    let (Some(start), Some(end)) = (&status.started_at, &status.finished_at) else {
        return;
    };
    let namespace = dr.namespace().unwrap_or_default();
    let name = dr.name_any();
    let mode = format!("{:?}", run.spec.mode);
    let of = RunOf {
        namespace: &namespace,
        recovery: &name,
        scenario: &dr.spec.scenario,
        mode: &mode,
    };
    let rto = run_status::elapsed(start, end);
    ctx.metrics
        .run_succeeded(&of, seconds(end), rto, dr.rto_objective());
}

fn seconds(time: &Time) -> f64 {
    time.0.as_millisecond() as f64 / 1000.0
}

/// Invalid input waits for a change; anything else is retried soon.
pub fn error_policy(
    dr: Arc<DeserializeGuard<DisasterRecovery>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    after_failure(dr.as_ref(), error, &ctx, Duration::from_secs(5))
}

/// [`reconcile`] of an object the watch could decode.
pub async fn reconcile_guarded(
    dr: Arc<DeserializeGuard<DisasterRecovery>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile(decoded(&dr)?, ctx).await
}
