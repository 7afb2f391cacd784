//! The DisasterRecovery controller on the real cluster: the operator, installed by its
//! chart, runs scenarios as Jobs whose pods the kubelet runs from local images.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use titan_dr::api::DisasterRecovery;
use titan_dr::api::disaster_recovery::{DisasterRecoveryStatus, RunPhase, StepPhase, StepStatus};
use titan_dr::job::{LABEL_RECOVERY, LABEL_RUN, LABEL_STEP};

const LIMIT: Duration = Duration::from_secs(120);

fn parse(yaml: &str) -> DisasterRecovery {
    serde_yaml::from_str(yaml).expect("test scenario parses")
}

/// A small scenario; `STEPS`, `VALIDATIONS` and `ROLLBACK` are replaced.
fn scenario(name: &str, steps: &str, validations: &str, rollback: &str) -> DisasterRecovery {
    parse(&format!(
        r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {{name: {name}}}
spec:
  runOnCreate: true
  scenario: {name}
  objectives: {{rto: 10m}}
  template: {{image: {toolbox}}}
  steps:
{steps}
  validations:
{validations}
  rollback:
{rollback}
"#,
        toolbox = support::TOOLBOX
    ))
}

async fn create(client: &Client, ns: &str, dr: &DisasterRecovery) -> Api<DisasterRecovery> {
    let api: Api<DisasterRecovery> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), dr)
        .await
        .expect("creating the DisasterRecovery");
    api
}

fn finished(dr: Option<&DisasterRecovery>) -> bool {
    let phase = dr.and_then(|d| d.status.as_ref()).and_then(|s| s.run.phase);
    matches!(phase, Some(RunPhase::Succeeded | RunPhase::Failed))
}

fn run_finished(run: &'static str) -> impl Fn(Option<&DisasterRecovery>) -> bool {
    move |dr| {
        finished(dr)
            && dr
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.run.run_id.as_deref())
                == Some(run)
    }
}

async fn wait_finished(api: &Api<DisasterRecovery>, name: &str) -> DisasterRecoveryStatus {
    let dr = support::wait_for(api, name, "the run to finish", LIMIT, finished).await;
    dr.status.unwrap()
}

fn condition<'s>(status: &'s DisasterRecoveryStatus, type_: &str) -> (&'s str, &'s str, &'s str) {
    let c = status
        .run
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("condition {type_} missing: {:#?}", status.run.conditions));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn step<'s>(list: &'s [StepStatus], name: &str) -> &'s StepStatus {
    list.iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for step {name}"))
}

/// A Job's name without the hash of its owner that ends it (`<dr>-<run>-<step>-<attempt>`).
fn readable(job: &Job) -> String {
    let name = job.name_any();
    let (readable, hash) = name.rsplit_once('-').unwrap_or_default();
    assert!(
        hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    readable.to_owned()
}

async fn jobs_of(client: &Client, ns: &str, name: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    jobs.list(&ListParams::default().labels(&format!("{LABEL_RECOVERY}={name}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn a_failing_non_critical_step_degrades_but_the_run_succeeds() {
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "non-critical",
            "    - {name: first, command: 'echo one'}\n    - {name: flaky, command: 'echo broken; exit 4', critical: false}\n    - {name: last, command: 'echo three'}",
            "    - {name: check, command: 'echo ok', expect: {outputContains: ok}}",
            "    - {name: undo, command: 'echo undo'}",
        );
        let api = create(&client, &ns, &dr).await;
        let status = wait_finished(&api, "non-critical").await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded), "{status:#?}");
        assert_eq!(condition(&status, "Degraded").0, "True");
        assert_eq!(condition(&status, "Ready").0, "True");
        let flaky = step(&status.run.steps, "flaky");
        assert_eq!((flaky.phase, flaky.exit_code), (StepPhase::Failed, Some(4)));
        assert_eq!(flaky.output.as_deref(), Some("broken\n"));
        assert_eq!(step(&status.run.steps, "last").phase, StepPhase::Succeeded);
        assert_eq!(step(&status.run.rollback, "undo").phase, StepPhase::Pending);

        // Seen from outside: the operator is ready and has counted its reconciles.
        let pod = operator.pod_ip();
        let (ready, _) = support::http_get(&pod, 8080, "/readyz").await;
        assert!(ready.contains("200"), "{ready}");
        let (_, metrics) = support::http_get(&pod, 8080, "/metrics").await;
        let reconciles = metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"titan_dr_reconciles_total{controller="disaster_recovery"} "#))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no reconcile count in:\n{metrics}"));
        assert!(reconciles >= 4, "one reconcile per step at least: {reconciles}");
        assert!(metrics.contains("titan_dr_reconcile_duration_seconds_bucket"), "{metrics}");
    })
    .await;
}

