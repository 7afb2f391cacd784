//! The local cluster is real: the pinned Kubernetes version answers, the CRDs'
//! validation is enforced by the API server, kube-scheduler places the Job
//! controller's Pods on a kubelet that runs them from local images with containerd,
//! Service names resolve through CoreDNS and kube-proxy, and claims are bound to
//! volumes that local-path-provisioner makes.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ContainerStateTerminated, Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::wait::Condition;
use kube::{Api, Client};
use titan_dr::api::DisasterRecovery;

const LIMIT: Duration = Duration::from_secs(60);

fn pinned_kubernetes_version() -> String {
    let go_mod =
        std::fs::read_to_string(support::root().join("tests/control-plane/go.mod")).unwrap();
    go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("k8s.io/kubernetes is required in go.mod")
        .to_string()
}

#[tokio::test]
async fn api_server_reports_the_pinned_version() {
    let version = support::client().await.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, pinned_kubernetes_version());
    assert_eq!(version.major, "1");
}

const VALID_DR: &str = r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {name: NAME}
spec:
  runOnCreate: true
  scenario: complete-system-failure
  severity: Critical
  objectives: {rto: 15m, rpo: 5m}
  components:
    - name: redis
    - name: titan-brain
      dependsOn: [redis]
  steps:
    - name: start-redis
      component: redis
      command: redis-server --daemonize yes
      timeout: 30s
    - name: start-brain
      component: titan-brain
      args: [echo, brain]
      timeout: 1m30s
      critical: false
      retries: 2
  validations:
    - name: redis-ping
      command: redis-cli ping
      expect: {outputContains: PONG}
      timeout: 5s
"#;

/// Sent untyped, so that input the Rust types would refuse reaches the API server.
async fn create_dr(
    client: &Client,
    ns: &str,
    name: &str,
    yaml: &str,
) -> Result<DynamicObject, String> {
    let resource = ApiResource::erase::<DisasterRecovery>(&());
    let object: DynamicObject = serde_yaml::from_str(&yaml.replace("NAME", name)).unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn crds_accept_a_valid_recovery_and_reject_invalid_ones_naming_the_field() {
    support::with_namespace(|client, ns| async move {
        create_dr(&client, &ns, "valid", VALID_DR)
            .await
            .expect("a valid DisasterRecovery is accepted");

        let duplicate = VALID_DR.replace("name: start-brain", "name: start-redis");
        let error = create_dr(&client, &ns, "duplicate", &duplicate)
            .await
            .unwrap_err();
        assert!(
            error.contains("spec.steps[1]") && error.contains("Duplicate value"),
            "{error}"
        );
        assert!(
            error.contains("start-redis"),
            "the duplicate is named: {error}"
        );

        let bad_duration = VALID_DR.replace("timeout: 30s", "timeout: 30 seconds");
        let error = create_dr(&client, &ns, "bad-duration", &bad_duration)
            .await
            .unwrap_err();
        assert!(error.contains("spec.steps[0].timeout"), "{error}");

        let bad_rto = VALID_DR.replace("rto: 15m", "rto: fifteen");
        let error = create_dr(&client, &ns, "bad-rto", &bad_rto)
            .await
            .unwrap_err();
        assert!(error.contains("spec.objectives.rto"), "{error}");

        let bad_severity = VALID_DR.replace("severity: Critical", "severity: Catastrophic");
        let error = create_dr(&client, &ns, "bad-severity", &bad_severity)
            .await
            .unwrap_err();
        assert!(
            error.contains("spec.severity") && error.contains("Unsupported value"),
            "{error}"
        );

        let both = VALID_DR.replace(
            "args: [echo, brain]",
            "args: [echo]\n      command: echo brain",
        );
        let error = create_dr(&client, &ns, "both", &both).await.unwrap_err();
        assert!(
            error.contains("spec.steps[1]") && error.contains("exactly one of command, args, restore or probe"),
            "{error}"
        );

        let two_targets = VALID_DR.replace(
            "args: [echo, brain]",
            "restore: {backup: redis, configuration: {}, redis: {dataVolume: {emptyDir: {}}, address: 'r:6379'}}",
        );
        let error = create_dr(&client, &ns, "two-targets", &two_targets).await.unwrap_err();
        assert!(
            error.contains("spec.steps[1].restore") && error.contains("exactly one of redis or configuration"),
            "{error}"
        );

        let too_many_retries = VALID_DR.replace("retries: 2", "retries: 11");
        let error = create_dr(&client, &ns, "retries", &too_many_retries)
            .await
            .unwrap_err();
        assert!(error.contains("spec.steps[1].retries"), "{error}");

        // A name that cannot be the dr.titan.io/recovery label of its Jobs (a label value
        // is at most 63 characters) is refused, not left Running forever.
        let long = "n".repeat(70);
        let error = create_dr(&client, &ns, &long, VALID_DR).await.unwrap_err();
        assert!(
            error.contains("metadata.name must be at most 63 characters"),
            "{error}"
        );
        create_dr(&client, &ns, &"n".repeat(63), VALID_DR)
            .await
            .expect("a 63-character name is a label value");
    })
    .await;
}

/// What Pod Security `restricted` asks of every pod of a test namespace.
const RESTRICTED: &str =
    "securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}";
const RESTRICTED_CONTAINER: &str =
    "securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}";

fn job_yaml(name: &str, script: &str, deadline: Option<u32>) -> String {
    let deadline = deadline
        .map(|s| format!("activeDeadlineSeconds: {s}"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
  backoffLimit: 0
  {deadline}
  template:
    spec:
      restartPolicy: Never
      {RESTRICTED}
      containers:
        - name: main
          image: {image}
          command: [sh, -c, {script:?}]
          terminationMessagePolicy: FallbackToLogsOnError
          {RESTRICTED_CONTAINER}
"#,
        image = support::TOOLBOX
    )
}

fn job_condition(type_: &'static str) -> impl Condition<Job> {
    move |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }
}

async fn job_pod(client: &Client, ns: &str, job: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one pod for job {job}");
    list.items.into_iter().next().unwrap()
}

fn terminated(pod: &Pod) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs[0].state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("the container terminated")
}

