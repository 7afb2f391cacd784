//! The operator process: connects, waits for its CRDs, runs the controllers.

use std::time::Duration;

use kube::api::ListParams;
use kube::core::DeserializeGuard;
use kube::{Api, Client, CustomResourceExt, ResourceExt};

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::api::duration::{DurationError, GoDuration};
use crate::api::{Backup, DisasterRecovery, RecoveryRun};
use crate::controller::{CachesReady, Context, backup, disaster_recovery, measured, recovery_run};
use crate::job::{JobSetup, LABEL_RECOVERY};
use crate::leader;
use crate::names::{LABEL_BACKUP, LABEL_RUN_NAME};
use crate::snapshot_server::SnapshotServer;
use crate::telemetry::{self, Metrics};

/// Operator settings; every flag can also be set from the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// How long to wait for the CRDs to be Established before giving up.
    #[arg(long, env = "TITAN_CRD_WAIT_SECONDS", default_value_t = 60)]
    pub crd_wait_seconds: u64,
    /// The backup volume: every Backup's `destination.path` is a folder in it.
    #[arg(long, env = "TITAN_BACKUP_DIR", default_value = "/backups")]
    pub backup_dir: std::path::PathBuf,
    /// Address of the snapshot endpoint, from which restore Jobs in any namespace read the
    /// Backups' snapshots (authenticated by their ServiceAccount tokens).
    #[arg(long, env = "TITAN_SNAPSHOT_ADDR", default_value = "127.0.0.1:8081")]
    pub snapshot_addr: std::net::SocketAddr,
    /// The URL by which restore Jobs reach the snapshot endpoint (the chart sets it to its
    /// Service); without it restore steps fail saying so.
    #[arg(long, env = "TITAN_SNAPSHOT_URL")]
    pub snapshot_url: Option<String>,
    /// The operator's own image: every step pod's init container copies titan-step out of
    /// it, and restore and probe steps run `titan-dr` in it.
    #[arg(long, env = "TITAN_OPERATOR_IMAGE", default_value = concat!("ghcr.io/titan-dr/titan-dr:", env!("CARGO_PKG_VERSION")))]
    pub operator_image: String,
    /// The image of the throwaway Redis into which `spec.verify` restores a Backup's newest
    /// snapshot (a Backup's `verify.image` overrides it); it must run `redis-server`.
    #[arg(
        long,
        env = "TITAN_VERIFY_REDIS_IMAGE",
        default_value = "docker.io/library/redis:7.4"
    )]
    pub verify_redis_image: String,
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
    #[arg(long, env = "TITAN_METRICS_ADDR", default_value = "127.0.0.1:8080")]
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
    /// Run the controllers only while holding the Lease `--lease-name`, so that replicas (or
    /// an operator started from a laptop) never reconcile at once. Off: this process
    /// reconciles at once, alone by assumption.
    #[arg(long, env = "TITAN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    #[arg(long, env = "TITAN_LEASE_NAME", default_value = "titan-dr-operator")]
    pub lease_name: String,
    /// The Lease's namespace (the chart: the operator's own); default the client's.
    #[arg(long, env = "TITAN_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long the Lease holds without a renewal: the longest a replica that died keeps the
    /// others from taking over (whole seconds, at least 3).
    #[arg(long, env = "TITAN_LEASE_DURATION", default_value = "10s", value_parser = go_duration)]
    pub lease_duration: Duration,
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

/// The namespace the operator watches, or all.
struct Scope(Option<String>);

