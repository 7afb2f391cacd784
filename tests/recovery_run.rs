//! Runs as objects on the real cluster: a DisasterRecovery is a scenario that runs nothing by
//! itself; each RecoveryRun is one execution of it, with its own copy of the scenario, its own
//! Jobs, the concurrency policy between runs, and Pause, Resume and Abort.

mod support;

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use titan_dr::api::disaster_recovery::{RunPhase, StepPhase, StepStatus};
use titan_dr::api::{DisasterRecovery, RecoveryRun, RunStatus};
use titan_dr::job::{LABEL_RECOVERY, LABEL_RUN_NAME};

const LIMIT: Duration = Duration::from_secs(120);

/// A scenario with the given steps and rollback, and `extra` spec lines.
fn scenario(name: &str, extra: &str, steps: &str, rollback: &str) -> DisasterRecovery {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {{name: {name}}}
spec:
  scenario: {name}
  objectives: {{rto: 10m}}
  template: {{image: {toolbox}}}
{extra}
  steps:
{steps}
  rollback:
{rollback}
"#,
        toolbox = support::TOOLBOX
    ))
    .expect("test scenario parses")
}

async fn create_recovery(
    client: &Client,
    ns: &str,
    dr: &DisasterRecovery,
) -> Api<DisasterRecovery> {
    let api: Api<DisasterRecovery> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), dr)
        .await
        .expect("creating the DisasterRecovery");
    api
}

/// RecoveryRun `name` of `recovery`, with `extra` spec lines, as a person writes it.
fn run_manifest(name: &str, recovery: &str, extra: &str) -> RecoveryRun {
    serde_yaml::from_str(&format!(
        "apiVersion: dr.titan.io/v1alpha1\nkind: RecoveryRun\nmetadata: {{name: {name}}}\nspec:\n  recovery: {recovery}\n  reason: 'INC-1234: primary host lost'\n{extra}"
    ))
    .unwrap()
}

/// Creates RecoveryRun `name` of `recovery`, as a person would with `kubectl apply`.
async fn create_run(client: &Client, ns: &str, name: &str, recovery: &str) -> Api<RecoveryRun> {
    let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), ns);
    let run = run_manifest(name, recovery, "");
    runs.create(&PostParams::default(), &run)
        .await
        .expect("creating the RecoveryRun");
    runs
}

/// The user the API server says this test is.
async fn me(client: &Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.and_then(|s| s.user_info);
    user.and_then(|u| u.username).expect("a user name")
}

fn ended(run: Option<&RecoveryRun>) -> bool {
    run.is_some_and(|r| r.run_status().has_ended())
}

async fn wait_ended(runs: &Api<RecoveryRun>, name: &str) -> RecoveryRun {
    support::wait_for(runs, name, "the run to end", LIMIT, ended).await
}

/// Waits until step `step` of run `name` is Running.
async fn wait_running(runs: &Api<RecoveryRun>, name: &str, step: &'static str) -> RecoveryRun {
    support::wait_for(
        runs,
        name,
        "the step to run",
        LIMIT,
        move |r: Option<&RecoveryRun>| {
            r.is_some_and(|r| {
                r.run_status()
                    .steps
                    .iter()
                    .any(|s| s.name == step && s.phase == StepPhase::Running)
            })
        },
    )
    .await
}

fn step<'s>(status: &'s RunStatus, name: &str) -> &'s StepStatus {
    status
        .steps
        .iter()
        .chain(&status.rollback)
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}: {status:#?}"))
}

