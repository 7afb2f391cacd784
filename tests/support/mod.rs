//! Shared support for the integration tests: a handle to the real local
//! control plane, a fresh namespace per test, and waits with deadlines.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod redis_pod;
pub mod s3_pod;

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;

/// The repository's root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kubeconfig of the control plane the tests run against, started once per
/// test run. `TITAN_TEST_CLUSTER=<kubeconfig>` points the tests at one already
/// running (`TITAN_TEST_CLUSTER=1` uses `$KUBECONFIG`); otherwise
/// `scripts/cluster-up.sh` starts the local one, or reuses it when it answers.
pub fn kubeconfig() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var("TITAN_TEST_CLUSTER") {
        Ok(value) if value == "1" => PathBuf::from(
            std::env::var("KUBECONFIG").expect("TITAN_TEST_CLUSTER=1 needs KUBECONFIG"),
        ),
        Ok(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let status = std::process::Command::new(root().join("scripts/cluster-up.sh"))
                .status()
                .expect("running scripts/cluster-up.sh");
            assert!(status.success(), "scripts/cluster-up.sh failed: {status}");
            root().join("target/cluster/kubeconfig")
        }
    })
    .clone()
}

/// A client of the test control plane. One per test: a client belongs to the
/// runtime it was made on, and every `#[tokio::test]` has its own.
pub async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("reading the test kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// A copy of the test kubeconfig, in `dir`, that acts as `user` (impersonation, which the
/// test's own user may do): what `user` may do, as the API server says it is `user`.
pub fn kubeconfig_as(dir: &std::path::Path, user: &str) -> PathBuf {
    let mut kubeconfig = Kubeconfig::read_from(kubeconfig()).expect("reading the test kubeconfig");
    for named in &mut kubeconfig.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(user.to_owned());
        }
    }
    let path = dir.join(format!("kubeconfig-{user}"));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

/// A client that acts as `user` (see [`kubeconfig_as`]).
pub async fn client_as(dir: &std::path::Path, user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_as(dir, user)).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// Runs `test` in a fresh namespace (Pod Security `restricted` enforced) that is deleted
/// afterwards, also when the test panics.
pub async fn with_namespace<F, Fut>(test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.generate_name = Some("titan-test-".into());
    // What a careful user's namespace enforces: every pod of a test must pass it.
    namespace.metadata.labels = Some(
        [(
            "pod-security.kubernetes.io/enforce".to_string(),
            "restricted".to_string(),
        )]
        .into(),
    );
    let created = namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating a test namespace");
    let name = created.metadata.name.expect("a generated name");
    let result = std::panic::AssertUnwindSafe(test(client.clone(), name.clone()))
        .catch_unwind()
        .await;
    release_drills(&client, &name).await;
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// What a test's operator, gone with the test, left of its drills in namespace `ns`: the
/// finalizers of runs whose namespace it did not delete in time (which would hold `ns`
/// Terminating), and those namespaces.
pub async fn release_drills(client: &Client, ns: &str) {
    let runs: Api<titan_dr::api::RecoveryRun> = Api::namespaced(client.clone(), ns);
    for run in runs
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if run
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            let release = serde_json::json!({"metadata": {"finalizers": null}});
            let name = run.metadata.name.clone().unwrap_or_default();
            let _ = runs
                .patch(
                    &name,
                    &Default::default(),
                    &kube::api::Patch::Merge(&release),
                )
                .await;
        }
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let drills = kube::api::ListParams::default().labels(titan_dr::names::LABEL_DRILL);
    for drill in namespaces
        .list(&drills)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let annotations = drill.metadata.annotations.clone().unwrap_or_default();
        let of_ns = annotations
            .get("dr.titan.io/run")
            .is_some_and(|r| r.starts_with(&format!("{ns}/")));
        if of_ns {
            let name = drill.metadata.name.clone().unwrap_or_default();
            let _ = namespaces.delete(&name, &DeleteParams::background()).await;
        }
    }
}

/// Waits until `condition` holds for the named object, failing the test with
/// `what` and the last state seen when `limit` passes first.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    limit: Duration,
    condition: impl Condition<K>,
) -> K
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting for: {what}"),
        Ok(Err(error)) => panic!("watching {name} failed while waiting for {what}: {error}"),
        Err(_) => {
            // Without managedFields, which would push the status out of a truncated log.
            let last = api.get_opt(name).await.ok().flatten().map(|mut object| {
                object.meta_mut().managed_fields = None;
                serde_yaml::to_string(&object).unwrap_or_default()
            });
            let last = last.unwrap_or_else(|| "nothing".into());
            panic!("timed out after {limit:?} waiting for {what} on {name}; last seen:\n{last}")
        }
    }
}