#[tokio::test]
async fn a_failing_critical_step_skips_the_rest_and_rolls_back() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "critical",
            "    - {name: first, command: 'echo one'}\n    - {name: broken, command: 'echo no disk >&2; exit 2'}\n    - {name: after, command: 'echo never'}",
            "    - {name: check, command: 'echo ok'}",
            "    - {name: undo-a, command: 'echo undo a'}\n    - {name: undo-b, command: 'echo undo b'}",
        );
        let api = create(&client, &ns, &dr).await;
        let status = wait_finished(&api, "critical").await;
        assert_eq!(status.run.phase, Some(RunPhase::Failed), "{status:#?}");
        let (ready, reason, message) = condition(&status, "Ready");
        assert_eq!((ready, reason), ("False", "Failed"));
        assert!(message.contains("broken"), "{message}");
        assert_eq!(step(&status.run.steps, "broken").exit_code, Some(2));
        assert_eq!(step(&status.run.steps, "after").phase, StepPhase::Skipped);
        assert_eq!(step(&status.run.validations, "check").phase, StepPhase::Skipped);
        assert_eq!(step(&status.run.rollback, "undo-a").phase, StepPhase::Succeeded);
        assert_eq!(step(&status.run.rollback, "undo-b").phase, StepPhase::Succeeded);
        assert_eq!(condition(&status, "RTOMet").0, "False");
        let jobs = jobs_of(&client, &ns, "critical").await;
        let steps: Vec<String> = jobs.iter().map(|j| j.labels()[LABEL_STEP].clone()).collect();
        assert!(!steps.contains(&"check".to_string()), "a validation Job was created: {steps:?}");
        assert!(!steps.contains(&"after".to_string()), "a skipped step got a Job: {steps:?}");
    })
    .await;
}

#[tokio::test]
async fn expectations_timeouts_and_retries() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "expectations",
            concat!(
                "    - {name: wrong-output, command: 'echo Could not connect', expect: {outputContains: PONG}, critical: false}\n",
                "    - {name: too-slow, command: 'sleep 60', timeout: 2s, critical: false}\n",
                "    - {name: retried, command: 'echo attempt; exit 1', retries: 2, critical: false}",
            ),
            "    - {name: check, command: 'echo ok'}",
            "    - {name: undo, command: 'echo undo'}",
        );
        let api = create(&client, &ns, &dr).await;
        let status = wait_finished(&api, "expectations").await;
        let wrong = step(&status.run.steps, "wrong-output");
        assert_eq!((wrong.phase, wrong.exit_code), (StepPhase::Failed, Some(0)));
        assert_eq!(
            wrong.message.as_deref(),
            Some(r#"expected output to contain "PONG", got "Could not connect""#)
        );
        let slow = step(&status.run.steps, "too-slow");
        assert_eq!(slow.phase, StepPhase::TimedOut, "{slow:#?}");
        let retried = step(&status.run.steps, "retried");
        assert_eq!((retried.phase, retried.attempts), (StepPhase::Failed, 3));
        let jobs = jobs_of(&client, &ns, "expectations").await;
        let mut retried_jobs: Vec<String> =
            jobs.iter().filter(|j| j.labels()[LABEL_STEP] == "retried").map(readable).collect();
        retried_jobs.sort();
        assert_eq!(
            retried_jobs,
            ["expectations-1-retried-0", "expectations-1-retried-1", "expectations-1-retried-2"]
        );
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded));
        assert_eq!(condition(&status, "Degraded").0, "True");
    })
    .await;
}

#[tokio::test]
async fn an_invalid_graph_creates_no_job_and_names_the_problem() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let mut cycle = scenario(
            "cycle",
            "    - {name: a, command: 'echo a', component: x}",
            "    []",
            "    []",
        );
        cycle.spec.components =
            serde_yaml::from_str("[{name: x, dependsOn: [y]}, {name: y, dependsOn: [x]}]").unwrap();
        let mut unknown = scenario(
            "unknown",
            "    - {name: a, command: 'echo a', component: nope}",
            "    []",
            "    []",
        );
        unknown.spec.components = serde_yaml::from_str("[{name: x}]").unwrap();
        for (dr, needle) in [(cycle, "cycle between components"), (unknown, "\"nope\"")] {
            let name = dr.name_any();
            let api = create(&client, &ns, &dr).await;
            let invalid = |d: Option<&DisasterRecovery>| {
                d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                    s.run
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.reason == "InvalidSpec")
                })
            };
            let dr =
                support::wait_for(&api, &name, "Ready=False InvalidSpec", LIMIT, invalid).await;
            let status = dr.status.unwrap();
            let (ready, _, message) = condition(&status, "Ready");
            assert_eq!(ready, "False");
            assert!(message.contains(needle), "{message}");
            assert!(
                jobs_of(&client, &ns, &name).await.is_empty(),
                "no Job for an invalid spec"
            );
        }
    })
    .await;
}

/// Name, phase, attempts, exit code and output of a step.
type StepOutcome = (String, StepPhase, u32, Option<i32>, Option<String>);

/// What a run's status says, without times: comparable between runs.
fn outcome(status: &DisasterRecoveryStatus) -> Vec<StepOutcome> {
    status
        .run
        .steps
        .iter()
        .chain(&status.run.validations)
        .chain(&status.run.rollback)
        .map(|s| {
            (
                s.name.clone(),
                s.phase,
                s.attempts,
                s.exit_code,
                s.output.clone(),
            )
        })
        .collect()
}

fn conditions_summary(status: &DisasterRecoveryStatus) -> BTreeMap<String, (String, String)> {
    let summary = status
        .run
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), (c.status.clone(), c.reason.clone())));
    summary.filter(|(t, _)| t != "RTOMet").collect()
}

const CRASH_STEPS: &str = concat!(
    "    - {name: one, command: 'echo one; sleep 1'}\n",
    "    - {name: two, command: 'echo two; sleep 1'}\n",
    "    - {name: flaky, command: 'echo flaky; exit 1', retries: 1, critical: false}\n",
    "    - {name: three, command: 'echo three; sleep 1'}",
);

