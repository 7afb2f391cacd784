//! The DisasterRecovery controller: from a scenario to ordered Jobs to status.
//!
//! Each reconcile is a pipeline — which run → validate → observe Jobs → stop
//! attempts whose pod cannot start → decide (pure plan) → create Jobs → write
//! status — and never waits: Job and Pod changes wake it again (`.owns()`,
//! `.watches()`), and a grace period being counted by a requeue. Every decision
//! is derived from the Jobs of the run (found by label), their Pods and Events,
//! and the status, never from memory, and Job names are deterministic, so a
//! restarted operator neither duplicates nor re-runs work.

mod observe;
pub mod pod_start;
pub mod status;
mod status_size;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use self::pod_start::{StartFailure, StartVerdict};
use self::status::{RpoVerdict, RunFacts};
use crate::api::disaster_recovery::{
    DisasterRecoveryStatus, RunPhase, Step, StepPhase, StepStatus,
};
use crate::api::duration::format_duration;
use crate::api::{Backup, DisasterRecovery};
use crate::controller::conditions::{Conditions, FALSE, TRUE, UNKNOWN};
use crate::controller::{Context, Error, MANAGER, TakenBy, after_failure, create_owned, decoded};
use crate::job::{
    LABEL_OWNER_UID, LABEL_RECOVERY, LABEL_RUN, RestoreSetup, build_job, refused_job,
};
use crate::plan::{Plan, RunState, StepKind};
use crate::telemetry::RunOf;
use kube::core::DeserializeGuard;

pub use crate::names::RUN_NOW;

/// Safety net: a run in progress is looked at again this often even when no
/// Job changes (Job changes normally wake it at once).
const RECHECK: Duration = Duration::from_secs(60);
/// The soonest a requeue comes back, also for a grace period about to end.
const SOONEST: Duration = Duration::from_secs(1);

