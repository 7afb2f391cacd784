//! The kubernetes probe: lists Deployments or StatefulSets and checks that each is ready,
//! the cluster's counterpart of `pm2 status` showing every process online.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::{KubernetesProbe, ProbeError, WorkloadKind};

/// The pseudo-condition `readyReplicas == replicas > 0`: StatefulSets have no `Available`.
const READY: &str = "Ready";

/// The objects a probe listed.
#[derive(Debug, Clone)]
pub enum Listed {
    Deployments(Vec<Deployment>),
    StatefulSets(Vec<StatefulSet>),
}

/// Lists the objects with the client of this environment (in a pod, its service account;
/// elsewhere the kubeconfig) and judges them.
pub async fn check(probe: &KubernetesProbe) -> Result<String, ProbeError> {
    let client = Client::try_default()
        .await
        .map_err(|e| ProbeError::new(format!("no connection to Kubernetes: {e}")))?;
    // The scenario's target namespace before the Job's own: the probe checks what is recovered.
    let namespace = probe
        .namespace
        .clone()
        .or_else(|| std::env::var(crate::names::TARGET_NAMESPACE_ENV).ok())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let params = ListParams {
        label_selector: probe.selector.clone(),
        ..Default::default()
    };
    let failed = |e: kube::Error| {
        ProbeError::new(format!(
            "cannot list {:?}s in namespace {namespace}: {e}",
            probe.kind
        ))
    };
    let listed = match probe.kind {
        WorkloadKind::Deployment => Listed::Deployments(
            Api::namespaced(client, &namespace)
                .list(&params)
                .await
                .map_err(failed)?
                .items,
        ),
        WorkloadKind::StatefulSet => Listed::StatefulSets(
            Api::namespaced(client, &namespace)
                .list(&params)
                .await
                .map_err(failed)?
                .items,
        ),
    };
    judge(probe, &namespace, &listed)
}

/// The output `{"all": bool, "items": {name: bool}}` when every listed object meets the
/// condition, or why not (with that output).
pub fn judge(
    probe: &KubernetesProbe,
    namespace: &str,
    listed: &Listed,
) -> Result<String, ProbeError> {
    let (default, kind) = match listed {
        Listed::Deployments(_) => ("Available", "Deployment"),
        Listed::StatefulSets(_) => (READY, "StatefulSet"),
    };
    let condition = probe.condition.as_deref().unwrap_or(default);
    let items: BTreeMap<String, bool> = match listed {
        Listed::Deployments(list) => list
            .iter()
            .map(|d| {
                let status = d.status.clone().unwrap_or_default();
                let ready = meets(
                    condition,
                    d.spec.replicas,
                    status.ready_replicas,
                    status
                        .conditions
                        .iter()
                        .flatten()
                        .map(|c| (c.type_.as_deref(), c.status.as_deref())),
                );
                (d.name_any(), ready)
            })
            .collect(),
        Listed::StatefulSets(list) => list
            .iter()
            .map(|s| {
                let status = s.status.clone().unwrap_or_default();
                let ready = meets(
                    condition,
                    s.spec.replicas,
                    status.ready_replicas,
                    status
                        .conditions
                        .iter()
                        .flatten()
                        .map(|c| (c.type_.as_deref(), c.status.as_deref())),
                );
                (s.name_any(), ready)
            })
            .collect(),
    };
    let all = !items.is_empty() && items.values().all(|&ready| ready);
    let output = serde_json::json!({ "all": all, "items": items }).to_string();
    if all {
        return Ok(output);
    }
    let selector = probe
        .selector
        .as_deref()
        .map(|s| format!(" matching {s}"))
        .unwrap_or_default();
    let message = if items.is_empty() {
        format!("no {kind} in namespace {namespace}{selector}")
    } else {
        let failing: Vec<&str> = items
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.as_str())
            .collect();
        format!(
            "not {condition}: {kind} {} in namespace {namespace}",
            failing.join(", ")
        )
    };
    Err(ProbeError::new(message).with_output(output))
}