#[tokio::test]
async fn an_operator_killed_mid_run_finishes_it_with_the_same_result_and_no_duplicate_jobs() {
    support::with_namespace(|client, ns| async move {
        let validations = "    - {name: check, command: 'echo ok', expect: {outputContains: ok}}";
        let operator = support::Operator::install(&ns).await;
        let reference = {
            let api = create(
                &client,
                &ns,
                &scenario("reference", CRASH_STEPS, validations, "    []"),
            )
            .await;
            wait_finished(&api, "reference").await
        };
        let api = create(
            &client,
            &ns,
            &scenario("crashy", CRASH_STEPS, validations, "    []"),
        )
        .await;
        // Kill the operator's pod at several points of the run; its Deployment restarts it.
        for pause_ms in [300, 900, 1700, 2600, 3400] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            operator.kill().await;
        }
        // Five restarts of the operator come first: a longer deadline than one run's.
        let done =
            support::wait_for(&api, "crashy", "the run to finish", 2 * LIMIT, finished).await;
        let status = done.status.unwrap();
        drop(operator);

        assert_eq!(outcome(&status), outcome(&reference));
        assert_eq!(conditions_summary(&status), conditions_summary(&reference));
        let jobs = jobs_of(&client, &ns, "crashy").await;
        let mut names: Vec<String> = jobs.iter().map(readable).collect();
        names.sort();
        let expected = ["check-0", "flaky-0", "flaky-1", "one-0", "three-0", "two-0"]
            .map(|s| format!("crashy-1-{s}"));
        assert_eq!(names, expected, "one Job per attempt, no duplicates");
    })
    .await;
}

#[tokio::test]
async fn changing_run_now_starts_a_new_run_with_fresh_jobs() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "drill",
            "    - {name: only, command: 'echo drill'}",
            "    []",
            "    []",
        );
        let api = create(&client, &ns, &dr).await;
        support::wait_for(&api, "drill", "run 1 to finish", LIMIT, run_finished("1")).await;
        let annotate = |value: &str| {
            Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"dr.titan.io/run-now": value}}}),
            )
        };
        for (value, run) in [("a", "2"), ("b", "3"), ("c", "4"), ("d", "5")] {
            api.patch("drill", &PatchParams::default(), &annotate(value))
                .await
                .unwrap();
            let run_done: &'static str = run;
            support::wait_for(
                &api,
                "drill",
                "the next run to finish",
                LIMIT,
                run_finished(run_done),
            )
            .await;
        }
        let jobs = jobs_of(&client, &ns, "drill").await;
        let mut runs: Vec<String> = jobs.iter().map(|j| j.labels()[LABEL_RUN].clone()).collect();
        runs.sort();
        // The history rule keeps the Jobs of the last 3 runs.
        assert_eq!(runs, ["3", "4", "5"]);
        let status = api.get("drill").await.unwrap().status.unwrap();
        assert_eq!(status.run.run_id.as_deref(), Some("5"));
        let job = step(&status.run.steps, "only")
            .job
            .clone()
            .unwrap_or_default();
        assert!(job.starts_with("drill-5-only-0-"), "{job}");
    })
    .await;
}

/// Steps that end every way a step can: success, tolerated failure, an unmet
/// expectation, a retry that recovers, a timeout, and a critical failure that
/// skips the rest and rolls back.
const PARITY_STEPS: &str = concat!(
    "    - {name: ok, command: 'echo fine'}\n",
    "    - {name: tolerated, command: 'echo meh; exit 5', critical: false}\n",
    "    - {name: unmet, command: 'echo nope', expect: {outputContains: PONG}, critical: false}\n",
    "    - {name: slow, command: 'sleep 30', timeout: 2s, critical: false}\n",
    "    - {name: second-try, command: 'test \"$TITAN_ATTEMPT\" -ge 2 || exit 1', retries: 1}\n",
    "    - {name: fatal, command: 'echo disk gone >&2; exit 9'}\n",
    "    - {name: never, command: 'echo never'}",
);

#[tokio::test]
async fn the_operator_and_a_local_run_give_the_same_step_outcomes() {
    let parity = || {
        scenario(
            "parity",
            PARITY_STEPS,
            "    - {name: check, command: 'echo ok'}",
            "    - {name: undo, command: 'echo undo'}\n    - {name: undo-fails, command: 'exit 3'}",
        )
    };

    let local_dr = parity();
    let plan = titan_dr::plan::Plan::new(&local_dr.spec).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let options = titan_dr::local::executor::Options {
        workdir: support::root(),
        log_dir: logs.path().to_path_buf(),
        cancel: Default::default(),
    };
    let record = titan_dr::local::executor::execute(&local_dr, &plan, &options, &mut ()).await;
    let local: Vec<(String, StepPhase, u32, Option<i32>)> = record
        .steps
        .iter()
        .map(|s| {
            let last = s.last_attempt();
            (
                s.name.clone(),
                s.phase,
                s.attempts.len() as u32,
                last.and_then(|a| a.exit_code),
            )
        })
        .collect();

    let cluster_dr = parity();
    let parity_yaml = serde_yaml::to_string(&parity()).unwrap();
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let api = create(&client, &ns, &cluster_dr).await;
        let status = wait_finished(&api, "parity").await;
        let mut cluster: Vec<(String, StepPhase, u32, Option<i32>)> = status
            .run
            .steps
            .iter()
            .chain(&status.run.validations)
            .chain(&status.run.rollback)
            .map(|s| (s.name.clone(), s.phase, s.attempts, s.exit_code))
            .collect();
        let mut local = local;
        cluster.sort_by(|a, b| a.0.cmp(&b.0));
        local.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(cluster, local);
        // And the outcomes are the ones the scenario is built to give.
        let phase_of = |name: &str| cluster.iter().find(|s| s.0 == name).unwrap().1;
        assert_eq!(phase_of("slow"), StepPhase::TimedOut);
        assert_eq!(phase_of("unmet"), StepPhase::Failed);
        assert_eq!(phase_of("second-try"), StepPhase::Succeeded);
        assert_eq!(phase_of("fatal"), StepPhase::Failed);
        assert_eq!(phase_of("never"), StepPhase::Skipped);
        assert_eq!(phase_of("undo-fails"), StepPhase::Failed);
        assert_eq!(status.run.phase, Some(RunPhase::Failed));
        terminal_views_agree(&ns, &parity_yaml).await;
    })
    .await;
}

