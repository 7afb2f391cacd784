//! The operator seen from outside: Prometheus metrics of every reconcile, and
//! the `/healthz` and `/readyz` endpoints for the kubelet's probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    controller: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabels {
    namespace: String,
    backup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupFailureLabels {
    namespace: String,
    backup: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    namespace: String,
    recovery: String,
    scenario: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunOutcomeLabels {
    namespace: String,
    recovery: String,
    scenario: String,
    mode: String,
    outcome: String,
}

/// Which run a run metric is about.
pub struct RunOf<'a> {
    pub namespace: &'a str,
    pub recovery: &'a str,
    pub scenario: &'a str,
    /// `Recovery` or `Drill`.
    pub mode: &'a str,
}

impl RunOf<'_> {
    fn labels(&self) -> RunLabels {
        RunLabels {
            namespace: self.namespace.into(),
            recovery: self.recovery.into(),
            scenario: self.scenario.into(),
            mode: self.mode.into(),
        }
    }
}

/// What the runs of each scenario achieved: the seed asks for monthly tests of every
/// scenario and RTOs met, so both are alertable.
#[derive(Default)]
struct RunMetrics {
    ended: Family<RunOutcomeLabels, Counter>,
    achieved_rto: Family<RunLabels, Gauge<f64, AtomicU64>>,
    rto_objective: Family<RunLabels, Gauge<f64, AtomicU64>>,
    last_success: Family<RunLabels, Gauge<f64, AtomicU64>>,
}

impl RunMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "runs",
            "Runs that ended, by scenario, mode and outcome",
            self.ended.clone(),
        );
        registry.register(
            "run_achieved_rto_seconds",
            "The achieved RTO of the newest successful run",
            self.achieved_rto.clone(),
        );
        registry.register(
            "run_rto_objective_seconds",
            "The scenario's RTO objective",
            self.rto_objective.clone(),
        );
        registry.register(
            "run_last_success_timestamp_seconds",
            "When the newest successful run of the scenario ended (Unix time)",
            self.last_success.clone(),
        );
    }
}

/// What is known of each Backup's snapshots, as Velero users alert on theirs.
#[derive(Default)]
struct BackupMetrics {
    last_success: Family<BackupLabels, Gauge<f64, AtomicU64>>,
    last_verified: Family<BackupLabels, Gauge<f64, AtomicU64>>,
    size: Family<BackupLabels, Gauge>,
    duration: Family<BackupLabels, Gauge<f64, AtomicU64>>,
    failures: Family<BackupFailureLabels, Counter>,
}

impl BackupMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When the newest snapshot of the Backup completed (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            "backup_last_verified_timestamp_seconds",
            "When a restore check of the Backup's newest snapshot last succeeded (Unix time)",
            self.last_verified.clone(),
        );
        registry.register(
            "backup_last_size_bytes",
            "Size of the newest snapshot as stored (encrypted)",
            self.size.clone(),
        );
        registry.register(
            "backup_last_duration_seconds",
            "How long the newest successful snapshot took",
            self.duration.clone(),
        );
        registry.register(
            "backup_failures",
            "Snapshot attempts that failed, by the reason of the Ready condition",
            self.failures.clone(),
        );
    }
}

/// Reconcile counts, failures by category and durations, per controller.
pub struct Metrics {
    backups: BackupMetrics,
    runs: RunMetrics,
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    requests: Family<RequestLabels, Counter>,
    /// True once the CRDs are Established and the controllers run.
    pub ready: AtomicBool,
    /// 1 while this replica holds the Lease and runs the controllers.
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("titan_dr");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        // 1 ms to about 16 s: a reconcile creates Jobs; a Backup's one takes a snapshot.
        let duration = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Requests to the API server, by verb and resource",
            requests.clone(),
        );
        let backups = BackupMetrics::default();
        backups.register(&mut registry);
        let runs = RunMetrics::default();
        runs.register(&mut registry);
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and runs the controllers",
            leader.clone(),
        );
        Metrics {
            backups,
            runs,
            registry,
            reconciles,
            failures,
            duration,
            requests,
            ready: AtomicBool::new(false),
            leader,
        }
    }
}

impl Metrics {
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records one reconcile of `controller`; `failure` is the error's category.
    pub fn reconciled(&self, controller: &str, took: Duration, failure: Option<&str>) {
        let label = ControllerLabel {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&label).inc();
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Some(category) = failure {
            let labels = FailureLabels {
                controller: controller.to_string(),
                category: category.to_string(),
            };
            self.failures.get_or_create(&labels).inc();
        }
    }