impl Scope {
    fn of(config: &Config) -> Self {
        Self(config.namespace.clone().filter(|ns| !ns.is_empty()))
    }

    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self.0.as_deref() {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// A cache and the stream of changes that fills it (and wakes the controller).
type Cached<K> = (
    reflector::Store<K>,
    futures::stream::BoxStream<'static, Result<K, watcher::Error>>,
);

/// The watches of the Jobs this operator made, their Pods (only those: they carry its
/// labels), and the Backups.
struct Watched {
    runs: Cached<RecoveryRun>,
    jobs: Cached<Job>,
    snapshot_jobs: Cached<Job>,
    pods: Cached<Pod>,
    backups: Cached<Backup>,
}

impl Watched {
    fn start(client: &Client, scope: &Scope) -> Self {
        let owned = watcher::Config::default().labels(LABEL_RECOVERY);
        Watched {
            runs: cached(scope.api(client), watcher::Config::default()),
            jobs: cached(scope.api(client), owned.clone()),
            snapshot_jobs: cached(
                scope.api(client),
                watcher::Config::default().labels(LABEL_BACKUP),
            ),
            pods: cached(scope.api(client), owned),
            backups: cached(scope.api(client), watcher::Config::default()),
        }
    }
}

fn cached<K>(api: Api<K>, config: watcher::Config) -> Cached<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .boxed();
    (store, events)
}

/// The operator's watches, each feeding a cache that reconciles read instead of listing.
struct Caches {
    runs: reflector::Store<RecoveryRun>,
    jobs: reflector::Store<Job>,
    snapshot_jobs: reflector::Store<Job>,
    pods: reflector::Store<Pod>,
    backups: reflector::Store<Backup>,
}

/// Runs the controllers until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let client = telemetry::counted_client(kube::Config::infer().await?, metrics.clone())?;
    // Up before the CRDs are: /healthz answers while /readyz waits.
    let listener = tokio::net::TcpListener::bind(config.metrics_addr).await?;
    tokio::spawn(telemetry::serve(listener, metrics.clone()));
    let snapshots = SnapshotServer {
        client: client.clone(),
        backup_dir: config.backup_dir.clone(),
    };
    tokio::spawn(snapshots.serve(tokio::net::TcpListener::bind(config.snapshot_addr).await?));
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, "connected to the API server");
    wait_for_crds(
        &client,
        &Scope::of(&config),
        Duration::from_secs(config.crd_wait_seconds),
    )
    .await?;
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // A lost Lease stops the controllers, and this replica waits for the Lease again in
    // process: an exit would leave it behind the kubelet's restart backoff once the API server
    // is back.
    loop {
        let leadership = lead(&client, &config).await;
        metrics.set_leader(true);
        tracing::info!("titan-dr operator started");
        let term = lead_term(&client, &config, metrics.clone(), leadership).await;
        metrics.set_leader(false);
        if term == Term::Stopped {
            break;
        }
    }
    tracing::info!("titan-dr operator stopped");
    Ok(())
}

/// How a term of leadership ended.
#[derive(Debug, PartialEq)]
enum Term {
    /// A signal: the process stops.
    Stopped,
    /// The Lease is lost: the controllers are dropped before another replica reconciles.
    Lost,
}

/// Runs the controllers, with caches of their own, while `leadership` lasts.
async fn lead_term(
    client: &Client,
    config: &Config,
    metrics: Arc<Metrics>,
    leadership: Option<leader::Leadership>,
) -> Term {
    let client = client.clone();
    let scope = Scope::of(config);
    let watched = Watched::start(&client, &scope);
    let caches = Caches {
        runs: watched.runs.0,
        jobs: watched.jobs.0,
        snapshot_jobs: watched.snapshot_jobs.0,
        pods: watched.pods.0,
        backups: watched.backups.0,
    };
    let (job_events, pod_events, backup_events) =
        (watched.jobs.1, watched.pods.1, watched.backups.1);
    let snapshot_job_events = watched.snapshot_jobs.1;
    let run_events = watched.runs.1;
    // Guarded: an object that does not decode fails alone, and the watch goes on.
    let recoveries: Api<DeserializeGuard<DisasterRecovery>> = scope.api(&client);
    let backups: Api<DeserializeGuard<Backup>> = scope.api(&client);
    let ctx = Arc::new(context(client.clone(), config, metrics, caches));

    let runs: Api<DeserializeGuard<RecoveryRun>> = scope.api(&client);
    let recovery_controller = Controller::new(recoveries, watcher::Config::default())
        // A run's changes change the status of its recovery, which mirrors the newest.
        .owns_stream(run_events)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(
            |dr, ctx| {
                measured(
                    "disaster_recovery",
                    dr,
                    ctx,
                    disaster_recovery::reconcile_guarded,
                )
            },
            disaster_recovery::error_policy,
            ctx.clone(),
        )
        .for_each(log_result);
    let run_controller = Controller::new(runs, watcher::Config::default());
    let run_cache = run_controller.store();
    let run_controller = run_controller
        .owns_stream(job_events)
        // A pod that cannot start changes itself, not its Job: its changes wake the run too.
        .watches_stream(pod_events, run_of_pod)
        // A Backup's new snapshot changes RPOMet and what a restore step restores.
        .watches_stream(backup_events, move |backup: Backup| {
            runs_using(&run_cache, &backup)
        })
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(
            |run, ctx| measured("recovery_run", run, ctx, recovery_run::reconcile_guarded),
            recovery_run::error_policy,
            ctx.clone(),
        )
        .for_each(log_result);
    let backup_controller = Controller::new(backups, watcher::Config::default())
        .owns_stream(snapshot_job_events)
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .shutdown_on_signal()
        .run(
            |b, ctx| measured("backup", b, ctx, backup::reconcile_guarded),
            backup::error_policy,
            ctx,
        )
        .for_each(log_result);
    let controllers =
        futures::future::join3(recovery_controller, run_controller, backup_controller);
    while_leading(controllers, leadership, &config.lease_name).await
}