/// `kubectl titan status --watch` of the cluster's run and `titan-dr run` of the same file
/// on this machine tell the same story: each step's last event and the verdict; and
/// `titan-dr report` writes the same report (with the SVG timeline) from the cluster's run.
async fn terminal_views_agree(ns: &str, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("parity.yaml");
    std::fs::write(&file, yaml).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // What installing the kubectl plugin is: the binary under the name kubectl-titan.
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_titan-dr"), bin.join("kubectl-titan")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |program: &std::path::Path, args: Vec<String>| {
        let output = std::process::Command::new(program)
            .args(&args)
            .env("PATH", &path)
            .env("KUBECONFIG", support::kubeconfig())
            .current_dir(support::root())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), text)
    };
    let titan = std::path::PathBuf::from(env!("CARGO_BIN_EXE_titan-dr"));
    let local_md = dir.path().join("local/report.md");
    let args = [
        "run",
        &file.display().to_string(),
        "--report",
        &local_md.display().to_string(),
    ];
    let (code, local) = run(&titan, args.map(String::from).into());
    assert_eq!(
        code,
        Some(1),
        "the local run fails as the cluster's did:\n{local}"
    );
    let kubectl_bin = support::kubectl();
    let args = ["titan", "status", "parity", "-n", ns, "--watch"];
    let (code, cluster) = run(&kubectl_bin, args.map(String::from).into());
    assert_eq!(
        code,
        Some(1),
        "kubectl titan status of a failed run:\n{cluster}"
    );
    println!("kubectl titan status:\n{cluster}");
    // Every step, validation and rollback step of the scenario is told.
    assert_eq!(last_events(&cluster).len(), 10, "{cluster}");
    assert_eq!(
        last_events(&cluster),
        last_events(&local),
        "cluster:\n{cluster}\nlocal:\n{local}"
    );
    let verdict = |text: &str| -> Vec<String> {
        let failed = text
            .lines()
            .filter(|l| l.trim_start().starts_with("failed:"));
        let recovery = text.lines().filter_map(|l| {
            l.split(" in ")
                .next()
                .filter(|v| v.starts_with("Recovery "))
        });
        recovery.chain(failed).map(str::to_owned).collect()
    };
    assert_eq!(
        verdict(&cluster),
        verdict(&local),
        "cluster:\n{cluster}\nlocal:\n{local}"
    );
    assert!(
        verdict(&cluster)
            .iter()
            .any(|l| l.contains("failed: fatal")),
        "{cluster}"
    );

    let cluster_md = dir.path().join("cluster/report.md");
    let args = ["report", "parity", "-n", ns, "--out"].map(String::from);
    let args = args
        .into_iter()
        .chain([cluster_md.display().to_string()])
        .collect();
    let (code, said) = run(&titan, args);
    assert_eq!(code, Some(1), "the report of a failed run: {said}");
    let (local_md, cluster_md) = (
        std::fs::read_to_string(&local_md).unwrap(),
        std::fs::read_to_string(&cluster_md).unwrap(),
    );
    assert!(
        dir.path().join("cluster/report.svg").is_file(),
        "no timeline"
    );
    let outcome = |md: &str| {
        md.lines()
            .filter(|l| l.starts_with("| Outcome") || l.starts_with("| Failed step"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(outcome(&cluster_md), outcome(&local_md), "{cluster_md}");
    assert!(
        cluster_md.contains(&format!("namespace `{ns}`")),
        "{cluster_md}"
    );
}

/// Each step's last event marker in a run's display (`ok`, `FAILED`, `TIMEOUT`, `skip`).
fn last_events(display: &str) -> BTreeMap<String, String> {
    let line = regex::Regex::new(
        r"^\s*(?:\S+\s{2})?(start|ok|FAILED|TIMEOUT|stopped|skip)\s+(\S+(?: \S+)?)",
    )
    .unwrap();
    let mut last = BTreeMap::new();
    for l in display.lines() {
        if let Some(c) = line.captures(l) {
            let step = c[2].trim_end_matches(':').to_owned();
            last.insert(step, c[1].to_owned());
        }
    }
    last
}

// ---------------------------------------------------------------------------------------
// Pods that cannot start. DRAFTS, not yet run: they need a real kubelet and kube-scheduler
// (the local node agent pulls no image and binds every pod), so they are ignored until the
// node is up: `cargo test --test disaster_recovery -- --ignored pod_`.

/// A present image that runs as root (its USER is 0): every step pod sets runAsNonRoot.
/// An image whose user is root, as most public images' are (`scripts/build-images.sh`).
const ROOT_IMAGE: &str = "localhost/titan-busybox-root:local";

/// A one-step scenario whose step is `step` (YAML flow mapping).
fn single_step(name: &str, step: &str) -> DisasterRecovery {
    scenario(name, &format!("    - {step}"), "    []", "    []")
}

/// Waits for the run of `dr` to fail and returns its only step's status, once its Job is
/// seen to carry the verdict and to have been stopped, its pod gone rather than retrying.
async fn failed_to_start(
    client: &Client,
    ns: &str,
    api: &Api<DisasterRecovery>,
    dr: &str,
) -> StepStatus {
    let status = wait_finished(api, dr).await;
    assert_eq!(status.run.phase, Some(RunPhase::Failed), "{status:#?}");
    let only = status.run.steps[0].clone();
    assert_eq!(
        (only.phase, only.attempts),
        (StepPhase::Failed, 1),
        "{only:#?}"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = jobs.get(only.job.as_deref().unwrap()).await.unwrap();
    let recorded = job.annotations().get("dr.titan.io/failed-to-start");
    assert_eq!(
        recorded,
        only.message.as_ref(),
        "the Job carries the step's message"
    );
    assert_eq!(job.spec.as_ref().unwrap().active_deadline_seconds, Some(1));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let of_job =
        ListParams::default().labels(&format!("batch.kubernetes.io/job-name={}", job.name_any()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !pods.list(&of_job).await.unwrap().items.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped Job's pod is still there"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    only
}

/// The step's message starts with `prefix` and says every one of `parts`.
fn assert_message(step: &StepStatus, prefix: &str, parts: &[&str]) {
    let message = step.message.as_deref().unwrap_or_default();
    assert!(message.starts_with(prefix), "{message}");
    for part in parts {
        assert!(
            message.contains(part),
            "{part:?} is missing from: {message}"
        );
    }
}

#[tokio::test]
async fn pod_with_an_absent_image_fails_after_the_grace_period_also_across_a_restart() {
    support::with_namespace(|client, ns| async move {
        // The steps' pull policy is the default (IfNotPresent for a tag): ErrImagePull, then
        // ImagePullBackOff. ErrImageNeverPull needs `imagePullPolicy: Never`, which no step
        // field sets.
        let operator = support::Operator::install_with(&ns, &["operator.podStartGrace=10s"]).await;
        let dr = single_step(
            "absent",
            "{name: pull, image: 'localhost:1/titan-dr-absent:never', command: 'true'}",
        );
        let api = create(&client, &ns, &dr).await;
        // Killed while the grace period is being counted: the next operator counts from the
        // pod's own times.
        tokio::time::sleep(Duration::from_secs(4)).await;
        operator.kill().await;
        let step = failed_to_start(&client, &ns, &api, "absent").await;
        let image = "localhost:1/titan-dr-absent:never";
        assert_message(&step, "pod cannot start for ", &[image]);
        let message = step.message.unwrap_or_default();
        assert!(
            message.contains("ErrImagePull") || message.contains("ImagePullBackOff"),
            "{message}"
        );
    })
    .await;
}

#[tokio::test]
async fn pod_of_a_root_image_under_run_as_non_root_fails_at_once() {
    support::with_namespace(|client, ns| async move {
        // The default grace (60s): a hard error does not wait for it.
        let _operator = support::Operator::install(&ns).await;
        let step = format!("{{name: rooted, image: '{ROOT_IMAGE}', command: 'id'}}");
        let api = create(&client, &ns, &single_step("rooted", &step)).await;
        let step = failed_to_start(&client, &ns, &api, "rooted").await;
        let hard = "pod cannot start: CreateContainerConfigError: ";
        assert_message(
            &step,
            hard,
            &["container has runAsNonRoot and image will run as root"],
        );
        let took = titan_dr::controller::recovery_run::status::elapsed(
            step.started_at.as_ref().unwrap(),
            step.finished_at.as_ref().unwrap(),
        );
        assert!(took < Duration::from_secs(30), "failed after {took:?}");
    })
    .await;
}

/// A Backup of ConfigMaps, for a restore step to name; its own snapshots do not matter here.
async fn config_backup(client: &Client, ns: &str) {
    let backup = "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {name: config}\nspec:\n  source: {configMaps: {selector: {matchLabels: {app: none}}}}\n  destination: {path: config}\n  encryption: {secretRef: {name: backup-key}}\n";
    support::create_yaml::<titan_dr::api::Backup>(client, ns, backup)
        .await
        .unwrap();
}

#[tokio::test]
async fn pod_refused_by_pod_security_fails_with_the_admission_error() {
    support::with_namespace(|client, ns| async move {
        // Test namespaces enforce `restricted`, which forbids a privileged container. (The
        // chart's admission policy would refuse the DisasterRecovery itself: off here, so that
        // what Pod Security says of the step's pod is what is tested.)
        let values = ["operator.podStartGrace=10s", "admissionPolicy.enabled=false"];
        let _operator = support::Operator::install_with(&ns, &values).await;
        let step = "{name: privileged, command: 'true', securityContext: {privileged: true, allowPrivilegeEscalation: true}}";
        let api = create(&client, &ns, &single_step("refused", step)).await;
        let step = failed_to_start(&client, &ns, &api, "refused").await;
        let why = ["violates PodSecurity \"restricted:latest\"", "privileged"];
        assert_message(&step, "pod refused: FailedCreate: Error creating: pods ", &why);
    })
    .await;
}

#[tokio::test]
async fn pod_no_node_can_take_fails_after_the_grace_period() {
    support::with_namespace(|client, ns| async move {
        // A restore step whose Redis data volume is a claim that does not exist: the
        // scheduler finds no node for its pod.
        let _operator =
            support::Operator::install_with(&ns, &["operator.podStartGrace=10s"]).await;
        config_backup(&client, &ns).await;
        let step = "{name: restore, restore: {backup: config, redis: {address: 'nowhere:6379', dataVolume: {persistentVolumeClaim: {claimName: titan-no-such-claim}}}}}";
        let api = create(&client, &ns, &single_step("nowhere", step)).await;
        let step = failed_to_start(&client, &ns, &api, "nowhere").await;
        let why = "persistentvolumeclaim \"titan-no-such-claim\" not found";
        assert_message(&step, "pod unschedulable for ", &[why]);
    })
    .await;
}

#[tokio::test]
async fn a_step_whose_job_the_api_server_refuses_fails_saying_why() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        // The CRD takes any integer; the Job's validation takes none below 0.
        let bad_step = "{name: bad, command: 'true', securityContext: {runAsUser: -1}}";
        let api = create(&client, &ns, &single_step("refused-job", bad_step)).await;
        let status = wait_finished(&api, "refused-job").await;
        assert_eq!(status.run.phase, Some(RunPhase::Failed), "{status:#?}");
        let bad = step(&status.run.steps, "bad");
        assert_eq!(
            (bad.phase, bad.attempts),
            (StepPhase::Failed, 1),
            "{bad:#?}"
        );
        let output = bad.output.as_deref().unwrap_or_default();
        assert!(
            output.contains("the API server refused this step's Job")
                && output.contains("runAsUser"),
            "{output}"
        );
    })
    .await;
}

/// The operator's counters of API requests by (verb, resource), and its DisasterRecovery
/// reconciles, from its `/metrics`.
async fn request_counts(pod_ip: &str) -> (BTreeMap<(String, String), u64>, u64) {
    let (_, body) = support::http_get(pod_ip, 8080, "/metrics").await;
    let mut requests = BTreeMap::new();
    let mut reconciles = 0;
    for line in body.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: u64 = value.parse().unwrap_or(0);
        if let Some(labels) = series.strip_prefix("titan_dr_kube_requests_total{") {
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches(['"', '}']).to_string())
                    .unwrap_or_default()
            };
            requests.insert((label("verb"), label("resource")), value);
        }
        if series == r#"titan_dr_reconciles_total{controller="disaster_recovery"}"# {
            reconciles = value;
        }
    }
    (requests, reconciles)
}