fn ready(status: &RunStatus) -> (String, String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

async fn jobs_of_run(client: &Client, ns: &str, run: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let selector = format!("{LABEL_RUN_NAME}={run}");
    jobs.list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn applying_a_recovery_runs_nothing_and_applying_a_run_recovers() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "quiet",
            "",
            "    - {name: a, command: 'echo recovered'}",
            "    []",
        );
        let drs = create_recovery(&client, &ns, &dr).await;
        // Looked at (the status says so), and nothing started.
        let looked = support::wait_for(
            &drs,
            "quiet",
            "the first status",
            LIMIT,
            |d: Option<&DisasterRecovery>| {
                d.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.run_trigger.is_some())
            },
        )
        .await;
        let status = looked.status.unwrap();
        assert_eq!(ready(&status.run).1, "NoRunYet", "{status:#?}");
        assert!(status.last_run.is_none() && status.run.run_id.is_none());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &ns);
        assert!(
            runs.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty(),
            "no RecoveryRun"
        );
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        assert!(
            jobs.list(&ListParams::default())
                .await
                .unwrap()
                .items
                .is_empty(),
            "no Job"
        );

        let runs = create_run(&client, &ns, "quiet-by-hand", "quiet").await;
        let run = wait_ended(&runs, "quiet-by-hand").await;
        let status = run.run_status();
        assert_eq!(status.phase, Some(RunPhase::Succeeded), "{status:#?}");
        assert_eq!(status.run_id.as_deref(), Some("quiet-by-hand"));
        assert_eq!(
            step(&status, "a").output.as_deref().map(str::trim),
            Some("recovered")
        );
        // Adopted by its recovery, and its Jobs are its own.
        let owner = &run.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("DisasterRecovery", "quiet")
        );
        assert_eq!(run.labels()[LABEL_RECOVERY], "quiet");
        let jobs = jobs_of_run(&client, &ns, "quiet-by-hand").await;
        assert_eq!(jobs.len(), 1);
        let job_owner = &jobs[0].owner_references()[0];
        assert_eq!(
            (job_owner.kind.as_str(), job_owner.uid.as_str()),
            ("RecoveryRun", run.uid().unwrap().as_str())
        );

        // The recovery mirrors its newest run and names it.
        let mirrored = support::wait_for(
            &drs,
            "quiet",
            "the mirrored run",
            LIMIT,
            |d: Option<&DisasterRecovery>| {
                d.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.last_successful_run.as_deref() == Some("quiet-by-hand"))
            },
        )
        .await;
        let status = mirrored.status.unwrap();
        assert_eq!(status.last_run.as_deref(), Some("quiet-by-hand"));
        assert!(status.active.is_empty());
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded));
        assert_eq!(ready(&status.run).0, "True");

        // A run of a recovery that does not exist ends at once, saying so, with no Job.
        create_run(&client, &ns, "nowhere-1", "nowhere").await;
        let lost = wait_ended(&runs, "nowhere-1").await.run_status();
        let (state, reason, message) = ready(&lost);
        assert_eq!(
            (state.as_str(), reason.as_str()),
            ("False", "RecoveryNotFound")
        );
        assert!(message.contains("nowhere"), "{message}");
        assert!(jobs_of_run(&client, &ns, "nowhere-1").await.is_empty());

        // From the terminal: titan-dr trigger, requested by whom the API server says.
        let printed = support::run(
            std::process::Command::new(env!("CARGO_BIN_EXE_titan-dr"))
                .args(["trigger", "quiet", "-n", &ns, "--reason", "INC-7"])
                .env("KUBECONFIG", support::kubeconfig()),
        );
        let name = printed.trim();
        assert!(name.starts_with("quiet-"), "{printed}");
        let run = wait_ended(&runs, name).await;
        assert_eq!(run.run_status().phase, Some(RunPhase::Succeeded));
        assert_eq!(run.spec.reason.as_deref(), Some("INC-7"));
        let user = me(&client).await;
        assert_eq!(run.spec.requested_by.as_deref(), Some(user.as_str()));

        // The requester is who the API server says: filled in when absent (above), refused
        // when it names somebody else, and fixed once set.
        let forged = run_manifest(
            "quiet-forged",
            "quiet",
            "  requestedBy: mallory@example.com\n",
        );
        let refused = runs
            .create(&PostParams::default(), &forged)
            .await
            .unwrap_err();
        let message = refused.to_string();
        assert!(
            message
                .contains("spec.requestedBy mallory@example.com is not the user creating the run")
                && message.contains("run-requester"),
            "{message}"
        );
        let own = run_manifest(
            "quiet-own",
            "quiet",
            &format!("  requestedBy: {user}\n  action: Pause\n"),
        );
        runs.create(&PostParams::default(), &own)
            .await
            .expect("one's own name is accepted");
        let change = serde_json::json!({"spec": {"requestedBy": "mallory@example.com"}});
        let refused = runs
            .patch("quiet-own", &PatchParams::default(), &Patch::Merge(&change))
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("spec.requestedBy cannot change"),
            "{refused}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_edit_during_a_run_does_not_change_it() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let steps = "    - {name: a, command: 'sleep 4; echo first'}\n    - {name: b, after: [a], command: 'echo first'}";
        let drs = create_recovery(&client, &ns, &scenario("edited", "", steps, "    []")).await;
        let runs = create_run(&client, &ns, "edited-1", "edited").await;
        wait_running(&runs, "edited-1", "a").await;
        let edit = serde_json::json!({"spec": {"steps": [
            {"name": "a", "command": "echo second"},
            {"name": "b", "after": ["a"], "command": "echo second"},
        ]}});
        drs.patch("edited", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
        let run = wait_ended(&runs, "edited-1").await;
        let status = run.run_status();
        assert_eq!(status.phase, Some(RunPhase::Succeeded), "{status:#?}");
        for name in ["a", "b"] {
            assert_eq!(step(&status, name).output.as_deref().map(str::trim), Some("first"), "{name}");
        }
        assert_eq!(run.status.as_ref().unwrap().scenario_generation, Some(1));
        assert_eq!(drs.get("edited").await.unwrap().metadata.generation, Some(2));

        // The next run takes the edit.
        create_run(&client, &ns, "edited-2", "edited").await;
        let status = wait_ended(&runs, "edited-2").await.run_status();
        assert_eq!(step(&status, "b").output.as_deref().map(str::trim), Some("second"));
    })
    .await;
}

