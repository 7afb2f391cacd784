//! The local node agent (`titan-local-node`): plays the kubelet for a control
//! plane that has none, so the real Job controller's Pods actually run.
//!
//! It registers a Ready Node, binds every unscheduled Pod to it, runs its init
//! containers one after the other and then each container's command as a local
//! process (env, working directory, hostPath / emptyDir / configMap / secret
//! volumes as bind mounts in a private mount namespace), and writes the Pod
//! status back. A Pod that is deleted or passes
//! its `activeDeadlineSeconds` has its process group killed.
//!
//! Differences from the kubelet, on purpose: images are not pulled (the command
//! runs on this machine), `$(VAR)` references are not expanded, and when a
//! container writes no termination message the tail of its output becomes the
//! message whatever its `terminationMessagePolicy`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{StreamExt, future::join_all};
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, EnvVar, Node, ObjectReference, Pod, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::process::{self, BindMount, ProcessSpec, Stopped};

/// Termination messages are cut as the kubelet cuts them.
const MAX_MESSAGE_BYTES: usize = 4096;
const FALLBACK_LOG_BYTES: usize = 2048;
const FALLBACK_LOG_LINES: usize = 80;

/// Settings of the node agent.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Name of the Node to register.
    #[arg(long, env = "TITAN_NODE_NAME", default_value = "titan-local-node")]
    pub node_name: String,
    /// Folder for the Pods' logs, volumes and termination messages.
    #[arg(
        long,
        env = "TITAN_NODE_WORK_DIR",
        default_value = "target/cluster/node"
    )]
    pub work_dir: PathBuf,
}

/// Runs until the watch ends or the process is stopped.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    register_node(&client, &config.node_name).await?;
    tracing::info!(node = %config.node_name, "node registered and Ready");
    let agent = Arc::new(Agent {
        client: client.clone(),
        node_name: config.node_name,
        work_dir: std::path::absolute(&config.work_dir)?,
        running: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
    });
    let mut events = watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => agent.clone().observe(pod),
                Some(Ok(Event::Delete(pod))) => agent.stop(&pod),
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(error)) => tracing::warn!(%error, "pod watch error"),
                None => break,
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    agent.shutdown().await;
    Ok(())
}

use kube::runtime::watcher::watcher;

struct Agent {
    client: Client,
    node_name: String,
    work_dir: PathBuf,
    /// Pods whose containers run now, by UID, with the token that stops them.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Set on shutdown: stopped Pods are then failed, not deleted.
    stopping: AtomicBool,
}

impl Agent {
    fn observe(self: Arc<Self>, pod: Pod) {
        let Some(spec) = &pod.spec else { return };
        let uid = pod.uid().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        match spec.node_name.as_deref() {
            None if !deleting => {
                tokio::spawn(async move { self.bind(&pod).await });
            }
            Some(node) if node == self.node_name => {
                if deleting {
                    self.stop(&pod);
                    if !self.running.lock().expect("lock").contains_key(&uid) {
                        tokio::spawn(async move { self.finish_deletion(&pod).await });
                    }
                    return;
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed")) {
                    return;
                }
                let token = CancellationToken::new();
                {
                    let mut running = self.running.lock().expect("lock");
                    if running.contains_key(&uid) {
                        return;
                    }
                    running.insert(uid.clone(), token.clone());
                }
                tokio::spawn(async move {
                    if let Err(error) = self.run_pod(&pod, &token).await {
                        tracing::warn!(pod = %pod.name_any(), %error, "pod failed to run");
                        let _ = self
                            .write_failed(&pod, "NodeAgentError", &format!("{error:#}"))
                            .await;
                    }
                    self.running.lock().expect("lock").remove(&uid);
                });
            }
            _ => {}
        }
    }

    /// Stops every running process, so none outlives the agent.
    async fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for token in self.running.lock().expect("lock").values() {
            token.cancel();
        }
        for _ in 0..50 {
            if self.running.lock().expect("lock").is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&self, pod: &Pod) {
        if let Some(token) = self
            .running
            .lock()
            .expect("lock")
            .get(&pod.uid().unwrap_or_default())
        {
            token.cancel();
        }
    }

