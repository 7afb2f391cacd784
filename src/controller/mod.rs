//! The controllers of the operator and what they share: the context, the
//! error type and condition bookkeeping.

pub mod backup;
pub mod conditions;
pub mod disaster_recovery;
pub mod recovery_run;

use std::path::PathBuf;

use kube::Client;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;

use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::api::{Backup, RecoveryRun};
use crate::job::JobSetup;
use crate::names::LABEL_OWNER_UID;
use crate::telemetry::Metrics;

pub use crate::names::OPERATOR_MANAGER as MANAGER;

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// How long a pod may fail to pull its image, or find no node, before its
    /// attempt fails.
    pub pod_start_grace: Duration,
    /// The operator's backup volume; every Backup's destination is a folder in it.
    pub backup_dir: PathBuf,
    /// What every Job is built with; the controller adds the restore part for restore steps.
    pub job_setup: JobSetup,
    /// The operator's caches of the Jobs it made, their Pods, and the Backups: reconciles read
    /// these instead of listing.
    pub jobs: Store<Job>,
    /// The RecoveryRuns: a recovery's history, and the runs a new run must not run beside.
    pub runs: Store<RecoveryRun>,
    /// The Backups' snapshot Jobs (label `dr.titan.io/backup`).
    pub snapshot_jobs: Store<Job>,
    pub pods: Store<Pod>,
    pub backups: Store<Backup>,
    /// Resolves once the three caches above are filled.
    pub caches_ready: CachesReady,
    /// Failures in a row per object, for [`Context::backoff`].
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The operator's snapshot endpoint as restore Jobs reach it.
    pub snapshot_url: Option<String>,
    /// The image of the throwaway Redis of a Backup's restore checks.
    pub verify_redis_image: String,
    pub metrics: Arc<Metrics>,
}

/// Resolves once the Job, snapshot Job, Pod and Backup caches hold what the cluster had when their watches
/// started; fails naming a cache whose watch ended first.
///
/// One future, shared by every reconcile that waits: `Store::wait_until_ready` of
/// kube-runtime 5 wakes only the last of several concurrent waiters (its oneshot receiver
/// keeps one waker), and a reconcile stranded there never ends, so its object is never
/// reconciled again by this operator.
#[derive(Clone)]
pub struct CachesReady(Shared<BoxFuture<'static, Result<(), &'static str>>>);

impl CachesReady {
    pub fn of(
        runs: &Store<RecoveryRun>,
        jobs: &Store<Job>,
        snapshot_jobs: &Store<Job>,
        pods: &Store<Pod>,
        backups: &Store<Backup>,
    ) -> Self {
        let (jobs, pods, backups) = (jobs.clone(), pods.clone(), backups.clone());
        let snapshot_jobs = snapshot_jobs.clone();
        let runs = runs.clone();
        let ready = async move {
            runs.wait_until_ready().await.map_err(|_| "RecoveryRuns")?;
            jobs.wait_until_ready().await.map_err(|_| "Jobs")?;
            let snapshot_jobs = snapshot_jobs.wait_until_ready();
            snapshot_jobs.await.map_err(|_| "snapshot Jobs")?;
            pods.wait_until_ready().await.map_err(|_| "Pods")?;
            backups.wait_until_ready().await.map_err(|_| "Backups")
        };
        CachesReady(ready.boxed().shared())
    }
}

/// The longest wait between two attempts at an object whose reconciles keep failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The wait after the `failures`-th failure in a row: `base`, doubling, at most 5 minutes.
fn backoff_after(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// Identifies an object in [`Context::failures`].
fn failure_key<K: kube::Resource<DynamicType = ()>>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl Context {
    /// How long to wait before reconciling `object` again after a failure: `base`, doubled
    /// with each failure in a row of that object (reset by its next success), at most 5 min.
    pub fn backoff<K: kube::Resource<DynamicType = ()>>(
        &self,
        object: &K,
        base: Duration,
    ) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(failure_key(object)).or_insert(0);
        *count = count.saturating_add(1);
        backoff_after(base, *count)
    }

    /// Waits until the caches hold what the cluster had when they started: a decision made
    /// on an empty cache would start again what has already run.
    pub async fn caches_ready(&self) -> Result<(), Error> {
        self.caches_ready
            .0
            .clone()
            .await
            .map_err(Error::CacheClosed)
    }

    /// The Events recorder of this operator instance (`POD_NAME`, when in a pod).
    pub fn recorder(client: &Client) -> Recorder {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Recorder::new(client.clone(), reporter)
    }
}

