//! The typed probes a step can be instead of a command (what they check, not how: that is
//! `crate::probe`, which runs them).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::backup::SecretKeyRef;
use super::duration::GoDuration;

/// A check run by `titan-dr` itself instead of a command: set exactly one of `http`, `redis`
/// or `kubernetes`. It runs in the operator's image (no `image` is needed) and its output and
/// exit code (1 when the check fails) are judged by the step's `expect`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = kube::core::Rule::new("[has(self.http), has(self.redis), has(self.kubernetes)].filter(x, x).size() == 1").message("set exactly one of http, redis or kubernetes"))]
pub struct Probe {
    /// GET a URL; the output is the response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Connect to Redis and PING it or count its keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisProbe>,
    /// Whether every Deployment or StatefulSet that matches is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProbe>,
}

/// An HTTP GET. Fails (exit 1) when the request fails or the status is not the expected one;
/// redirects are not followed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct HttpProbe {
    /// The URL, `http://` or `https://` (checked against the system's CA certificates), e.g.
    /// `http://titan-brain:3000/health`.
    #[schemars(length(min = 1), regex(pattern = r"^https?://"))]
    pub url: String,
    /// The expected status code (default: any 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599), extend("format" = "int32"))]
    pub status: Option<u16>,
    /// Longest the request may take, body included (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// A Redis check over the Redis protocol.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RedisProbe {
    /// `host:port` of the Redis server, e.g. `redis:6379`.
    #[schemars(length(min = 1))]
    pub address: String,
    /// The Secret key holding the password (AUTH). In the cluster the probe's Job gets it as
    /// the env var `TITAN_REDIS_PASSWORD`; `titan-dr run` has no Secrets and reads the
    /// password from `TITAN_REDIS_PASSWORD` in its own environment or the step's `env`,
    /// and fails the probe when it is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// What to check (default `Ping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<RedisCheck>,
}

/// What a redis probe checks: `Ping` (the default; the output is `PONG`) or `KeyCount` (the
/// keys of every database summed; the output is JSON like `{"keys": 123}`).
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum RedisCheck {
    /// `PING`.
    #[default]
    Ping,
    /// The keys of every database, summed; e.g. for
    /// `expect: {json: {path: keys, equals: "123"}}`.
    KeyCount,
}

/// Lists workloads (apps/v1) and checks each. The output is JSON like
/// `{"all": true, "items": {"titan-brain": true}}`; it fails (exit 1) when any object fails
/// the condition or none matches. Needs `list` on the kind in the namespace: in the cluster,
/// for the step's service account.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct KubernetesProbe {
    /// The kind of the objects listed.
    pub kind: WorkloadKind,
    /// Their namespace (default: the scenario's `TITAN_TARGET_NAMESPACE`, which in the
    /// cluster is `spec.targetNamespace` or the resource's namespace; else the kubeconfig's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A label selector, e.g. `app.kubernetes.io/part-of=titan` (default: every object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The status condition that must be `True` (default `Available` for Deployments).
    /// `Ready`, the default for StatefulSets, means `readyReplicas == replicas > 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub condition: Option<String>,
}

/// The workloads a kubernetes probe lists.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
}
