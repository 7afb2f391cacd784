//! The Backup controller: one snapshot on create, then one per `schedule`
//! tick; retention applied to files and status together.
//!
//! A snapshot is a Job ([`snapshot_job`]) that the reconcile starts and, once it has ended,
//! records and deletes: while a Backup's snapshot Job exists no other is started, so
//! snapshots never overlap, and an operator that restarts finds the Job again by its labels.
//! A configuration snapshot's Job lists what it archives as the Backup's own ServiceAccount
//! ([`access`]). Restore checks ([`verify`]) are Jobs too.

mod access;
pub mod snapshot_job;
mod verify;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::api::Backup;
use crate::api::backup::{BACKUP_NAMESPACES_ANNOTATION, BackupStatus};
use crate::backup::{BackupKey, RetentionPolicy, StoreError};
use crate::controller::conditions::{Conditions, FALSE, TRUE};
use crate::controller::{Context, Error, MANAGER, SecretProblem, TakenBy, after_failure, decoded};
use crate::names::LABEL_KIND;
use kube::core::DeserializeGuard;
use snapshot_job::{ATTEMPT_ANNOTATION, ConfigSelection, KIND_SNAPSHOT, SnapshotJobSetup};

/// At most this many snapshots, the newest, are listed in `status.snapshots`; the store may
/// hold more (`titan-dr backup list` shows them all).
pub const STATUS_SNAPSHOTS: usize = 100;