#[tokio::test]
async fn a_reconcile_of_a_finished_unchanged_recovery_writes_and_lists_nothing() {
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install(&ns).await;
        let dr = scenario("quiet", "    - {name: only, command: 'echo done'}", "", "");
        let api = create(&client, &ns, &dr).await;
        let status = wait_finished(&api, "quiet").await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded));
        // Let the operator's own status write come back through its watch.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = api.get("quiet").await.unwrap().status.unwrap();
        let ip = operator.pod_ip();
        let (before, reconciles) = request_counts(&ip).await;
        assert!(
            before.keys().any(|(verb, _)| verb == "create"),
            "requests are counted: {before:?}"
        );

        // A change that is not the operator's wakes it; the run is over and stays so.
        let label = serde_json::json!({"metadata": {"labels": {"touched": "yes"}}});
        api.patch("quiet", &PatchParams::default(), &Patch::Merge(&label))
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + LIMIT;
        let after = loop {
            let (after, now) = request_counts(&ip).await;
            if now > reconciles {
                break after;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no reconcile after the change"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let changed: Vec<_> = after
            .iter()
            .filter(|((verb, resource), n)| {
                // Watches stream, and the Lease is leadership's own traffic, not a reconcile's.
                verb != "watch"
                    && resource != "leases"
                    && before
                        .get(&(verb.clone(), resource.clone()))
                        .copied()
                        .unwrap_or(0)
                        != **n
            })
            .collect();
        assert!(
            changed.is_empty(),
            "the reconcile made requests: {changed:?}"
        );
        let status_after = api.get("quiet").await.unwrap().status.unwrap();
        assert_eq!(status_after, status, "the status is as it was");

        // The run's metrics: counted once as it ended; the newest success and its RTO set
        // from the status, so a restarted operator has them again (its counters start over).
        let series = run_series(&ip).await;
        assert_eq!(
            series
                .get("titan_dr_runs_total/Succeeded")
                .map(String::as_str),
            Some("1"),
            "{series:?}"
        );
        let ended = status.run.finished_at.as_ref().unwrap().0.as_second();
        let last = |series: &BTreeMap<String, String>| -> f64 {
            series["titan_dr_run_last_success_timestamp_seconds"]
                .parse()
                .unwrap()
        };
        assert_eq!(last(&series).floor() as i64, ended, "{series:?}");
        assert!(
            series.contains_key("titan_dr_run_achieved_rto_seconds"),
            "{series:?}"
        );
        operator.kill().await;
        let ip = operator.pod_ip();
        let deadline = std::time::Instant::now() + LIMIT;
        let again = loop {
            let again = run_series(&ip).await;
            if again.contains_key("titan_dr_run_last_success_timestamp_seconds") {
                break again;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no run metrics after a restart: {again:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(last(&again), last(&series));
        assert!(
            !again.contains_key("titan_dr_runs_total/Succeeded"),
            "{again:?}"
        );
    })
    .await;
}

/// The run metrics of DisasterRecovery `quiet`: series name (`/outcome` for the runs
/// counter) → value.
async fn run_series(pod_ip: &str) -> BTreeMap<String, String> {
    let (_, body) = support::http_get(pod_ip, 8080, "/metrics").await;
    let mut series = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("titan_dr_run") && l.contains(r#"recovery="quiet""#))
    {
        let (name_labels, value) = line.rsplit_once(' ').unwrap();
        let name = name_labels.split('{').next().unwrap();
        let key = match name_labels.split(r#"outcome=""#).nth(1) {
            Some(rest) => format!("{name}/{}", rest.split('"').next().unwrap()),
            None => name.to_owned(),
        };
        series.insert(key, value.to_owned());
    }
    series
}

/// Bumps the spec's generation (a new description) and waits until the operator has
/// reconciled that generation: what it decides about an unchanged run is then visible.
async fn edit_and_wait_observed(api: &Api<DisasterRecovery>, name: &str, description: &str) {
    let edit = serde_json::json!({"spec": {"description": description}});
    let edited = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    let generation = edited.metadata.generation;
    support::wait_for(
        api,
        name,
        "the edit to be observed",
        LIMIT,
        |dr: Option<&DisasterRecovery>| {
            dr.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.run.observed_generation == generation)
        },
    )
    .await;
}

#[tokio::test]
async fn a_finished_run_stands_when_its_jobs_are_deleted() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "final",
            "    - {name: only, command: 'echo restored'}",
            "    []",
            "    []",
        );
        let api = create(&client, &ns, &dr).await;
        let before = wait_finished(&api, "final").await;
        assert_eq!(before.run.phase, Some(RunPhase::Succeeded));
        // A TTL policy or a clean-up removes the finished run's Jobs.
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        jobs.delete_collection(
            &kube::api::DeleteParams::background(),
            &ListParams::default().labels(&format!("{LABEL_RECOVERY}=final")),
        )
        .await
        .unwrap();
        support::wait_for_none(&jobs, &format!("{LABEL_RECOVERY}=final"), LIMIT).await;
        edit_and_wait_observed(&api, "final", "after the clean-up").await;
        assert!(
            jobs_of(&client, &ns, "final").await.is_empty(),
            "a finished step ran again"
        );
        let after = api.get("final").await.unwrap().status.unwrap();
        assert_eq!(outcome(&after), outcome(&before));
        assert_eq!(after.run.finished_at, before.run.finished_at);
    })
    .await;
}

