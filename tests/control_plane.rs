//! The local control plane is real: the pinned Kubernetes version answers, the
//! CRDs' validation is enforced by the API server, and the real Job controller's
//! Pods are run by the node agent.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
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
            error.contains("spec.steps[1]") && error.contains("exactly one of command, args or restore"),
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
    })
    .await;
}

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
      containers:
        - name: main
          image: busybox
          command: [sh, -c, {script:?}]
"#
    )
}

fn job_condition(type_: &'static str) -> impl Condition<Job> {
    move |job: Option<&Job>| {
        job.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
    }
}

async fn terminated_container(client: &Client, ns: &str, job: &str) -> ContainerStateTerminated {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one pod for job {job}");
    list.items[0]
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs[0].state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("the container terminated")
}

#[tokio::test]
async fn a_succeeding_job_completes_with_its_output_as_termination_message() {
    support::with_namespace(|client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        support::create_yaml::<Job>(&client, &ns, &job_yaml("hello", "echo hello; exit 0", None))
            .await
            .unwrap();
        support::wait_for(&jobs, "hello", "Complete", LIMIT, job_condition("Complete")).await;
        let terminated = terminated_container(&client, &ns, "hello").await;
        assert_eq!(terminated.exit_code, 0);
        assert_eq!(terminated.message.as_deref(), Some("hello"));
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
        let terminated = terminated_container(&client, &ns, "three").await;
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(terminated.message.as_deref(), Some("failing"));
    })
    .await;
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_deadline_exceeded_and_its_process_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    support::with_namespace(|client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let script = format!("echo $$ > {}; exec sleep 300", pidfile.display());
        support::create_yaml::<Job>(&client, &ns, &job_yaml("slow", &script, Some(2)))
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

        let pid = std::fs::read_to_string(&pidfile)
            .expect("the step wrote its pid")
            .trim()
            .to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while process_running(&pid) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "process {pid} still runs after the deadline"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// A process that was killed may stay a zombie until reaped; that is not running.
fn process_running(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}
