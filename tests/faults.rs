//! The fault suite, on the real node with the operator installed by its chart: the operator
//! killed at random points of recoveries while a Backup takes scheduled snapshots, the API
//! server stopped mid-run, etcd and the kubelet restarted mid-step. Every run must end as an
//! undisturbed run does, with one Job per attempt.
//!
//! `make test` runs a bounded sample (`TITAN_FAULT_KILLS`, default 6; outages of
//! `TITAN_FAULT_OUTAGES`, default `30`); `make test-faults` runs the whole suite (200 kills,
//! outages of 30 s and 120 s). The tests take turns: an outage stops the API for all of them.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use proptest::prelude::RngExt;
use proptest::test_runner::{RngAlgorithm, TestRng};
use titan_dr::api::disaster_recovery::{DisasterRecoveryStatus, RunPhase, StepPhase};
use titan_dr::api::{Backup, DisasterRecovery};
use titan_dr::backup::BackupKey;
use titan_dr::job::LABEL_RECOVERY;

/// One fault at a time: an outage stops the API server for every test.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const STEPS: &str = concat!(
    "    - {name: one, command: 'echo one; sleep 1'}\n",
    "    - {name: two, after: [one], command: 'echo two; sleep 1'}\n",
    "    - {name: three, after: [one], command: 'echo three; sleep 2'}\n",
    "    - {name: flaky, after: [two], command: 'echo flaky; exit 1', retries: 1, critical: false}\n",
    "    - {name: four, after: [two, three], command: 'echo four', expect: {outputContains: four}}",
);

fn scenario(name: &str, steps: &str) -> DisasterRecovery {
    serde_yaml::from_str(&format!(
        "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: {name}}}\nspec:\n  runOnCreate: true\n  scenario: {name}\n  template: {{image: {}}}\n  steps:\n{steps}\n  validations:\n    - {{name: check, command: 'echo ok', expect: {{outputContains: ok}}}}\n",
        support::TOOLBOX
    ))
    .unwrap()
}

/// Name, phase, attempts, exit code and output of every step: comparable between runs.
type Outcome = Vec<(String, StepPhase, u32, Option<i32>, Option<String>)>;

fn outcome(status: &DisasterRecoveryStatus) -> Outcome {
    let all = status.run.steps.iter().chain(&status.run.validations);
    all.map(|s| {
        let output = s.output.clone();
        (s.name.clone(), s.phase, s.attempts, s.exit_code, output)
    })
    .collect()
}

fn finished(dr: Option<&DisasterRecovery>) -> bool {
    let phase = dr.and_then(|d| d.status.as_ref()).and_then(|s| s.run.phase);
    matches!(phase, Some(RunPhase::Succeeded | RunPhase::Failed))
}

async fn start(client: &Client, ns: &str, dr: &DisasterRecovery) -> Api<DisasterRecovery> {
    let api: Api<DisasterRecovery> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), dr).await.unwrap();
    api
}

async fn wait_finished(api: &Api<DisasterRecovery>, name: &str, limit: Duration) -> Outcome {
    let done = support::wait_for(api, name, "the run to finish", limit, finished).await;
    outcome(&done.status.unwrap())
}

/// The readable names (`<dr>-<run>-<step>-<attempt>`, without the owner's hash) of the Jobs
/// of `name`, sorted.
async fn job_names(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let selector = format!("{LABEL_RECOVERY}={name}");
    let listed = jobs.list(&ListParams::default().labels(&selector)).await;
    let mut names: Vec<String> = listed
        .unwrap()
        .items
        .iter()
        .map(|job| job.name_any().rsplit_once('-').unwrap().0.to_owned())
        .collect();
    names.sort();
    names
}

fn expected_jobs(name: &str) -> Vec<String> {
    let attempts = [
        "check-0", "flaky-0", "flaky-1", "four-0", "one-0", "three-0", "two-0",
    ];
    attempts.iter().map(|a| format!("{name}-1-{a}")).collect()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

/// A configuration Backup snapshotting every minute, with its key.
async fn scheduled_backup(client: &Client, ns: &str) -> Api<Backup> {
    support::create_key_secret(client, ns, "backup-key", &BackupKey::generate()).await;
    let config = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: titan-config, labels: {app: titan}}\ndata: {mode: live}\n";
    support::create_yaml::<ConfigMap>(client, ns, config)
        .await
        .unwrap();
    let backup = "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {name: config}\nspec:\n  source: {configMaps: {selector: {matchLabels: {app: titan}}}}\n  schedule: '* * * * *'\n  destination: {path: faults}\n  encryption: {secretRef: {name: backup-key}}\n";
    support::create_yaml::<Backup>(client, ns, backup)
        .await
        .unwrap();
    Api::namespaced(client.clone(), ns)
}