/// Whether an object meets `condition`: [`READY`] from its replica counts (spec replicas
/// default to 1, as the API server defaults them), any other from its status conditions.
fn meets<'a>(
    condition: &str,
    replicas: Option<i32>,
    ready_replicas: Option<i32>,
    mut conditions: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>,
) -> bool {
    if condition == READY {
        let replicas = replicas.unwrap_or(1);
        return replicas > 0 && ready_replicas.unwrap_or(0) == replicas;
    }
    conditions.any(|(type_, status)| type_ == Some(condition) && status == Some("True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, available: &str) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"readyReplicas": 2, "conditions": [
                {"type": "Progressing", "status": "True"},
                {"type": "Available", "status": available},
            ]},
        }))
        .unwrap()
    }

    fn stateful_set(name: &str, replicas: i32, ready: Option<i32>) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {}, "serviceName": name, "template": {}},
            "status": {"replicas": replicas, "readyReplicas": ready},
        }))
        .unwrap()
    }

    fn probe(kind: WorkloadKind, condition: Option<&str>) -> KubernetesProbe {
        KubernetesProbe {
            kind,
            namespace: None,
            selector: Some("app.kubernetes.io/part-of=titan".into()),
            condition: condition.map(Into::into),
        }
    }

    #[test]
    fn every_deployment_available_passes_with_a_json_summary() {
        let listed = Listed::Deployments(vec![
            deployment("titan-brain", "True"),
            deployment("titan-shared", "True"),
        ]);
        let output = judge(&probe(WorkloadKind::Deployment, None), "titan", &listed);
        assert_eq!(
            output.unwrap(),
            r#"{"all":true,"items":{"titan-brain":true,"titan-shared":true}}"#
        );
    }

    #[test]
    fn one_unavailable_deployment_fails_and_is_named() {
        let listed = Listed::Deployments(vec![
            deployment("titan-brain", "False"),
            deployment("titan-shared", "True"),
        ]);
        let error = judge(&probe(WorkloadKind::Deployment, None), "titan", &listed)
            .expect_err("titan-brain is not Available");
        assert_eq!(
            error.message,
            "not Available: Deployment titan-brain in namespace titan"
        );
        assert_eq!(
            error.output,
            r#"{"all":false,"items":{"titan-brain":false,"titan-shared":true}}"#
        );
        // Another condition, and the Ready pseudo-condition, can be asked for instead.
        let progressing = probe(WorkloadKind::Deployment, Some("Progressing"));
        assert!(judge(&progressing, "titan", &listed).is_ok());
        let ready = probe(WorkloadKind::Deployment, Some("Ready"));
        assert!(judge(&ready, "titan", &listed).is_ok());
    }

    #[test]
    fn nothing_matching_fails() {
        let error = judge(
            &probe(WorkloadKind::Deployment, None),
            "titan",
            &Listed::Deployments(Vec::new()),
        )
        .expect_err("none matches");
        assert_eq!(
            error.message,
            "no Deployment in namespace titan matching app.kubernetes.io/part-of=titan"
        );
        assert_eq!(error.output, r#"{"all":false,"items":{}}"#);
    }

    #[test]
    fn a_stateful_set_is_ready_when_all_of_more_than_zero_replicas_are() {
        let judged = |sets: Vec<StatefulSet>| {
            judge(
                &probe(WorkloadKind::StatefulSet, None),
                "titan",
                &Listed::StatefulSets(sets),
            )
        };
        assert_eq!(
            judged(vec![stateful_set("redis", 1, Some(1))]).unwrap(),
            r#"{"all":true,"items":{"redis":true}}"#
        );
        let error = judged(vec![
            stateful_set("redis", 3, Some(2)),
            stateful_set("queue", 1, Some(1)),
        ])
        .expect_err("2 of 3");
        assert_eq!(
            error.message,
            "not Ready: StatefulSet redis in namespace titan"
        );
        assert!(
            judged(vec![stateful_set("redis", 0, Some(0))]).is_err(),
            "zero replicas"
        );
        assert!(
            judged(vec![stateful_set("redis", 1, None)]).is_err(),
            "none ready yet"
        );
    }
}
