//! A Redis in a pod for the tests and benchmarks: restricted, behind a Service of its own
//! name, reached from this host through its pod IP.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::PostParams;
use kube::{Api, Client};

/// Debian's redis-server as user 65532 (`scripts/build-images.sh`).
pub const REDIS_IMAGE: &str = "localhost/titan-redis:local";
/// The password of a Redis started with one (the Secret `redis-auth` holds it).
pub const REDIS_PASSWORD: &str = "restore-s3cret";

const LIMIT: Duration = Duration::from_secs(150);

/// A Redis pod named `name` (restricted, restarted by the kubelet when it exits) behind a
/// Service of the same name, with `--save ""` and AOF off; `extra` goes to redis-server,
/// `password` comes from the Secret `redis-auth`, and `claim` is mounted at its `--dir`.
/// Returns the pod's IP once it is ready.
pub async fn start_redis(
    client: &Client,
    ns: &str,
    name: &str,
    extra: &[&str],
    password: bool,
    claim: Option<&str>,
) -> String {
    let mut args: Vec<&str> = vec![
        "--port",
        "6379",
        "--dir",
        "/data",
        "--dbfilename",
        "dump.rdb",
        "--save",
        "",
        "--appendonly",
        "no",
        // A snapshot does not wait for more replicas to join its diskless sync.
        "--repl-diskless-sync-delay",
        "0",
    ];
    if password {
        // The kubelet expands $(VAR) in args.
        args.extend(["--requirepass", "$(REDIS_PASSWORD)"]);
    } else {
        args.extend(["--protected-mode", "no"]);
    }
    args.extend(extra);
    let mut container = serde_json::json!({
        "name": "redis",
        "image": REDIS_IMAGE,
        "args": args,
        "ports": [{"containerPort": 6379}],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
    });
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    });
    if password {
        container["env"] = serde_json::json!([{"name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}}]);
    }
    if let Some(claim) = claim {
        container["volumeMounts"] = serde_json::json!([{"name": "data", "mountPath": "/data"}]);
        pod["spec"]["volumes"] =
            serde_json::json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    pod["spec"]["containers"] = serde_json::json!([container]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let service = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 6379}]},
    });
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(service).unwrap(),
        )
        .await
        .unwrap();
    let running = super::wait_for(&pods, name, "Redis ready", LIMIT, pod_ready).await;
    // Through the Service too (kube-proxy's rules serve the node as they serve pods): a
    // Backup without a schedule makes one attempt only.
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap();
    let password = password.then_some(REDIS_PASSWORD);
    tokio::task::spawn_blocking(move || drop(connect(&cluster_ip, password)))
        .await
        .unwrap();
    running.status.and_then(|s| s.pod_ip).unwrap()
}

fn pod_ready(pod: Option<&Pod>) -> bool {
    let conditions = pod.and_then(|p| p.status.as_ref()?.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A connection from the test to the Redis at `ip` (a pod's or a Service's), retried while
/// it comes up.
pub fn connect(ip: &str, password: Option<&str>) -> redis::Connection {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}{ip}:6379/")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con).map(|_| con));
        match attempt {
            Ok(con) => return con,
            Err(err) if std::time::Instant::now() > deadline => {
                panic!("Redis at {ip} does not answer: {err}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