/// Runs `controllers` until they stop (on a signal), then gives the Lease up; or until the
/// Lease is lost, then drops them.
async fn while_leading(
    controllers: impl std::future::Future,
    leadership: Option<leader::Leadership>,
    lease: &str,
) -> Term {
    let Some(mut leadership) = leadership else {
        controllers.await;
        return Term::Stopped;
    };
    tokio::select! {
        _ = controllers => {}
        () = leadership.lost() => {
            tracing::warn!(%lease, "lost the lease; the controllers stop until it is held again");
            return Term::Lost;
        }
    }
    leadership.release().await;
    Term::Stopped
}

/// The longest wait between two tries for the Lease: short, because after an outage the
/// Lease is free (its holder was fenced) and every second without a leader adds to the RTO.
const LEASE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Waits for the Lease when leader election is on, however long the API server is away.
async fn lead(client: &Client, config: &Config) -> Option<leader::Leadership> {
    if !config.leader_elect {
        return None;
    }
    let mut pause = Duration::from_secs(1);
    loop {
        match leader::acquire(client.clone(), &election(client, config)).await {
            Ok(leadership) => return Some(leadership),
            Err(error) => tracing::warn!(%error, retry_in = ?pause, "waiting for the lease failed"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LEASE_RETRY_MAX);
    }
}

/// The Lease this process competes for, under its pod's name (or host and process id).
fn election(client: &Client, config: &Config) -> leader::Election {
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    leader::Election {
        namespace: config
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        lease: config.lease_name.clone(),
        identity,
        duration: config.lease_duration,
    }
}

/// The runs in flight whose scenario lists `backup` in `backups` or restores it in a step.
fn runs_using(
    runs: &reflector::Store<DeserializeGuard<RecoveryRun>>,
    backup: &Backup,
) -> Vec<ObjectRef<DeserializeGuard<RecoveryRun>>> {
    let (ns, name) = (backup.namespace(), backup.name_any());
    runs.state()
        .into_iter()
        .filter_map(|guard| guard.0.clone().ok())
        .filter(|run| run.namespace() == ns && !run.run_status().has_ended())
        .filter(|run| {
            let Some(scenario) = run.status.as_ref().and_then(|s| s.scenario.as_deref()) else {
                return false;
            };
            let restores = scenario
                .steps
                .iter()
                .filter_map(|s| s.restore.as_ref())
                .any(|r| r.backup == name);
            restores || scenario.backups.contains(&name)
        })
        .map(|run| ObjectRef::new(&run.name_any()).within(&run.namespace().unwrap_or_default()))
        .collect()
}

/// What the controllers get from this configuration.
fn context(client: Client, config: &Config, metrics: Arc<Metrics>, caches: Caches) -> Context {
    Context {
        recorder: Context::recorder(&client),
        client,
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
        verify_redis_image: config.verify_redis_image.clone(),
        caches_ready: CachesReady::of(
            &caches.runs,
            &caches.jobs,
            &caches.snapshot_jobs,
            &caches.pods,
            &caches.backups,
        ),
        runs: caches.runs,
        jobs: caches.jobs,
        snapshot_jobs: caches.snapshot_jobs,
        pods: caches.pods,
        backups: caches.backups,
        failures: Default::default(),
        metrics,
    }
}

/// The RecoveryRun a step's Pod belongs to, from its labels.
fn run_of_pod(pod: Pod) -> Option<ObjectRef<DeserializeGuard<RecoveryRun>>> {
    let run = pod.labels().get(LABEL_RUN_NAME)?;
    Some(ObjectRef::new(run).within(&pod.namespace()?))
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%error, "reconcile error");
    }
}

/// Waits until the API server serves both kinds where the operator watches them: listing
/// them is the test, so no right to read CRDs (cluster-scoped) is needed, and a namespaced
/// install works with Roles alone.
async fn wait_for_crds(client: &Client, scope: &Scope, limit: Duration) -> anyhow::Result<()> {
    let served = async {
        let one = ListParams::default().limit(1);
        loop {
            let recoveries = scope
                .api::<DisasterRecovery>(client)
                .list_metadata(&one)
                .await;
            let runs = scope.api::<RecoveryRun>(client).list_metadata(&one).await;
            let backups = scope.api::<Backup>(client).list_metadata(&one).await;
            match (recoveries, runs, backups) {
                (Ok(_), Ok(_), Ok(_)) => return,
                (Err(error), ..) | (_, Err(error), _) | (.., Err(error)) => {
                    tracing::info!(%error, "waiting for the CRDs to be served");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::time::timeout(limit, served).await.map_err(|_| {
        let names = [
            DisasterRecovery::crd_name(),
            RecoveryRun::crd_name(),
            Backup::crd_name(),
        ]
        .join(", ");
        anyhow::anyhow!("{names} not served after {limit:?}; apply crds/ first")
    })
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