#[tokio::test]
async fn forbid_refuses_a_second_run_while_one_is_active() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "single",
            "",
            "    - {name: a, command: 'sleep 5; echo done'}",
            "    []",
        );
        create_recovery(&client, &ns, &dr).await;
        let runs = create_run(&client, &ns, "single-a", "single").await;
        wait_running(&runs, "single-a", "a").await;
        create_run(&client, &ns, "single-b", "single").await;
        let refused = wait_ended(&runs, "single-b").await.run_status();
        let (state, reason, message) = ready(&refused);
        assert_eq!((state.as_str(), reason.as_str()), ("False", "Refused"));
        assert!(
            message.contains("single-a") && message.contains("Forbid"),
            "{message}"
        );
        assert!(
            jobs_of_run(&client, &ns, "single-b").await.is_empty(),
            "no Job for a refused run"
        );
        let first = wait_ended(&runs, "single-a").await.run_status();
        assert_eq!(
            first.phase,
            Some(RunPhase::Succeeded),
            "the active run goes on: {first:#?}"
        );
        let events = support::events_of(&client, &ns, "single-b").await;
        assert!(
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some("RunRefused")),
            "{events:#?}"
        );
    })
    .await;
}

#[tokio::test]
async fn replace_aborts_the_active_run_runs_its_rollback_then_starts() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "replaced",
            "  concurrencyPolicy: Replace",
            "    - {name: slow, command: 'sleep 300'}",
            "    - {name: undo, command: 'echo undone'}",
        );
        create_recovery(&client, &ns, &dr).await;
        let runs = create_run(&client, &ns, "replaced-1", "replaced").await;
        wait_running(&runs, "replaced-1", "slow").await;
        create_run(&client, &ns, "replaced-2", "replaced").await;
        let first = wait_ended(&runs, "replaced-1").await;
        assert_eq!(
            first.spec.action,
            Some(titan_dr::api::recovery_run::RunAction::Abort)
        );
        let status = first.run_status();
        assert_eq!(status.phase, Some(RunPhase::Failed), "{status:#?}");
        assert_eq!(ready(&status).1, "Aborted");
        let slow = step(&status, "slow");
        assert_eq!(slow.phase, StepPhase::Failed);
        assert!(
            slow.message
                .as_deref()
                .unwrap_or_default()
                .contains("aborted"),
            "{slow:#?}"
        );
        assert_eq!(
            step(&status, "undo").phase,
            StepPhase::Succeeded,
            "the rollback ran"
        );
        // Then the new run starts: it is running its own slow step.
        let second = wait_running(&runs, "replaced-2", "slow").await;
        let began = second.run_status().started_at.unwrap().0;
        assert!(
            began >= status.finished_at.unwrap().0,
            "the new run began after the old ended"
        );
    })
    .await;
}

#[tokio::test]
async fn pause_holds_the_next_step_and_abort_stops_the_run_and_rolls_back() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let steps = "    - {name: a, command: 'sleep 3; echo a'}\n    - {name: b, after: [a], command: 'echo b'}\n    - {name: c, after: [b], command: 'sleep 300'}";
        let dr = scenario("steered", "", steps, "    - {name: undo, command: 'echo undone'}");
        create_recovery(&client, &ns, &dr).await;
        let runs = create_run(&client, &ns, "steered-1", "steered").await;
        wait_running(&runs, "steered-1", "a").await;
        let action = |a: &str| serde_json::json!({"spec": {"action": a}});
        let params = PatchParams::default();
        runs.patch("steered-1", &params, &Patch::Merge(&action("Pause"))).await.unwrap();
        // a ends, and b does not start while paused.
        let paused = support::wait_for(&runs, "steered-1", "a paused run with a done", LIMIT, |r: Option<&RecoveryRun>| {
            r.is_some_and(|r| {
                let s = r.run_status();
                s.phase == Some(RunPhase::Paused) && s.steps.iter().any(|s| s.name == "a" && s.phase == StepPhase::Succeeded)
            })
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let still = runs.get("steered-1").await.unwrap().run_status();
        assert_eq!(step(&still, "b").phase, StepPhase::Pending, "{still:#?}");
        assert_eq!(still.phase, Some(RunPhase::Paused));
        drop(paused);

        runs.patch("steered-1", &params, &Patch::Merge(&action("Resume"))).await.unwrap();
        wait_running(&runs, "steered-1", "c").await;
        runs.patch("steered-1", &params, &Patch::Merge(&action("Abort"))).await.unwrap();
        let status = wait_ended(&runs, "steered-1").await.run_status();
        assert_eq!(status.phase, Some(RunPhase::Failed));
        let (_, reason, message) = ready(&status);
        assert_eq!(reason, "Aborted", "{message}");
        assert!(message.contains(&me(&client).await), "{message}");
        assert_eq!(step(&status, "b").phase, StepPhase::Succeeded);
        assert_eq!(step(&status, "c").phase, StepPhase::Failed);
        assert_eq!(step(&status, "undo").phase, StepPhase::Succeeded, "the rollback ran");
        // The stopped Job is gone from the node: it failed, and no pod of it runs.
        let jobs = jobs_of_run(&client, &ns, "steered-1").await;
        let c = jobs.iter().find(|j| j.labels()["dr.titan.io/step"] == "c").unwrap();
        let active = c.status.as_ref().and_then(|s| s.active).unwrap_or(0);
        assert_eq!(active, 0, "{:#?}", c.status);
    })
    .await;
}