/// The object a watch could decode, or why it could not: one malformed object (written before
/// a schema change, say) fails its own reconciles instead of stopping the watch of them all.
pub fn decoded<K: Clone>(guard: &DeserializeGuard<K>) -> Result<Arc<K>, Error> {
    match &guard.0 {
        Ok(object) => Ok(Arc::new(object.clone())),
        Err(invalid) => Err(Error::InvalidObject(invalid.error.clone())),
    }
}

/// What to do after a failed reconcile of `object`: report it (a Warning Event whose reason
/// is the error's category), then wait for a change of an object that does not decode, or
/// back off, per object, from `base`.
pub fn after_failure<K>(object: &K, error: &Error, ctx: &Arc<Context>, base: Duration) -> Action
where
    K: kube::Resource<DynamicType = ()>,
{
    ctx.clone().report_failure(object.object_ref(&()), error);
    let name = object.meta().name.clone().unwrap_or_default();
    tracing::warn!(kind = %K::kind(&()), %name, category = error.category(), %error, "reconcile failed");
    match error {
        Error::InvalidObject(_) => Action::await_change(),
        _ => Action::requeue(ctx.backoff(object, base)),
    }
}

/// Runs one reconcile and records it in the metrics, labelled `controller`.
pub async fn measured<K, Fut>(
    controller: &'static str,
    object: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Error>
where
    K: kube::Resource<DynamicType = ()>,
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let key = failure_key(object.as_ref());
    let result = reconcile(object, ctx.clone()).await;
    let failure = result.as_ref().err().map(Error::category);
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
    ctx.metrics
        .reconciled(controller, started.elapsed(), failure);
    result
}

impl Context {
    /// Publishes an Event about `object`; a failure to publish is only logged.
    pub async fn publish(
        &self,
        object: ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(within_bytes(note, MAX_EVENT_NOTE).to_owned()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object).await {
            tracing::warn!(%error, "publishing an event failed");
        }
    }

    /// Reports a failed reconcile as a Warning Event whose reason is the error's category.
    pub fn report_failure(self: Arc<Self>, object: ObjectReference, error: &Error) {
        let note = error.to_string();
        let reason = error.category();
        tokio::spawn(async move {
            self.publish(object, EventType::Warning, reason, &note)
                .await
        });
    }
}

/// The API server refuses an Event whose note passes 1 KiB (bytes, not characters).
const MAX_EVENT_NOTE: usize = 1024;

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn within_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whom a Job that was found under the name of a new one belongs to, when not to its
/// would-be owner.
#[derive(Debug, Clone, PartialEq)]
pub struct TakenBy(pub String);

/// Creates `job`. A Job already under its name counts as created only when its
/// `dr.titan.io/owner-uid` is `job`'s: then an earlier reconcile made it and lost the
/// record. Anything else there (another resource's Job, one left by a deleted resource of
/// the same name, one made by hand) is `Ok(Err(TakenBy))`, never adopted.
pub async fn create_owned(jobs: &Api<Job>, job: &Job) -> Result<Result<(), TakenBy>, kube::Error> {
    let uid = |j: &Job| j.labels().get(LABEL_OWNER_UID).cloned();
    match jobs.create(&PostParams::default(), job).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let found = jobs.get(&job.name_any()).await?;
            if uid(&found).is_some() && uid(&found) == uid(job) {
                return Ok(Ok(()));
            }
            let owner = found
                .owner_references()
                .first()
                .map(|o| format!("{} {} (uid {})", o.kind, o.name, o.uid))
                .unwrap_or_else(|| "no owner".to_owned());
            Ok(Err(TakenBy(format!(
                "Job {} already exists and belongs to {owner}, not to this resource",
                job.name_any()
            ))))
        }
        Err(e) => Err(e),
    }
}

