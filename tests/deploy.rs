//! The deployment artefacts: `manifests/` (kustomize), `charts/titan-dr` (Helm) and the CRD
//! copies both carry. First what can be checked from the files (the copies, the rules, the
//! Deployment against the operator's flags, the chart rendered by a real helm against
//! `manifests/`), then against the real control plane: a server-side dry run of
//! `manifests/`, Pod Security "restricted" on the operator's pod, the ServiceAccount's
//! permissions by SubjectAccessReview, and the operator itself running as that
//! ServiceAccount.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Args;
use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use titan_dr::api::DisasterRecovery;
use titan_dr::api::disaster_recovery::RunPhase;
use titan_dr::job::{LABEL_RECOVERY, LABEL_RUN};

/// Every (API group, resource[/subresource], verb) the operator uses — the DisasterRecovery
/// controller today, the Backup controller's reads of keys and passwords, configuration
/// backups (list by label) and restores (server-side apply) — and nothing else.
const OPERATOR_USES: &[(&str, &str, &str)] = &[
    // The resources it serves: watched (list + watch), read, patched.
    ("dr.titan.io", "disasterrecoveries", "get"),
    ("dr.titan.io", "disasterrecoveries", "list"),
    ("dr.titan.io", "disasterrecoveries", "watch"),
    ("dr.titan.io", "disasterrecoveries", "patch"),
    ("dr.titan.io", "backups", "get"),
    ("dr.titan.io", "backups", "list"),
    ("dr.titan.io", "backups", "watch"),
    ("dr.titan.io", "backups", "patch"),
    // Status by server-side apply (patch); get/update for read-modify-write.
    ("dr.titan.io", "disasterrecoveries/status", "get"),
    ("dr.titan.io", "disasterrecoveries/status", "patch"),
    ("dr.titan.io", "disasterrecoveries/status", "update"),
    ("dr.titan.io", "backups/status", "get"),
    ("dr.titan.io", "backups/status", "patch"),
    ("dr.titan.io", "backups/status", "update"),
    // Runs: watched, started (run-now, runOnCreate, schedule), adopted and aborted (patch),
    // deleted past the history limits; their status by server-side apply.
    ("dr.titan.io", "recoveryruns", "get"),
    ("dr.titan.io", "recoveryruns", "list"),
    ("dr.titan.io", "recoveryruns", "watch"),
    ("dr.titan.io", "recoveryruns", "create"),
    ("dr.titan.io", "recoveryruns", "patch"),
    ("dr.titan.io", "recoveryruns", "delete"),
    ("dr.titan.io", "recoveryruns/status", "get"),
    ("dr.titan.io", "recoveryruns/status", "patch"),
    ("dr.titan.io", "recoveryruns/status", "update"),
    // One Job per attempt, watched through `.owns()`, deleted with its run (by owner); an
    // attempt whose pod cannot start, or of an aborted run, recorded on its Job and stopped
    // (patch); a Backup's finished snapshot Jobs deleted.
    ("batch", "jobs", "get"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "patch"),
    ("batch", "jobs", "delete"),
    // Termination messages of finished attempts; watched for pods that cannot start.
    ("", "pods", "get"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    // A configuration Backup of another namespace: that namespace's consent annotation. A
    // drill's throwaway namespace, created and deleted.
    ("", "namespaces", "get"),
    ("", "namespaces", "create"),
    ("", "namespaces", "delete"),
    // The snapshot endpoint: who a token is, and whether it may get a Backup's snapshots.
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
    // Backup keys and Redis passwords; what a configuration Backup selects (the operator
    // grants its snapshot Job `list` of these, which it must hold itself). Restores apply
    // as the restore Job's own ServiceAccount, never as the operator.
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "list"),
    ("", "configmaps", "watch"),
    // A configuration snapshot Job's ServiceAccount, and the Role and RoleBinding that let
    // it list what its Backup selects (server-side apply).
    ("", "serviceaccounts", "create"),
    ("", "serviceaccounts", "patch"),
    ("rbac.authorization.k8s.io", "roles", "create"),
    ("rbac.authorization.k8s.io", "roles", "patch"),
    ("rbac.authorization.k8s.io", "rolebindings", "create"),
    ("rbac.authorization.k8s.io", "rolebindings", "patch"),
    // kube-runtime's Recorder: create, then patch a repeated event's series. A Job without a
    // Pod: its FailedCreate Events (list).
    ("events.k8s.io", "events", "list"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
];

/// What the ServiceAccount must not be able to do: if one of these were allowed, the
/// SubjectAccessReviews would prove nothing.
const NOT_GRANTED: &[(&str, &str, &str)] = &[
    ("", "secrets", "delete"),
    ("", "secrets", "create"),
    ("", "secrets", "patch"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    ("", "pods", "create"),
    ("", "pods/exec", "create"),
    ("batch", "jobs", "update"),
    ("apps", "deployments", "create"),
    ("dr.titan.io", "disasterrecoveries", "delete"),
    ("rbac.authorization.k8s.io", "clusterroles", "create"),
    ("rbac.authorization.k8s.io", "roles", "escalate"),
    ("rbac.authorization.k8s.io", "roles", "bind"),
    ("rbac.authorization.k8s.io", "rolebindings", "delete"),
    ("", "serviceaccounts/token", "create"),
    ("", "namespaces", "list"),
    ("", "namespaces", "patch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        "patch",
    ),
    ("networking.k8s.io", "networkpolicies", "delete"),
];

const NAMESPACE: &str = "titan-dr-system";
const LIMIT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    support::root()
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The documents of a YAML stream, as JSON values, without empty ones.
fn documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{what}: a document does not parse: {e}"));
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The one object of a manifests/ file, typed.
fn manifest<K: serde::de::DeserializeOwned>(file: &str) -> K {
    let docs = documents(&read(Path::new("manifests").join(file)), file);
    assert_eq!(docs.len(), 1, "{file} holds one object");
    serde_json::from_value(docs[0].clone()).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

use support::{helm, kubectl, run};

// ---------------------------------------------------------------------------------------
// From the files

#[test]
fn crd_copies_match_the_generated_crds() {
    let generated = read("crds/crds.yaml");
    for copy in ["manifests/crds.yaml", "charts/titan-dr/crds/crds.yaml"] {
        assert!(
            read(copy) == generated,
            "{copy} differs from crds/crds.yaml: run scripts/sync-deploy.sh and commit the result"
        );
    }
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them_all() {
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("manifests")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            name.ends_with(".yaml"),
            "manifests/{name} is not a .yaml file"
        );
        files.insert(name);
    }
    let kustomization = &documents(&read("manifests/kustomization.yaml"), "kustomization")[0];
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut others = files.clone();
    others.remove("kustomization.yaml");
    assert_eq!(listed, others, "kustomization.yaml lists every other file");

    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ];
    for file in &others {
        let docs = documents(&read(Path::new("manifests").join(file)), file);
        assert!(!docs.is_empty(), "{file} holds no object");
        for doc in docs {
            for field in ["apiVersion", "kind"] {
                assert!(doc[field].is_string(), "{file}: {field} missing");
            }
            assert!(doc["metadata"]["name"].is_string(), "{file}: a name");
            let kind = doc["kind"].as_str().unwrap();
            let namespace = doc["metadata"]["namespace"].as_str();
            if cluster_scoped.contains(&kind) {
                assert_eq!(namespace, None, "{file}: {kind} is cluster-scoped");
            } else {
                assert_eq!(namespace, Some(NAMESPACE), "{file}: {kind}'s namespace");
            }
        }
    }
}

/// The ClusterRole's rules, spelt out as (group, resource, verb).
fn granted(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "no rule is limited to names or URLs: {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(
                        ![group, resource, verb].contains(&&"*".to_string()),
                        "no wildcards: {rule:?}"
                    );
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    granted
}