#[tokio::test]
async fn run_now_starts_numbered_runs_and_the_history_limit_deletes_the_oldest() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario("history", "  successfulRunsHistoryLimit: 2", "    - {name: a, command: 'echo ok'}", "    []");
        let drs = create_recovery(&client, &ns, &dr).await;
        let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &ns);
        // A run-now value already there when the operator first sees the recovery is taken
        // for one it was created with, which starts nothing: wait until it has seen it.
        let observed = |d: Option<&DisasterRecovery>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.run.observed_generation.is_some())
        };
        support::wait_for(&drs, "history", "the recovery observed", LIMIT, observed).await;
        for n in 1..=3 {
            let now = serde_json::json!({"metadata": {"annotations": {titan_dr::names::RUN_NOW: n.to_string()}}});
            drs.patch("history", &PatchParams::default(), &Patch::Merge(&now)).await.unwrap();
            let name = format!("history-{n}");
            let run = wait_ended(&runs, &name).await;
            assert_eq!(run.spec.trigger, titan_dr::api::recovery_run::RunTrigger::RunNow);
            assert_eq!(run.run_status().run_id, Some(n.to_string()));
            assert_eq!(run.run_status().phase, Some(RunPhase::Succeeded));
        }
        support::wait_gone(&runs, "history-1", LIMIT).await;
        let left: Vec<String> = runs.list(&ListParams::default()).await.unwrap().items.iter().map(|r| r.name_any()).collect();
        assert_eq!(left, ["history-2", "history-3"]);
        let status = drs.get("history").await.unwrap().status.unwrap();
        assert_eq!(status.run.run_id.as_deref(), Some("3"));
    })
    .await;
}

#[tokio::test]
async fn a_schedule_starts_one_run_per_tick_and_suspend_holds_it() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let every_minute = "  schedule: '* * * * *'\n  timeZone: Europe/Berlin";
        let recovery = format!("{every_minute}\n  scheduleMode: Recovery");
        let steps = "    - {name: a, command: 'echo scheduled'}";
        let drs = create_recovery(
            &client,
            &ns,
            &scenario("nightly", &recovery, steps, "    []"),
        )
        .await;
        // Scheduled runs are drills unless said otherwise: in a namespace of their own.
        let drill_steps = "    - {name: a, command: 'echo \"drill in $TITAN_TARGET_NAMESPACE\"'}";
        create_recovery(
            &client,
            &ns,
            &scenario("drilled", every_minute, drill_steps, "    []"),
        )
        .await;
        let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &ns);
        let first = support::wait_for_list(
            &runs,
            "",
            "the first scheduled runs",
            Duration::from_secs(90),
            |all: &[RecoveryRun]| {
                ["nightly", "drilled"].iter().all(|r| {
                    all.iter()
                        .any(|run| run.spec.recovery == *r && ended(Some(run)))
                })
            },
        )
        .await;
        let run = first.iter().find(|r| r.spec.recovery == "nightly").unwrap();
        assert_eq!(
            run.spec.trigger,
            titan_dr::api::recovery_run::RunTrigger::Schedule
        );
        assert_eq!(
            run.run_status().phase,
            Some(RunPhase::Succeeded),
            "{:#?}",
            run.status
        );
        let drill = first.iter().find(|r| r.spec.recovery == "drilled").unwrap();
        assert_drilled_in_a_namespace_it_deleted(&client, &runs, drill).await;

        let status = drs.get("nightly").await.unwrap().status.unwrap();
        let last = status
            .last_schedule_time
            .clone()
            .expect("lastScheduleTime")
            .0;
        let next = status
            .next_schedule_time
            .clone()
            .expect("nextScheduleTime")
            .0;
        assert_eq!(next.as_second() - last.as_second(), 60, "{status:#?}");
        assert_eq!(last.as_second() % 60, 0);
        assert_eq!(
            run.annotations()["dr.titan.io/scheduled-at"],
            last.to_string()
        );

        let suspend = serde_json::json!({"spec": {"suspend": true}});
        for recovery in ["nightly", "drilled"] {
            drs.patch(recovery, &PatchParams::default(), &Patch::Merge(&suspend))
                .await
                .unwrap();
        }
        support::wait_for(
            &drs,
            "nightly",
            "no next tick",
            LIMIT,
            |d: Option<&DisasterRecovery>| {
                d.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.next_schedule_time.is_none())
            },
        )
        .await;
        // Past the tick that would have come: still one run of nightly.
        let wait =
            (next.as_second() - k8s_openapi::jiff::Timestamp::now().as_second()).max(0) as u64 + 5;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let nightly: Vec<String> = runs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|r| r.spec.recovery == "nightly")
            .map(|r| r.name_any())
            .collect();
        assert_eq!(nightly, [run.name_any()], "no run while suspended");
        // Every drill has let go of its run (its namespace is gone), so nothing holds this
        // namespace's deletion.
        support::wait_for_list(
            &runs,
            "",
            "every drill released",
            LIMIT,
            |all: &[RecoveryRun]| {
                all.iter()
                    .filter(|r| r.spec.recovery == "drilled")
                    .all(|r| ended(Some(r)) && r.finalizers().is_empty())
            },
        )
        .await;
    })
    .await;
}