/// `TITAN_FAULT_KILLS` kills of the operator's pod (force-deleted, no grace) at random points
/// of consecutive recoveries, while a Backup snapshots on its schedule: every run ends with
/// the undisturbed run's outcome and one Job per attempt; no snapshot is taken twice.
#[tokio::test]
async fn operator_kills_at_random_points_change_no_outcome_and_duplicate_nothing() {
    let _turn = TURN.lock().await;
    support::with_namespace(|client, ns| async move {
        let kills = env_number("TITAN_FAULT_KILLS", 6);
        let seed = env_number("TITAN_FAULT_SEED", std::process::id() as u64);
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
        let operator = support::Operator::install(&ns).await;
        let backups = scheduled_backup(&client, &ns).await;
        let limit = Duration::from_secs(240);
        let reference = {
            let api = start(&client, &ns, &scenario("reference", STEPS)).await;
            wait_finished(&api, "reference", limit).await
        };
        let (started, mut done, mut runs) = (Instant::now(), 0, 0);
        while done < kills {
            let name = format!("killed-{runs}");
            let api = start(&client, &ns, &scenario(&name, STEPS)).await;
            // Kills at random points until the run has finished: early, mid-step, mid-write.
            while done < kills && !finished(api.get_opt(&name).await.unwrap().as_ref()) {
                let pause: u64 = rng.random_range(0..3000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                operator.kill().await;
                done += 1;
            }
            let got = wait_finished(&api, &name, limit).await;
            assert_eq!(got, reference, "{name} after {done} kills (seed {seed})");
            assert_eq!(job_names(&client, &ns, &name).await, expected_jobs(&name));
            runs += 1;
        }
        let status = backups.get("config").await.unwrap().status.unwrap_or_default();
        assert!(!status.snapshots.is_empty(), "no snapshot: {:?}", status.conditions);
        let snapshots = status.snapshots;
        let ids: BTreeSet<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), snapshots.len(), "a snapshot recorded twice");
        let minutes: BTreeSet<&str> = ids.iter().map(|id| &id[..13]).collect();
        assert_eq!(minutes.len(), ids.len(), "two snapshots of one scheduled minute: {ids:?}");
        println!(
            "faults: {done} operator kills over {runs} runs in {:.0} s (seed {seed}), {} snapshots, 0 duplicates",
            started.elapsed().as_secs_f64(),
            ids.len()
        );
    })
    .await;
}

/// The outages to cause (`TITAN_FAULT_OUTAGES`), `component:seconds[:pause]` separated by
/// commas: the component restarted after `seconds` down, or with `pause` stopped (SIGSTOP)
/// for `seconds` and continued.
fn outages() -> Vec<(String, u64, String)> {
    let list = std::env::var("TITAN_FAULT_OUTAGES")
        .unwrap_or_else(|_| "apiserver:30:pause,etcd:0,kubelet:0".into());
    list.split(',')
        .map(|item| {
            let mut parts = item.split(':');
            let (Some(name), Some(seconds)) = (parts.next(), parts.next()) else {
                panic!("TITAN_FAULT_OUTAGES: {item:?} is not component:seconds[:pause]")
            };
            let mode = parts.next().unwrap_or("restart");
            (
                name.to_owned(),
                seconds.parse().expect("seconds"),
                mode.to_owned(),
            )
        })
        .collect()
}

/// Restarts `component` of the cluster after `seconds` down, or pauses it (blocking).
async fn outage(component: &str, seconds: u64, mode: &str) {
    let mut command =
        std::process::Command::new(support::root().join("scripts/cluster-restart.sh"));
    command.args([component, &seconds.to_string(), mode]);
    tokio::task::spawn_blocking(move || support::run(&mut command))
        .await
        .unwrap();
}