/// Why the newest attempt failed: the Ready condition's reason and message.
#[derive(Debug)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// The next time a backup is due after `last`, or `None` without a schedule.
pub fn next_due(schedule: Option<&str>, last: Timestamp) -> Result<Option<Timestamp>, String> {
    let Some(schedule) = schedule else {
        return Ok(None);
    };
    let cron = croner::Cron::from_str(schedule).map_err(|e| format!("{schedule:?}: {e}"))?;
    let last = chrono::DateTime::from_timestamp(last.as_second(), 0).ok_or("time out of range")?;
    let next = cron
        .find_next_occurrence(&last, false)
        .map_err(|e| format!("{schedule:?}: {e}"))?;
    Timestamp::from_second(next.timestamp())
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Why a schedule of `backup` does not parse, naming it: such a Backup is refused whole (no
/// snapshot, no check) until its spec changes.
fn schedule_error(backup: &Backup, now: Timestamp) -> Option<String> {
    let spec = &backup.spec;
    let verify = spec.verify.as_ref().map(|v| v.schedule.as_str());
    [
        ("spec.schedule", spec.schedule.as_deref()),
        ("spec.verify.schedule", verify),
    ]
    .into_iter()
    .find_map(|(field, schedule)| {
        let message = next_due(schedule, now).err()?;
        Some(format!("{field} {message}"))
    })
}

#[tracing::instrument(skip_all, fields(backup = %backup.name_any(), ns = backup.namespace().unwrap_or_default()))]
pub async fn reconcile(backup: Arc<Backup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let previous = backup.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    ctx.caches_ready().await?;
    if let Some(message) = schedule_error(&backup, now) {
        let failure = Failure::new("InvalidSchedule", message);
        let status = failed_status(&backup, &previous, &failure);
        write_status(&ctx, &backup, &previous, status).await?;
        return Ok(Action::await_change());
    }
    let (verify_next, status) = verify::reconcile(&ctx, &backup, previous, now).await?;
    let snapshot_next = snapshots(&ctx, &backup, status, now).await?;
    let next = [verify_next, snapshot_next].into_iter().flatten().min();
    Ok(next.map_or_else(Action::await_change, Action::requeue))
}

/// The snapshot part: the Job of an attempt recorded, or the next attempt started when due.
/// Returns when to look again (`None`: at the next change).
async fn snapshots(
    ctx: &Context,
    backup: &Backup,
    previous: BackupStatus,
    now: Timestamp,
) -> Result<Option<Duration>, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let name = backup.name_any();

    // A snapshot Job of this Backup: while it runs nothing else starts (its changes wake this
    // reconcile); once it has ended, it is recorded.
    if let Some(job) = jobs_of(ctx, backup, KIND_SNAPSHOT).pop() {
        let Some(outcome) = snapshot_job::outcome(&job) else {
            return Ok(Some(Duration::from_secs(300)));
        };
        if record_job(ctx, backup, &previous, &job, outcome).await? {
            let from = previous.last_schedule_time.as_ref().map_or(now, |t| t.0);
            return Ok(next_tick(backup, from));
        }
        // Deleted by an earlier reconcile that the cache has not caught up with.
        return Ok(Some(Duration::from_secs(1)));
    }

    // Due now on creation, on a spec change, or at the schedule's next tick (a schedule that
    // does not parse was refused by `reconcile`, before any attempt).
    let changed = previous.observed_generation != backup.metadata.generation;
    let due = match (&previous.last_schedule_time, changed) {
        (None, _) | (_, true) => Some(now),
        (Some(last), false) => match next_due(backup.spec.schedule.as_deref(), last.0) {
            Ok(next) => retry_due(next, last.0, previous.failed_attempts.unwrap_or(0)),
            Err(message) => {
                let failure = Failure::new("InvalidSchedule", format!("spec.schedule {message}"));
                let status = failed_status(backup, &previous, &failure);
                write_status(ctx, backup, &previous, status).await?;
                return Ok(None);
            }
        },
    };
    let Some(due) = due else {
        return Ok(None);
    };
    if due > now {
        return Ok(Some(until(due)));
    }

    let started = Time(now);
    // The attempt is recorded before it is made: whatever fails during or after it, the next
    // one waits for the schedule's next tick instead of following at once.
    let attempt = BackupStatus {
        last_schedule_time: Some(started.clone()),
        observed_generation: backup.metadata.generation,
        ..previous.clone()
    };
    write_status(ctx, backup, &previous, attempt.clone()).await?;
    let previous = attempt;
    if let Err(failure) = start_snapshot_job(ctx, backup, now).await {
        record_failure(ctx, backup, &previous, &failure).await?;
        tracing::info!(backup = %name, ns = %ns, "backup attempt failed before its Job");
        return Ok(next_tick(backup, now));
    }
    Ok(None)
}

/// The longest wait before retrying a failed attempt.
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// When an attempt is due after one started at `last`: the schedule's next tick (`next`), or
/// after `failed` failures in a row, sooner: 10 s after the first, doubling, at most an hour.
pub fn retry_due(next: Option<Timestamp>, last: Timestamp, failed: u32) -> Option<Timestamp> {
    if failed == 0 {
        return next;
    }
    let wait = Duration::from_secs(10)
        .saturating_mul(1 << (failed - 1).min(16))
        .min(MAX_RETRY);
    let retry = last.checked_add(wait).ok();
    match (next, retry) {
        (Some(next), Some(retry)) => Some(next.min(retry)),
        (next, retry) => next.or(retry),
    }
}

/// Waits for the next tick of the schedule after `from`, or for a change without one.
fn next_tick(backup: &Backup, from: Timestamp) -> Option<Duration> {
    next_due(backup.spec.schedule.as_deref(), from)
        .ok()
        .flatten()
        .map(until)
}

/// An Event to publish once the status it reports is written: a reconcile whose status
/// write fails says nothing, so a retry cannot repeat a note about a state never recorded.
pub(super) struct Said {
    pub kind: EventType,
    pub reason: &'static str,
    pub message: String,
}

impl Said {
    pub(super) async fn publish(self, ctx: &Context, backup: &Backup) {
        ctx.publish(
            backup.object_ref(&()),
            self.kind,
            self.reason,
            &self.message,
        )
        .await;
    }
}

async fn record_success(
    ctx: &Context,
    backup: &Backup,
    previous: &BackupStatus,
    manifest: Option<&crate::backup::Manifest>,
) -> Result<(), Error> {
    let (ns, name) = (backup.namespace().unwrap_or_default(), backup.name_any());
    let status = succeeded_status(ctx, backup, previous)?;
    write_status(ctx, backup, previous, status).await?;
    if let Some(manifest) = manifest {
        let id = &manifest.id;
        let completed = manifest.completed_at.as_millisecond() as f64 / 1000.0;
        let took = manifest.completed_at.duration_since(manifest.started_at);
        let took = Duration::try_from(took).unwrap_or_default();
        ctx.metrics
            .snapshot_taken(&ns, &name, completed, manifest.size_bytes, took);
        let message = format!("snapshot {id} stored");
        let said = Said {
            kind: EventType::Normal,
            reason: "SnapshotTaken",
            message,
        };
        said.publish(ctx, backup).await;
    }
    Ok(())
}

async fn record_failure(
    ctx: &Context,
    backup: &Backup,
    previous: &BackupStatus,
    failure: &Failure,
) -> Result<(), Error> {
    let (ns, name) = (backup.namespace().unwrap_or_default(), backup.name_any());
    let status = BackupStatus {
        failed_attempts: Some(previous.failed_attempts.unwrap_or(0).saturating_add(1)),
        ..failed_status(backup, previous, failure)
    };
    write_status(ctx, backup, previous, status).await?;
    ctx.metrics.snapshot_failed(&ns, &name, failure.reason);
    let message = failure.message.clone();
    let said = Said {
        kind: EventType::Warning,
        reason: failure.reason,
        message,
    };
    said.publish(ctx, backup).await;
    Ok(())
}

/// The Jobs of `kind` of `backup` in the cache, newest attempt last.
fn jobs_of(ctx: &Context, backup: &Backup, kind: &str) -> Vec<Arc<Job>> {
    let uid = backup.uid();
    let mut jobs: Vec<Arc<Job>> = ctx
        .snapshot_jobs
        .state()
        .into_iter()
        .filter(|job| job.namespace() == backup.namespace())
        .filter(|job| job.labels().get(LABEL_KIND).map(String::as_str) == Some(kind))
        .filter(|job| {
            job.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .collect();
    jobs.sort_by_key(|job| job.annotations().get(ATTEMPT_ANNOTATION).cloned());
    jobs
}

/// The attempt's Job, created (or found, when a previous operator created it) after the
/// partial files of a killed attempt are removed.
async fn start_snapshot_job(ctx: &Context, backup: &Backup, at: Timestamp) -> Result<(), Failure> {
    let url = ctx.snapshot_url.as_deref().ok_or_else(|| {
        Failure::new(
            "NoSnapshotEndpoint",
            "this operator serves no snapshot endpoint for snapshot Jobs (set --snapshot-url, TITAN_SNAPSHOT_URL)",
        )
    })?;
    secrets_present(ctx, backup).await?;
    let store = crate::backup::backup_store(&ctx.backup_dir, backup)
        .map_err(|e| Failure::new("DestinationUnavailable", e.to_string()))?;
    // No snapshot Job of this Backup exists now: no upload is in flight.
    store
        .remove_partials(Duration::ZERO)
        .map_err(store_failure)?;
    let setup = SnapshotJobSetup {
        image: &ctx.job_setup.operator_image,
        titan_dr: &ctx.job_setup.titan_dr_command,
        snapshot_url: url,
    };
    let job = match &backup.spec.source.redis {
        Some(_) => {
            // A Redis of another namespace, which the admission policy allows only when it
            // is the source namespace: that namespace consents as for its objects.
            let ns = backup.namespace().unwrap_or_default();
            match &backup.spec.source.namespace {
                Some(source) if *source != ns => consented(ctx, source, &ns).await?,
                _ => {}
            }
            snapshot_job::snapshot_job(backup, at, &setup)
                .map_err(|e| Failure::new("Internal", e))?
        }
        None => {
            let (namespace, config_maps, secrets, resources) =
                config_selection(ctx, backup).await?;
            let account = access::grant(ctx, backup, &namespace, &resources).await?;
            let selection = ConfigSelection {
                namespace: &namespace,
                config_maps,
                secrets,
                account: &account,
            };
            snapshot_job::config_snapshot_job(backup, at, &selection, &setup)
        }
    };
    create_job(ctx, &job).await
}

/// What a configuration Backup selects: its source namespace (which must consent when it is
/// another), the label selectors as text, and the kinds they select.
async fn config_selection(
    ctx: &Context,
    backup: &Backup,
) -> Result<(String, Option<String>, Option<String>, Vec<&'static str>), Failure> {
    let ns = backup.namespace().unwrap_or_default();
    let source = &backup.spec.source;
    let source_ns = source.namespace.clone().unwrap_or_else(|| ns.clone());
    if source_ns != ns {
        consented(ctx, &source_ns, &ns).await?;
    }
    let text = |field: &str, selector: &Option<crate::api::backup::ObjectSelector>| {
        selector
            .as_ref()
            .map(|s| {
                Selector::try_from(s.selector.clone())
                    .map(|s| s.to_string())
                    .map_err(|e| {
                        let written = serde_json::to_string(&s.selector).unwrap_or_default();
                        let message = format!("spec.source.{field}.selector {written}: {e}");
                        Failure::new("InvalidSelector", message)
                    })
            })
            .transpose()
    };
    let config_maps = text("configMaps", &source.config_maps)?;
    let secrets = text("secrets", &source.secrets)?;
    let mut resources = Vec::new();
    if config_maps.is_some() {
        resources.push("configmaps");
    }
    if secrets.is_some() {
        resources.push("secrets");
    }
    Ok((source_ns, config_maps, secrets, resources))
}

/// The Secrets a snapshot Job mounts exist and hold their keys, and the key is an age
/// identity: a missing or wrong one fails the attempt here, naming it, instead of leaving the
/// Job's pod waiting for a volume that never comes.
async fn secrets_present(ctx: &Context, backup: &Backup) -> Result<(), Failure> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    let key_ref = &backup.spec.encryption.secret_ref;
    let key_name = key_ref.key.as_deref().unwrap_or("key");
    let key_text = secret_value(&secrets, &key_ref.name, key_name).await?;
    BackupKey::parse(&key_text, &format!("secret {}/{key_name}", key_ref.name))
        .map_err(|e| Failure::new("KeyInvalid", e.to_string()))?;
    let password = backup
        .spec
        .source
        .redis
        .as_ref()
        .and_then(|r| r.password_secret_ref.as_ref());
    if let Some(password) = password {
        secret_value(&secrets, &password.name, &password.key).await?;
    }
    if let Some(s3) = &backup.spec.destination.s3 {
        for key in ["accessKeyId", "secretAccessKey"] {
            secret_value(&secrets, &s3.credentials_secret_ref.name, key)
                .await
                .map_err(|failure| Failure::new("CredentialsMissing", failure.message))?;
        }
    }
    Ok(())
}

/// Creates a Backup's Job; one of that name (the same attempt, created by an operator that
/// restarted since) is the same Job.
async fn create_job(ctx: &Context, job: &Job) -> Result<(), Failure> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    match crate::controller::create_owned(&jobs, job).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(TakenBy(message))) => Err(Failure::new("JobNameTaken", message)),
        Err(e) => Err(Failure::new(
            "JobNotCreated",
            format!("creating Job {}: {e}", job.name_any()),
        )),
    }
}