#[test]
fn the_cluster_role_grants_exactly_what_the_operator_uses() {
    let role: ClusterRole = manifest("clusterrole.yaml");
    let granted = granted(role.rules.as_deref().unwrap_or_default());
    let needed: BTreeSet<(String, String, String)> = OPERATOR_USES
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "the ClusterRole lacks {missing:?}");
    assert!(
        extra.is_empty(),
        "the ClusterRole grants more than the operator uses: {extra:?}"
    );

    let binding: ClusterRoleBinding = manifest("clusterrolebinding.yaml");
    assert_eq!(binding.role_ref.name, role.name_any());
    let subject = &binding.subjects.as_ref().unwrap()[0];
    let account: ServiceAccount = manifest("serviceaccount.yaml");
    assert_eq!(
        (subject.kind.as_str(), Some(subject.name.as_str())),
        ("ServiceAccount", account.metadata.name.as_deref())
    );
    assert_eq!(subject.namespace.as_deref(), Some(NAMESPACE));
}

/// The operator's flags: environment variable → default value (None: no default).
fn operator_flags() -> BTreeMap<String, Option<String>> {
    let command = titan_dr::operator::Config::augment_args(clap::Command::new("operator"));
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_string();
            let default = arg
                .get_default_values()
                .first()
                .map(|v| v.to_string_lossy().into_owned());
            Some((env, default))
        })
        .collect()
}

