//! The operator process: connects, waits for its CRDs, runs the controllers.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt, ResourceExt};

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::api::duration::{DurationError, GoDuration};
use crate::api::{Backup, DisasterRecovery};
use crate::controller::{Context, backup, disaster_recovery, measured};
use crate::job::LABEL_RECOVERY;
use crate::snapshot_server::SnapshotServer;
use crate::telemetry;

/// Operator settings; every flag can also be set from the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// How long to wait for the CRDs to be Established before giving up.
    #[arg(long, env = "TITAN_CRD_WAIT_SECONDS", default_value_t = 60)]
    pub crd_wait_seconds: u64,
    /// How many runs of a DisasterRecovery keep their Jobs; older runs' Jobs are deleted
    /// when a new run starts.
    #[arg(long, env = "TITAN_KEEP_RUNS", default_value_t = 3)]
    pub keep_runs: u32,
    /// The backup volume: every Backup's `destination.path` is a folder in it.
    #[arg(long, env = "TITAN_BACKUP_DIR", default_value = "/backups")]
    pub backup_dir: std::path::PathBuf,
    /// Address of the snapshot endpoint, from which restore Jobs in any namespace read the
    /// Backups' snapshots (authenticated by their ServiceAccount tokens).
    #[arg(long, env = "TITAN_SNAPSHOT_ADDR", default_value = "0.0.0.0:8081")]
    pub snapshot_addr: std::net::SocketAddr,
    /// The URL by which restore Jobs reach the snapshot endpoint (the chart sets it to its
    /// Service); without it restore steps fail saying so.
    #[arg(long, env = "TITAN_SNAPSHOT_URL")]
    pub snapshot_url: Option<String>,
    /// The operator's own image: every step pod's init container copies titan-step out of
    /// it, and restore and probe steps run `titan-dr` in it.
    #[arg(long, env = "TITAN_OPERATOR_IMAGE", default_value = concat!("ghcr.io/titan-dr/titan-dr:", env!("CARGO_PKG_VERSION")))]
    pub operator_image: String,
    /// Path of the static titan-step binary in the operator's image.
    #[arg(
        long,
        env = "TITAN_STEP_PATH",
        default_value = "/usr/local/bin/titan-step"
    )]
    pub titan_step_path: String,
    /// The `titan-dr` command in the operator's image, run by restore and probe steps.
    #[arg(long, env = "TITAN_RESTORE_COMMAND", default_value = "titan-dr")]
    pub restore_command: String,
    /// Deadline (`activeDeadlineSeconds`) of a step attempt whose step sets no `timeout`, as a
    /// Go-style duration; `0` sets none.
    #[arg(long, env = "TITAN_DEFAULT_STEP_TIMEOUT", default_value = "30m", value_parser = go_duration)]
    pub default_step_timeout: Duration,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "TITAN_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "TITAN_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// How many resources are reconciled at once.
    #[arg(long, env = "TITAN_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// How long a step's pod may fail to pull its image, find no node, or be refused by
    /// admission before its attempt fails (errors that cannot clear fail it at once).
    #[arg(long, env = "TITAN_POD_START_GRACE", default_value = "60s", value_parser = go_duration)]
    pub pod_start_grace: Duration,
}

/// The operator's duration flags have the syntax of the spec's durations.
fn go_duration(text: &str) -> Result<Duration, DurationError> {
    text.parse::<GoDuration>().map(|d| d.duration())
}

pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
}

/// Runs the controllers until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let ctx = Arc::new(Context::new(client.clone(), &config));
    // Up before the CRDs are: /healthz answers while /readyz waits.
    let listener = tokio::net::TcpListener::bind(config.metrics_addr).await?;
    tokio::spawn(telemetry::serve(listener, ctx.metrics.clone()));
    let snapshots = SnapshotServer {
        client: client.clone(),
        backup_dir: config.backup_dir.clone(),
    };
    tokio::spawn(snapshots.serve(tokio::net::TcpListener::bind(config.snapshot_addr).await?));
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, "connected to the API server");
    wait_for_crds(&client, Duration::from_secs(config.crd_wait_seconds)).await?;
    ctx.metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("titan-dr operator started");

    let (recoveries, jobs): (Api<DisasterRecovery>, Api<Job>) =
        match config.namespace.as_deref().filter(|ns| !ns.is_empty()) {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
    // Only the Jobs this operator made, and their Pods, are watched (and cached).
    let owned_jobs = watcher::Config::default().labels(LABEL_RECOVERY);
    let backups: Api<Backup> = match config.namespace.as_deref().filter(|ns| !ns.is_empty()) {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let pods: Api<Pod> = match config.namespace.as_deref().filter(|ns| !ns.is_empty()) {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let recovery_controller = Controller::new(recoveries, watcher::Config::default())
        .owns(jobs, owned_jobs.clone())
        // A pod that cannot start changes itself, not its Job: its changes wake the run too.
        .watches(pods, owned_jobs, recovery_of_pod)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(
            |dr, ctx| measured("disaster_recovery", dr, ctx, disaster_recovery::reconcile),
            disaster_recovery::error_policy,
            ctx.clone(),
        )
        .for_each(log_result);
    let backup_controller = Controller::new(backups, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(
            |b, ctx| measured("backup", b, ctx, backup::reconcile),
            backup::error_policy,
            ctx,
        )
        .for_each(log_result);
    futures::join!(recovery_controller, backup_controller);
    tracing::info!("titan-dr operator stopped");
    Ok(())
}

/// The DisasterRecovery a step's Pod belongs to, from its labels.
fn recovery_of_pod(pod: Pod) -> Option<ObjectRef<DisasterRecovery>> {
    let recovery = pod.labels().get(LABEL_RECOVERY)?;
    Some(ObjectRef::new(recovery).within(&pod.namespace()?))
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%error, "reconcile error");
    }
}

/// Waits until every CRD the operator serves is Established.
pub async fn wait_for_crds(client: &Client, limit: Duration) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [DisasterRecovery::crd_name(), Backup::crd_name()] {
        let established = await_condition(crds.clone(), name, conditions::is_crd_established());
        tokio::time::timeout(limit, established)
            .await
            .map_err(|_| {
                anyhow::anyhow!("CRD {name} not Established after {limit:?}; apply crds/ first")
            })??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Config;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn the_step_settings_have_defaults_and_parse_durations() {
        let config = Command::parse_from(["operator"]).config;
        assert_eq!(config.default_step_timeout.as_secs(), 30 * 60);
        assert_eq!(config.titan_step_path, "/usr/local/bin/titan-step");
        assert!(
            config
                .operator_image
                .starts_with("ghcr.io/titan-dr/titan-dr:")
        );
        let config = Command::parse_from([
            "operator",
            "--default-step-timeout",
            "1h30m",
            "--operator-image",
            "registry.example/titan-dr:1",
        ])
        .config;
        assert_eq!(config.default_step_timeout.as_secs(), 90 * 60);
        assert_eq!(config.operator_image, "registry.example/titan-dr:1");
        assert!(Command::try_parse_from(["operator", "--default-step-timeout", "soon"]).is_err());
        let none = Command::parse_from(["operator", "--default-step-timeout", "0"]).config;
        assert!(none.default_step_timeout.is_zero());
    }
}