/// `drill` ran as a Drill in `<run>-drill`, which it deleted after its end.
async fn assert_drilled_in_a_namespace_it_deleted(
    client: &Client,
    runs: &Api<RecoveryRun>,
    drill: &RecoveryRun,
) {
    let name = drill.name_any();
    assert_eq!(drill.spec.mode, titan_dr::api::recovery_run::RunMode::Drill);
    assert_eq!(
        drill.run_status().phase,
        Some(RunPhase::Succeeded),
        "{:#?}",
        drill.status
    );
    let namespace = format!("{name}-drill");
    let output = step(&drill.run_status(), "a")
        .output
        .clone()
        .unwrap_or_default();
    assert!(
        output.contains(&format!("drill in {namespace}")),
        "{output}"
    );
    let deleted = |r: Option<&RecoveryRun>| {
        r.and_then(|r| r.status.as_ref())
            .and_then(|s| s.drill.as_ref())
            .is_some_and(|d| d.deleted_at.is_some())
    };
    let done = support::wait_for(runs, &name, "the drill namespace deleted", LIMIT, deleted).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.drill.as_ref().unwrap().namespace, namespace);
    let evidence = status.evidence.expect("evidence");
    assert_eq!(
        evidence.target_namespace.as_deref(),
        Some(namespace.as_str())
    );
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt(&namespace).await.unwrap().is_none(),
        "{namespace} is gone"
    );
    assert!(
        !done
            .finalizers()
            .iter()
            .any(|f| f == titan_dr::names::DRILL_FINALIZER)
    );
}

#[tokio::test]
async fn a_drill_that_would_touch_the_real_target_is_refused_and_creates_nothing() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let steps = format!(
            "    - {{name: load, restore: {{backup: redis, redis: {{address: 'redis.{ns}.svc:6379'}}}}}}\n    - {{name: check, after: [load], probe: {{redis: {{address: 'redis.$(TITAN_TARGET_NAMESPACE).svc:6379'}}}}}}"
        );
        create_recovery(&client, &ns, &scenario("unsafe", "", &steps, "    []")).await;
        let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &ns);
        let run = run_manifest("unsafe-drill", "unsafe", "  mode: Drill\n");
        runs.create(&PostParams::default(), &run).await.unwrap();
        let refused = wait_ended(&runs, "unsafe-drill").await;
        let (state, reason, message) = ready(&refused.run_status());
        assert_eq!((state.as_str(), reason.as_str()), ("False", "DrillRefused"), "{message}");
        assert!(
            message.contains(&format!("step load: restore.redis.address redis.{ns}.svc:6379 is not in the drill's namespace")),
            "{message}"
        );
        assert!(!message.contains("step check"), "{message}");
        assert!(jobs_of_run(&client, &ns, "unsafe-drill").await.is_empty(), "a refused drill runs nothing");
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        assert!(namespaces.get_opt("unsafe-drill-drill").await.unwrap().is_none());
        assert!(refused.finalizers().is_empty(), "{:?}", refused.finalizers());

        // The operator may delete namespaces, but admission lets it touch drill ones only.
        let victim = format!("{ns}-victim");
        let plain: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": victim}})).unwrap();
        namespaces.create(&PostParams::default(), &plain).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let account = format!("system:serviceaccount:{ns}:titan-dr-{}", ns.rsplit('-').next().unwrap());
        let as_operator: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(support::client_as(dir.path(), &account).await);
        let refused = as_operator.delete(&victim, &Default::default()).await.unwrap_err();
        assert!(refused.to_string().contains("the operator creates and deletes only drill namespaces"), "{refused}");
        let mut another = plain.clone();
        another.metadata.name = Some(format!("{ns}-another"));
        let refused = as_operator.create(&PostParams::default(), &another).await.unwrap_err();
        assert!(refused.to_string().contains("only drill namespaces"), "{refused}");
        namespaces.delete(&victim, &Default::default()).await.unwrap();
    })
    .await;
}