    /// Records a Backup's snapshot: completed at `completed` (Unix seconds), `size` bytes
    /// stored, taken in `took`.
    pub fn snapshot_taken(
        &self,
        namespace: &str,
        backup: &str,
        completed: f64,
        size: u64,
        took: Duration,
    ) {
        let labels = BackupLabels {
            namespace: namespace.into(),
            backup: backup.into(),
        };
        let m = &self.backups;
        m.last_success.get_or_create(&labels).set(completed);
        m.size
            .get_or_create(&labels)
            .set(i64::try_from(size).unwrap_or(i64::MAX));
        m.duration.get_or_create(&labels).set(took.as_secs_f64());
    }

    /// The completion time of a Backup's newest successful restore check.
    pub fn snapshot_verified(&self, namespace: &str, backup: &str, at: f64) {
        let labels = BackupLabels {
            namespace: namespace.into(),
            backup: backup.into(),
        };
        self.backups.last_verified.get_or_create(&labels).set(at);
    }

    /// Counts a failed snapshot attempt of a Backup, by its reason.
    pub fn snapshot_failed(&self, namespace: &str, backup: &str, reason: &str) {
        let labels = BackupFailureLabels {
            namespace: namespace.into(),
            backup: backup.into(),
            reason: reason.into(),
        };
        self.backups.failures.get_or_create(&labels).inc();
    }

    /// Counts a run that ended with `outcome` (`Succeeded`, `Failed`).
    pub fn run_ended(&self, run: &RunOf, outcome: &str) {
        let labels = RunOutcomeLabels {
            namespace: run.namespace.into(),
            recovery: run.recovery.into(),
            scenario: run.scenario.into(),
            mode: run.mode.into(),
            outcome: outcome.into(),
        };
        self.runs.ended.get_or_create(&labels).inc();
    }

    /// The newest successful run (its end, Unix seconds, and achieved RTO) and the RTO
    /// objective: set from the status at every reconcile of an ended run, so a restarted
    /// operator has them again.
    pub fn run_succeeded(
        &self,
        run: &RunOf,
        ended_at: f64,
        rto: Duration,
        objective: Option<Duration>,
    ) {
        let labels = run.labels();
        let m = &self.runs;
        m.last_success.get_or_create(&labels).set(ended_at);
        m.achieved_rto.get_or_create(&labels).set(rto.as_secs_f64());
        if let Some(objective) = objective {
            m.rto_objective
                .get_or_create(&labels)
                .set(objective.as_secs_f64());
        }
    }

