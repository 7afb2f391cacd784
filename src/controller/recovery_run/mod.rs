//! The RecoveryRun controller: from one run's copy of a scenario to ordered Jobs to status.
//!
//! A run begins by copying its DisasterRecovery's spec (checked, and held to the scenario's
//! concurrency policy); from then on each reconcile is a pipeline — observe Jobs → stop
//! attempts whose pod cannot start (or that an Abort stops) → decide (pure plan) → create Jobs
//! → write status — and never waits: Job and Pod changes wake it again (`.owns()`,
//! `.watches()`), and a grace period being counted by a requeue. Every decision is derived
//! from the Jobs of the run (found by label), their Pods and Events, and the status, never
//! from memory, and Job names are deterministic, so a restarted operator neither duplicates
//! nor re-runs work.

mod approval;
mod drill;
mod evidence_copy;
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use self::pod_start::{StartFailure, StartVerdict};
use self::status::{RpoVerdict, RunFacts};
use crate::api::disaster_recovery::{
    ConcurrencyPolicy, DisasterRecoverySpec, RunPhase, Step, StepPhase, StepStatus,
};
use crate::api::duration::format_duration;
use crate::api::recovery_run::{DrillStatus, RunAction, RunMode, run_id};
use crate::api::{Backup, DisasterRecovery, RecoveryRun, RecoveryRunStatus, RunStatus};
use crate::controller::conditions::{Conditions, FALSE, TRUE, UNKNOWN};
use crate::controller::{
    Context, Error, MANAGER, TakenBy, after_failure, apply_status, create_owned, decoded,
};
use crate::evidence;
use crate::job::{
    JobRun, LABEL_OWNER_UID, LABEL_RECOVERY, LABEL_RUN, RestoreSetup, build_job, refused_job,
};
use crate::plan::{Plan, RunState, StepKind};
use crate::telemetry::RunOf;

/// Safety net: a run in progress is looked at again this often even when no
/// Job changes (Job changes normally wake it at once).
const RECHECK: Duration = Duration::from_secs(60);
/// The soonest a requeue comes back, also for a grace period about to end.
const SOONEST: Duration = Duration::from_secs(1);
/// How often a drill's namespace being deleted is looked at (nothing watches namespaces).
const DRILL_RECHECK: Duration = Duration::from_secs(2);
/// How soon a failed copy of the evidence to object storage is tried again.
const EVIDENCE_RETRY: Duration = Duration::from_secs(30);