/// Waits until the objects matching `selector` in `api` satisfy `holds`, and returns them;
/// fails the test with `what` after `limit`.
pub async fn wait_for_list<K>(
    api: &Api<K>,
    selector: &str,
    what: &str,
    limit: Duration,
    holds: impl Fn(&[K]) -> bool,
) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        let listed = api
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        if holds(&listed.items) {
            return listed.items;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what} ({selector}): {} objects",
            listed.items.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until nothing matches `selector` in `api`, failing the test after `limit`.
pub async fn wait_for_none<K>(api: &Api<K>, selector: &str, limit: Duration)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    wait_for_list(api, selector, "none to be left", limit, <[K]>::is_empty).await;
}

/// Waits until the named object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, limit: Duration)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let deleted = async {
        while api.get_opt(name).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        tokio::time::timeout(limit, deleted).await.is_ok(),
        "{name} is still there after {limit:?}"
    );
}

/// The Events the operator published about the named object of the namespace.
pub async fn events_of(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let fields = format!("regarding.name={name}");
    let listed = events.list(&ListParams::default().fields(&fields)).await;
    listed
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("titan-dr-operator"))
        .collect()
}

/// Creates an object from YAML text in the namespace.
pub async fn create_yaml<K>(client: &Client, namespace: &str, yaml: &str) -> Result<K, kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_yaml::from_str(yaml).expect("test YAML parses");
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
}

/// Creates Secret `name` holding `key` under `key`, as a Backup's `encryption.secretRef`
/// names it.
pub async fn create_key_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &titan_dr::backup::BackupKey,
) {
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some([("key".to_string(), key.to_key_file())].into()),
        ..Default::default()
    };
    Api::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the key Secret");
}

/// Runs a command to completion, failing the test with its output when it fails.
pub fn run(command: &mut std::process::Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A tool built by one of the scripts, which print the folder they built it into.
fn tool(script: &str, name: &str) -> PathBuf {
    let folder =
        run(std::process::Command::new(root().join(script)).stderr(std::process::Stdio::inherit()));
    PathBuf::from(folder.trim()).join(name)
}

/// helm, built from its Go module by `scripts/build-helm.sh`.
pub fn helm() -> PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tool("scripts/build-helm.sh", "helm"))
        .clone()
}

/// kubectl of the pinned Kubernetes version.
pub fn kubectl() -> PathBuf {
    static KUBECTL: OnceLock<PathBuf> = OnceLock::new();
    KUBECTL
        .get_or_init(|| tool("scripts/build-control-plane.sh", "kubectl"))
        .clone()
}

/// The image every test step runs in (built by `scripts/build-images.sh`).
pub const TOOLBOX: &str = "localhost/titan-toolbox:local";

/// The operator, installed into the test namespace by `helm install` of `charts/titan-dr`
/// with the locally built image, watching only that namespace and running as its own
/// ServiceAccount; uninstalled when dropped.
pub struct Operator(Release);

/// A helm release of the operator in a namespace.
#[derive(Clone)]
struct Release {
    namespace: String,
    release: String,
}

impl Operator {
    pub async fn install(namespace: &str) -> Operator {
        Operator::install_with(namespace, &[]).await
    }

    /// With more chart values, `key=value` as `helm --set` takes them.
    pub async fn install_with(namespace: &str, values: &[&str]) -> Operator {
        let suffix = namespace.rsplit('-').next().unwrap_or(namespace);
        let release = format!("titan-dr-{suffix}");
        let mut command = std::process::Command::new(helm());
        command
            .args(["install", &release])
            .arg(root().join("charts/titan-dr"))
            .args([
                "--namespace",
                namespace,
                "--skip-crds",
                "--wait",
                "--timeout",
                "120s",
            ])
            .args([
                "--set",
                "image.repository=localhost/titan-dr,image.tag=local",
            ])
            .args(["--set", "image.pullPolicy=Never"])
            .args(["--set", &format!("operator.watchNamespace={namespace}")])
            .args(["--set", "operator.logLevel=info\\,titan_dr=debug"])
            // One replica unless a test asks for more (2 cores); a killed one's Lease keeps
            // its successor waiting this long.
            .args(["--set", "replicaCount=1,operator.leaseDuration=4s"])
            .env("KUBECONFIG", kubeconfig());
        for value in values {
            command.args(["--set", value]);
        }
        let operator = Operator(Release {
            namespace: namespace.to_string(),
            release,
        });
        tokio::task::spawn_blocking(move || run(&mut command))
            .await
            .expect("helm install");
        operator
    }

    /// The Lease its replicas compete for (the chart's `<fullname>-operator`).
    pub fn lease(&self) -> String {
        format!("{}-operator", self.0.release)
    }

    /// The running operator pod's address (metrics on port 8080).
    pub fn pod_ip(&self) -> String {
        self.0.running_pod("{.status.podIP}")
    }

