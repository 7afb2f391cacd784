//! Titan on Kubernetes (examples/titan/kubernetes), as the example ships it: the system in
//! the namespace `titan`, its recovery kit in `titan-recovery`, the operator installed by its
//! chart into a namespace of its own. The namespace `titan` is deleted, the recovery applied,
//! and the system must come back with its data; then a tampered newest snapshot is skipped
//! for the previous one, an all-tampered store restores nothing, and the restore's rights are
//! those of the step's own ServiceAccount.
//!
//! The example's namespaces are fixed, so this one test owns them; it deletes them first.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use titan_dr::api::disaster_recovery::{RunPhase, StepPhase};
use titan_dr::api::recovery_run::{RunMode, RunTrigger};
use titan_dr::api::{Backup, DisasterRecovery, RecoveryRun};
use titan_dr::backup::{BackupKey, Store};
use titan_dr::job::{LABEL_RUN_NAME, LABEL_STEP};

const KIT: &str = "examples/titan/kubernetes";
const TITAN: &str = "titan";
const RECOVERY: &str = "titan-recovery";
/// The example's Redis password, with characters that break naive URLs.
const PASSWORD: &str = "titan/example%password#1";
const LIMIT: Duration = Duration::from_secs(300);

fn kubectl(args: &[&str]) -> String {
    support::run(
        Command::new(support::kubectl())
            .args(args)
            .current_dir(support::root())
            .env("KUBECONFIG", support::kubeconfig()),
    )
}

async fn delete_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Ok(Some(namespace)) = namespaces.get_opt(name).await else {
        return;
    };
    support::release_drills(client, name).await;
    let _ = namespaces.delete(name, &DeleteParams::background()).await;
    let uid = namespace.uid().unwrap();
    let gone = await_condition(namespaces, name, conditions::is_deleted(&uid));
    tokio::time::timeout(LIMIT, gone)
        .await
        .unwrap_or_else(|_| panic!("namespace {name} is deleted in time"))
        .unwrap();
}

/// Every object of the namespace `titan` (and the namespace itself) with its resourceVersion.
fn titan_versions() -> String {
    let kinds = "pods,deployments,statefulsets,replicasets,services,configmaps,secrets,persistentvolumeclaims,serviceaccounts";
    let columns = "custom-columns=KIND:.kind,NAME:.metadata.name,VERSION:.metadata.resourceVersion";
    let listed = kubectl(&["-n", TITAN, "get", kinds, "-o", columns, "--no-headers"]);
    assert!(listed.lines().count() > 20, "{listed}");
    listed + &kubectl(&["get", "namespace", TITAN, "-o", columns, "--no-headers"])
}