#[tracing::instrument(skip_all, fields(dr = %dr.name_any(), ns = dr.namespace().unwrap_or_default()))]
pub async fn reconcile(dr: Arc<DisasterRecovery>, ctx: Arc<Context>) -> Result<Action, Error> {
    let drs: Api<DisasterRecovery> = Api::namespaced(ctx.client.clone(), &namespace(&dr));
    let previous = dr.status.clone().unwrap_or_default();
    ctx.caches_ready().await?;
    let plan = match validate(&dr) {
        Ok(plan) => plan,
        Err(message) => return reject_invalid(&ctx, &dr, &drs, &previous, &message).await,
    };
    let base = current_run(&ctx, &dr, &drs, &previous).await?;
    if base == previous && previous.has_ended() {
        // A finished run is final: its recorded outcome stands, with or without its Jobs.
        let status = DisasterRecoveryStatus {
            observed_generation: dr.metadata.generation,
            ..previous.clone()
        };
        write_status(&drs, &dr.name_any(), &previous, &status).await?;
        run_metrics(&ctx, &dr, &previous, &status);
        return Ok(Action::await_change());
    }
    let (mut observed, recheck) = observe_run(&ctx, &dr, &base).await?;
    let mut state = RunState::default();
    for s in observed.values() {
        state.set(&s.name, s.phase, s.attempts);
    }
    let decision = plan.next(&state);
    start_attempts(&ctx, &dr, &base, &decision, &mut observed).await?;
    let status = run_status(&ctx, &dr, base, &decision, &observed).await?;
    write_status(&drs, &dr.name_any(), &previous, &status).await?;
    // After the write: an Event never tells of a transition the status does not hold.
    announce_transitions(&ctx, &dr, &previous, &status).await;
    run_metrics(&ctx, &dr, &previous, &status);
    let next = match decision.outcome {
        Some(_) => None,
        None => Some(recheck.max(SOONEST)),
    };
    tracing::debug!(run = ?status.run_id, phase = ?status.phase, started = decision.start.len(), ?next, "reconciled");
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// The run metrics from the status just written: a run that ends is counted once, on the
/// reconcile that records its end; the newest success is set again from any ended run's
/// status, so the gauges survive an operator restart.
fn run_metrics(
    ctx: &Context,
    dr: &DisasterRecovery,
    before: &DisasterRecoveryStatus,
    after: &DisasterRecoveryStatus,
) {
    let namespace = namespace(dr);
    let name = dr.name_any();
    let run = RunOf {
        namespace: &namespace,
        recovery: &name,
        scenario: &dr.spec.scenario,
        mode: "Recovery",
    };
    let outcome = match after.phase {
        Some(RunPhase::Succeeded) => "Succeeded",
        Some(RunPhase::Failed) => "Failed",
        _ => return,
    };
    if before.phase != after.phase || before.run_id != after.run_id {
        ctx.metrics.run_ended(&run, outcome);
    }
    if let (Some(RunPhase::Succeeded), Some(start), Some(end)) =
        (after.phase, &after.started_at, &after.finished_at)
    {
        let rto = status::elapsed(start, end);
        let at = end.0.as_millisecond() as f64 / 1000.0;
        ctx.metrics.run_succeeded(&run, at, rto, dr.rto_objective());
    }
}

fn namespace(dr: &DisasterRecovery) -> String {
    dr.namespace().unwrap_or_default()
}

/// An invalid spec: InvalidSpec in status (and an Event when that is new), no Job, and
/// nothing more until the spec changes.
async fn reject_invalid(
    ctx: &Context,
    dr: &DisasterRecovery,
    drs: &Api<DisasterRecovery>,
    previous: &DisasterRecoveryStatus,
    message: &str,
) -> Result<Action, Error> {
    let status = invalid_status(dr, previous, message);
    write_status(drs, &dr.name_any(), previous, &status).await?;
    if &status != previous {
        ctx.publish(
            dr.object_ref(&()),
            EventType::Warning,
            "InvalidSpec",
            message,
        )
        .await;
    }
    Ok(Action::await_change())
}

/// The status the current run starts from: a new run on creation and whenever the run-now
/// annotation changes (recorded before any of its Jobs exists, so a crash here at worst
/// starts the same run again), else the one in status.
async fn current_run(
    ctx: &Context,
    dr: &DisasterRecovery,
    drs: &Api<DisasterRecovery>,
    previous: &DisasterRecoveryStatus,
) -> Result<DisasterRecoveryStatus, Error> {
    let trigger = dr.annotations().get(RUN_NOW).cloned().unwrap_or_default();
    let started_it = previous.run_trigger.as_deref().unwrap_or_default() == trigger;
    let refused = previous.refused_run_trigger.as_deref() == Some(trigger.as_str());
    if previous.run_id.is_some() && (started_it || refused) {
        return Ok(previous.clone());
    }
    if previous.run_id.is_some() && !previous.has_ended() {
        return refuse_run(ctx, dr, drs, previous, trigger).await;
    }
    // A runId that is not a number (edited by hand) counts as none: the next run is 1.
    let run = previous.run_number().unwrap_or(0) + 1;
    let base = DisasterRecoveryStatus {
        run_id: Some(run.to_string()),
        run_trigger: Some(trigger),
        started_at: Some(Time(Timestamp::now())),
        phase: Some(RunPhase::Running),
        conditions: previous.conditions.clone(),
        // Observed from the first write on: kstatus readers (Argo CD, Flux) see a run in
        // flight, not a spec not yet looked at.
        observed_generation: dr.metadata.generation,
        ..Default::default()
    };
    write_status(drs, &dr.name_any(), previous, &base).await?;
    let message = format!("run {run} started");
    ctx.publish(
        dr.object_ref(&()),
        EventType::Normal,
        "RunStarted",
        &message,
    )
    .await;
    prune_old_runs(ctx, dr, run).await?;
    Ok(base)
}

/// concurrencyPolicy Forbid: a run asked for (`trigger`) while one is active is refused, with
/// a Warning Event, and recorded so that it does not start when the active run ends.
async fn refuse_run(
    ctx: &Context,
    dr: &DisasterRecovery,
    drs: &Api<DisasterRecovery>,
    previous: &DisasterRecoveryStatus,
    trigger: String,
) -> Result<DisasterRecoveryStatus, Error> {
    let status = DisasterRecoveryStatus {
        refused_run_trigger: Some(trigger.clone()),
        ..previous.clone()
    };
    write_status(drs, &dr.name_any(), previous, &status).await?;
    let active = previous.run_id.as_deref().unwrap_or_default();
    let message = format!(
        "{RUN_NOW}={trigger:?} refused: run {active} is active and concurrencyPolicy is Forbid"
    );
    ctx.publish(
        dr.object_ref(&()),
        EventType::Warning,
        "RunRefused",
        &message,
    )
    .await;
    Ok(status)
}

/// What the run's Jobs and Pods (from the operator's caches) say of its steps, after the
/// attempts whose pod cannot start were failed on their Job (so that this and any later
/// operator sees a failed attempt); and when to look again.
async fn observe_run(
    ctx: &Context,
    dr: &DisasterRecovery,
    base: &DisasterRecoveryStatus,
) -> Result<(BTreeMap<String, StepStatus>, Duration), Error> {
    let ns = namespace(dr);
    let run = base.run_id.clone().unwrap_or_default();
    let uid = dr.uid().unwrap_or_default();
    let mut run_jobs: Vec<Job> = of_run(&ctx.jobs, &ns, &uid, &run)
        .iter()
        .map(|job| job.as_ref().clone())
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = observe::RunPods {
        cached: of_run(&ctx.pods, &ns, &uid, &run),
        api: &pods_api,
    };
    let recheck = stop_unstartable(ctx, &ns, &pods, &mut run_jobs).await?;
    let spec_steps: BTreeMap<&str, &Step> =
        all_steps(dr).map(|(_, s)| (s.name.as_str(), s)).collect();
    let recorded: BTreeMap<&str, &StepStatus> = base
        .steps
        .iter()
        .chain(&base.validations)
        .chain(&base.rollback)
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut observed = observe::observe_steps(&pods, &run_jobs, &spec_steps, &recorded).await?;
    keep_recorded_ends(&mut observed, &recorded);
    Ok((observed, recheck))
}

/// A finished attempt recorded in status stands when its Job is gone (a TTL, a clean-up, an
/// attempt whose Job name was taken): it is never started again.
fn keep_recorded_ends(
    observed: &mut BTreeMap<String, StepStatus>,
    recorded: &BTreeMap<&str, &StepStatus>,
) {
    for (name, before) in recorded {
        if !observe::is_final(before.phase) {
            continue;
        }
        let newer = observed
            .get(*name)
            .is_some_and(|now| now.attempts >= before.attempts);
        if !newer {
            observed.insert(name.to_string(), (*before).clone());
        }
    }
}

/// Creates the Job of every attempt the plan starts now, and records it as Running.
async fn start_attempts(
    ctx: &Context,
    dr: &DisasterRecovery,
    base: &DisasterRecoveryStatus,
    decision: &crate::plan::Decision,
    observed: &mut BTreeMap<String, StepStatus>,
) -> Result<(), Error> {
    let ns = namespace(dr);
    let run = base.run_id.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    for attempt in &decision.start {
        let Some((_, step)) = all_steps(dr).find(|(_, s)| s.name == attempt.name) else {
            continue;
        };
        let mut setup = ctx.job_setup.clone();
        if let Some(restore) = &step.restore {
            let started = base.started_at.as_ref().map(|t| t.0);
            setup.restore = Some(restore_setup(ctx, &ns, &restore.backup, started).await?);
        }
        let job = build_job(dr, &run, attempt.kind, step, attempt.number, &setup);
        let first = observed
            .get(&attempt.name)
            .and_then(|s| s.started_at.clone());
        let now = Some(Time(Timestamp::now()));
        let status = match create_job(ctx, &jobs, &job).await? {
            Ok(job_name) => StepStatus {
                phase: StepPhase::Running,
                job: Some(job_name),
                ..Default::default()
            },
            // A failed attempt, recorded without a Job: the next (if any) has another name.
            Err(TakenBy(message)) => StepStatus {
                phase: StepPhase::Failed,
                finished_at: now.clone(),
                message: Some(message),
                ..Default::default()
            },
        };
        observed.insert(
            attempt.name.clone(),
            StepStatus {
                name: attempt.name.clone(),
                attempts: attempt.number,
                started_at: first.or(now),
                ..status
            },
        );
    }
    Ok(())
}

/// Creates an attempt's Job; its name, or why the name is taken. A Job the API server
/// refuses as invalid becomes a stand-in that fails saying why (invalid whatever the retry);
/// one of this resource that exists already was created by an earlier reconcile whose status
/// write was lost.
async fn create_job(
    ctx: &Context,
    jobs: &Api<Job>,
    job: &Job,
) -> Result<Result<String, TakenBy>, Error> {
    let job_name = job.name_any();
    let failed = |source| Error::CreateJob {
        job: job_name.clone(),
        source,
    };
    let created = match create_owned(jobs, job).await {
        Err(kube::Error::Api(e)) if e.code == 422 => {
            tracing::info!(job = %job_name, reason = %e.message, "the API server refused a step's Job");
            let refused = refused_job(job, &e.message, &ctx.job_setup);
            create_owned(jobs, &refused).await.map_err(failed)?
        }
        other => other.map_err(failed)?,
    };
    Ok(created.map(|()| job_name))
}

/// The cached objects (Jobs, Pods) of run `run` of the recovery whose UID is `uid`, in `ns`,
/// by their labels.
fn of_run<K>(store: &Store<K>, ns: &str, uid: &str, run: &str) -> Vec<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let label =
        |o: &K, key: &str| -> Option<String> { o.meta().labels.as_ref()?.get(key).cloned() };
    store
        .state()
        .into_iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        .filter(|o| {
            label(o, LABEL_OWNER_UID).as_deref() == Some(uid)
                && label(o, LABEL_RUN).as_deref() == Some(run)
        })
        .collect()
}