#[tracing::instrument(skip_all, fields(run = %run.name_any(), ns = run.namespace().unwrap_or_default()))]
pub async fn reconcile(run: Arc<RecoveryRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.caches_ready().await?;
    let previous = run.status.clone().unwrap_or_default();
    if run.metadata.deletion_timestamp.is_some() {
        return deleted(&ctx, &run, &previous).await;
    }
    if previous.run.has_ended() {
        return ended(&ctx, &run, &previous).await;
    }
    let Some(scenario) = previous.scenario.as_deref() else {
        return begin(&ctx, &run, &previous).await;
    };
    let dr = scenario_view(&run, scenario, previous.scenario_generation);
    let plan = match validate(&dr) {
        Ok(plan) => plan,
        // The copy was valid when the run began; only a hand-edited status gets here.
        Err(message) => {
            return end_unstarted(&ctx, &run, &previous, REFUSED_INVALID, &message).await;
        }
    };
    let base = previous.run.clone();
    let (mut observed, recheck) = observe_run(&ctx, &run, &dr, &base).await?;
    let mut state = RunState::default();
    for s in observed.values() {
        state.set(&s.name, s.phase, s.attempts);
    }
    let unheld = plan.next(&state);
    let ready: BTreeSet<&str> = unheld.start.iter().map(|a| a.name.as_str()).collect();
    let gates = approval::evaluate(&dr.spec, &run, &previous.gates, &ready, Timestamp::now());
    let decision = steer(&ctx, &run, &plan, &state, unheld, &gates, &mut observed).await?;
    start_attempts(&ctx, &run, &dr, &base, &decision, &mut observed).await?;
    let mut status = run_status(&ctx, &run, &dr, base, &decision, &observed).await?;
    if let Some(approved) = approval::condition(&gates.status) {
        let mut c = Conditions::new(&previous.run.conditions, run.metadata.generation);
        c.set(approval::APPROVED, approved.0, approved.1, approved.2);
        status.conditions.extend(c.build());
    }
    let evidence = status.has_ended().then(|| {
        let generation = previous.scenario_generation;
        let approvals = approval::evidence(&gates.status);
        evidence::record(&run, &dr.spec, generation, &plan, &status, approvals)
    });
    let status = RecoveryRunStatus {
        run: status,
        evidence,
        gates: gates.status.clone(),
        ..previous.clone()
    };
    write_status(&ctx, &run, &previous, &status).await?;
    // After the write: an Event never tells of a transition the status does not hold.
    announce_transitions(&ctx, &run, &previous.run, &status.run).await;
    announce_gates(&ctx, &run, &previous.gates, &status.gates).await;
    count_ended(&ctx, &run, &dr, &previous.run, &status.run);
    let next = match decision.outcome {
        Some(_) => None,
        None => Some(
            recheck
                .min(gates.next_timeout.unwrap_or(recheck))
                .max(SOONEST),
        ),
    };
    tracing::debug!(run = ?status.run.run_id, phase = ?status.run.phase, started = decision.start.len(), ?next, "reconciled");
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// An ended run is final: its recorded outcome stands, with or without its Jobs. Only an
/// edit after its end (an Abort too late, say) is acknowledged, for kstatus; and a drill's
/// namespace is deleted, looked at again until it is gone.
async fn ended(
    ctx: &Context,
    run: &RecoveryRun,
    previous: &RecoveryRunStatus,
) -> Result<Action, Error> {
    let mut seen = previous.clone();
    seen.run.observed_generation = run.metadata.generation;
    let mut next = Action::await_change();
    if let Err(why) = copy_evidence(ctx, run, &mut seen).await {
        ctx.publish(
            run.object_ref(&()),
            EventType::Warning,
            "EvidenceNotCopied",
            &why,
        )
        .await;
        next = Action::requeue(EVIDENCE_RETRY);
    }
    if let Some(drill) = seen.drill.as_mut().filter(|d| d.deleted_at.is_none()) {
        match drill::clean_up(ctx, run, drill).await? {
            Some(gone) => {
                release_drill(ctx, run).await?;
                drill.deleted_at = Some(gone);
            }
            None => next = Action::requeue(DRILL_RECHECK),
        }
    }
    write_status(ctx, run, previous, &seen).await?;
    Ok(next)
}

/// Copies the evidence of an ended run off the cluster once, beside the snapshots of the
/// scenario's Backups that keep copies in object storage (recorded in `evidenceCopies`).
async fn copy_evidence(
    ctx: &Context,
    run: &RecoveryRun,
    status: &mut RecoveryRunStatus,
) -> Result<(), String> {
    let (Some(evidence), Some(scenario)) = (&status.evidence, &status.scenario) else {
        return Ok(());
    };
    if !status.evidence_copies.is_empty() {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    let backups: Vec<Backup> = scenario
        .backups
        .iter()
        .filter_map(|name| cached_backup(ctx, &ns, name))
        .filter(|b| b.spec.destination.s3.is_some())
        .collect();
    if backups.is_empty() {
        return Ok(());
    }
    status.evidence_copies = evidence_copy::copy(ctx, run, &backups, evidence).await?;
    Ok(())
}

/// A run being deleted (a history limit, its recovery deleted, by hand) before its drill's
/// namespace was found gone: the namespace goes first, then the finalizer.
async fn deleted(
    ctx: &Context,
    run: &RecoveryRun,
    previous: &RecoveryRunStatus,
) -> Result<Action, Error> {
    if !drill::holds(run) {
        return Ok(Action::await_change());
    }
    // Deleted before its status named the namespace (between its creation and the status
    // write): the name is the run's, so look there.
    let drill = previous.drill.clone().unwrap_or_else(|| DrillStatus {
        namespace: drill::namespace_name(run),
        ..Default::default()
    });
    if drill::clean_up(ctx, run, &drill).await?.is_none() {
        return Ok(Action::requeue(DRILL_RECHECK));
    }
    release_drill(ctx, run).await?;
    Ok(Action::await_change())
}

/// Lets the run go: the drill finalizer is removed (by the resourceVersion the reconcile read,
/// so a stale view retries).
async fn release_drill(ctx: &Context, run: &RecoveryRun) -> Result<(), Error> {
    if !drill::holds(run) {
        return Ok(());
    }
    let runs: Api<RecoveryRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": {
            "resourceVersion": run.resource_version(),
            "finalizers": drill::finalizers(run, false),
        }
    });
    patch_run(&runs, &run.name_any(), &patch).await.map(drop)
}