#[test]
fn the_deployment_runs_the_operator_with_its_flags_as_a_restricted_pod() {
    let deployment: Deployment = manifest("deployment.yaml");
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2), "two replicas, one leader");
    let pod = spec.template.spec.as_ref().unwrap();
    let together = pod.affinity.as_ref().and_then(|a| a.pod_affinity.as_ref());
    let term = &together
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        term.topology_key, "kubernetes.io/hostname",
        "replicas share a ReadWriteOnce volume"
    );
    assert_eq!(pod.containers.len(), 1);
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(format!("ghcr.io/titan-dr/titan-dr:{}", env!("CARGO_PKG_VERSION")).as_str()),
        "the placeholder image carries the crate's version"
    );
    assert_eq!(
        container.args.as_deref(),
        Some(&["operator".to_string()][..])
    );

    // Every flag but the namespace (unset: all namespaces) is set, to its default.
    let env: BTreeMap<&str, &k8s_openapi::api::core::v1::EnvVar> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect();
    let flags = operator_flags();
    assert!(flags.contains_key("TITAN_WATCH_NAMESPACE"));
    // Set on purpose to other values than their defaults: the URL of the Service in front
    // of the snapshot endpoint, and the binary's path in the image.
    let deliberate = BTreeMap::from([
        (
            "TITAN_SNAPSHOT_URL",
            "http://titan-dr.titan-dr-system.svc:8081",
        ),
        ("TITAN_RESTORE_COMMAND", "/usr/local/bin/titan-dr"),
        // Reached through the pod's IP (probes, the Service); the binary's default is loopback.
        ("TITAN_METRICS_ADDR", "0.0.0.0:8080"),
        ("TITAN_SNAPSHOT_ADDR", "0.0.0.0:8081"),
    ]);
    for (name, default) in &flags {
        if name == "TITAN_WATCH_NAMESPACE" {
            assert!(!env.contains_key(name.as_str()), "{name} is left unset");
            continue;
        }
        if let Some(value) = deliberate.get(name.as_str()) {
            assert_eq!(env[name.as_str()].value.as_deref(), Some(*value), "{name}");
            continue;
        }
        let set = env
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is not set"));
        assert_eq!(
            set.value.as_ref(),
            default.as_ref(),
            "{name} is its default"
        );
    }
    for name in env.keys().filter(|n| n.starts_with("TITAN_")) {
        assert!(
            flags.contains_key(*name),
            "{name} is no flag of the operator"
        );
    }
    assert_eq!(
        env["TITAN_OPERATOR_IMAGE"].value.as_deref(),
        container.image.as_deref(),
        "step pods' init containers and restore steps use the operator's own image"
    );
    let lease_namespace = env["TITAN_LEASE_NAMESPACE"].value_from.as_ref().unwrap();
    assert_eq!(
        lease_namespace.field_ref.as_ref().unwrap().field_path,
        "metadata.namespace",
        "the Lease is in the operator's own namespace"
    );
    let pod_name = env["POD_NAME"].value_from.as_ref().unwrap();
    assert_eq!(
        pod_name.field_ref.as_ref().unwrap().field_path,
        "metadata.name",
        "the Events' reporting instance"
    );

    // Pod Security "restricted" (checked by the real admission too, below).
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let drop = security.capabilities.as_ref().unwrap().drop.as_ref();
    assert_eq!(drop, Some(&vec!["ALL".to_string()]));

    let resources = container.resources.as_ref().unwrap();
    for (what, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let list = list.as_ref().unwrap_or_else(|| panic!("no {what}"));
        assert!(
            list.contains_key("cpu") && list.contains_key("memory"),
            "{what}"
        );
    }

    // The backup volume: the claim of manifests/, at /backups.
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/backups")
        .expect("/backups is mounted");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim =
        manifest("persistentvolumeclaim.yaml");
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        claim.name_any()
    );
    assert_eq!(claim.name_any(), "titan-dr-backups");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("titan-dr"),
        "the ServiceAccount of the ClusterRoleBinding"
    );
}