/// Stops the attempts among `jobs` whose pod cannot start, replacing their
/// Jobs with the stopped ones; returns when to look again at the latest (a
/// grace period running out, or a stop to retry).
async fn stop_unstartable(
    ctx: &Context,
    ns: &str,
    pods: &observe::RunPods<'_>,
    jobs: &mut [Job],
) -> Result<Duration, Error> {
    let events: Api<Event> = Api::namespaced(ctx.client.clone(), ns);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let now = Timestamp::now();
    let grace = ctx.pod_start_grace;
    let mut recheck = RECHECK;
    for (index, verdict) in observe::pod_starts(pods, &events, jobs, now, grace).await? {
        match verdict {
            StartVerdict::Wait { recheck: None } => {}
            StartVerdict::Wait {
                recheck: Some(after),
            } => recheck = recheck.min(after),
            StartVerdict::CannotStart(failure) => {
                match stop_attempt(&api, &jobs[index], &failure, now).await? {
                    Some(stopped) => jobs[index] = stopped,
                    None => recheck = SOONEST,
                }
            }
        }
    }
    Ok(recheck)
}

/// Records on the Job why its pod cannot start, and stops it (see
/// [`pod_start::stop_patch`]). `None` when the Job changed or went away since
/// it was read: the next reconcile judges it again.
async fn stop_attempt(
    jobs: &Api<Job>,
    job: &Job,
    failure: &StartFailure,
    now: Timestamp,
) -> Result<Option<Job>, Error> {
    let name = job.name_any();
    tracing::info!(job = %name, reason = %failure.message, "stopping an attempt whose pod cannot start");
    let patch = pod_start::stop_patch(job, failure, now);
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match jobs.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(stopped) => Ok(Some(stopped)),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
        Err(source) => Err(Error::StopJob { job: name, source }),
    }
}

