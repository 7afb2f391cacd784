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

use crate::job::JobSetup;
use crate::telemetry::Metrics;

/// The field manager of every write the operator makes.
pub const MANAGER: &str = "titan-dr-operator";

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
    /// The operator's snapshot endpoint as restore Jobs reach it.
    pub snapshot_url: Option<String>,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(client: Client, config: &crate::operator::Config) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            keep_runs: config.keep_runs,
            pod_start_grace: config.pod_start_grace,
            backup_dir: config.backup_dir.clone(),
            job_setup: JobSetup {
                operator_image: config.operator_image.clone(),
                titan_dr_command: config.restore_command.clone(),
                titan_step_path: config.titan_step_path.clone(),
                default_timeout: config.default_step_timeout,
                restore: None,
            },
            snapshot_url: config.snapshot_url.clone(),
            metrics: Arc::default(),
        }
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
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let result = reconcile(object, ctx.clone()).await;
    let failure = result.as_ref().err().map(Error::category);
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
        }
    }
}