#[test]
fn the_dockerfile_and_the_chart_follow_the_crate() {
    let dockerfile = read("Dockerfile");
    let rust = format!("FROM rust:{}-", env!("CARGO_PKG_RUST_VERSION"));
    assert!(dockerfile.contains(&rust), "the builder is {rust}…");
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "the Deployment's runAsUser"
    );
    assert!(dockerfile.contains("--bin titan-dr"));
    // titan-step, static, where TITAN_STEP_PATH says by default.
    assert!(dockerfile.contains(r#"RUSTFLAGS="-C target-feature=+crt-static""#));
    assert!(dockerfile.contains("-p titan-step"));
    let step_path = operator_flags()["TITAN_STEP_PATH"].clone().unwrap();
    assert!(
        dockerfile.contains(&format!("/out/titan-step {step_path}\n")),
        "the image holds titan-step at {step_path}"
    );
    let chart = &documents(&read("charts/titan-dr/Chart.yaml"), "Chart.yaml")[0];
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
}

/// A wrong value fails at `helm install` (helm checks values.schema.json first) and the
/// error names it.
#[test]
fn the_chart_refuses_a_wrong_value_naming_it() {
    for (value, named) in [
        ("operator.concurrency=many", "/operator/concurrency"),
        ("operator.keepRun=3", "keepRun"),
        ("operator.podStartGrace=soon", "/operator/podStartGrace"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("backups.persistence.size=ten", "/backups/persistence/size"),
    ] {
        let output = Command::new(helm())
            .args(["template", "titan-dr"])
            .arg(root().join("charts/titan-dr"))
            .args(["--set", value])
            .output()
            .expect("running helm");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{value} was accepted");
        assert!(
            error.contains(named),
            "{value}: the error does not name {named}: {error}"
        );
    }
}

/// Renders the chart with helm (`helm template`), extra arguments appended.
fn render_chart(extra: &[&str]) -> Vec<Value> {
    let chart = root().join("charts/titan-dr");
    let mut command = Command::new(helm());
    command
        .args(["template", "titan-dr"])
        .arg(&chart)
        .args(["--namespace", NAMESPACE])
        .args(extra);
    documents(&run(&mut command), "helm template")
}

/// Numbers by value: kustomize writes the CRDs' `minimum: 1.0` as `1`.
fn normalized(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() < 1e15 => {
                Value::from(f as i64)
            }
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(normalized).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalized(v))).collect())
        }
        other => other,
    }
}

/// Helm's own labels, the only thing the chart adds to manifests/.
fn without_helm_labels(mut object: Value) -> Value {
    let labels = object.get_mut("metadata").and_then(|m| m.get_mut("labels"));
    if let Some(labels) = labels.and_then(Value::as_object_mut) {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    object
}

#[test]
fn the_chart_renders_the_manifests_by_default() {
    run(Command::new(helm())
        .args(["lint", "--strict"])
        .arg(root().join("charts/titan-dr")));

    let chart: BTreeMap<String, Value> = render_chart(&["--include-crds"])
        .into_iter()
        .map(without_helm_labels)
        .map(|o| (key(&o), normalized(o)))
        .collect();
    let built = run(Command::new(kubectl())
        .arg("kustomize")
        .arg(root().join("manifests")));
    let mut manifests: BTreeMap<String, Value> = documents(&built, "kubectl kustomize")
        .into_iter()
        .map(|o| (key(&o), normalized(o)))
        .collect();
    // Helm installs into a namespace it is given (--create-namespace); the chart has none.
    assert!(
        manifests
            .remove(&format!("Namespace/{NAMESPACE}"))
            .is_some()
    );

    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        manifests.keys().collect::<Vec<_>>(),
        "the same objects"
    );
    for (key, object) in &manifests {
        assert!(
            &chart[key] == object,
            "{key} differs.\nchart:\n{}\nmanifests:\n{}",
            serde_yaml::to_string(&chart[key]).unwrap(),
            serde_yaml::to_string(object).unwrap()
        );
    }
}

#[test]
fn the_chart_values_change_what_they_say() {
    let objects = render_chart(&[
        "--set",
        "operator.watchNamespace=titan,backups.persistence.enabled=false",
        "--set",
        "serviceAccount.name=dr-operator,fullnameOverride=dr,image.tag=9.9.9",
    ]);
    let by_key: BTreeMap<String, &Value> = objects.iter().map(|o| (key(o), o)).collect();
    assert!(
        !by_key
            .keys()
            .any(|k| k.starts_with("PersistentVolumeClaim/")),
        "no claim without persistence: {:?}",
        by_key.keys()
    );
    let deployment: Deployment = serde_json::from_value(by_key["Deployment/dr"].clone()).unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("dr-operator"));
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/titan-dr/titan-dr:9.9.9")
    );
    let env: BTreeMap<&str, Option<&str>> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(env["TITAN_WATCH_NAMESPACE"], Some("titan"));
    assert_eq!(
        env["TITAN_OPERATOR_IMAGE"],
        Some("ghcr.io/titan-dr/titan-dr:9.9.9")
    );
    let backups = pod.volumes.iter().flatten().find(|v| v.name == "backups");
    assert!(backups.unwrap().empty_dir.is_some());
    let binding: ClusterRoleBinding =
        serde_json::from_value(by_key["ClusterRoleBinding/dr"].clone()).unwrap();
    assert_eq!(binding.subjects.unwrap()[0].name, "dr-operator");
    assert_eq!(
        by_key["ServiceAccount/dr-operator"]["metadata"]["namespace"],
        NAMESPACE
    );

    let objects = render_chart(&["--set", "backups.persistence.existingClaim=snapshots"]);
    assert!(!objects.iter().any(|o| o["kind"] == "PersistentVolumeClaim"));
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "snapshots"
    );
}