/// What a restore Job needs besides the operator's image and `titan-dr`: the snapshot endpoint
/// and the named Backup.
async fn restore_setup(
    ctx: &Context,
    ns: &str,
    backup: &str,
    not_after: Option<Timestamp>,
) -> Result<RestoreSetup, Error> {
    Ok(RestoreSetup {
        snapshot_url: ctx.snapshot_url.clone(),
        not_after,
        backup: cached_backup(ctx, ns, backup),
    })
}

/// The Backup `name` of namespace `ns`, as the operator's cache has it.
fn cached_backup(ctx: &Context, ns: &str, name: &str) -> Option<Backup> {
    let key = ObjectRef::<Backup>::new(name).within(ns);
    ctx.backups.get(&key).map(|b| b.as_ref().clone())
}

/// The plan of a valid spec, or why the spec is invalid (naming the culprits).
fn validate(dr: &DisasterRecovery) -> Result<Plan, String> {
    let plan = Plan::new(&dr.spec).map_err(|e| e.to_string())?;
    let template_image = dr.spec.template.as_ref().and_then(|t| t.image.as_ref());
    let without_image: Vec<&str> = all_steps(dr)
        // Restore and probe steps run in the operator's image.
        .filter(|(_, s)| {
            s.image.is_none()
                && template_image.is_none()
                && s.restore.is_none()
                && s.probe.is_none()
        })
        .map(|(_, s)| s.name.as_str())
        .collect();
    if !without_image.is_empty() {
        return Err(format!(
            "steps without an image: {} (set template.image or the step's image)",
            without_image.join(", ")
        ));
    }
    Ok(plan)
}