/// Records how a snapshot Job ended, after deleting it: a cache that still shows it then
/// finds it gone, and records nothing twice.
async fn record_job(
    ctx: &Context,
    backup: &Backup,
    previous: &BackupStatus,
    job: &Job,
    outcome: Result<(), String>,
) -> Result<bool, Error> {
    let ns = backup.namespace().unwrap_or_default();
    let failure = match &outcome {
        Ok(()) => None,
        Err(job_failure) => {
            let message = termination_message(ctx, &ns, &job.name_any(), KIND_SNAPSHOT).await;
            let (reason, message) = snapshot_job::failure_of(message.as_deref(), job_failure);
            Some((reason, message))
        }
    };
    if !recorded(ctx, job).await? {
        return Ok(false);
    }
    match failure {
        None => {
            let store = crate::backup::backup_store(&ctx.backup_dir, backup)
                .map_err(|e| Error::Backup(e.to_string()))?;
            let newest = store
                .list()
                .ok()
                .and_then(|l| l.snapshots.into_iter().next());
            record_success(ctx, backup, previous, newest.as_ref()).await?;
        }
        Some((reason, message)) => {
            let failure = Failure {
                reason: leak_reason(&reason),
                message,
            };
            record_failure(ctx, backup, previous, &failure).await?;
        }
    }
    tracing::info!(backup = %backup.name_any(), ns = %ns, job = %job.name_any(), "snapshot Job recorded");
    Ok(true)
}

