//! Shared support for the integration tests: a handle to the real local
//! control plane, a fresh namespace per test, and waits with deadlines.
#![allow(dead_code)] // each test binary uses a different part of it

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
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

/// Runs `test` in a fresh namespace that is deleted afterwards, also when the
/// test panics.
pub async fn with_namespace<F, Fut>(test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.generate_name = Some("titan-test-".into());
    let created = namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("creating a test namespace");
    let name = created.metadata.name.expect("a generated name");
    let result = std::panic::AssertUnwindSafe(test(client, name.clone()))
        .catch_unwind()
        .await;
    let _ = namespaces.delete(&name, &DeleteParams::background()).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
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
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting for: {what}"),
        Ok(Err(error)) => panic!("watching {name} failed while waiting for {what}: {error}"),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!("timed out after {limit:?} waiting for {what} on {name}; last seen: {last:#?}")
        }
    }
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

/// The titan-step binary, built (once per test run) into the target folder of the titan-dr
/// binary under test. Step pods' init containers copy it from "the operator's image", which on
/// the local node is this machine: the operators of the tests get it as `--titan-step-path`.
pub fn titan_step() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // <target>/<profile folder>/titan-dr
        let titan_dr = PathBuf::from(env!("CARGO_BIN_EXE_titan-dr"));
        let profile_dir = titan_dr.parent().expect("a profile folder").to_path_buf();
        let target_dir = profile_dir.parent().expect("a target folder");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "titan-step",
                "--bin",
                "titan-step",
            ])
            .arg("--manifest-path")
            .arg(root().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("running cargo build -p titan-step");
        assert!(status.success(), "building titan-step failed: {status}");
        profile_dir.join("titan-step")
    })
    .clone()
}

/// The operator binary, running against the test control plane and watching
/// one namespace; killed when dropped.
pub struct Operator {
    child: std::process::Child,
}

impl Operator {
    pub fn start(namespace: &str) -> Operator {
        Operator::start_with(namespace, &[])
    }

    /// With extra command-line arguments, e.g. `--backup-dir`.
    pub fn start_with(namespace: &str, extra: &[&str]) -> Operator {
        // Tests run operators side by side: each gets its own metrics port.
        let mut extra = extra.to_vec();
        if !extra.contains(&"--metrics-addr") {
            extra.extend(["--metrics-addr", "127.0.0.1:0"]);
        }
        let titan_step = titan_step();
        let log =
            std::fs::File::create(root().join(format!("target/operator-{namespace}.log"))).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_titan-dr"))
            .args(["operator", "--namespace", namespace])
            .arg("--titan-step-path")
            .arg(&titan_step)
            .args(extra)
            .env("KUBECONFIG", kubeconfig())
            .env("RUST_LOG", "info,titan_dr=debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the operator");
        Operator { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the operator with SIGKILL: no chance to clean up or finish a write.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
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

/// A plain HTTP/1.0 GET on loopback: the status line and the body.
pub async fn http_get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
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