fn all_steps(dr: &DisasterRecovery) -> impl Iterator<Item = (StepKind, &Step)> {
    let spec = &dr.spec;
    spec.steps
        .iter()
        .map(|s| (StepKind::Step, s))
        .chain(spec.validations.iter().map(|s| (StepKind::Validation, s)))
        .chain(spec.rollback.iter().map(|s| (StepKind::Rollback, s)))
}

fn invalid_status(
    dr: &DisasterRecovery,
    previous: &DisasterRecoveryStatus,
    message: &str,
) -> DisasterRecoveryStatus {
    let mut c = Conditions::new(&previous.conditions, dr.metadata.generation);
    c.set(status::READY, FALSE, status::REASON_INVALID_SPEC, message);
    c.set(
        status::PROGRESSING,
        FALSE,
        status::REASON_INVALID_SPEC,
        "no Job is created for an invalid spec",
    );
    DisasterRecoveryStatus {
        observed_generation: dr.metadata.generation,
        phase: Some(RunPhase::Failed),
        conditions: c.build(),
        ..previous.clone()
    }
}

async fn run_status(
    ctx: &Context,
    dr: &DisasterRecovery,
    base: DisasterRecoveryStatus,
    decision: &crate::plan::Decision,
    observed: &BTreeMap<String, StepStatus>,
) -> Result<DisasterRecoveryStatus, Error> {
    let skipped: BTreeSet<&str> = decision.skip.iter().map(String::as_str).collect();
    let spec = &dr.spec;
    let mut steps = status::list_status(&spec.steps, observed, &skipped);
    let mut validations = status::list_status(&spec.validations, observed, &skipped);
    let mut rollback = status::list_status(&spec.rollback, observed, &skipped);
    status_size::bound([&mut steps, &mut validations, &mut rollback]);
    let finished_at = decision
        .outcome
        .and_then(|_| status::last_finish(steps.iter().chain(&validations).chain(&rollback)))
        .or_else(|| decision.outcome.map(|_| Time(Timestamp::now())));
    let achieved = match (decision.outcome, &base.started_at, &finished_at) {
        (Some(crate::plan::Outcome::Succeeded), Some(start), Some(end)) => {
            Some(status::elapsed(start, end))
        }
        _ => None,
    };
    let rpo = rpo_verdict(ctx, dr, base.started_at.as_ref()).await?;
    let facts = RunFacts {
        spec,
        decision,
        steps: &steps,
        validations: &validations,
        achieved_rto: achieved,
        rpo,
    };
    let conditions = status::run_conditions(&facts, &base.conditions, dr.metadata.generation);
    Ok(DisasterRecoveryStatus {
        observed_generation: dr.metadata.generation,
        phase: Some(decision.phase),
        finished_at,
        achieved_rto: achieved.map(format_duration),
        steps,
        validations,
        rollback,
        conditions,
        ..base
    })
}

/// RPOMet: the age, at run start, of the newest snapshot of every listed Backup.
async fn rpo_verdict(
    ctx: &Context,
    dr: &DisasterRecovery,
    started: Option<&Time>,
) -> Result<RpoVerdict, Error> {
    let unknown = |reason, message: String| RpoVerdict {
        status: UNKNOWN,
        reason,
        message,
    };
    let objective = dr.spec.objectives.as_ref().and_then(|o| o.rpo.as_ref());
    let (Some(objective), Some(started)) = (objective, started) else {
        return Ok(unknown("NoObjective", "objectives.rpo is not set".into()));
    };
    if dr.spec.backups.is_empty() {
        return Ok(unknown("NoBackups", "spec.backups lists no Backup".into()));
    }
    let ns = dr.namespace().unwrap_or_default();
    let mut ages = Vec::new();
    let mut met = true;
    for name in &dr.spec.backups {
        let Some(backup) = cached_backup(ctx, &ns, name) else {
            return Ok(unknown(
                "BackupNotFound",
                format!("Backup {name} does not exist"),
            ));
        };
        let verified_only = dr
            .spec
            .objectives
            .as_ref()
            .is_some_and(|o| o.verified_snapshots_only);
        let verified = backup
            .status
            .as_ref()
            .and_then(|s| s.last_verified_snapshot.as_deref());
        let newest = backup
            .status
            .iter()
            .flat_map(|s| &s.snapshots)
            .filter(|s| !verified_only || Some(s.id.as_str()) == verified)
            .filter_map(|s| s.completed_at.as_ref())
            .filter(|t| t.0 <= started.0)
            .max_by_key(|t| t.0);
        let Some(newest) = newest else {
            return Ok(unknown(
                "NoSnapshot",
                format!(
                    "Backup {name} has no {}snapshot older than the run",
                    if verified_only { "verified " } else { "" }
                ),
            ));
        };
        let age = status::elapsed(newest, started);
        met &= age <= objective.duration();
        ages.push(format!("{name}: {}", format_duration(age)));
    }
    let message = format!(
        "snapshot age at run start ({}) against an objective of {objective}",
        ages.join(", ")
    );
    Ok(if met {
        RpoVerdict {
            status: TRUE,
            reason: "WithinObjective",
            message,
        }
    } else {
        RpoVerdict {
            status: FALSE,
            reason: "ObjectiveMissed",
            message,
        }
    })
}

