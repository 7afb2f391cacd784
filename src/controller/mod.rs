//! The controllers of the operator and what they share: the context, the
//! error type and condition bookkeeping.

pub mod backup;
pub mod conditions;
pub mod disaster_recovery;

use std::path::PathBuf;

use kube::Client;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;

use crate::api::Backup;
use crate::job::JobSetup;
use crate::telemetry::Metrics;

pub use crate::names::OPERATOR_MANAGER as MANAGER;

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// How many runs of a DisasterRecovery keep their Jobs for history.
    pub keep_runs: u32,
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
    pub pods: Store<Pod>,
    pub backups: Store<Backup>,
    /// Failures in a row per object, for [`Context::backoff`].
    pub failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The operator's snapshot endpoint as restore Jobs reach it.
    pub snapshot_url: Option<String>,
    pub metrics: Arc<Metrics>,
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
        let closed = |what| move |_| Error::CacheClosed(what);
        self.jobs.wait_until_ready().await.map_err(closed("Jobs"))?;
        self.pods.wait_until_ready().await.map_err(closed("Pods"))?;
        self.backups
            .wait_until_ready()
            .await
            .map_err(closed("Backups"))
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
            note: Some(note.chars().take(1000).collect()),
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
    #[error("writing status: {0}")]
    WriteStatus(#[source] kube::Error),
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
            Error::WriteStatus(_) => "WriteStatusFailed",
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