/// Runs `titan-dr evidence RUN -n NS`: its exit code, stdout and stderr.
fn evidence_of(ns: &str, run: &str) -> (i32, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_titan-dr"))
        .args(["evidence", run, "-n", ns])
        .env("KUBECONFIG", support::kubeconfig())
        .output()
        .expect("running titan-dr evidence");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code().unwrap_or(-1),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[tokio::test]
async fn the_evidence_of_a_run_verifies_and_a_changed_byte_is_found() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let steps = "    - {name: a, command: 'echo first output', timeout: 1m}\n    - {name: b, after: [a], command: 'echo second', timeout: 2m, retries: 1}";
        let dr = scenario("proven", "", steps, "    - {name: undo, command: 'true'}");
        create_recovery(&client, &ns, &dr).await;
        let runs = create_run(&client, &ns, "proven-1", "proven").await;
        let run = wait_ended(&runs, "proven-1").await;
        let evidence = run.status.as_ref().unwrap().evidence.clone().expect("evidence");
        assert_eq!(evidence.requested_by, Some(me(&client).await));
        assert_eq!(evidence.reason.as_deref(), Some("INC-1234: primary host lost"));
        assert_eq!(evidence.scenario_generation, Some(1));
        assert_eq!(evidence.outcome, RunPhase::Succeeded);
        assert_eq!(evidence.rto.objective.as_deref(), Some("10m"));
        assert_eq!(evidence.rto.met, "True");
        // a (1m) then b (2m, two attempts).
        assert_eq!(evidence.predicted_worst_case, "5m0s");
        let names: Vec<(&str, &str)> = evidence.steps.iter().map(|s| (s.name.as_str(), s.kind.as_str())).collect();
        assert_eq!(names, [("a", "step"), ("b", "step"), ("undo", "rollback")]);
        let (code, out, err) = evidence_of(&ns, "proven-1");
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("verified: the seal"), "{out}");

        // One byte of a recorded output changed: the evidence no longer verifies.
        let mut steps = run.run_status().steps;
        steps[0].output = steps[0].output.take().map(|o| o.replacen("first", "firsT", 1));
        let patch = serde_json::json!({"status": {"steps": steps}});
        runs.patch_status("proven-1", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
        let (code, _, err) = evidence_of(&ns, "proven-1");
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("the output of step a is not the one the evidence digested"), "{err}");
    })
    .await;
}

/// The evidence outlives the cluster: copied beside the snapshots of the scenario's Backup in
/// object storage, authenticated by the Backup's key; the CLI checks the copy with the key
/// alone, and finds a changed byte or another key.
#[tokio::test]
async fn the_evidence_is_copied_beside_the_snapshots_and_a_changed_byte_is_found() {
    use support::s3_pod::{ACCESS_KEY, BUCKET, PORT, SECRET_KEY, start_s3};
    let key = titan_dr::backup::BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        let s3_ip = start_s3(&client, &ns).await;
        let backup: titan_dr::api::Backup = serde_yaml::from_str(&format!(
            "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {{name: config}}\nspec:\n  source: {{configMaps: {{selector: {{matchLabels: {{app: none}}}}}}}}\n  destination: {{path: config, s3: {{bucket: {BUCKET}, prefix: titan, endpoint: 'http://s3:{PORT}', credentialsSecretRef: {{name: s3-credentials}}}}}}\n  encryption: {{secretRef: {{name: backup-key}}}}\n"
        ))
        .unwrap();
        let backups: Api<titan_dr::api::Backup> = Api::namespaced(client.clone(), &ns);
        let backup = backups.create(&PostParams::default(), &backup).await.unwrap();
        let dr = scenario("audited", "  backups: [config]", "    - {name: a, command: 'echo audited'}", "    []");
        create_recovery(&client, &ns, &dr).await;
        let runs = create_run(&client, &ns, "audited-1", "audited").await;
        let copied = |r: Option<&RecoveryRun>| {
            r.and_then(|r| r.status.as_ref()).is_some_and(|s| !s.evidence_copies.is_empty())
        };
        let run = support::wait_for(&runs, "audited-1", "the evidence copied", LIMIT, copied).await;
        let status = run.status.clone().unwrap();
        let url = format!(
            "s3://{BUCKET}/titan/{ns}/{}/evidence/audited-1-{}.json",
            backup.uid().unwrap(),
            run.uid().unwrap()
        );
        assert_eq!(status.evidence_copies, std::slice::from_ref(&url));

        let work = tempfile::tempdir().unwrap();
        let check = |key: &titan_dr::backup::BackupKey| {
            let key_file = work.path().join("key.txt");
            std::fs::write(&key_file, key.to_key_file()).unwrap();
            let endpoint = format!("http://{s3_ip}:{PORT}");
            let key_file = key_file.to_str().unwrap();
            let credentials = [
                ("AWS_ACCESS_KEY_ID", std::ffi::OsStr::new(ACCESS_KEY)),
                ("AWS_SECRET_ACCESS_KEY", std::ffi::OsStr::new(SECRET_KEY)),
            ];
            let args = ["evidence", "--s3", &url, "--s3-endpoint", &endpoint, "--key-file", key_file];
            titan_dr(&args, &credentials)
        };
        let (code, text) = check(&key);
        assert_eq!(code, Some(0), "{text}");
        let evidence = status.evidence.clone().unwrap();
        assert!(text.contains(&format!("verified: authenticated by the key, and the seal {}", evidence.seal_sha256)), "{text}");
        assert!(text.contains("reason: 'INC-1234: primary host lost'"), "{text}");
        let (code, text) = check(&titan_dr::backup::BackupKey::generate());
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("not authenticated by this key"), "{text}");

        // One byte of the copy changed, by whoever can write the bucket but holds no key.
        let location = titan_dr::backup::offsite::S3Location {
            bucket: BUCKET.into(),
            prefix: url.trim_start_matches(&format!("s3://{BUCKET}/")).rsplit_once('/').unwrap().0.into(),
            endpoint: Some(format!("http://{s3_ip}:{PORT}")),
            region: None,
            force_path_style: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
        };
        let file = url.rsplit('/').next().unwrap();
        let offsite = titan_dr::backup::offsite::Offsite::new(location).unwrap();
        let copy = String::from_utf8(offsite.get(file).await.unwrap()).unwrap();
        let forged = copy.replacen("audited", "auditee", 1);
        assert_ne!(forged, copy);
        offsite.put(file, forged.into_bytes()).await.unwrap();
        let (code, text) = check(&key);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("not verified"), "{text}");
    })
    .await;
}