/// Drills the scenario every minute (successfulRunsHistoryLimit 1) until two have succeeded,
/// each in `<run>-drill`, which is gone after; then unschedules it.
async fn drill_every_minute(client: &Client, drs: &Api<DisasterRecovery>) {
    let scenario = "complete-system-failure";
    let drills =
        serde_json::json!({"spec": {"schedule": "* * * * *", "successfulRunsHistoryLimit": 1}});
    drs.patch(scenario, &PatchParams::default(), &Patch::Merge(&drills))
        .await
        .unwrap();
    let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), RECOVERY);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut seen = Vec::new();
    for n in 1..=2 {
        let name = format!("{scenario}-{n}");
        let deleted = |r: Option<&RecoveryRun>| {
            r.and_then(|r| r.status.as_ref()?.drill.as_ref()?.deleted_at.as_ref())
                .is_some()
        };
        let run = support::wait_for(
            &runs,
            &name,
            "a drill and its namespace deleted",
            LIMIT,
            deleted,
        )
        .await;
        let status = run.status.clone().unwrap();
        assert_eq!(run.spec.mode, RunMode::Drill);
        assert_eq!(run.spec.trigger, RunTrigger::Schedule);
        assert_eq!(
            status.run.phase,
            Some(RunPhase::Succeeded),
            "{:#?}",
            status.run
        );
        let namespace = format!("{name}-drill");
        assert_eq!(status.drill.as_ref().unwrap().namespace, namespace);
        assert_eq!(status.drill.as_ref().unwrap().stands_in_for, TITAN);
        let evidence = status.evidence.clone().unwrap();
        assert_eq!(
            evidence.target_namespace.as_deref(),
            Some(namespace.as_str())
        );
        for validation in [
            "processes-online",
            "redis-connectivity",
            "websocket-connections",
            "trading-status",
        ] {
            let step = status
                .run
                .validations
                .iter()
                .find(|v| v.name == validation)
                .unwrap();
            assert_eq!(step.phase, StepPhase::Succeeded, "{step:#?}");
        }
        let restore = status
            .run
            .steps
            .iter()
            .find(|s| s.name == "restore-redis")
            .unwrap();
        let output = restore.output.clone().unwrap_or_default();
        assert!(
            output.contains(&format!("titan-redis.{namespace}.svc:6379")),
            "{output}"
        );
        assert!(
            namespaces.get_opt(&namespace).await.unwrap().is_none(),
            "{namespace} is gone"
        );
        seen.push(namespace);
    }
    // The history: the newest succeeded run only (a third drill may have started before the
    // schedule was removed).
    support::wait_gone(&runs, &format!("{scenario}-1"), LIMIT).await;
    let unscheduled = serde_json::json!({"spec": {"schedule": null}});
    drs.patch(
        scenario,
        &PatchParams::default(),
        &Patch::Merge(&unscheduled),
    )
    .await
    .unwrap();
    let idle = |dr: Option<&DisasterRecovery>| {
        dr.and_then(|d| d.status.as_ref())
            .is_some_and(|s| s.active.is_empty() && s.next_schedule_time.is_none())
    };
    support::wait_for(drs, scenario, "no active drill", LIMIT, idle).await;
    let released = |all: &[RecoveryRun]| {
        all.iter()
            .all(|r| r.run_status().has_ended() && r.finalizers().is_empty())
    };
    let all = support::wait_for_list(&runs, "", "every drill released", LIMIT, released).await;
    let mut succeeded: Vec<&RecoveryRun> = all
        .iter()
        .filter(|r| r.spec.recovery == scenario && r.run_status().succeeded())
        .collect();
    succeeded.sort_by_key(|r| r.run_status().run_number());
    assert_eq!(
        succeeded.len(),
        1,
        "exactly the configured history: {:?}",
        succeeded.iter().map(|r| r.name_any()).collect::<Vec<_>>()
    );
    assert!(succeeded[0].run_status().run_number() >= Some(2));
    for run in &all {
        seen.extend(
            run.status
                .as_ref()
                .and_then(|s| s.drill.as_ref())
                .map(|d| d.namespace.clone()),
        );
    }
    for namespace in &seen {
        assert!(
            namespaces.get_opt(namespace).await.unwrap().is_none(),
            "{namespace} is gone"
        );
    }
}

/// A connection to Titan's Redis, at its pod's IP.
async fn redis(client: &Client) -> redis::Connection {
    let pods: Api<Pod> = Api::namespaced(client.clone(), TITAN);
    let pod = support::wait_for(
        &pods,
        "titan-redis-0",
        "Redis's pod IP",
        LIMIT,
        |p: Option<&Pod>| p.and_then(|p| p.status.as_ref()?.pod_ip.as_ref()).is_some(),
    )
    .await;
    let ip = pod.status.unwrap().pod_ip.unwrap();
    titan_dr::backup::restore::redis_client(&format!("{ip}:6379"), Some(PASSWORD))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap()
}

/// Every key with its serialized value and absolute expiry (ms, -1 for none).
fn dataset(con: &mut redis::Connection) -> BTreeMap<String, (Vec<u8>, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    keys.into_iter()
        .filter_map(|key| {
            let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query(con).unwrap();
            let expiry: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(con).unwrap();
            // A key that expired since KEYS listed it is gone.
            Some((key, (dump?, expiry)))
        })
        .collect()
}

fn run_ended(run: &'static str) -> impl Fn(Option<&DisasterRecovery>) -> bool {
    move |dr| {
        dr.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.run.run_id.as_deref() == Some(run)
                && matches!(s.run.phase, Some(RunPhase::Succeeded | RunPhase::Failed))
        })
    }
}

/// A DisasterRecovery in the recovery namespace of one restore step of the Redis Backup.
fn restore_only(name: &str, account: &str) -> DisasterRecovery {
    serde_yaml::from_str(&format!(
        "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: {name}}}\nspec:\n  runOnCreate: true\n  scenario: database-corruption\n  targetNamespace: titan\n  template: {{serviceAccountName: {account}}}\n  steps:\n    - name: restore-redis\n      timeout: 3m\n      restore: {{backup: redis, redis: {{address: 'titan-redis.titan.svc:6379', wait: 60s}}}}\n"
    ))
    .unwrap()
}