/// A reason the snapshot reported, as one of the reasons this controller knows (metrics
/// labels and conditions take `'static` text); anything else is `SnapshotFailed`.
fn leak_reason(reason: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "DestinationFull",
        "RedisUnreachable",
        "AuthFailed",
        "ConnectionLost",
        "BadSnapshot",
        "SnapshotFailed",
        "DestinationError",
        "KeyInvalid",
        "DeliveryFailed",
        "OffsiteFailed",
        "Timeout",
        "NothingSelected",
        "SourceUnavailable",
    ];
    KNOWN
        .iter()
        .find(|k| **k == reason)
        .copied()
        .unwrap_or("SnapshotFailed")
}

/// The termination message of container `container` of Job `job`'s pod.
async fn termination_message(
    ctx: &Context,
    ns: &str,
    job: &str,
    container: &str,
) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .ok()?;
    crate::job::newest_first(&list.items)
        .into_iter()
        .find_map(|pod| {
            let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
            let status = statuses.iter().find(|c| c.name == container)?;
            status.state.as_ref()?.terminated.as_ref()?.message.clone()
        })
}

/// Deletes an ended Job whose outcome has been read, before that outcome is recorded: a
/// cache that still shows it then finds it gone (`false`), and nothing is recorded twice.
async fn recorded(ctx: &Context, job: &Job) -> Result<bool, Error> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let delete = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: job.uid().map(|uid| Preconditions {
            uid: Some(uid),
            ..Default::default()
        }),
        ..Default::default()
    };
    match jobs.delete(&job.name_any(), &delete).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(false),
        Err(source) => Err(Error::DeleteJob {
            job: job.name_any(),
            source,
        }),
    }
}