    /// Counts one request to the API server.
    pub fn requested<B>(&self, request: &Request<B>) {
        let (verb, resource) = verb_and_resource(request);
        let labels = RequestLabels {
            verb: verb.into(),
            resource,
        };
        self.requests.get_or_create(&labels).inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A client of the API server whose every request is counted in `metrics` (what a reconcile
/// costs the API server is part of how the operator is judged).
///
/// # Errors
///
/// The configuration does not make a client.
pub fn counted_client(config: kube::Config, metrics: Arc<Metrics>) -> kube::Result<kube::Client> {
    let count = tower::util::MapRequestLayer::new(move |request: Request<kube::client::Body>| {
        metrics.requested(&request);
        request
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

/// The Kubernetes verb (`get`, `list`, `watch`, `create`, `patch`, ...) and resource
/// (`jobs`, `disasterrecoveries/status`) of a request, from its method and path.
fn verb_and_resource<B>(request: &Request<B>) -> (&'static str, String) {
    let path = request.uri().path();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return (method_verb(request, true), path.to_string()),
    };
    let (resource, name, sub) = match rest {
        ["namespaces", _, resource, rest @ ..] => (*resource, rest.first(), rest.get(1)),
        [resource, rest @ ..] => (*resource, rest.first(), rest.get(1)),
        [] => ("", None, None),
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    (method_verb(request, name.is_some()), resource)
}

fn method_verb<B>(request: &Request<B>, named: bool) -> &'static str {
    let watch = request
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match (request.method().as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    serve_http(listener, "metrics", move |request| {
        let metrics = metrics.clone();
        async move { respond(&request, &metrics) }
    })
    .await
}

/// At most this many connections at once per endpoint; more wait to be accepted.
const MAX_CONNECTIONS: usize = 256;
/// A client that has not sent a request's headers by then is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts HTTP/1 connections on `listener` until the process ends, each request answered
/// by `answer`; `what` names the endpoint in the log of a failed connection. Bounded: at
/// most [`MAX_CONNECTIONS`] at once, headers within [`HEADER_TIMEOUT`], and a failing
/// accept (no file descriptors left) waits before the next instead of spinning.
pub async fn serve_http<A, F, B>(listener: tokio::net::TcpListener, what: &'static str, answer: A)
where
    A: Fn(Request<hyper::body::Incoming>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, endpoint = what, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(request);
                async move { Ok::<_, std::convert::Infallible>(response.await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, endpoint = what, "connection failed");
            }
            drop(slot);
        });
    }
}

fn respond<B>(request: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.encode()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "ready\n".to_string())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the CRDs\n".to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backup_has_its_newest_snapshot_and_failures_by_reason() {
        let metrics = Metrics::default();
        let took = Duration::from_millis(1500);
        metrics.snapshot_taken("titan", "redis", 1_795_000_000.0, 4096, took);
        metrics.snapshot_failed("titan", "redis", "RedisUnreachable");
        metrics.snapshot_failed("titan", "redis", "RedisUnreachable");
        let text = metrics.encode();
        for line in [
            r#"titan_dr_backup_last_success_timestamp_seconds{namespace="titan",backup="redis"} 1795000000.0"#,
            r#"titan_dr_backup_last_size_bytes{namespace="titan",backup="redis"} 4096"#,
            r#"titan_dr_backup_last_duration_seconds{namespace="titan",backup="redis"} 1.5"#,
            r#"titan_dr_backup_failures_total{namespace="titan",backup="redis",reason="RedisUnreachable"} 2"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn reconciles_failures_and_durations_are_counted_per_controller() {
        let metrics = Metrics::default();
        metrics.reconciled("disaster_recovery", Duration::from_millis(3), None);
        metrics.reconciled(
            "disaster_recovery",
            Duration::from_millis(5),
            Some("CreateJobFailed"),
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"titan_dr_reconciles_total{controller="disaster_recovery"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"titan_dr_reconcile_failures_total{controller="disaster_recovery",category="CreateJobFailed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"titan_dr_reconcile_duration_seconds_count{controller="disaster_recovery"} 2"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn serve_http_answers_every_connection_with_the_handler() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_http(
            listener,
            "test",
            |request: Request<_>| async move {
                Response::new(Full::new(Bytes::from(request.uri().path().to_owned())))
            },
        ));
        for path in ["/a", "/b"] {
            crate::tls::install_provider();
            let body = reqwest::get(format!("http://{address}{path}"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(body, path);
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_no_headers_is_dropped_and_others_are_served() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve_http(listener, "test", |_: Request<_>| async move {
            Response::new(Full::new(Bytes::from("ok")))
        }));
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut buffer = Vec::new();
        // The server closes it once the header timeout passes.
        let read = tokio::time::timeout(HEADER_TIMEOUT * 2, silent.read_to_end(&mut buffer)).await;
        assert!(
            read.is_ok(),
            "a silent connection is kept past the header timeout"
        );
    }

    #[test]
    fn requests_are_counted_by_verb_and_resource() {
        let metrics = Metrics::default();
        let request =
            |method: &str, uri: &str| Request::builder().method(method).uri(uri).body(()).unwrap();
        for (method, uri) in [
            (
                "GET",
                "/apis/batch/v1/namespaces/t/jobs?labelSelector=a%3Db",
            ),
            (
                "GET",
                "/apis/batch/v1/namespaces/t/jobs?watch=true&resourceVersion=1",
            ),
            ("GET", "/api/v1/namespaces/t/pods/p"),
            ("POST", "/apis/batch/v1/namespaces/t/jobs"),
            (
                "PATCH",
                "/apis/dr.titan.io/v1alpha1/namespaces/t/disasterrecoveries/d/status",
            ),
            ("GET", "/api/v1/namespaces/t"),
            ("DELETE", "/apis/batch/v1/namespaces/t/jobs?labelSelector=x"),
            ("GET", "/version"),
        ] {
            metrics.requested(&request(method, uri));
        }
        let text = metrics.encode();
        for line in [
            r#"titan_dr_kube_requests_total{verb="list",resource="jobs"} 1"#,
            r#"titan_dr_kube_requests_total{verb="watch",resource="jobs"} 1"#,
            r#"titan_dr_kube_requests_total{verb="get",resource="pods"} 1"#,
            r#"titan_dr_kube_requests_total{verb="create",resource="jobs"} 1"#,
            r#"titan_dr_kube_requests_total{verb="patch",resource="disasterrecoveries/status"} 1"#,
            r#"titan_dr_kube_requests_total{verb="get",resource="namespaces"} 1"#,
            r#"titan_dr_kube_requests_total{verb="deletecollection",resource="jobs"} 1"#,
            r#"titan_dr_kube_requests_total{verb="get",resource="/version"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn readyz_answers_only_once_ready() {
        let metrics = Metrics::default();
        let request = Request::get("/readyz").body(()).unwrap();
        assert_eq!(
            respond(&request, &metrics).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        metrics.ready.store(true, Ordering::Relaxed);
        assert_eq!(respond(&request, &metrics).status(), StatusCode::OK);
        let healthz = Request::get("/healthz").body(()).unwrap();
        assert_eq!(respond(&healthz, &metrics).status(), StatusCode::OK);
    }
}