// ---------------------------------------------------------------------------------------
// Against the real control plane

/// Runs `body`, then `cleanup`, also when `body` panics.
async fn finally<B, C>(body: B, cleanup: C)
where
    B: Future<Output = ()>,
    C: Future<Output = ()>,
{
    let result = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    cleanup.await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test]
async fn the_manifests_pass_a_server_side_dry_run() {
    // Namespaced objects can only be dry-run into a namespace that exists: create the
    // manifests' namespace for real (with its Pod Security labels), unless it is there.
    let client = support::client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(existing) = namespaces.get_opt(NAMESPACE).await.unwrap()
        && existing.metadata.deletion_timestamp.is_some()
    {
        let uid = existing.uid().unwrap();
        let gone = await_condition(namespaces.clone(), NAMESPACE, conditions::is_deleted(&uid));
        tokio::time::timeout(LIMIT, gone)
            .await
            .expect("an earlier titan-dr-system namespace is deleted in time")
            .unwrap();
    }
    let created = if namespaces.get_opt(NAMESPACE).await.unwrap().is_none() {
        let namespace: Namespace = manifest("namespace.yaml");
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .expect("creating the namespace");
        true
    } else {
        false
    };

    let body = async {
        let output = Command::new(kubectl())
            .args(["apply", "--server-side", "--dry-run=server", "-k"])
            .arg(root().join("manifests"))
            .env("KUBECONFIG", support::kubeconfig())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "kubectl apply --dry-run=server -k manifests/ failed:\n{stdout}{stderr}"
        );
        // Pod Security warns about a Deployment's pod template that would violate the
        // namespace's level; the dry run must produce no warning at all.
        assert!(
            !stderr.contains("Warning"),
            "the API server warned:\n{stderr}"
        );
        let built = run(Command::new(kubectl())
            .arg("kustomize")
            .arg(root().join("manifests")));
        let objects = documents(&built, "kubectl kustomize");
        let applied = stdout
            .lines()
            .filter(|l| l.ends_with("serverside-applied (server dry run)"))
            .count();
        assert_eq!(
            applied,
            objects.len(),
            "every object is accepted:\n{stdout}"
        );
        for object in &objects {
            let name = object["metadata"]["name"].as_str().unwrap();
            assert!(
                stdout.contains(&format!("/{name} serverside-applied")),
                "{} not applied:\n{stdout}",
                key(object)
            );
        }
    };
    finally(body, async {
        if created {
            let _ = namespaces
                .delete(NAMESPACE, &DeleteParams::background())
                .await;
        }
    })
    .await;
}

/// The operator's pod, as the Deployment of manifests/ would create it.
fn operator_pod() -> Pod {
    let deployment: Deployment = manifest("deployment.yaml");
    let template = deployment.spec.template;
    let mut pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        ..Default::default()
    };
    pod.metadata.name = Some("titan-dr-operator".into());
    pod
}

#[tokio::test]
async fn the_operator_pod_is_admitted_under_pod_security_restricted() {
    support::with_namespace(|client, ns| async move {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let label = serde_json::json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"
        }}});
        namespaces
            .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .unwrap();
        // The ServiceAccount admission plugin wants the pod's ServiceAccount to exist.
        let account: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "titan-dr"}})).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };

        // The same pod without its security contexts is rejected, once admission sees the
        // label: the check is real.
        let mut bare = operator_pod();
        bare.spec.as_mut().unwrap().security_context = None;
        bare.spec.as_mut().unwrap().containers[0].security_context = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match pods.create(&dry_run, &bare).await {
                Err(kube::Error::Api(e)) if e.message.contains("violates PodSecurity") => break,
                other => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "a pod without security contexts was not rejected: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }

        let accepted = pods.create(&dry_run, &operator_pod()).await;
        assert!(
            accepted.is_ok(),
            "the operator's pod is rejected under restricted: {accepted:?}"
        );
    })
    .await;
}

/// The ServiceAccount `titan-dr` in `ns`, bound for real to a copy of the ClusterRole of
/// manifests/ named after the namespace. Returns the copy's name.
async fn grant_service_account(client: &Client, ns: &str) -> String {
    let name = format!("titan-dr-test-{ns}");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut account: ServiceAccount = manifest("serviceaccount.yaml");
    account.metadata.namespace = Some(ns.into());
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let mut role: ClusterRole = manifest("clusterrole.yaml");
    role.metadata.name = Some(name.clone());
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let mut binding: ClusterRoleBinding = manifest("clusterrolebinding.yaml");
    binding.metadata.name = Some(name.clone());
    binding.role_ref.name = name.clone();
    for subject in binding.subjects.iter_mut().flatten() {
        subject.namespace = Some(ns.into());
    }
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    name
}