/// The scenario as this run executes it: the spec copied when the run began, under the
/// recovery's name, with the run's UID, which its Jobs' names and `owner-uid` label carry,
/// acting on its target (a drill's namespace in a drill).
pub fn scenario_view(
    run: &RecoveryRun,
    scenario: &DisasterRecoverySpec,
    generation: Option<i64>,
) -> DisasterRecovery {
    let mut view = DisasterRecovery {
        metadata: ObjectMeta {
            name: Some(run.spec.recovery.clone()),
            namespace: run.namespace(),
            uid: run.uid(),
            generation,
            ..Default::default()
        },
        spec: scenario.clone(),
        status: None,
    };
    let drill = run.status.as_ref().and_then(|s| s.drill.as_ref());
    let target = drill.map_or_else(|| view.target_namespace(), |d| d.namespace.clone());
    view.spec = view.spec.acting_on(&target);
    view
}

/// The decision for the run's state, as its `spec.action` and its approval gates bend it:
/// Abort (or a gate's timeout that aborts) stops the running steps and validations (their
/// Jobs fail saying so) and rolls back; Pause starts nothing; a step waiting for its approval
/// does not start. `next` is the plan's decision for `state`.
async fn steer(
    ctx: &Context,
    run: &RecoveryRun,
    plan: &Plan,
    state: &RunState,
    next: crate::plan::Decision,
    gates: &approval::Gates,
    observed: &mut BTreeMap<String, StepStatus>,
) -> Result<crate::plan::Decision, Error> {
    let abort = match (run.spec.action, &gates.abort) {
        (Some(RunAction::Abort), _) => Some(requested(run)),
        (_, Some(timed_out)) => Some(timed_out.clone()),
        _ => None,
    };
    if let Some(why) = abort {
        stop_for_abort(ctx, run, plan, observed, &why).await?;
        return Ok(plan.next_aborted(state));
    }
    let mut decision = next;
    if decision.outcome.is_some() {
        return Ok(decision);
    }
    if run.spec.action == Some(RunAction::Pause) {
        decision.start.clear();
        decision.phase = RunPhase::Paused;
        return Ok(decision);
    }
    decision.start.retain(|a| !gates.held.contains(&a.name));
    if !gates.held.is_empty() {
        decision.phase = RunPhase::WaitingForApproval;
    }
    Ok(decision)
}

/// Events of the gates that began to wait, were approved or timed out at this reconcile.
async fn announce_gates(
    ctx: &Context,
    run: &RecoveryRun,
    before: &[crate::api::approval::GateStatus],
    after: &[crate::api::approval::GateStatus],
) {
    use crate::api::approval::GateState;
    for gate in after {
        let was = before.iter().find(|g| g.step == gate.step).map(|g| g.state);
        if was == Some(gate.state) {
            continue;
        }
        let (type_, reason) = match gate.state {
            GateState::Waiting => (EventType::Normal, "ApprovalNeeded"),
            GateState::Approved => (EventType::Normal, "Approved"),
            GateState::TimedOut => (EventType::Warning, "ApprovalTimedOut"),
        };
        let note = format!(
            "step {}: {}",
            gate.step,
            gate.message.clone().unwrap_or_default()
        );
        ctx.publish(run.object_ref(&()), type_, reason, &note).await;
    }
}

/// Stops the Job of every running step and validation of an aborted run (rollback steps go
/// on): the Job fails at once, and its attempt is recorded as aborted.
async fn stop_for_abort(
    ctx: &Context,
    run: &RecoveryRun,
    plan: &Plan,
    observed: &BTreeMap<String, StepStatus>,
    why: &str,
) -> Result<(), Error> {
    let ns = run.namespace().unwrap_or_default();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let rollback: BTreeSet<&str> = plan.rollback().iter().map(|s| s.name.as_str()).collect();
    let failure = StartFailure {
        message: format!("aborted: {why}"),
    };
    for step in observed.values() {
        if step.phase != StepPhase::Running || rollback.contains(step.name.as_str()) {
            continue;
        }
        let Some(job_name) = &step.job else { continue };
        let key = ObjectRef::<Job>::new(job_name).within(&ns);
        let Some(job) = ctx.jobs.get(&key) else {
            continue;
        };
        if job
            .annotations()
            .contains_key(crate::names::FAILED_TO_START)
        {
            continue;
        }
        stop_attempt(&api, &job, &failure, Timestamp::now()).await?;
    }
    Ok(())
}