/// Deletes the Jobs of runs older than the last `keep_runs` (history rule).
async fn prune_old_runs(ctx: &Context, dr: &DisasterRecovery, run: u64) -> Result<(), Error> {
    let keep = u64::from(ctx.keep_runs.max(1));
    if run <= keep {
        return Ok(());
    }
    let kept: Vec<String> = (run + 1 - keep..=run).map(|r| r.to_string()).collect();
    let selector = format!(
        "{LABEL_RECOVERY}={},{LABEL_OWNER_UID}={},{LABEL_RUN} notin ({})",
        dr.name_any(),
        dr.uid().unwrap_or_default(),
        kept.join(",")
    );
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &dr.namespace().unwrap_or_default());
    jobs.delete_collection(
        &DeleteParams::background(),
        &ListParams::default().labels(&selector),
    )
    .await
    .map_err(Error::Prune)?;
    Ok(())
}

/// Writes status with server-side apply, unless nothing changed.
async fn write_status(
    drs: &Api<DisasterRecovery>,
    name: &str,
    previous: &DisasterRecoveryStatus,
    status: &DisasterRecoveryStatus,
) -> Result<(), Error> {
    if status == previous {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "dr.titan.io/v1alpha1",
        "kind": "DisasterRecovery",
        "status": status,
    });
    drs.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    Ok(())
}

/// Normal Events for step transitions, Warning Events for failures.
async fn announce_transitions(
    ctx: &Context,
    dr: &DisasterRecovery,
    before: &DisasterRecoveryStatus,
    after: &DisasterRecoveryStatus,
) {
    let old: BTreeMap<&str, StepPhase> = before
        .steps
        .iter()
        .chain(&before.validations)
        .chain(&before.rollback)
        .map(|s| (s.name.as_str(), s.phase))
        .collect();
    for step in after
        .steps
        .iter()
        .chain(&after.validations)
        .chain(&after.rollback)
    {
        if old.get(step.name.as_str()) == Some(&step.phase) && step.phase != StepPhase::Running {
            continue;
        }
        let (kind, reason) = match step.phase {
            StepPhase::Running if old.get(step.name.as_str()) == Some(&StepPhase::Running) => {
                continue;
            }
            StepPhase::Running => (EventType::Normal, "StepStarted"),
            StepPhase::Succeeded => (EventType::Normal, "StepSucceeded"),
            StepPhase::Failed => (EventType::Warning, "StepFailed"),
            StepPhase::TimedOut => (EventType::Warning, "StepTimedOut"),
            StepPhase::Skipped => (EventType::Normal, "StepSkipped"),
            StepPhase::Pending => continue,
        };
        let note = match &step.message {
            Some(message) => format!("{} (attempt {}): {message}", step.name, step.attempts),
            None => format!("{} (attempt {})", step.name, step.attempts),
        };
        ctx.publish(dr.object_ref(&()), kind, reason, &note).await;
    }
    if before.phase != after.phase {
        match after.phase {
            Some(RunPhase::Succeeded) => {
                ctx.publish(
                    dr.object_ref(&()),
                    EventType::Normal,
                    "RecoverySucceeded",
                    "the run succeeded",
                )
                .await
            }
            Some(RunPhase::Failed) => {
                ctx.publish(
                    dr.object_ref(&()),
                    EventType::Warning,
                    "RecoveryFailed",
                    "the run failed",
                )
                .await
            }
            _ => {}
        }
    }
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