#[tokio::test]
async fn the_node_is_a_kubelet_of_the_pinned_version_on_containerd() {
    let client = support::client().await;
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 1, "one node");
    let node = &nodes.items[0];
    let status = node.status.as_ref().unwrap();
    let info = status.node_info.as_ref().unwrap();
    assert_eq!(info.kubelet_version, pinned_kubernetes_version());
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    let ready = status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready");
    assert_eq!(ready.map(|c| c.status.as_str()), Some("True"), "{ready:?}");
    // The node-lifecycle controller lifted the kubelet's start-up taint.
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    assert!(taints.is_empty(), "{taints:?}");
}

#[tokio::test]
async fn a_jobs_pod_is_scheduled_and_runs_from_a_local_image() {
    support::with_namespace(|client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let script = "echo hello > /dev/termination-log";
        support::create_yaml::<Job>(&client, &ns, &job_yaml("hello", script, None))
            .await
            .unwrap();
        support::wait_for(&jobs, "hello", "Complete", LIMIT, job_condition("Complete")).await;
        let pod = job_pod(&client, &ns, "hello").await;
        let terminated = terminated(&pod);
        assert_eq!(terminated.exit_code, 0);
        assert_eq!(terminated.message.as_deref(), Some("hello\n"));
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("titan-node")
        );
        let status = pod.status.as_ref().unwrap();
        let container = &status.container_statuses.as_ref().unwrap()[0];
        assert!(
            container.image_id.starts_with("sha256:") || container.image_id.contains("@sha256:"),
            "{}",
            container.image_id
        );
        // Bound by kube-scheduler, not by anything of ours.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let scheduled = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Scheduled"))
            .expect("a Scheduled event");
        assert_eq!(
            scheduled.reporting_component.as_deref(),
            Some("default-scheduler")
        );
    })
    .await;
}