/// Who asked for the run and why, for Events and messages.
fn requested(run: &RecoveryRun) -> String {
    let who = run.spec.requested_by.as_deref().unwrap_or("unknown");
    match &run.spec.reason {
        Some(reason) => format!("requested by {who}: {reason}"),
        None => format!("requested by {who}"),
    }
}

/// Reasons of a run that ends before its first step.
const REFUSED_INVALID: &str = status::REASON_INVALID_SPEC;
const REFUSED_NO_RECOVERY: &str = "RecoveryNotFound";
const REFUSED_DRILL: &str = "DrillRefused";
pub const REFUSED_CONCURRENT: &str = "Refused";

/// A run's first reconcile: it copies its DisasterRecovery's spec, unless that is missing,
/// invalid, or another run of it is active (then, by the scenario's concurrencyPolicy, the
/// run is refused, or waits while the active one is aborted). The copy is recorded before any
/// Job exists, so a crash here at worst begins the same run again.
async fn begin(
    ctx: &Context,
    run: &RecoveryRun,
    previous: &RecoveryRunStatus,
) -> Result<Action, Error> {
    let ns = run.namespace().unwrap_or_default();
    let drs: Api<DisasterRecovery> = Api::namespaced(ctx.client.clone(), &ns);
    let recovery = &run.spec.recovery;
    let Some(dr) = drs.get_opt(recovery).await.map_err(Error::Observe)? else {
        let message = format!("DisasterRecovery {recovery} does not exist in namespace {ns}");
        return end_unstarted(ctx, run, previous, REFUSED_NO_RECOVERY, &message).await;
    };
    if let Some((reason, message)) = refusal(run, &dr) {
        return end_unstarted(ctx, run, previous, reason, &message).await;
    }
    let active = others_active(ctx, run);
    if !active.is_empty() {
        let names = active
            .iter()
            .map(|r| r.name_any())
            .collect::<Vec<_>>()
            .join(", ");
        if dr.spec.concurrency_policy == ConcurrencyPolicy::Forbid {
            let message = format!("run {names} is active and concurrencyPolicy is Forbid");
            return end_unstarted(ctx, run, previous, REFUSED_CONCURRENT, &message).await;
        }
        for other in &active {
            abort(ctx, other, &format!("replaced by {}", run.name_any())).await?;
        }
        tracing::info!(active = %names, "waiting for the replaced runs to end");
        return Ok(Action::requeue(SOONEST));
    }
    let claimed = adopt(ctx, run, &dr).await?;
    let run = claimed.as_ref().unwrap_or(run);
    let mut drill = None;
    if run.spec.mode == RunMode::Drill {
        match drill::prepare(ctx, run, &dr.target_namespace()).await? {
            Ok(prepared) => drill = Some(prepared),
            Err(message) => {
                release_drill(ctx, run).await?;
                return end_unstarted(ctx, run, previous, REFUSED_DRILL, &message).await;
            }
        }
    }
    let status = RecoveryRunStatus {
        run: RunStatus {
            run_id: Some(run_id(recovery, &run.name_any())),
            started_at: Some(Time(Timestamp::now())),
            phase: Some(RunPhase::Running),
            // Observed from the first write on: kstatus readers (Argo CD, Flux) see a run in
            // flight, not a spec not yet looked at.
            observed_generation: run.metadata.generation,
            ..Default::default()
        },
        scenario: Some(Box::new(dr.spec.clone())),
        scenario_generation: dr.metadata.generation,
        evidence: None,
        evidence_copies: Vec::new(),
        drill,
        gates: Vec::new(),
    };
    write_status(ctx, run, previous, &status).await?;
    let message = format!(
        "run {} of {recovery} started ({:?}, {})",
        status.run.run_id.as_deref().unwrap_or_default(),
        run.spec.trigger,
        requested(run)
    );
    ctx.publish(
        run.object_ref(&()),
        EventType::Normal,
        "RunStarted",
        &message,
    )
    .await;
    // The status write wakes the run again, which then starts its first steps.
    Ok(Action::requeue(SOONEST))
}

/// Why `run` of `dr` may not begin, whatever else is running: an invalid spec, or a drill that
/// would reach beyond its own namespace.
fn refusal(run: &RecoveryRun, dr: &DisasterRecovery) -> Option<(&'static str, String)> {
    if let Err(message) = validate(dr) {
        return Some((REFUSED_INVALID, message));
    }
    if run.spec.mode != RunMode::Drill {
        return None;
    }
    let hazards = drill::hazards(
        &dr.spec,
        &dr.target_namespace(),
        &drill::namespace_name(run),
    );
    let message = format!(
        "a drill must not touch the real target: {}",
        hazards.join("; ")
    );
    (!hazards.is_empty()).then_some((REFUSED_DRILL, message))
}