fn until(at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default()
        + Duration::from_millis(50)
}

fn store_failure(error: StoreError) -> Failure {
    Failure::new(error.reason(), error.to_string())
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, Failure> {
    crate::controller::secret_text(secrets, name, key)
        .await
        .map_err(|problem| match problem {
            SecretProblem::Missing(message) => Failure::new("KeyMissing", message),
            SecretProblem::NotText(message) => Failure::new("KeyInvalid", message),
        })
}

/// Whether namespace `source` lets Backups of `backup_ns` snapshot its objects.
async fn consented(ctx: &Context, source: &str, backup_ns: &str) -> Result<(), Failure> {
    let namespace = Api::<Namespace>::all(ctx.client.clone())
        .get_opt(source)
        .await
        .map_err(|e| {
            Failure::new(
                "SourceUnavailable",
                format!("reading namespace {source}: {e}"),
            )
        })?
        .ok_or_else(|| {
            Failure::new(
                "SourceUnavailable",
                format!("namespace {source} does not exist"),
            )
        })?;
    let allowed = namespace
        .annotations()
        .get(BACKUP_NAMESPACES_ANNOTATION)
        .is_some_and(|list| list.split(',').any(|n| n.trim() == backup_ns));
    if allowed {
        return Ok(());
    }
    Err(Failure::new(
        "NotPermitted",
        format!(
            "namespace {source} does not let Backups of {backup_ns} read it: \
             add {backup_ns} to its annotation {BACKUP_NAMESPACES_ANNOTATION}"
        ),
    ))
}

fn succeeded_status(
    ctx: &Context,
    backup: &Backup,
    previous: &BackupStatus,
) -> Result<BackupStatus, Error> {
    let store = crate::backup::backup_store(&ctx.backup_dir, backup)
        .map_err(|e| Error::Backup(e.to_string()))?;
    if let Some(retention) = &backup.spec.retention {
        let policy = RetentionPolicy::from_spec(retention);
        store
            .prune(&policy, Timestamp::now())
            .map_err(|e| Error::Backup(e.to_string()))?;
    }
    let listing = store.list().map_err(|e| Error::Backup(e.to_string()))?;
    // Bounded whatever the retention: a status must stay far below etcd's object limit.
    let snapshots: Vec<_> = listing
        .snapshots
        .iter()
        .take(STATUS_SNAPSHOTS)
        .map(|m| m.to_status(&crate::backup::backup_folder(backup).to_string_lossy()))
        .collect();
    let mut c = Conditions::new(&previous.conditions, backup.metadata.generation);
    let newest = snapshots.first().map(|s| s.id.clone()).unwrap_or_default();
    c.set(
        "Ready",
        TRUE,
        "SnapshotTaken",
        format!("newest snapshot {newest}; {} kept", snapshots.len()),
    );
    Ok(BackupStatus {
        observed_generation: backup.metadata.generation,
        last_schedule_time: previous.last_schedule_time.clone(),
        last_successful_time: snapshots.first().and_then(|s| s.completed_at.clone()),
        failed_attempts: None,
        offsite: crate::backup::offsite_url(backup),
        snapshots,
        conditions: c.merged(),
        ..previous.clone()
    })
}

fn failed_status(backup: &Backup, previous: &BackupStatus, failure: &Failure) -> BackupStatus {
    let mut c = Conditions::new(&previous.conditions, backup.metadata.generation);
    c.set("Ready", FALSE, failure.reason, failure.message.clone());
    BackupStatus {
        observed_generation: backup.metadata.generation,
        conditions: c.merged(),
        ..previous.clone()
    }
}

async fn write_status(
    ctx: &Context,
    backup: &Backup,
    previous: &BackupStatus,
    status: BackupStatus,
) -> Result<(), Error> {
    if &status == previous {
        return Ok(());
    }
    let api: Api<Backup> =
        Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "dr.titan.io/v1alpha1", "kind": "Backup", "status": status});
    api.patch_status(
        &backup.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    Ok(())
}