/// Why a Secret's value could not be read as text.
#[derive(Debug)]
pub enum SecretProblem {
    /// The Secret cannot be read, does not exist, or has no such key.
    Missing(String),
    /// The value is not UTF-8.
    NotText(String),
}

/// The text under `key` of Secret `name`.
pub async fn secret_text(
    secrets: &Api<k8s_openapi::api::core::v1::Secret>,
    name: &str,
    key: &str,
) -> Result<String, SecretProblem> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| SecretProblem::Missing(format!("reading secret {name}: {e}")))?
        .ok_or_else(|| SecretProblem::Missing(format!("secret {name} does not exist")))?;
    let value = secret.data.and_then(|mut d| d.remove(key));
    let value =
        value.ok_or_else(|| SecretProblem::Missing(format!("secret {name} has no key {key:?}")))?;
    String::from_utf8(value.0)
        .map_err(|_| SecretProblem::NotText(format!("secret {name} key {key:?} is not text")))
}

/// Writes an object's status with server-side apply, as the operator, unless nothing changed.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    previous: &S,
    status: &S,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if status == previous {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let params = kube::api::PatchParams::apply(MANAGER).force();
    api.patch_status(name, &params, &kube::api::Patch::Apply(&patch))
        .await
        .map_err(Error::WriteStatus)?;
    Ok(())
}