#[tokio::test]
async fn a_job_whose_command_exits_3_fails_with_exit_code_3() {
    support::with_namespace(|client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        support::create_yaml::<Job>(
            &client,
            &ns,
            &job_yaml("three", "echo failing >&2; exit 3", None),
        )
        .await
        .unwrap();
        support::wait_for(&jobs, "three", "Failed", LIMIT, job_condition("Failed")).await;
        let terminated = terminated(&job_pod(&client, &ns, "three").await);
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(
            terminated.message.as_deref().map(str::trim),
            Some("failing")
        );
    })
    .await;
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_deadline_exceeded_and_its_pod_is_gone() {
    support::with_namespace(|client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        support::create_yaml::<Job>(&client, &ns, &job_yaml("slow", "exec sleep 300", Some(2)))
            .await
            .unwrap();
        let job = support::wait_for(&jobs, "slow", "Failed", LIMIT, job_condition("Failed")).await;
        let failed = job
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Failed")
            .unwrap();
        assert_eq!(failed.reason.as_deref(), Some("DeadlineExceeded"));
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let running = ListParams::default().labels("job-name=slow");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = pods.list(&running).await.unwrap().items;
            let alive = left
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
            if !alive {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pod still runs: {left:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_service_name_resolves_and_answers_from_a_pod() {
    support::with_namespace(|client, ns| async move {
        let redis = format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: redis, labels: {{app: redis}}}}
spec:
  {RESTRICTED}
  containers:
    - name: redis
      image: localhost/titan-redis:local
      args: [--port, "6379", --save, "", --protected-mode, "no"]
      {RESTRICTED_CONTAINER}
"#
        );
        support::create_yaml::<Pod>(&client, &ns, &redis).await.unwrap();
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: cache}\nspec: {selector: {app: redis}, ports: [{port: 6379}]}";
        support::create_yaml::<Service>(&client, &ns, service).await.unwrap();
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let script = format!(
            "until redis-cli -h cache.{ns}.svc.cluster.local ping > /dev/termination-log; do sleep 0.5; done"
        );
        support::create_yaml::<Job>(&client, &ns, &job_yaml("ping", &script, Some(60)))
            .await
            .unwrap();
        support::wait_for(&jobs, "ping", "Complete", LIMIT, job_condition("Complete")).await;
        let terminated = terminated(&job_pod(&client, &ns, "ping").await);
        assert_eq!(terminated.message.as_deref(), Some("PONG\n"));
    })
    .await;
}

#[tokio::test]
async fn a_claim_is_bound_to_a_volume_the_provisioner_made_and_keeps_its_data() {
    support::with_namespace(|client, ns| async move {
        let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}";
        support::create_yaml::<PersistentVolumeClaim>(&client, &ns, claim).await.unwrap();
        let with_claim = |name: &str, script: &str| {
            job_yaml(name, script, Some(60)).replace(
                "      containers:\n",
                "      volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]\n      containers:\n",
            ) + "          volumeMounts: [{name: data, mountPath: /data}]\n"
        };
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        support::create_yaml::<Job>(&client, &ns, &with_claim("write", "echo kept > /data/file"))
            .await
            .unwrap();
        support::wait_for(&jobs, "write", "Complete", LIMIT, job_condition("Complete")).await;
        let script = "cat /data/file > /dev/termination-log";
        support::create_yaml::<Job>(&client, &ns, &with_claim("read", script)).await.unwrap();
        support::wait_for(&jobs, "read", "Complete", LIMIT, job_condition("Complete")).await;
        let terminated = terminated(&job_pod(&client, &ns, "read").await);
        assert_eq!(terminated.message.as_deref(), Some("kept\n"));

        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let bound = claims.get("data").await.unwrap();
        assert_eq!(bound.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
        let volume = bound.spec.and_then(|s| s.volume_name).expect("a volume name");
        let pv = Api::<PersistentVolume>::all(client.clone()).get(&volume).await.unwrap();
        let annotations = pv.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("pv.kubernetes.io/provisioned-by").map(String::as_str),
            Some("rancher.io/local-path"),
            "{annotations:?}"
        );
    })
    .await;
}