/// The other runs of the same recovery that hold it: begun and not ended, or created before
/// this one and not ended (they begin first). The order is the one every reconcile sees, so of
/// two runs requested together exactly one runs.
fn others_active(ctx: &Context, run: &RecoveryRun) -> Vec<Arc<RecoveryRun>> {
    let key = |r: &RecoveryRun| (r.creation_timestamp().map(|t| t.0), r.name_any());
    let ns = run.namespace();
    ctx.runs
        .state()
        .into_iter()
        .filter(|other| {
            other.namespace() == ns
                && other.spec.recovery == run.spec.recovery
                && other.uid() != run.uid()
                && other.metadata.deletion_timestamp.is_none()
        })
        .filter(|other| {
            let status = other.status.clone().unwrap_or_default();
            let begun = status.scenario.is_some();
            !status.run.has_ended() && (begun || key(other) < key(run))
        })
        .collect()
}

/// Asks `run` to abort (its rollback runs), saying why in an Event.
async fn abort(ctx: &Context, run: &RecoveryRun, why: &str) -> Result<(), Error> {
    if run.spec.action == Some(RunAction::Abort) {
        return Ok(());
    }
    let runs: Api<RecoveryRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let patch = json!({"spec": {"action": "Abort"}});
    patch_run(&runs, &run.name_any(), &patch).await?;
    ctx.publish(run.object_ref(&()), EventType::Warning, "RunAborted", why)
        .await;
    Ok(())
}

/// Makes a run created by hand its DisasterRecovery's: owned by it (so history limits and the
/// recovery's deletion take it, and its changes wake the recovery) and labelled with it; a
/// drill also holds the finalizer that keeps it until its namespace is gone. Returns the run
/// as patched, if it was.
async fn adopt(
    ctx: &Context,
    run: &RecoveryRun,
    dr: &DisasterRecovery,
) -> Result<Option<RecoveryRun>, Error> {
    let owned = run
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == dr.uid().as_ref());
    let hold = run.spec.mode == RunMode::Drill && !drill::holds(run);
    if owned && !hold {
        return Ok(None);
    }
    let runs: Api<RecoveryRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let mut metadata = json!({"resourceVersion": run.resource_version()});
    if !owned {
        metadata["ownerReferences"] = json!([dr.controller_owner_ref(&())]);
        metadata["labels"] = json!({LABEL_RECOVERY: dr.name_any()});
    }
    if hold {
        metadata["finalizers"] = json!(drill::finalizers(run, true));
    }
    let patch = json!({ "metadata": metadata });
    patch_run(&runs, &run.name_any(), &patch).await.map(Some)
}