async fn revoke(client: &Client, name: &str) {
    let _ = Api::<ClusterRoleBinding>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

/// Asks the API server whether the ServiceAccount `titan-dr` of `ns` may do `verb` on
/// `resource` of `group` in `namespace` (None: cluster-wide or all namespaces).
async fn may(
    client: &Client,
    ns: &str,
    (group, resource, verb): (&str, &str, &str),
    namespace: Option<&str>,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:titan-dr")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                verb: Some(verb.into()),
                namespace: namespace.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("a SubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

#[tokio::test]
async fn the_service_account_may_do_everything_the_operator_does() {
    support::with_namespace(|client, ns| async move {
        let first = OPERATOR_USES[0];
        assert!(
            !may(&client, &ns, first, None).await,
            "before the binding the ServiceAccount may not {first:?}: the reviews would prove nothing"
        );
        let name = grant_service_account(&client, &ns).await;
        let body = async {
            // The authorizer's cache learns of the binding shortly after it is created.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !may(&client, &ns, first, None).await {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the binding never took effect for {first:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut denied = Vec::new();
            for &permission in OPERATOR_USES {
                let cluster_scoped = permission.1 == "customresourcedefinitions";
                // All namespaces (the default watch) and one in particular.
                let namespaces: &[Option<&str>] = if cluster_scoped {
                    &[None]
                } else {
                    &[None, Some("titan")]
                };
                for &namespace in namespaces {
                    if !may(&client, &ns, permission, namespace).await {
                        denied.push((permission, namespace));
                    }
                }
            }
            assert!(denied.is_empty(), "denied to the ServiceAccount: {denied:?}");
            for &permission in NOT_GRANTED {
                assert!(
                    !may(&client, &ns, permission, Some("titan")).await,
                    "the ServiceAccount may {permission:?}, which it should not"
                );
            }
        };
        finally(body, revoke(&client, &name)).await;
    })
    .await;
}

const SCENARIO: &str = r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {name: as-service-account}
spec:
  runOnCreate: true
  successfulRunsHistoryLimit: 1
  scenario: as-service-account
  objectives: {rto: 10m, rpo: 5m}
  backups: [redis]
  template: {image: toolbox:1.0}
  steps:
    - name: recover
      command: echo recovered
      expect: {outputContains: recovered}
      timeout: 60s
  validations:
    - name: check
      command: echo ok
      timeout: 60s
"#;

fn run_finished(run: &'static str) -> impl Fn(Option<&DisasterRecovery>) -> bool {
    move |dr| {
        let status = dr.and_then(|d| d.status.as_ref());
        status.and_then(|s| s.run.run_id.as_deref()) == Some(run)
            && matches!(
                status.and_then(|s| s.run.phase),
                Some(RunPhase::Succeeded | RunPhase::Failed)
            )
    }
}

/// Creates [`SCENARIO`] and waits for its first run to finish.
async fn first_run(
    client: &Client,
    ns: &str,
) -> (
    Api<DisasterRecovery>,
    titan_dr::api::disaster_recovery::DisasterRecoveryStatus,
) {
    let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), ns);
    let dr: DisasterRecovery =
        serde_yaml::from_str(&SCENARIO.replace("toolbox:1.0", support::TOOLBOX)).unwrap();
    drs.create(&PostParams::default(), &dr).await.unwrap();
    let done = support::wait_for(
        &drs,
        "as-service-account",
        "run 1 to finish as the ServiceAccount",
        LIMIT,
        run_finished("1"),
    )
    .await;
    (drs, done.status.unwrap())
}

/// The whole DisasterRecovery path with nothing but the chart's RBAC: the operator installed
/// by `helm install` with the local image runs as its ServiceAccount — CRD wait, watches,
/// Jobs, Pods, status, Events, the Backup lookup of RPOMet and pruning old runs.
#[tokio::test]
async fn the_operator_works_as_its_service_account() {
    support::with_namespace(|client, ns| async move {
        // One run of history (successfulRunsHistoryLimit), so the second run's end deletes the
        // first run and, by owner, its Jobs.
        let operator = support::Operator::install(&ns).await;
        let (drs, status) = first_run(&client, &ns).await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded), "{status:#?}");
        // The Backup lookup was allowed: a missing Backup, not an error.
        let rpo = status
            .run
            .conditions
            .iter()
            .find(|c| c.type_ == "RPOMet")
            .expect("RPOMet");
        assert_eq!(rpo.reason, "BackupNotFound", "{rpo:?}");

        // A second run deletes the first.
        let now = serde_json::json!({"metadata": {"annotations": {
            titan_dr::controller::disaster_recovery::RUN_NOW: "2"
        }}});
        drs.patch(
            "as-service-account",
            &PatchParams::default(),
            &Patch::Merge(&now),
        )
        .await
        .unwrap();
        let done = support::wait_for(
            &drs,
            "as-service-account",
            "run 2 to finish as the ServiceAccount",
            LIMIT,
            run_finished("2"),
        )
        .await;
        assert_eq!(done.status.unwrap().run.phase, Some(RunPhase::Succeeded));
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let first_run = ListParams::default().labels(&format!(
            "{LABEL_RECOVERY}=as-service-account,{LABEL_RUN}=1"
        ));
        // The run goes at once; its Jobs go by owner, with the garbage collector.
        let runs: Api<titan_dr::api::RecoveryRun> = Api::namespaced(client.clone(), &ns);
        let mut pruned = false;
        for _ in 0..120 {
            let run = runs.get_opt("as-service-account-1").await.unwrap();
            let left = jobs.list(&first_run).await.unwrap().items;
            if run.is_none() && left.is_empty() {
                pruned = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        assert!(pruned, "run 1 and its Jobs are pruned within 60 s");
        assert!(
            runs.get_opt("as-service-account-2")
                .await
                .unwrap()
                .is_some(),
            "the newest run stays"
        );

        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let published = events.list(&ListParams::default()).await.unwrap().items;
        let reasons: BTreeSet<&str> = published
            .iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("titan-dr-operator"))
            .filter_map(|e| e.reason.as_deref())
            .collect();
        for reason in ["RunStarted", "StepSucceeded", "RecoverySucceeded"] {
            assert!(reasons.contains(reason), "no {reason} Event: {reasons:?}");
        }

        let log = operator.logs();
        for word in ["forbidden", "Forbidden"] {
            assert!(
                !log.contains(word),
                "the operator was refused something:\n{log}"
            );
        }
    })
    .await;
}