/// A node drain evicts a step's pod mid-step: the Job replaces the pod (the eviction's
/// `DisruptionTarget` is not counted against `backoffLimit: 0`), the critical step succeeds
/// in the same Job, and no rollback runs.
#[tokio::test]
async fn an_evicted_step_pod_is_replaced_and_fails_no_step() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "drained",
            "    - {name: slow, critical: true, command: 'sleep 6; echo done'}",
            "    []",
            "    - {name: undo, command: 'echo undone'}",
        );
        let api = create(&client, &ns, &dr).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let selector = format!("{LABEL_RECOVERY}=drained,{LABEL_STEP}=slow");
        let running = |pods: &[Pod]| {
            pods.iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        };
        let first = support::wait_for_list(&pods, &selector, "the step running", LIMIT, running)
            .await
            .remove(0);
        pods.evict(&first.name_any(), &EvictParams::default())
            .await
            .expect("evicting the step's pod");
        let status = wait_finished(&api, "drained").await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded), "{status:#?}");
        let slow = step(&status.run.steps, "slow");
        assert_eq!((slow.phase, slow.attempts), (StepPhase::Succeeded, 1));
        assert_eq!(slow.output.as_deref().map(str::trim), Some("done"));
        let jobs = jobs_of(&client, &ns, "drained").await;
        assert_eq!(jobs.len(), 1, "no retry Job and no rollback Job");
        // The evicted pod is deleted once the Job has accounted for it; its replacement ran.
        let all = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        let names: Vec<String> = all.items.iter().map(ResourceExt::name_any).collect();
        assert!(
            names.iter().any(|name| *name != first.name_any()),
            "a replacement of {} ran: {names:?}",
            first.name_any()
        );
    })
    .await;
}