/// A merge patch of a RecoveryRun's spec or metadata, as the operator.
async fn patch_run(
    runs: &Api<RecoveryRun>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<RecoveryRun, Error> {
    let params = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    match runs.patch(name, &params, &Patch::Merge(patch)).await {
        Ok(patched) => Ok(patched),
        Err(source) => Err(Error::WriteRun {
            run: name.into(),
            source,
        }),
    }
}

/// Ends a run that never began (`reason`: no such recovery, an invalid spec, refused by the
/// concurrency policy): Failed, no Job, and a Warning Event saying why.
async fn end_unstarted(
    ctx: &Context,
    run: &RecoveryRun,
    previous: &RecoveryRunStatus,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let mut c = Conditions::new(&previous.run.conditions, run.metadata.generation);
    c.set(status::READY, FALSE, reason, message);
    c.set(status::PROGRESSING, FALSE, reason, "the run created no Job");
    let now = Time(Timestamp::now());
    let status = RecoveryRunStatus {
        run: RunStatus {
            observed_generation: run.metadata.generation,
            phase: Some(RunPhase::Failed),
            run_id: Some(run_id(&run.spec.recovery, &run.name_any())),
            started_at: previous.run.started_at.clone().or(Some(now.clone())),
            finished_at: Some(now),
            conditions: c.build(),
            ..previous.run.clone()
        },
        ..previous.clone()
    };
    write_status(ctx, run, previous, &status).await?;
    let event = if reason == REFUSED_CONCURRENT {
        "RunRefused"
    } else {
        reason
    };
    ctx.publish(run.object_ref(&()), EventType::Warning, event, message)
        .await;
    Ok(Action::await_change())
}

/// Counts a run in `titan_dr_runs_total` on the reconcile that records its end.
fn count_ended(
    ctx: &Context,
    run: &RecoveryRun,
    dr: &DisasterRecovery,
    before: &RunStatus,
    after: &RunStatus,
) {
    let outcome = match after.phase {
        Some(RunPhase::Succeeded) => "Succeeded",
        Some(RunPhase::Failed) => "Failed",
        _ => return,
    };
    if before.phase == after.phase {
        return;
    }
    let namespace = run.namespace().unwrap_or_default();
    let mode = format!("{:?}", run.spec.mode);
    let of = RunOf {
        namespace: &namespace,
        recovery: &run.spec.recovery,
        scenario: &dr.spec.scenario,
        mode: &mode,
    };
    ctx.metrics.run_ended(&of, outcome);
}

/// What the run's Jobs and Pods (from the operator's caches) say of its steps, after the
/// attempts whose pod cannot start were failed on their Job (so that this and any later
/// operator sees a failed attempt); and when to look again.
async fn observe_run(
    ctx: &Context,
    run: &RecoveryRun,
    dr: &DisasterRecovery,
    base: &RunStatus,
) -> Result<(BTreeMap<String, StepStatus>, Duration), Error> {
    let ns = run.namespace().unwrap_or_default();
    let run_id = base.run_id.clone().unwrap_or_default();
    let uid = run.uid().unwrap_or_default();
    let mut run_jobs: Vec<Job> = of_run(&ctx.jobs, &ns, &uid, &run_id)
        .iter()
        .map(|job| job.as_ref().clone())
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = observe::RunPods {
        cached: of_run(&ctx.pods, &ns, &uid, &run_id),
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
    run: &RecoveryRun,
    dr: &DisasterRecovery,
    base: &RunStatus,
    decision: &crate::plan::Decision,
    observed: &mut BTreeMap<String, StepStatus>,
) -> Result<(), Error> {
    if decision.start.is_empty() {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    let Some(owner) = run.controller_owner_ref(&()) else {
        return Ok(());
    };
    let job_run = JobRun {
        id: base.run_id.clone().unwrap_or_default(),
        owner,
    };
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
        let job = build_job(dr, &job_run, attempt.kind, step, attempt.number, &setup);
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
pub fn validate(dr: &DisasterRecovery) -> Result<Plan, String> {
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

async fn run_status(
    ctx: &Context,
    run: &RecoveryRun,
    dr: &DisasterRecovery,
    base: RunStatus,
    decision: &crate::plan::Decision,
    observed: &BTreeMap<String, StepStatus>,
) -> Result<RunStatus, Error> {
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
    let mut conditions = status::run_conditions(&facts, &base.conditions, run.metadata.generation);
    if run.spec.action == Some(RunAction::Abort) && decision.outcome.is_some() {
        let mut c = Conditions::new(&conditions, run.metadata.generation);
        let message = format!("aborted ({}); the rollback ran", requested(run));
        c.set(status::READY, FALSE, "Aborted", &message);
        conditions = c.merged();
    }
    Ok(RunStatus {
        observed_generation: run.metadata.generation,
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

/// Writes the run's status, unless nothing changed.
async fn write_status(
    ctx: &Context,
    run: &RecoveryRun,
    previous: &RecoveryRunStatus,
    status: &RecoveryRunStatus,
) -> Result<(), Error> {
    let runs: Api<RecoveryRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    apply_status(&runs, &run.name_any(), previous, status).await
}

/// Normal Events for step transitions, Warning Events for failures.
async fn announce_transitions(
    ctx: &Context,
    run: &RecoveryRun,
    before: &RunStatus,
    after: &RunStatus,
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
        ctx.publish(run.object_ref(&()), kind, reason, &note).await;
    }
    if before.phase != after.phase {
        match after.phase {
            Some(RunPhase::Succeeded) => {
                ctx.publish(
                    run.object_ref(&()),
                    EventType::Normal,
                    "RecoverySucceeded",
                    "the run succeeded",
                )
                .await
            }
            Some(RunPhase::Failed) => {
                ctx.publish(
                    run.object_ref(&()),
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
    run: Arc<DeserializeGuard<RecoveryRun>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    after_failure(run.as_ref(), error, &ctx, Duration::from_secs(5))
}

/// [`reconcile`] of an object the watch could decode.
pub async fn reconcile_guarded(
    run: Arc<DeserializeGuard<RecoveryRun>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile(decoded(&run)?, ctx).await
}