/// Runs `dr` once, as a new resource (deleting an earlier one of that name first).
async fn run_once(drs: &Api<DisasterRecovery>, dr: &DisasterRecovery) -> DisasterRecovery {
    let name = dr.name_any();
    if let Ok(Some(old)) = drs.get_opt(&name).await {
        let _ = drs.delete(&name, &DeleteParams::foreground()).await;
        let uid = old.uid().unwrap();
        let gone = await_condition(drs.clone(), &name, conditions::is_deleted(&uid));
        tokio::time::timeout(LIMIT, gone).await.unwrap().unwrap();
    }
    drs.create(&PostParams::default(), dr).await.unwrap();
    support::wait_for(drs, &name, "run 1", LIMIT, run_ended("1")).await
}

fn job_complete(job: &Job) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    })
}

/// Job events in the order the API server recorded them: (job, appeared | completed).
async fn record_job_events(
    client: Client,
    ns: String,
    out: std::sync::Arc<std::sync::Mutex<Vec<(String, &'static str)>>>,
) {
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let mut seen_complete = std::collections::BTreeSet::new();
    let mut stream = watcher(jobs, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut known = std::collections::BTreeSet::new();
    while let Some(Ok(job)) = stream.next().await {
        // The run's too: the Jobs of earlier runs (the drills') are listed first.
        let label = |key: &str| job.labels().get(key).cloned().unwrap_or_default();
        let name = format!("{}/{}", label(LABEL_RUN_NAME), label(LABEL_STEP));
        if known.insert(name.clone()) {
            out.lock().unwrap().push((name.clone(), "appeared"));
        }
        if job_complete(&job) && seen_complete.insert(name.clone()) {
            out.lock().unwrap().push((name, "completed"));
        }
    }
}

fn flip_a_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(file, bytes).unwrap();
}

#[tokio::test]
async fn a_deleted_titan_namespace_comes_back_from_its_snapshots_with_its_data() {
    support::with_namespace(|client, ns| async move {
        delete_namespace(&client, TITAN).await;
        delete_namespace(&client, RECOVERY).await;
        let _operator =
            support::Operator::install_with(&ns, &["operator.watchNamespace=titan-recovery"]).await;

        // The system, running, with data: some keys expire before the recovery restores them.
        kubectl(&["apply", "--server-side", "-k", &format!("{KIT}/titan")]);
        for workload in kubectl(&["-n", TITAN, "get", "deployments,statefulsets", "-o", "name"]).lines() {
            kubectl(&["-n", TITAN, "rollout", "status", workload, "--timeout=180s"]);
        }
        let mut con = redis(&client).await;
        for i in 0..3000 {
            let _: () = redis::pipe()
                .set(format!("order:{i}"), format!("{{\"id\":{i}}}"))
                .hset(format!("position:{}", i % 300), format!("f{i}"), i)
                .query(&mut con)
                .unwrap();
        }
        for i in 0..200 {
            let _: () = redis::cmd("SET").arg(format!("session:{i}")).arg(i).arg("EX").arg(3600).query(&mut con).unwrap();
        }
        for i in 0..50 {
            let _: () = redis::cmd("SET").arg(format!("quote:{i}")).arg(i).arg("EX").arg(12).query(&mut con).unwrap();
        }

        // The recovery kit: its Backups snapshot Redis and the configuration at once.
        kubectl(&["create", "namespace", RECOVERY]);
        let key = BackupKey::generate().to_key_file();
        kubectl(&["-n", RECOVERY, "create", "secret", "generic", "titan-backup-key", &format!("--from-literal=key={key}")]);
        kubectl(&["apply", "--server-side", "-k", KIT]);
        let backups: Api<Backup> = Api::namespaced(client.clone(), RECOVERY);
        for name in ["redis", "config"] {
            support::wait_for(&backups, name, "a snapshot", LIMIT, |b: Option<&Backup>| {
                b.and_then(|b| b.status.as_ref()).is_some_and(|s| !s.snapshots.is_empty())
            })
            .await;
        }
        let redis_backup = backups.get("redis").await.unwrap();
        let first = &redis_backup.status.as_ref().unwrap().snapshots[0];
        assert_eq!(first.keys, Some(3000 + 300 + 200 + 50), "every key is in the snapshot");
        let config = backups.get("config").await.unwrap();
        // Five ConfigMaps and the Redis password.
        assert_eq!(config.status.unwrap().snapshots[0].keys, Some(6));
        let before: BTreeMap<_, _> = dataset(&mut con)
            .into_iter()
            .filter(|(key, _)| !key.starts_with("quote:"))
            .collect();
        assert_eq!(before.len(), 3500);

        // Drills every minute while the system runs: each in a namespace of its own, which it
        // deletes; `titan` untouched; one succeeded run kept.
        kubectl(&["-n", RECOVERY, "apply", "-f", &format!("{KIT}/recovery/recovery.yaml")]);
        let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), RECOVERY);
        let untouched = titan_versions();
        drill_every_minute(&client, &drs).await;
        assert_eq!(titan_versions(), untouched, "a drill changed nothing in titan");
        let production: BTreeMap<_, _> = dataset(&mut con)
            .into_iter()
            .filter(|(key, _)| !key.starts_with("quote:"))
            .collect();
        assert_eq!(production, before, "a drill changed no data of titan's Redis");

        // The disaster, then the recovery.
        delete_namespace(&client, TITAN).await;
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = tokio::spawn(record_job_events(client.clone(), RECOVERY.into(), events.clone()));
        kubectl(&["-n", RECOVERY, "apply", "-f", &format!("{KIT}/recovery/recovery.yaml")]);
        let created = kubectl(&["-n", RECOVERY, "create", "-o", "name", "-f", &format!("{KIT}/recovery/run.yaml")]);
        let run = created.trim().rsplit('/').next().unwrap().to_owned();
        let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), RECOVERY);
        let ended = |dr: Option<&DisasterRecovery>| {
            let status = dr.and_then(|d| d.status.as_ref());
            status.is_some_and(|s| s.last_run.as_deref() == Some(run.as_str()) && s.run.has_ended())
        };
        let done = support::wait_for(&drs, "complete-system-failure", "the recovery", LIMIT, ended).await;
        recorder.abort();
        let status = done.status.unwrap();
        let failed: Vec<_> = status.run.steps.iter().filter(|s| s.phase != StepPhase::Succeeded).collect();
        assert!(failed.is_empty(), "{failed:#?}");
        assert_eq!(status.run.phase, Some(RunPhase::Succeeded));
        let condition = |kind: &str| {
            let c = status.run.conditions.iter().find(|c| c.type_ == kind).unwrap_or_else(|| panic!("no {kind}"));
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        for kind in ["Ready", "Validated", "RTOMet", "RPOMet"] {
            assert_eq!(condition(kind).0, "True", "{kind}: {:?}", condition(kind));
        }
        for validation in ["processes-online", "redis-connectivity", "websocket-connections", "trading-status"] {
            let (state, reason, message) = condition(&format!("validation.dr.titan.io/{validation}"));
            assert_eq!((state.as_str(), reason.as_str()), ("True", "Passed"), "{validation}: {message}");
        }
        let restore = status.run.steps.iter().find(|s| s.name == "restore-redis").unwrap();
        let output = restore.output.clone().unwrap_or_default();
        // The newest snapshot taken before the run started (the schedule may have added one).
        let restored = output
            .split("verified snapshot ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no verified snapshot named: {output}"));
        let started = titan_dr::backup::manifest::snapshot_id(status.run.started_at.clone().unwrap().0);
        let taken = backups.get("redis").await.unwrap().status.unwrap().snapshots;
        let newest_before = taken.iter().map(|s| s.id.as_str()).filter(|id| *id <= started.as_str()).max();
        assert_eq!(Some(restored), newest_before, "{output}");
        // The quotes (12 s TTL) in that snapshot have all expired by the restore: 50 if it is
        // the first snapshot, none if the schedule took another after they expired.
        let in_snapshot = taken.iter().find(|s| s.id == restored).and_then(|s| s.keys).unwrap();
        let quotes = in_snapshot - 3500;
        assert!(output.contains(&format!(" {quotes} expired since")), "{output}");
        assert!(output.contains("holds"), "{output}");

        // In dependency order, the three phases side by side.
        let events = events.lock().unwrap().clone();
        let at = |step: &str, what: &str| {
            let step = format!("{run}/{step}");
            events
                .iter()
                .position(|(s, w)| *s == step && *w == what)
                .unwrap_or_else(|| panic!("no {what} event for {step}: {events:?}"))
        };
        let phases = [
            "start-titan-phase1",
            "start-titan-phase2",
            "start-titan-phase3",
        ];
        for phase in phases {
            assert!(
                at("start-titan-shared", "completed") < at(phase, "appeared"),
                "{phase} before shared: {events:?}"
            );
        }
        let last_appeared = phases.iter().map(|p| at(p, "appeared")).max().unwrap();
        let first_completed = phases.iter().map(|p| at(p, "completed")).min().unwrap();
        assert!(
            last_appeared < first_completed,
            "phase1/2/3 Jobs did not exist at the same time: {events:?}"
        );
        assert!(at("start-redis", "completed") < at("start-titan-brain", "appeared"));
        assert!(at("start-titan-brain", "completed") < at("start-titan-shared", "appeared"));
        assert!(
            at("validate-services-running", "completed") < at("redis-connectivity", "appeared")
        );

        // Every Deployment Available, and the data as it was, less what expired meanwhile.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), TITAN);
        let listed = deployments.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), 5);
        for d in &listed.items {
            let available = d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
                })
            });
            assert!(available, "{} is Available", d.name_any());
        }
        let mut con = redis(&client).await;
        assert_eq!(dataset(&mut con), before, "the restored data");

        // Two snapshots at least (the schedule takes one a minute), then no more, so the store
        // stays as the test leaves it.
        support::wait_for(&backups, "redis", "a second snapshot", LIMIT, |b: Option<&Backup>| {
            b.and_then(|b| b.status.as_ref()).is_some_and(|s| s.snapshots.len() >= 2)
        })
        .await;
        let unscheduled = serde_json::json!({"spec": {"schedule": null}});
        backups.patch("redis", &PatchParams::default(), &Patch::Merge(&unscheduled)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let folder = titan_dr::backup::backup_folder(&backups.get("redis").await.unwrap());
        let store_dir = support::backup_volume(&client, &ns).await.join(folder);
        let store = Store::open(&store_dir).unwrap();
        let snapshots = store.list().unwrap().snapshots;
        assert!(snapshots.len() >= 2, "{} snapshots", snapshots.len());
        let (newest, previous) = (&snapshots[0], &snapshots[1]);

        // The newest snapshot tampered with: the restore names it, skips it and restores the
        // previous one, with the step's own ServiceAccount.
        flip_a_byte(&store_dir.join(&newest.file));
        let _: () = redis::cmd("SET").arg("written-after-the-recovery").arg(1).query(&mut con).unwrap();
        let again = run_once(&drs, &restore_only("restore-redis", "titan-recovery")).await;
        let step = &again.status.unwrap().run.steps[0];
        assert_eq!(step.phase, StepPhase::Succeeded, "{step:#?}");
        let output = step.output.clone().unwrap_or_default();
        assert!(output.contains(&format!("refusing snapshot {}", newest.id)), "{output}");
        assert!(output.contains(&format!("verified snapshot {}", previous.id)), "{output}");
        let mut con = redis(&client).await;
        let gone: Option<String> = redis::cmd("GET").arg("written-after-the-recovery").query(&mut con).unwrap();
        assert_eq!(gone, None, "Redis holds the previous snapshot");

        // Every snapshot tampered with: nothing is restored and Redis is untouched.
        for snapshot in &snapshots[1..] {
            flip_a_byte(&store_dir.join(&snapshot.file));
        }
        let _: () = redis::cmd("SET").arg("precious").arg("yes").query(&mut con).unwrap();
        let untouched = dataset(&mut con);
        let refused = run_once(&drs, &restore_only("restore-redis", "titan-recovery")).await;
        let status = refused.status.unwrap();
        assert_eq!(status.run.phase, Some(RunPhase::Failed));
        let output = status.run.steps[0].output.clone().unwrap_or_default();
        assert!(output.contains("no snapshot verified"), "{output}");
        assert_eq!(dataset(&mut redis(&client).await), untouched, "Redis is untouched");

        // Another account of the namespace may not read the snapshots; the recovery's own
        // account may not write outside `titan`.
        let foreign = run_once(&drs, &restore_only("restore-as-default", "default")).await;
        let output = foreign.status.unwrap().run.steps[0].output.clone().unwrap_or_default();
        assert!(output.contains("403"), "{output}");
        assert!(output.contains("may not get backups/snapshots of titan-recovery/redis"), "{output}");
        let escape: DisasterRecovery = serde_yaml::from_str(&format!(
            "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: escape}}\nspec:\n  runOnCreate: true\n  scenario: escape\n  template: {{image: {}, serviceAccountName: titan-recovery}}\n  steps: [{{name: write-elsewhere, command: 'kubectl -n titan-recovery create configmap escape --from-literal=a=b'}}]\n",
            support::TOOLBOX
        ))
        .unwrap();
        let escaped = run_once(&drs, &escape).await;
        let output = escaped.status.unwrap().run.steps[0].output.clone().unwrap_or_default();
        assert!(output.contains("writes only to the namespace titan"), "{output}");

        delete_namespace(&client, TITAN).await;
        delete_namespace(&client, RECOVERY).await;
    })
    .await;
}