    async fn bind(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let binding = Binding {
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node_name.clone()),
                ..Default::default()
            },
        };
        let result: Result<serde_json::Value, _> = api
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await;
        if let Err(error) = result {
            tracing::debug!(pod = %pod.name_any(), %error, "bind failed (already bound?)");
        }
    }

    /// The kubelet's last word on a deleted Pod: its containers are gone.
    async fn finish_deletion(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(error) = api.delete(&pod.name_any(), &params).await {
            tracing::debug!(pod = %pod.name_any(), %error, "finishing deletion failed (already gone?)");
        }
    }

    async fn run_pod(&self, pod: &Pod, cancel: &CancellationToken) -> anyhow::Result<()> {
        let spec = pod.spec.as_ref().context("pod without spec")?;
        let ns = pod.namespace().unwrap_or_default();
        let dir = self.work_dir.join("pods").join(format!(
            "{ns}_{}_{}",
            pod.name_any(),
            pod.uid().unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

        // A Pod that was running when the agent last stopped has lost its process.
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if phase == Some("Running") {
            return self
                .write_failed(
                    pod,
                    "NodeAgentRestarted",
                    "the node agent restarted while the pod ran",
                )
                .await;
        }

        let volumes = self.prepare_volumes(pod, &dir).await?;
        let started = Time(Timestamp::now());
        self.write_status(
            pod,
            "Running",
            None,
            &running_statuses(&spec.containers, &started),
            Some(&started),
        )
        .await?;

        let deadline = spec
            .active_deadline_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64));
        // Init containers one after the other, each to success, before the containers start.
        let mut init_statuses = Vec::new();
        let mut initialized = true;
        let mut deadline_exceeded = false;
        for container in spec.init_containers.iter().flatten() {
            let process = self
                .container_process(pod, container, &dir, &volumes)
                .await?;
            let outcome = process::run(&process.spec, cancel, deadline).await;
            let ended = terminated_status(&process, outcome, &started);
            init_statuses.push(ended.status);
            deadline_exceeded |= ended.deadline_exceeded;
            if ended.exit_code != 0 {
                initialized = false;
                break;
            }
        }
        let mut all_succeeded = initialized;
        let statuses: Vec<_> = if initialized {
            let mut processes = Vec::new();
            for container in &spec.containers {
                let process = self
                    .container_process(pod, container, &dir, &volumes)
                    .await?;
                processes.push(process);
            }
            let outcomes = join_all(
                processes
                    .iter()
                    .map(|p| async move { process::run(&p.spec, cancel, deadline).await }),
            )
            .await;
            let ended: Vec<_> = processes
                .iter()
                .zip(outcomes)
                .map(|(p, outcome)| terminated_status(p, outcome, &started))
                .collect();
            all_succeeded &= ended.iter().all(|e| e.exit_code == 0);
            deadline_exceeded |= ended.iter().any(|e| e.deadline_exceeded);
            ended.into_iter().map(|e| e.status).collect()
        } else {
            // As the kubelet shows containers that never started after a failed init container.
            spec.containers
                .iter()
                .map(|c| {
                    json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                        "started": false, "state": {"waiting": {"reason": "PodInitializing"}}})
                })
                .collect()
        };
        if self.stopping.load(Ordering::SeqCst) {
            return self
                .write_failed(
                    pod,
                    "NodeAgentStopped",
                    "the node agent stopped while the pod ran",
                )
                .await;
        }
        let (phase, reason) = if deadline_exceeded {
            (
                "Failed",
                Some((
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )),
            )
        } else if all_succeeded {
            ("Succeeded", None)
        } else {
            ("Failed", None)
        };
        if !init_statuses.is_empty() {
            self.write_init_statuses(pod, &init_statuses).await?;
        }
        self.write_status(pod, phase, reason, &statuses, Some(&started))
            .await?;
        if cancel.is_cancelled() {
            self.finish_deletion(pod).await;
        }
        Ok(())
    }

    async fn container_process(
        &self,
        pod: &Pod,
        container: &Container,
        dir: &Path,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<ContainerProcess> {
        let name = &container.name;
        let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
        argv.extend(container.args.clone().unwrap_or_default());
        if argv.is_empty() {
            bail!(
                "container {name} has no command: the local node cannot run an image's entrypoint"
            );
        }
        let mut env = vec![("HOSTNAME".to_string(), pod.name_any())];
        for var in container.env.iter().flatten() {
            env.push((var.name.clone(), self.resolve_env(pod, var).await?));
        }

        let message_file = dir.join(format!("{name}.termination-log"));
        std::fs::write(&message_file, b"")?;
        let message_target = PathBuf::from(
            container
                .termination_message_path
                .as_deref()
                .unwrap_or("/dev/termination-log"),
        );
        ensure_file(&message_target)?;
        let mut mounts = vec![BindMount {
            source: message_file.clone(),
            target: message_target,
        }];
        for mount in container.volume_mounts.iter().flatten() {
            let source = volumes.get(&mount.name).with_context(|| {
                format!("container {name} mounts unknown volume {}", mount.name)
            })?;
            let target = PathBuf::from(&mount.mount_path);
            if source.is_dir() {
                std::fs::create_dir_all(&target)?;
            } else {
                ensure_file(&target)?;
            }
            mounts.push(BindMount {
                source: source.clone(),
                target,
            });
        }
        Ok(ContainerProcess {
            name: name.clone(),
            image: container.image.clone().unwrap_or_default(),
            spec: ProcessSpec {
                argv,
                env,
                working_dir: container.working_dir.as_ref().map(PathBuf::from),
                log_path: dir.join(format!("{name}.log")),
                mounts,
            },
            message_file,
        })
    }

    async fn resolve_env(&self, pod: &Pod, var: &EnvVar) -> anyhow::Result<String> {
        if let Some(value) = &var.value {
            return Ok(value.clone());
        }
        let Some(from) = &var.value_from else {
            return Ok(String::new());
        };
        let ns = pod.namespace().unwrap_or_default();
        if let Some(field) = &from.field_ref {
            return Ok(match field.field_path.as_str() {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => ns,
                "metadata.uid" => pod.uid().unwrap_or_default(),
                "spec.nodeName" => self.node_name.clone(),
                "spec.serviceAccountName" => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                other => bail!("env {}: fieldRef {other} is not supported", var.name),
            });
        }
        if let Some(key) = &from.secret_key_ref {
            let secret = Api::<Secret>::namespaced(self.client.clone(), &ns)
                .get_opt(&key.name)
                .await?;
            let value = secret
                .and_then(|s| s.data)
                .and_then(|d| d.get(&key.key).cloned())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            return referenced(var, "secret", &key.name, &key.key, key.optional, value);
        }
        if let Some(key) = &from.config_map_key_ref {
            let map = Api::<ConfigMap>::namespaced(self.client.clone(), &ns)
                .get_opt(&key.name)
                .await?;
            let value = map
                .and_then(|m| m.data)
                .and_then(|d| d.get(&key.key).cloned());
            return referenced(var, "configMap", &key.name, &key.key, key.optional, value);
        }
        bail!("env {}: this kind of valueFrom is not supported", var.name)
    }

    /// Makes every volume a path on this machine, by name.
    async fn prepare_volumes(
        &self,
        pod: &Pod,
        dir: &Path,
    ) -> anyhow::Result<BTreeMap<String, PathBuf>> {
        let ns = pod.namespace().unwrap_or_default();
        let mut paths = BTreeMap::new();
        let volumes: &[Volume] = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_deref())
            .unwrap_or(&[]);
        for volume in volumes {
            let local = dir.join("volumes").join(&volume.name);
            let path = if let Some(host) = &volume.host_path {
                let path = PathBuf::from(&host.path);
                if matches!(host.type_.as_deref(), Some("DirectoryOrCreate")) {
                    std::fs::create_dir_all(&path)?;
                }
                path
            } else if volume.empty_dir.is_some() {
                std::fs::create_dir_all(&local)?;
                local
            } else if let Some(source) = &volume.config_map {
                let map = Api::<ConfigMap>::namespaced(self.client.clone(), &ns)
                    .get(&source.name)
                    .await?;
                let files = map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()));
                write_files(&local, files)?;
                local
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().unwrap_or_default();
                let secret = Api::<Secret>::namespaced(self.client.clone(), &ns)
                    .get(&name)
                    .await?;
                let files = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0));
                write_files(&local, files)?;
                local
            } else {
                bail!(
                    "volume {}: only hostPath, emptyDir, configMap and secret volumes are supported",
                    volume.name
                );
            };
            paths.insert(volume.name.clone(), path);
        }
        Ok(paths)
    }

    async fn write_failed(&self, pod: &Pod, reason: &str, message: &str) -> anyhow::Result<()> {
        let containers = pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[]);
        let now = Time(Timestamp::now());
        let statuses: Vec<_> = containers
            .iter()
            .map(|c| {
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 128, "reason": reason, "message": message,
                        "startedAt": now, "finishedAt": now}}})
            })
            .collect();
        self.write_status(pod, "Failed", Some((reason, message)), &statuses, None)
            .await
    }

    async fn write_init_statuses(
        &self,
        pod: &Pod,
        statuses: &[serde_json::Value],
    ) -> anyhow::Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"initContainerStatuses": statuses}});
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .with_context(|| format!("writing init container status of pod {}", pod.name_any()))?;
        Ok(())
    }

    async fn write_status(
        &self,
        pod: &Pod,
        phase: &str,
        reason: Option<(&str, &str)>,
        container_statuses: &[serde_json::Value],
        started: Option<&Time>,
    ) -> anyhow::Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let now = Time(Timestamp::now());
        let ready = if phase == "Running" { "True" } else { "False" };
        let condition = |type_: &str, status: &str| json!({"type": type_, "status": status, "lastTransitionTime": now});
        let mut status = json!({
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "conditions": [
                condition("PodScheduled", "True"), condition("Initialized", "True"),
                condition("ContainersReady", ready), condition("Ready", ready),
            ],
            "containerStatuses": container_statuses,
        });
        if let Some(started) = started {
            status["startTime"] = json!(started);
        }
        if let Some((reason, message)) = reason {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .with_context(|| format!("writing status of pod {}", pod.name_any()))?;
        Ok(())
    }
}