#[tokio::test]
async fn jobs_belong_to_their_owner_by_uid_whatever_the_names_spell() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        // `x` with step `1-zz` and `x-1` with step `zz` once both named their Job x-1-1-zz-0.
        let x = scenario(
            "x",
            "    - {name: 1-zz, command: 'echo x'}",
            "    []",
            "    []",
        );
        let x1 = scenario(
            "x-1",
            "    - {name: zz, command: 'echo x-1'}",
            "    []",
            "    []",
        );
        let api = create(&client, &ns, &x).await;
        create(&client, &ns, &x1).await;
        for (name, step_name, said) in [("x", "1-zz", "x"), ("x-1", "zz", "x-1")] {
            let status = wait_finished(&api, name).await;
            let done = step(&status.run.steps, step_name);
            assert_eq!(done.phase, StepPhase::Succeeded, "{name}: {done:#?}");
            assert_eq!(
                done.output.as_deref().map(str::trim),
                Some(said),
                "{name} ran its own step"
            );
        }
        // Deleted leaving its Jobs behind, and made again under its name: the new `x` runs
        // its step in a Job of its own instead of adopting the old one's outcome.
        let old_job = wait_finished(&api, "x").await.run.steps[0]
            .job
            .clone()
            .unwrap();
        api.delete("x", &kube::api::DeleteParams::orphan())
            .await
            .unwrap();
        support::wait_gone(&api, "x", LIMIT).await;
        let again = scenario(
            "x",
            "    - {name: 1-zz, command: 'echo again'}",
            "    []",
            "    []",
        );
        create(&client, &ns, &again).await;
        let status = wait_finished(&api, "x").await;
        let done = step(&status.run.steps, "1-zz");
        assert_ne!(
            done.job.as_deref(),
            Some(old_job.as_str()),
            "the old Job was adopted"
        );
        assert_eq!(done.output.as_deref().map(str::trim), Some("again"));
    })
    .await;
}