pub fn error_policy(
    backup: Arc<DeserializeGuard<Backup>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    after_failure(backup.as_ref(), error, &ctx, Duration::from_secs(10))
}

/// [`reconcile`] of an object the watch could decode.
pub async fn reconcile_guarded(
    backup: Arc<DeserializeGuard<Backup>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    reconcile(decoded(&backup)?, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_attempts_are_retried_sooner_than_the_schedule_backing_off() {
        let last: Timestamp = "2026-11-25T02:00:00Z".parse().unwrap();
        let daily = next_due(Some("@daily"), last).unwrap();
        let at = |failed| retry_due(daily, last, failed).unwrap().to_string();
        assert_eq!(at(0), "2026-11-26T00:00:00Z", "no failure: the schedule");
        assert_eq!(at(1), "2026-11-25T02:00:10Z");
        assert_eq!(at(2), "2026-11-25T02:00:20Z");
        assert_eq!(at(4), "2026-11-25T02:01:20Z");
        assert_eq!(at(30), "2026-11-25T03:00:00Z", "at most an hour");
        // The schedule's tick when it comes first; a retry even without a schedule.
        let minutely = next_due(Some("* * * * *"), last).unwrap();
        assert_eq!(
            retry_due(minutely, last, 5).unwrap().to_string(),
            "2026-11-25T02:01:00Z"
        );
        assert_eq!(
            retry_due(None, last, 1).unwrap().to_string(),
            "2026-11-25T02:00:10Z"
        );
    }

    #[test]
    fn the_schedule_gives_the_next_tick_after_the_last_attempt() {
        let last: Timestamp = "2026-11-25T02:03:10Z".parse().unwrap();
        let next = next_due(Some("*/5 * * * *"), last).unwrap().unwrap();
        assert_eq!(next.to_string(), "2026-11-25T02:05:00Z");
        assert_eq!(next_due(None, last).unwrap(), None);
        let daily = next_due(Some("@daily"), last).unwrap().unwrap();
        assert_eq!(daily.to_string(), "2026-11-26T00:00:00Z");
        for wrong in ["every minute", "99 * * * *", "* * * * 9"] {
            assert!(next_due(Some(wrong), last).unwrap_err().contains(wrong));
        }
    }
}