/// The example alert: off by default (it needs the Prometheus Operator's CRD); when on, a
/// rule on the newest snapshot's age against the RPO, and one on failed attempts.
#[test]
fn the_chart_renders_the_backup_alerts_only_when_asked() {
    let kinds = |docs: &[Value]| -> Vec<String> {
        docs.iter()
            .filter_map(|d| d["kind"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(!kinds(&render_chart(&[])).contains(&"PrometheusRule".to_owned()));
    let docs = render_chart(&[
        "--set",
        "alerts.prometheusRule=true,alerts.backupMaxAgeSeconds=600",
    ]);
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let rules = &rule["spec"]["groups"][0]["rules"];
    assert_eq!(rules[0]["alert"], "TitanBackupOlderThanRPO");
    assert_eq!(
        rules[0]["expr"],
        "time() - titan_dr_backup_last_success_timestamp_seconds > 600"
    );
    let summary = rules[0]["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("{{ $labels.namespace }}/{{ $labels.backup }}"),
        "{summary}"
    );
    assert_eq!(
        rules[1]["expr"],
        "increase(titan_dr_backup_failures_total[15m]) > 0"
    );
    let runs = &rule["spec"]["groups"][1]["rules"];
    assert_eq!(runs[0]["alert"], "TitanScenarioUntested");
    let expr = runs[0]["expr"].as_str().unwrap();
    assert!(
        expr.ends_with("(titan_dr_run_last_success_timestamp_seconds) > 2678400"),
        "{expr}"
    );
    assert_eq!(
        runs[1]["expr"],
        "titan_dr_run_achieved_rto_seconds > titan_dr_run_rto_objective_seconds"
    );
}

/// `rbac.namespaced`: no ClusterRole; the ClusterRole's rules on namespaced resources as a Role
/// in the watched namespace, and only system:auth-delegator bound cluster-wide. Without a
/// watched namespace the chart refuses, naming the value.
#[test]
fn the_namespaced_install_grants_roles_only() {
    let docs = render_chart(&[
        "--set",
        "rbac.namespaced=true,operator.watchNamespace=titan",
    ]);
    let of_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    assert!(of_kind("ClusterRole").is_empty(), "no ClusterRole");
    let bindings = of_kind("ClusterRoleBinding");
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0]["roleRef"]["name"], "system:auth-delegator");
    let role = of_kind("Role")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == "titan")
        .expect("a Role in the watched namespace");
    let role: Role = serde_json::from_value(role.clone()).unwrap();
    let cluster_scoped: BTreeSet<(String, String, String)> = [
        ("", "namespaces", "get"),
        // A drill's namespace: a namespaced install runs no drills.
        ("", "namespaces", "create"),
        ("", "namespaces", "delete"),
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    ]
    .iter()
    .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
    .collect();
    let cluster: ClusterRole = manifest("clusterrole.yaml");
    let expected: BTreeSet<_> = granted(cluster.rules.as_deref().unwrap_or_default())
        .difference(&cluster_scoped)
        .cloned()
        .collect();
    let rules = granted(role.rules.as_deref().unwrap_or_default());
    assert_eq!(rules, expected, "the Role's rules");
    let binding = of_kind("RoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["namespace"] == "titan")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(binding["roleRef"]["name"], role.name_any());

    let mut command = Command::new(helm());
    command
        .args(["template", "titan-dr"])
        .arg(root().join("charts/titan-dr"))
        .args(["--set", "rbac.namespaced=true"]);
    let output = command.output().unwrap();
    assert!(!output.status.success(), "rendered without a namespace");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("operator.watchNamespace"), "{said}");
}

