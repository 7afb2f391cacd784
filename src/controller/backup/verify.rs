//! Restores verified on a schedule: at each tick of `spec.verify.schedule` (the first as soon
//! as there is a snapshot) a verify Job restores the newest snapshot into a throwaway Redis
//! and checks every key; condition `Verified`, `lastVerifiedTime` and `lastVerifiedSnapshot`
//! say how it ended. The newest snapshot is named to the Job: a corrupt one fails the check
//! instead of an older one passing it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::snapshot_job::{self, KIND_VERIFY, SNAPSHOT_ANNOTATION, SnapshotJobSetup};
use super::{Failure, Said, jobs_of, next_due, recorded, termination_message, until, write_status};
use crate::api::Backup;
use crate::api::backup::BackupStatus;
use crate::controller::conditions::{Conditions, FALSE, TRUE};
use crate::controller::{Context, Error};
use k8s_openapi::api::batch::v1::Job;

pub const VERIFIED: &str = "Verified";

/// The verify part of a Backup's reconcile: returns when to look again and the status it
/// left.
pub(super) async fn reconcile(
    ctx: &Context,
    backup: &Backup,
    previous: BackupStatus,
    now: Timestamp,
) -> Result<(Option<Duration>, BackupStatus), Error> {
    let Some(verify) = &backup.spec.verify else {
        return Ok((None, previous));
    };
    if let Some(job) = jobs_of(ctx, backup, KIND_VERIFY).pop() {
        let Some(outcome) = snapshot_job::outcome(&job) else {
            return Ok((Some(Duration::from_secs(300)), previous));
        };
        if !recorded(ctx, &job).await? {
            return Ok((Some(Duration::from_secs(1)), previous));
        }
        let (status, said) = checked_status(ctx, backup, &previous, &job, outcome).await;
        write_status(ctx, backup, &previous, status.clone()).await?;
        said.publish(ctx, backup).await;
        let from = status.last_verify_time.as_ref().map_or(now, |t| t.0);
        return Ok((next_check(&verify.schedule, from), status));
    }
    // The first check follows the first snapshot, whose status change wakes this. (A
    // schedule that does not parse was refused by `reconcile`, before any attempt.)
    let Some(newest) = previous.snapshots.first().map(|s| s.id.clone()) else {
        return Ok((None, previous));
    };
    let due = match &previous.last_verify_time {
        None => Some(now),
        Some(last) => match next_due(Some(&verify.schedule), last.0) {
            Ok(next) => next,
            Err(message) => {
                let message = format!("spec.verify.schedule {message}");
                let failure = Failure::new("InvalidSchedule", message);
                let status = verified(backup, &previous, FALSE, &failure);
                write_status(ctx, backup, &previous, status.clone()).await?;
                return Ok((None, status));
            }
        },
    };
    match due {
        Some(due) if due <= now => {}
        due => return Ok((due.map(until), previous)),
    }
    // Recorded before it is made, like a snapshot attempt.
    let attempt = BackupStatus {
        last_verify_time: Some(Time(now)),
        ..previous.clone()
    };
    write_status(ctx, backup, &previous, attempt.clone()).await?;
    if let Err(failure) = start(ctx, backup, now, &newest, verify.image.as_deref()).await {
        let status = verified(backup, &attempt, FALSE, &failure);
        write_status(ctx, backup, &attempt, status.clone()).await?;
        return Ok((next_check(&verify.schedule, now), status));
    }
    Ok((None, attempt))
}

fn next_check(schedule: &str, from: Timestamp) -> Option<Duration> {
    next_due(Some(schedule), from).ok().flatten().map(until)
}

async fn start(
    ctx: &Context,
    backup: &Backup,
    at: Timestamp,
    snapshot: &str,
    image: Option<&str>,
) -> Result<(), Failure> {
    let url = ctx.snapshot_url.as_deref().ok_or_else(|| {
        Failure::new(
            "NoSnapshotEndpoint",
            "this operator serves no snapshot endpoint for verify Jobs (set --snapshot-url)",
        )
    })?;
    let setup = SnapshotJobSetup {
        image: &ctx.job_setup.operator_image,
        titan_dr: &ctx.job_setup.titan_dr_command,
        snapshot_url: url,
    };
    let image = image.unwrap_or(&ctx.verify_redis_image);
    let job = snapshot_job::verify_job(backup, at, snapshot, image, &setup);
    super::create_job(ctx, &job).await
}

/// The status after a verify Job ended (Verified, and on success which snapshot and when),
/// and the Event to publish once it is written.
async fn checked_status(
    ctx: &Context,
    backup: &Backup,
    previous: &BackupStatus,
    job: &Job,
    outcome: Result<(), String>,
) -> (BackupStatus, Said) {
    let (ns, name) = (backup.namespace().unwrap_or_default(), backup.name_any());
    let snapshot = job
        .annotations()
        .get(SNAPSHOT_ANNOTATION)
        .cloned()
        .unwrap_or_default();
    match outcome {
        Ok(()) => {
            let at = job
                .status
                .as_ref()
                .and_then(|s| s.completion_time.clone())
                .unwrap_or(Time(Timestamp::now()));
            ctx.metrics
                .snapshot_verified(&ns, &name, at.0.as_millisecond() as f64 / 1000.0);
            let message =
                format!("snapshot {snapshot} restored into a throwaway Redis; every key checked");
            let success = Failure::new("Restored", message.clone());
            let status = BackupStatus {
                last_verified_time: Some(at),
                last_verified_snapshot: Some(snapshot),
                ..verified(backup, previous, TRUE, &success)
            };
            let said = Said {
                kind: EventType::Normal,
                reason: "Verified",
                message,
            };
            (status, said)
        }
        Err(job_failure) => {
            let said = termination_message(ctx, &ns, &job.name_any(), KIND_VERIFY).await;
            let (_, message) = snapshot_job::failure_of(said.as_deref(), &job_failure);
            let failure = Failure::new(
                "RestoreFailed",
                format!("snapshot {snapshot} did not restore: {message}"),
            );
            ctx.metrics.snapshot_failed(&ns, &name, "VerifyFailed");
            let message = failure.message.clone();
            let said = Said {
                kind: EventType::Warning,
                reason: "VerifyFailed",
                message,
            };
            (verified(backup, previous, FALSE, &failure), said)
        }
    }
}

fn verified(backup: &Backup, previous: &BackupStatus, state: &str, why: &Failure) -> BackupStatus {
    let mut c = Conditions::new(&previous.conditions, backup.metadata.generation);
    c.set(VERIFIED, state, why.reason, why.message.clone());
    BackupStatus {
        conditions: c.merged(),
        ..previous.clone()
    }
}