/// Waits until the API server answers reads of DisasterRecoveries again (etcd behind it too).
async fn api_back(api: &Api<DisasterRecovery>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while api.list(&ListParams::default().limit(1)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the API server did not come back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When the Job `prefix-<suffix>` got its Complete condition (to the second).
async fn completed_at(client: &Client, ns: &str, prefix: &str) -> Timestamp {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let listed = jobs.list(&ListParams::default()).await.unwrap().items;
    let job = listed
        .iter()
        .find(|j| j.name_any().starts_with(prefix))
        .unwrap_or_else(|| panic!("no Job {prefix}-*"));
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let complete = conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Complete" && c.status == "True");
    complete
        .and_then(|c| c.last_transition_time.as_ref())
        .unwrap_or_else(|| panic!("{prefix}: not Complete"))
        .0
}

fn duration(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// Whether the operator at `ip` says it leads (`titan_dr_leader`); `None` without an answer.
async fn leading(ip: &str) -> Option<bool> {
    let scrape = support::http_get(ip, 8080, "/metrics");
    let (_, body) = tokio::time::timeout(Duration::from_secs(2), scrape)
        .await
        .ok()?;
    let value = body
        .lines()
        .find_map(|l| l.strip_prefix("titan_dr_leader "))?;
    Some(value.trim() == "1")
}

fn step_phase(dr: Option<&DisasterRecovery>, name: &str) -> Option<StepPhase> {
    let status = dr?.status.as_ref()?;
    Some(status.run.steps.iter().find(|s| s.name == name)?.phase)
}

const OUTAGE_STEPS: &str = concat!(
    "    - {name: before, command: 'echo before'}\n",
    "    - {name: during, after: [before], command: 'sleep 8; echo during'}\n",
    "    - {name: after, after: [during], command: 'echo after'}",
);

/// Each outage of `TITAN_FAULT_OUTAGES` (the API server stopped, etcd or the kubelet
/// restarted) while a step runs: the run ends as an undisturbed one, one Job per step, and
/// the operator records the step that ended meanwhile within 35 s of the component's return.
#[tokio::test]
async fn outages_of_the_control_plane_and_node_mid_step_change_no_outcome() {
    let _turn = TURN.lock().await;
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install(&ns).await;
        let limit = Duration::from_secs(300);
        let api = start(&client, &ns, &scenario("calm", OUTAGE_STEPS)).await;
        let reference = wait_finished(&api, "calm", limit).await;
        for (i, (component, seconds, mode)) in outages().into_iter().enumerate() {
            let name = format!("outage-{i}");
            start(&client, &ns, &scenario(&name, OUTAGE_STEPS)).await;
            let running = |dr: Option<&DisasterRecovery>| {
                step_phase(dr, "during") == Some(StepPhase::Running)
            };
            support::wait_for(&api, &name, "the step running", limit, running).await;
            // An API server away for longer than the Lease (4 s here): the operator must stop
            // leading meanwhile (another replica could hold the Lease by now), and lead again.
            let ip = operator.pod_ip();
            let outage = outage(&component, seconds, &mode);
            tokio::pin!(outage);
            let mut fenced = false;
            loop {
                tokio::select! {
                    () = &mut outage => break,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        fenced |= leading(&ip).await == Some(false);
                    }
                }
            }
            if component == "apiserver" && seconds >= 15 {
                assert!(fenced, "the operator led through {seconds} s without the API server");
            }
            api_back(&api).await;
            let back = Timestamp::now();
            let recorded = |dr: Option<&DisasterRecovery>| {
                step_phase(dr, "during") == Some(StepPhase::Succeeded)
            };
            support::wait_for(&api, &name, "the step recorded", limit, recorded).await;
            let now = Timestamp::now();
            let resumed = duration(back, now);
            // The operator's share: from whichever came last, the API server's return or
            // the Job controller marking the step's Job Complete (a restarted API server
            // leaves kube-controller-manager behind for a while; see RELIABILITY.md).
            let completed = completed_at(&client, &ns, &format!("{name}-1-during-0")).await;
            let operator_share = duration(back.max(completed), now);
            let got = wait_finished(&api, &name, limit).await;
            assert_eq!(got, reference, "{name}: {component} {mode} {seconds} s");
            let jobs = job_names(&client, &ns, &name).await;
            let expected: Vec<String> = ["after-0", "before-0", "check-0", "during-0"]
                .iter()
                .map(|j| format!("{name}-1-{j}"))
                .collect();
            assert_eq!(jobs, expected, "one Job per step");
            println!(
                "faults: {component} {mode} ({seconds} s) mid-step; the step recorded {:.1} s after it was back, {:.1} s after its Job completed or the API returned",
                resumed.as_secs_f64(),
                operator_share.as_secs_f64()
            );
            assert!(
                operator_share <= Duration::from_secs(35),
                "{component}: the operator resumed after {operator_share:?}"
            );
        }
    })
    .await;
}