/// Runs `titan-dr approve RUN STEP -n NS` as `user` (kubeconfig `kubeconfig`): its exit code
/// and what it said.
fn approve_as(
    kubeconfig: &std::path::Path,
    ns: &str,
    run: &str,
    step: &str,
) -> (Option<i32>, String) {
    titan_dr(
        &["approve", run, step, "-n", ns],
        &[("KUBECONFIG", kubeconfig.as_os_str())],
    )
}

/// Runs titan-dr with `args` and `env` added: its exit code and all it printed.
fn titan_dr(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_titan-dr"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

/// The gate of step `step` of a run.
fn gate<'s>(run: &'s RecoveryRun, step: &str) -> &'s titan_dr::api::approval::GateStatus {
    let status = run.status.as_ref().expect("a status");
    status
        .gates
        .iter()
        .find(|g| g.step == step)
        .unwrap_or_else(|| panic!("no gate {step}: {status:#?}"))
}

#[tokio::test]
async fn a_gated_step_waits_for_a_second_person_and_a_timeout_aborts_with_rollback() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        // alice runs recoveries; bob approves them; dave may write runs but approves nothing.
        let subjects: Vec<serde_json::Value> = ["alice", "bob", "dave"]
            .map(|u| serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}))
            .into();
        let rbac: Vec<serde_json::Value> = vec![
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "runs"},
                "rules": [{"apiGroups": ["dr.titan.io"], "resources": ["recoveryruns"], "verbs": ["get", "list", "watch", "create", "patch"]}]}),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "runs"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runs"},
                "subjects": subjects}),
        ];
        for object in rbac {
            let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
            let kind = object.types.clone().unwrap().kind;
            let resource = if kind == "Role" { "roles" } else { "rolebindings" };
            let gvk = kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", &kind);
            let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, resource);
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            api.create(&PostParams::default(), &object).await.unwrap();
        }
        let gated = |name: &str, gate: &str| {
            scenario(
                name,
                "",
                &format!("    - {{name: a, command: 'echo a'}}\n    - {{name: overwrite, after: [a], command: 'echo overwritten', approval: {gate}}}"),
                "    - {name: undo, command: 'echo undone'}",
            )
        };
        create_recovery(&client, &ns, &gated("gated", "{approvers: [bob, 'group:dba'], timeout: 5m}")).await;
        create_recovery(&client, &ns, &gated("hurried", "{approvers: [bob], timeout: 3s}")).await;
        let dir = tempfile::tempdir().unwrap();
        let alice = support::client_as(dir.path(), "alice").await;
        let as_alice: Api<RecoveryRun> = Api::namespaced(alice, &ns);
        as_alice.create(&PostParams::default(), &run_manifest("gated-1", "gated", "")).await.unwrap();
        let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &ns);
        let waiting = |r: Option<&RecoveryRun>| r.is_some_and(|r| r.run_status().phase == Some(RunPhase::WaitingForApproval));
        let held = support::wait_for(&runs, "gated-1", "the run to wait for approval", LIMIT, waiting).await;
        assert_eq!(held.spec.requested_by.as_deref(), Some("alice"));
        assert_eq!(step(&held.run_status(), "a").phase, StepPhase::Succeeded);
        assert_eq!(step(&held.run_status(), "overwrite").phase, StepPhase::Pending);
        let approved = held.run_status().conditions.iter().find(|c| c.type_ == "Approved").cloned().expect("Approved");
        assert_eq!((approved.status.as_str(), approved.reason.as_str()), ("False", "WaitingForApproval"), "{approved:?}");
        assert!(approved.message.contains("waits for one of bob, group:dba"), "{approved:?}");

        // The requester may not approve: admission says so. A forged name is refused too.
        let (code, said) = approve_as(&support::kubeconfig_as(dir.path(), "alice"), &ns, "gated-1", "overwrite");
        assert_eq!(code, Some(1), "{said}");
        assert!(said.contains("the requester alice cannot approve a step of the run: an approval needs a second person"), "{said}");
        let forged = serde_json::json!({"spec": {"approvals": [{"step": "overwrite", "approvedBy": "bob"}]}});
        let refused = as_alice.patch("gated-1", &PatchParams::default(), &Patch::Merge(&forged)).await.unwrap_err();
        assert!(refused.to_string().contains("names bob, not the user approving, alice"), "{refused}");
        // Somebody not listed: recorded, refused by the operator, the step still waits.
        let (code, said) = approve_as(&support::kubeconfig_as(dir.path(), "dave"), &ns, "gated-1", "overwrite");
        assert_eq!(code, Some(0), "{said}");
        let noted = |r: Option<&RecoveryRun>| {
            r.and_then(|r| r.status.as_ref()?.gates.first()?.message.clone()).is_some_and(|m| m.contains("dave is refused: not among the approvers"))
        };
        let still = support::wait_for(&runs, "gated-1", "dave's approval refused", LIMIT, noted).await;
        assert_eq!(still.run_status().phase, Some(RunPhase::WaitingForApproval));
        assert!(jobs_of_run(&client, &ns, "gated-1").await.iter().all(|j| j.labels()["dr.titan.io/step"] != "overwrite"));
        // bob approves: the step runs, and the evidence says who approved.
        let (code, said) = approve_as(&support::kubeconfig_as(dir.path(), "bob"), &ns, "gated-1", "overwrite");
        assert_eq!(code, Some(0), "{said}");
        let done = wait_ended(&runs, "gated-1").await;
        assert_eq!(done.run_status().phase, Some(RunPhase::Succeeded), "{:#?}", done.status);
        assert_eq!(gate(&done, "overwrite").approved_by.as_deref(), Some("bob"));
        let evidence = done.status.clone().unwrap().evidence.unwrap();
        assert!(evidence.approvals[0].starts_with("overwrite: approved by bob at "), "{:?}", evidence.approvals);
        let approved = done.run_status().conditions.iter().find(|c| c.type_ == "Approved").cloned().unwrap();
        assert_eq!(approved.status, "True", "{approved:?}");

        // Nobody approves in time: the run aborts and rolls back; the step never ran.
        as_alice.create(&PostParams::default(), &run_manifest("hurried-1", "hurried", "")).await.unwrap();
        let aborted = wait_ended(&runs, "hurried-1").await;
        let status = aborted.run_status();
        assert_eq!(status.phase, Some(RunPhase::Failed), "{:#?}", aborted.status);
        assert_eq!(step(&status, "undo").phase, StepPhase::Succeeded, "{status:#?}");
        assert_eq!(step(&status, "overwrite").phase, StepPhase::Skipped, "{status:#?}");
        assert_eq!(gate(&aborted, "overwrite").state, titan_dr::api::approval::GateState::TimedOut);
        let evidence = aborted.status.clone().unwrap().evidence.unwrap();
        assert!(evidence.approvals[0].contains("overwrite: not approved; timed out at"), "{:?}", evidence.approvals);
        assert!(jobs_of_run(&client, &ns, "hurried-1").await.iter().all(|j| j.labels()["dr.titan.io/step"] != "overwrite"));
    })
    .await;
}