/// A container that ended, as its status reports it.
struct Ended {
    status: serde_json::Value,
    exit_code: i32,
    deadline_exceeded: bool,
}

/// The `terminated` status of a container whose process ended (or never started).
fn terminated_status(
    p: &ContainerProcess,
    outcome: std::io::Result<process::Outcome>,
    started: &Time,
) -> Ended {
    let (code, message, reason, deadline_exceeded) = match outcome {
        Ok(outcome) => {
            let reason = if outcome.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (
                outcome.exit_code,
                termination_message(&p.message_file, &p.spec.log_path),
                reason,
                outcome.stopped == Some(Stopped::DeadlineExceeded),
            )
        }
        Err(error) => (
            128,
            format!("could not start the container: {error}"),
            "StartError",
            false,
        ),
    };
    let finished = Time(Timestamp::now());
    Ended {
        status: json!({
            "name": p.name, "image": p.image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {"exitCode": code, "reason": reason, "message": message,
                "startedAt": started, "finishedAt": finished}},
        }),
        exit_code: code,
        deadline_exceeded,
    }
}

struct ContainerProcess {
    name: String,
    image: String,
    spec: ProcessSpec,
    message_file: PathBuf,
}

fn running_statuses(containers: &[Container], started: &Time) -> Vec<serde_json::Value> {
    containers
        .iter()
        .map(|c| {
            json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0,
                "started": true, "state": {"running": {"startedAt": started}}})
        })
        .collect()
}