#[tokio::test]
async fn run_now_during_an_active_run_is_refused_and_never_runs_later() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "busy",
            "    - {name: slow, command: 'sleep 8; echo done'}",
            "    []",
            "    []",
        );
        let api = create(&client, &ns, &dr).await;
        support::wait_for(
            &api,
            "busy",
            "the step to run",
            LIMIT,
            |dr: Option<&DisasterRecovery>| {
                dr.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.run.steps.iter().any(|st| st.phase == StepPhase::Running))
            },
        )
        .await;
        let run_now =
            serde_json::json!({"metadata": {"annotations": {"dr.titan.io/run-now": "again"}}});
        api.patch("busy", &PatchParams::default(), &Patch::Merge(&run_now))
            .await
            .unwrap();
        let refused = support::wait_for(
            &api,
            "busy",
            "the refusal",
            LIMIT,
            |dr: Option<&DisasterRecovery>| {
                dr.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.refused_run_trigger.as_deref() == Some("again"))
            },
        )
        .await;
        assert_eq!(refused.status.unwrap().run.run_id.as_deref(), Some("1"));
        let status = wait_finished(&api, "busy").await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded));
        // Once the active run ended, the refused request still starts nothing.
        edit_and_wait_observed(&api, "busy", "after the run").await;
        let status = api.get("busy").await.unwrap().status.unwrap();
        assert_eq!(status.run.run_id.as_deref(), Some("1"));
        let runs: Vec<String> = jobs_of(&client, &ns, "busy")
            .await
            .iter()
            .map(|j| j.labels()[LABEL_RUN].clone())
            .collect();
        assert_eq!(runs, ["1"], "one Job, of run 1");
        let events = support::events_of(&client, &ns, "busy").await;
        let refusal = events
            .iter()
            .find(|e| e.reason.as_deref() == Some("RunRefused"))
            .unwrap_or_else(|| panic!("no RunRefused Event: {events:#?}"));
        let note = refusal.note.clone().unwrap_or_default();
        assert!(
            note.contains("run busy-1 is active") && note.contains("Forbid"),
            "{note}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_restore_of_a_backup_that_does_not_exist_fails_naming_it() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "missing",
            "    - {name: restore-redis, restore: {backup: nope, configuration: {}}}",
            "    []",
            "    []",
        );
        let api = create(&client, &ns, &dr).await;
        let status = wait_finished(&api, "missing").await;
        let restore = step(&status.run.steps, "restore-redis");
        assert_eq!(restore.phase, StepPhase::Failed);
        assert_eq!(
            restore.message.as_deref(),
            Some(r#"expected exit code 0, got 1: "restore names Backup nope, which does not exist in this namespace""#)
        );
    })
    .await;
}

/// The holder of the operator's Lease, if any.
async fn lease_holder(client: &Client, ns: &str, lease: &str) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), ns);
    let lease = leases.get_opt(lease).await.unwrap()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_killed_leader_is_replaced_without_duplicates() {
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install_with(
            &ns,
            &["replicaCount=2,operator.leaseDuration=10s"],
        )
        .await;
        let lease = operator.lease();
        let mut leader = None;
        for _ in 0..300 {
            leader = lease_holder(&client, &ns, &lease).await;
            if leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leader = leader.expect("a replica holds the Lease");
        let dr = scenario(
            "failover",
            "    - {name: first, command: 'sleep 3; echo one'}\n    - {name: second, command: 'echo two', after: [first]}",
            "    []",
            "    []",
        );
        let api = create(&client, &ns, &dr).await;
        support::wait_for(&api, "failover", "the first step to run", LIMIT, |dr: Option<&DisasterRecovery>| {
            dr.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.run.steps.iter().any(|st| st.phase == StepPhase::Running))
        })
        .await;
        // The leader dies without a chance to give the Lease up.
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        pods.delete(&leader, &kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .unwrap();
        let killed = std::time::Instant::now();
        let successor = loop {
            match lease_holder(&client, &ns, &lease).await {
                Some(holder) if holder != leader => break holder,
                _ => {}
            }
            assert!(killed.elapsed() < LIMIT, "no replica took the Lease over");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // A figure for the note and RELIABILITY.md, not an assertion on time.
        println!("failover: {successor} holds the Lease {:?} after {leader} was killed", killed.elapsed());
        let status = wait_finished(&api, "failover").await;
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded), "{status:#?}");
        let mut names: Vec<String> = jobs_of(&client, &ns, "failover").await.iter().map(readable).collect();
        names.sort();
        assert_eq!(names, ["failover-1-first-0", "failover-1-second-0"], "one Job per step");
    })
    .await;
}