/// A drill deleted midway (by hand, a history limit, its recovery deleted) takes its
/// namespace with it: the run is held by its finalizer until the namespace is gone.
#[tokio::test]
async fn a_drill_deleted_midway_takes_its_namespace_with_it() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let dr = scenario(
            "long",
            "",
            "    - {name: wait, command: 'sleep 300'}",
            "    []",
        );
        create_recovery(&client, &ns, &dr).await;
        let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &ns);
        let run = run_manifest("long-drill", "long", "  mode: Drill\n");
        runs.create(&PostParams::default(), &run).await.unwrap();
        let running = wait_running(&runs, "long-drill", "wait").await;
        assert!(
            running
                .finalizers()
                .iter()
                .any(|f| f == titan_dr::names::DRILL_FINALIZER)
        );
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let namespace = namespaces
            .get("long-drill-drill")
            .await
            .expect("the drill's namespace");
        assert_eq!(namespace.labels()[titan_dr::names::LABEL_DRILL], ns);
        runs.delete("long-drill", &Default::default())
            .await
            .unwrap();
        support::wait_gone(&runs, "long-drill", LIMIT).await;
        let gone = namespaces.get_opt("long-drill-drill").await.unwrap();
        assert!(
            gone.is_none(),
            "the namespace is gone before the run lets go: {gone:?}"
        );
    })
    .await;
}