/// The value a secret or configMap key reference resolved to: missing is an
/// error unless the reference is optional, as for the kubelet.
fn referenced(
    var: &EnvVar,
    kind: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
    value: Option<String>,
) -> anyhow::Result<String> {
    match value {
        Some(v) => Ok(v),
        None if optional == Some(true) => Ok(String::new()),
        None => Err(anyhow!(
            "env {}: {kind} key {name}/{key} not found",
            var.name
        )),
    }
}

/// What the container wrote to its termination-message file or, when it wrote
/// nothing, the tail of its output.
fn termination_message(message_file: &Path, log: &Path) -> String {
    let written = process::tail_file(message_file, MAX_MESSAGE_BYTES, usize::MAX);
    if !written.is_empty() {
        return written;
    }
    process::tail_file(log, FALLBACK_LOG_BYTES, FALLBACK_LOG_LINES)
}

/// A bind mount needs an existing target of the same kind.
fn ensure_file(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, b"")
            .with_context(|| format!("creating mount target {}", path.display()))?;
    }
    Ok(())
}

fn write_files(dir: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in files {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

async fn register_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply("titan-local-node").force();
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": std::env::consts::ARCH,
            "node.kubernetes.io/instance-type": "titan-local"}},
    });
    nodes.patch(name, &params, &Patch::Apply(node)).await?;
    let now = Time(Timestamp::now());
    let capacity =
        json!({"cpu": "8", "memory": "32Gi", "pods": "250", "ephemeral-storage": "100Gi"});
    let status = json!({
        "apiVersion": "v1", "kind": "Node",
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "TitanLocalNodeReady",
                "message": "titan-local-node runs pods as local processes",
                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                "osImage": "titan-local-node", "containerRuntimeVersion": "local-process://1",
                "kubeletVersion": env!("CARGO_PKG_VERSION"), "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH},
        },
    });
    nodes
        .patch_status(name, &params, &Patch::Apply(status))
        .await?;
    Ok(())
}