/// Why a reconcile failed. The category names the stage; it is the metric
/// label and the Warning Event's reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the cluster: {0}")]
    Observe(#[source] kube::Error),
    #[error("creating Job {job}: {source}")]
    CreateJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("stopping Job {job}, whose pod cannot start: {source}")]
    StopJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the finished snapshot Job {job}: {source}")]
    DeleteJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("creating or changing RecoveryRun {run}: {source}")]
    WriteRun {
        run: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating or deleting drill namespace {namespace}: {source}")]
    DrillNamespace {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("pruning old runs: {0}")]
    Prune(#[source] kube::Error),
    #[error("reading the backup store: {0}")]
    Backup(String),
    #[error("the operator's cache of {0} stopped")]
    CacheClosed(&'static str),
    #[error("the object does not decode: {0}")]
    InvalidObject(String),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe(_) => "ObserveFailed",
            Error::CreateJob { .. } => "CreateJobFailed",
            Error::StopJob { .. } => "StopJobFailed",
            Error::DeleteJob { .. } => "DeleteJobFailed",
            Error::WriteStatus(_) => "WriteStatusFailed",
            Error::WriteRun { .. } => "WriteRunFailed",
            Error::DrillNamespace { .. } => "DrillNamespaceFailed",
            Error::Prune(_) => "PruneFailed",
            Error::Backup(_) => "BackupStoreFailed",
            Error::CacheClosed(_) => "CacheClosed",
            Error::InvalidObject(_) => "InvalidObject",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_by_bytes_on_a_character_boundary() {
        let note = "é".repeat(1000); // 2000 bytes
        let cut = within_bytes(&note, MAX_EVENT_NOTE);
        assert_eq!(cut.len(), 1024);
        assert!(
            within_bytes("ab€", 4) == "ab",
            "a 3-byte character is not split"
        );
        assert_eq!(within_bytes("short", 1024), "short");
    }
    use futures::task::{ArcWake, waker};
    use kube::runtime::{reflector, watcher};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context as TaskContext, Poll};

    /// A waker that remembers being woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl ArcWake for Flag {
        fn wake_by_ref(flag: &Arc<Self>) {
            flag.0.store(true, Ordering::SeqCst);
        }
    }

    fn init<K: Clone + kube::Resource<DynamicType = ()>>(writer: &mut reflector::store::Writer<K>) {
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }

    /// Why [`CachesReady`] exists: if this starts to fail, kube-runtime wakes every waiter
    /// and reconciles may wait on the stores themselves again.
    #[test]
    fn kube_runtime_wakes_only_the_last_of_two_waiters_on_a_store() {
        let (store, mut writer) = reflector::store::<Pod>();
        let (first, second) = (Arc::new(Flag::default()), Arc::new(Flag::default()));
        let mut waiting_first = Box::pin(store.wait_until_ready());
        let mut waiting_second = Box::pin(store.wait_until_ready());
        let first_waker = waker(first.clone());
        let second_waker = waker(second.clone());
        let mut first_cx = TaskContext::from_waker(&first_waker);
        assert!(waiting_first.as_mut().poll(&mut first_cx).is_pending());
        let mut second_cx = TaskContext::from_waker(&second_waker);
        assert!(waiting_second.as_mut().poll(&mut second_cx).is_pending());
        init(&mut writer);
        assert!(second.0.load(Ordering::SeqCst));
        assert!(
            !first.0.load(Ordering::SeqCst),
            "the first waiter is not woken"
        );
    }

    #[test]
    fn every_waiter_on_the_caches_is_woken_when_all_are_filled() {
        let (runs, mut run_writer) = reflector::store::<RecoveryRun>();
        let (jobs, mut job_writer) = reflector::store::<Job>();
        let (snapshot_jobs, mut snapshot_job_writer) = reflector::store::<Job>();
        let (pods, mut pod_writer) = reflector::store::<Pod>();
        let (backups, mut backup_writer) = reflector::store::<Backup>();
        let ready = CachesReady::of(&runs, &jobs, &snapshot_jobs, &pods, &backups);
        let flags: Vec<Arc<Flag>> = (0..3).map(|_| Arc::new(Flag::default())).collect();
        let mut waiting: Vec<_> = flags.iter().map(|_| ready.0.clone()).collect();
        for (future, flag) in waiting.iter_mut().zip(&flags) {
            let waker = waker(flag.clone());
            let pending = future.poll_unpin(&mut TaskContext::from_waker(&waker));
            assert!(pending.is_pending(), "nothing is filled yet");
        }
        init(&mut run_writer);
        init(&mut job_writer);
        init(&mut snapshot_job_writer);
        init(&mut pod_writer);
        // Woken once for each cache filled: each wakes whoever waits at that moment.
        for (future, flag) in waiting.iter_mut().zip(&flags) {
            if flag.0.swap(false, Ordering::SeqCst) {
                let waker = waker(flag.clone());
                let _ = future.poll_unpin(&mut TaskContext::from_waker(&waker));
            }
        }
        init(&mut backup_writer);
        for (future, flag) in waiting.iter_mut().zip(&flags) {
            assert!(flag.0.load(Ordering::SeqCst), "every waiter is woken");
            let waker = waker(flag.clone());
            let done = future.poll_unpin(&mut TaskContext::from_waker(&waker));
            assert!(matches!(done, Poll::Ready(Ok(()))));
        }
    }

    #[test]
    fn caches_whose_watch_ended_unfilled_name_the_cache() {
        let (runs, mut run_writer) = reflector::store::<RecoveryRun>();
        let (jobs, mut job_writer) = reflector::store::<Job>();
        let (snapshot_jobs, mut snapshot_job_writer) = reflector::store::<Job>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let (backups, _backup_writer) = reflector::store::<Backup>();
        let ready = CachesReady::of(&runs, &jobs, &snapshot_jobs, &pods, &backups);
        init(&mut run_writer);
        init(&mut job_writer);
        init(&mut snapshot_job_writer);
        drop(pod_writer);
        assert_eq!(futures::executor::block_on(ready.0), Err("Pods"));
    }

    #[test]
    fn an_object_that_does_not_decode_is_an_error_of_its_own() {
        let bad: DeserializeGuard<crate::api::DisasterRecovery> =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "dr.titan.io/v1alpha1", "kind": "DisasterRecovery",
                "metadata": {"name": "old", "namespace": "titan"},
                "spec": {"scenario": "x", "steps": [{"name": "a", "timeout": "soon"}]}
            }))
            .expect("the guard decodes anything with metadata");
        let error = decoded(&bad).expect_err("not a valid resource");
        assert_eq!(error.category(), "InvalidObject");
        assert!(error.to_string().contains("soon"), "{error}");
        assert_eq!(kube::ResourceExt::name_any(&bad), "old");
    }

    #[test]
    fn failures_in_a_row_back_off_exponentially_up_to_five_minutes() {
        let base = Duration::from_secs(5);
        let waits: Vec<u64> = (1..=8).map(|n| backoff_after(base, n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff_after(base, u32::MAX), MAX_BACKOFF);
    }
}