    /// Kills the operator's pod at once (no grace period: like SIGKILL, no chance to finish
    /// a write) and waits until its Deployment has a new one ready.
    pub async fn kill(&self) {
        let release = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let selector = release.selector();
            let deployment = format!("deployment/{}", release.release);
            release.kubectl(&[
                "delete",
                "pods",
                "-l",
                &selector,
                "--grace-period=0",
                "--force",
            ]);
            release.kubectl(&["rollout", "status", &deployment, "--timeout=120s"]);
            release.kubectl(&[
                "wait",
                "pods",
                "-l",
                &selector,
                "--for=condition=Ready",
                "--timeout=120s",
            ]);
        })
        .await
        .expect("restarting the operator");
    }

    /// Removes the release and waits until its pods are gone: an operator that watches every
    /// namespace must not outlive its test.
    pub async fn uninstall(&self) {
        let Release { namespace, release } = self.0.clone();
        let mut command = std::process::Command::new(helm());
        command
            .args(["uninstall", &release, "--namespace", &namespace, "--wait"])
            .args(["--timeout", "120s"])
            .env("KUBECONFIG", kubeconfig());
        tokio::task::spawn_blocking(move || run(&mut command))
            .await
            .expect("helm uninstall");
    }

    /// What the operator logged so far.
    pub fn logs(&self) -> String {
        self.0.logs()
    }

    /// The host's id of the operator's process, found through its pod's cgroup (the kubelet
    /// names it after the pod's UID), for reading what /proc says of it.
    pub fn host_pid(&self) -> u32 {
        let uid = self.0.running_pod("{.metadata.uid}");
        let cgroup_name = format!("pod{uid}");
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cgroup.is_ok_and(|c| c.contains(&cgroup_name))
                    && cmdline.starts_with(b"/usr/local/bin/titan-dr\0operator")
            })
            .unwrap_or_else(|| panic!("no operator process in pod {uid}"))
    }
}

impl Release {
    fn kubectl(&self, args: &[&str]) -> String {
        run(std::process::Command::new(kubectl())
            .args(["--namespace", &self.namespace])
            .args(args)
            .env("KUBECONFIG", kubeconfig()))
    }

    /// A field of the release's running pod, by a JSONPath on the pod (`{.status.podIP}`).
    fn running_pod(&self, path: &str) -> String {
        let jsonpath = format!("jsonpath={{.items[0]{}", path.trim_start_matches('{'));
        let selector = self.selector();
        let args = [
            "get",
            "pods",
            "-l",
            &selector,
            "--field-selector=status.phase=Running",
        ];
        let mut args = args.to_vec();
        args.extend(["-o", &jsonpath]);
        self.kubectl(&args)
    }

    fn selector(&self) -> String {
        format!("app.kubernetes.io/instance={}", self.release)
    }

    fn logs(&self) -> String {
        self.kubectl(&["logs", &format!("deployment/{}", self.release), "--tail=-1"])
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        // Its log stays behind for whoever reads a failed test.
        let Release { namespace, release } = &self.0;
        let log = root().join(format!("target/operator-{namespace}.log"));
        let deployment = format!("deployment/{release}");
        if let Ok(output) = std::process::Command::new(kubectl())
            .args(["--namespace", namespace, "logs", &deployment, "--tail=-1"])
            .env("KUBECONFIG", kubeconfig())
            .output()
        {
            // A failed test on a machine whose target/ goes away shows the log's end too.
            if std::thread::panicking() {
                let text = String::from_utf8_lossy(&output.stdout);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!("--- the end of the log of {deployment} in {namespace}:\n{tail}");
            }
            let _ = std::fs::write(log, output.stdout);
        }
        let _ = std::process::Command::new(helm())
            .args([
                "uninstall",
                release,
                "--namespace",
                namespace,
                "--wait=false",
            ])
            .env("KUBECONFIG", kubeconfig())
            .output();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET: the status line and the body.
pub async fn http_get(host: &str, port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .expect("connecting");
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// Where the node keeps the volume bound to a claim (local-path makes hostPath volumes).
pub async fn claim_path(client: &Client, ns: &str, claim: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let bound = wait_for(
        &claims,
        claim,
        "the claim to be bound",
        Duration::from_secs(120),
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.spec.as_ref()?.volume_name.as_ref())
                .is_some()
        },
    )
    .await;
    let volume = bound.spec.and_then(|s| s.volume_name).unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(&volume)
        .await
        .unwrap();
    let spec = pv.spec.unwrap();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .unwrap_or_else(|| panic!("volume {volume} has no path on the node"));
    PathBuf::from(path)
}

/// The operator's backup volume on the node: the chart's claim `<release>-backups`.
pub async fn backup_volume(client: &Client, ns: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let of_chart = ListParams::default().labels("app.kubernetes.io/part-of=titan-dr");
    let names: Vec<String> = claims
        .list(&of_chart)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.ends_with("-backups"))
        .collect();
    assert_eq!(names.len(), 1, "the chart's backup claim: {names:?}");
    claim_path(client, ns, &names[0]).await
}