/// The admission policy's binding is limited to the watched namespace, and the allow-lists
/// appear only when set.
#[test]
fn the_admission_policy_follows_its_values() {
    let docs = render_chart(&[
        "--set",
        "operator.watchNamespace=titan,admissionPolicy.serviceAccounts={restorer}",
    ]);
    let requests = |d: &&Value| d["metadata"]["name"] == "titan-dr-requests";
    let find = |kind: &str| {
        docs.iter()
            .filter(requests)
            .find(|d| d["kind"] == kind)
            .unwrap()
    };
    let binding = find("ValidatingAdmissionPolicyBinding");
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "titan"
    );
    let policy = serde_json::to_string(find("ValidatingAdmissionPolicy")).unwrap();
    assert!(policy.contains(r#"[\"restorer\"]"#), "{policy}");
    assert!(
        !policy.contains("startsWith"),
        "no image rule unless imagePrefixes is set"
    );
    let off = render_chart(&[
        "--set",
        "admissionPolicy.enabled=false,networkPolicy.enabled=false",
    ]);
    for kind in [
        "ValidatingAdmissionPolicy",
        "MutatingAdmissionPolicy",
        "NetworkPolicy",
    ] {
        assert!(!off.iter().any(|d| d["kind"] == kind), "{kind} rendered");
    }
    // The requester policies: bound where the operator works, and the operator's own account
    // (which names the recovery on the runs it starts) is the one exception.
    let requester = docs
        .iter()
        .find(|d| d["kind"] == "MutatingAdmissionPolicyBinding")
        .unwrap();
    assert_eq!(
        requester["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "titan"
    );
    let check = docs
        .iter()
        .find(|d| {
            d["kind"] == "ValidatingAdmissionPolicy"
                && d["metadata"]["name"] == "titan-dr-run-requester"
        })
        .unwrap();
    let check = serde_json::to_string(check).unwrap();
    assert!(
        check.contains("system:serviceaccount:titan-dr-system:titan-dr"),
        "{check}"
    );
}

/// The operator with Roles only (rbac.namespaced): a recovery runs, and a configuration
/// Backup of its namespace snapshots (it grants its Job `list` through a Role, which the
/// operator may because its own Role holds that right); nothing it does is refused.
#[tokio::test]
async fn the_operator_works_with_roles_only() {
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install_with(&ns, &["rbac.namespaced=true"]).await;
        let (_, status) = first_run(&client, &ns).await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded), "{status:#?}");

        let settings = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, labels: {app: titan}}\ndata: {mode: live}\n";
        support::create_yaml::<k8s_openapi::api::core::v1::ConfigMap>(&client, &ns, settings)
            .await
            .unwrap();
        let key = titan_dr::backup::BackupKey::generate();
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        let backup = "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {name: config}\nspec:\n  source: {configMaps: {selector: {matchLabels: {app: titan}}}}\n  destination: {path: config}\n  encryption: {secretRef: {name: backup-key}}\n";
        support::create_yaml::<titan_dr::api::Backup>(&client, &ns, backup)
            .await
            .unwrap();
        let backups: Api<titan_dr::api::Backup> = Api::namespaced(client.clone(), &ns);
        let ready = support::wait_for(
            &backups,
            "config",
            "a snapshot with Roles only",
            LIMIT,
            |b: Option<&titan_dr::api::Backup>| {
                b.and_then(|b| b.status.as_ref())
                    .is_some_and(|s| !s.snapshots.is_empty() || s.failed_attempts.is_some())
            },
        )
        .await;
        let status = ready.status.unwrap();
        assert_eq!(status.snapshots.len(), 1, "{status:#?}");

        let log = operator.logs();
        for word in ["forbidden", "Forbidden"] {
            assert!(!log.contains(word), "the operator was refused:\n{log}");
        }
    })
    .await;
}
