//! An S3-compatible server in a pod for the tests: SeaweedFS's `weed mini` (image
//! `localhost/titan-seaweedfs:local`), restricted, behind the Service `s3`, with one bucket
//! and the access key of the Secret `s3-credentials`; reached from this host by its pod IP.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::PostParams;
use kube::{Api, Client};

pub const S3_IMAGE: &str = "localhost/titan-seaweedfs:local";
pub const BUCKET: &str = "titan-backups";
pub const ACCESS_KEY: &str = "titan-test";
pub const SECRET_KEY: &str = "titan-test-secret";
/// The gateway's port in the pod and on its Service.
pub const PORT: u16 = 8333;

const LIMIT: Duration = Duration::from_secs(150);

/// Starts the server and returns its pod IP once its gateway answers there.
pub async fn start_s3(client: &Client, ns: &str) -> String {
    titan_dr::tls::install_provider();
    let identities = serde_json::json!({"identities": [{
        "name": "titan",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]});
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-credentials"},
        "stringData": {"accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY,
                       "s3.json": identities.to_string()},
    });
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret).unwrap(),
        )
        .await
        .unwrap();
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "s3", "labels": {"app": "s3"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            // weed reads flags from the environment too: the Service's S3_PORT=tcp://... would
            // be taken for -s3.port.
            "enableServiceLinks": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "weed", "image": S3_IMAGE,
                "args": ["mini", "-dir=/data", "-ip=127.0.0.1", "-ip.bind=0.0.0.0",
                         "-s3.config=/etc/weed/s3.json", format!("-bucket={BUCKET}"),
                         "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                         "-admin.port.legacy=0"],
                "ports": [{"containerPort": PORT}],
                "readinessProbe": {"tcpSocket": {"port": PORT}, "periodSeconds": 1},
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                 {"name": "config", "mountPath": "/etc/weed"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}},
                        {"name": "config", "secret": {"secretName": "s3-credentials",
                                                      "items": [{"key": "s3.json", "path": "s3.json"}]}}],
        },
    });
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s3"},
        "spec": {"selector": {"app": "s3"}, "ports": [{"port": PORT}]},
    });
    Api::<Service>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(service).unwrap(),
        )
        .await
        .unwrap();
    let ready = |pod: Option<&Pod>| {
        let conditions = pod.and_then(|p| p.status.as_ref()?.conditions.as_ref());
        conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let running = super::wait_for(&pods, "s3", "the S3 server ready", LIMIT, ready).await;
    let ip = running.status.and_then(|s| s.pod_ip).unwrap();
    let url = format!("http://{ip}:{PORT}/{BUCKET}");
    // The port opens before the filer behind it is up: anonymous requests are refused (403)
    // once the gateway and its bucket are.
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let answered = reqwest::get(&url).await.map(|r| r.status().as_u16());
        if matches!(answered, Ok(403 | 200)) {
            return ip;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "S3 at {url}: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
