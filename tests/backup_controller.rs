//! The Backup controller against the real control plane and real redis-servers:
//! scheduled, encrypted snapshots with retention, failures reported, RPO.

mod redis_server;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use redis_server::RedisServer;
use titan_dr::api::backup::BackupStatus;
use titan_dr::api::disaster_recovery::{RunPhase, StepPhase};
use titan_dr::api::{Backup, DisasterRecovery};
use titan_dr::backup::{BackupKey, Store};

const LIMIT: Duration = Duration::from_secs(150);

async fn create_key_secret(client: &Client, ns: &str, key: &BackupKey) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("backup-key".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "key".to_string(),
            ByteString(key.to_key_file().into_bytes()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn backup(name: &str, source: &str, schedule: Option<&str>, path: &str) -> Backup {
    let schedule = schedule
        .map(|s| format!("schedule: {s:?}"))
        .unwrap_or_default();
    serde_yaml::from_str(&format!(
        "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {{name: {name}}}\nspec:\n  source: {source}\n  {schedule}\n  retention: {{keepLast: 3, maxAge: 7d}}\n  destination: {{path: {path}}}\n  encryption: {{secretRef: {{name: backup-key}}}}\n"
    ))
    .unwrap()
}

fn status(b: Option<&Backup>) -> Option<&BackupStatus> {
    b.and_then(|b| b.status.as_ref())
}

fn ready(b: Option<&Backup>) -> Option<(String, String, String)> {
    status(b)?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn attempt_time(b: Option<&Backup>) -> Option<String> {
    status(b)?
        .last_schedule_time
        .as_ref()
        .map(|t| t.0.to_string())
}

/// Run `run` of a DisasterRecovery has ended, either way.
fn run_ended(run: &'static str) -> impl Fn(Option<&DisasterRecovery>) -> bool {
    move |d| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.run_id.as_deref() == Some(run)
                && matches!(s.phase, Some(RunPhase::Succeeded | RunPhase::Failed))
        })
    }
}

fn partial_present(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn scheduled_snapshots_keep_the_last_three_and_survive_redis_dying_mid_snapshot() {
    let backups_dir = tempfile::tempdir().unwrap();
    let key = BackupKey::generate();
    // Big enough that a snapshot takes a while: the kill lands mid-transfer.
    let mut redis_a = RedisServer::start(&["--rdbcompression", "no"]);
    let mut con = redis_a.client();
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(150_000)
        .arg("key")
        .arg(1000)
        .query(&mut con)
        .unwrap();
    let backup_dir_arg = backups_dir.path().display().to_string();
    let store_dir = backups_dir.path().join("redis");

    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::start_with(&ns, &["--backup-dir", &backup_dir_arg]);
        create_key_secret(&client, &ns, &key).await;
        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let source = format!("{{redis: {{address: '{}'}}}}", redis_a.address());
        api.create(
            &PostParams::default(),
            &backup("redis", &source, Some("* * * * *"), "redis"),
        )
        .await
        .unwrap();

        // 1: on create.
        let first = support::wait_for(
            &api,
            "redis",
            "the first snapshot",
            LIMIT,
            |b: Option<&Backup>| status(b).is_some_and(|s| s.snapshots.len() == 1),
        )
        .await;
        let snapshot = &first.status.as_ref().unwrap().snapshots[0];
        assert_eq!(snapshot.keys, Some(150_000));
        assert!(snapshot.location.starts_with("redis/") && snapshot.location.ends_with(".rdb.age"));
        assert_eq!(ready(Some(&first)).unwrap().0, "True");

        // 2: the next tick; Redis dies while the snapshot streams.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !partial_present(&store_dir) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no second snapshot started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        redis_a.kill();
        let failed =
            support::wait_for(&api, "redis", "Ready=False", LIMIT, |b: Option<&Backup>| {
                ready(b).is_some_and(|r| r.0 == "False")
            })
            .await;
        let (_, reason, message) = ready(Some(&failed)).unwrap();
        assert!(
            matches!(reason.as_str(), "ConnectionLost" | "RedisUnreachable"),
            "{reason}: {message}"
        );
        let store = Store::open(&store_dir).unwrap();
        let listing = store.list().unwrap();
        assert_eq!(
            listing.snapshots.len(),
            1,
            "the failed attempt left a snapshot"
        );
        assert!(listing.problems.is_empty(), "{:?}", listing.problems);
        assert!(!partial_present(&store_dir));
        store
            .verify(&listing.snapshots[0].id, &key)
            .expect("the first snapshot still verifies");

        // 3: a new Redis; the spec change triggers an attempt at once. 4 and 5: the schedule.
        let redis_b = RedisServer::start(&[]);
        let mut con = redis_b.client();
        let _: () = redis::cmd("SET")
            .arg("after")
            .arg("recovery")
            .query(&mut con)
            .unwrap();
        let patch =
            serde_json::json!({"spec": {"source": {"redis": {"address": redis_b.address()}}}});
        api.patch("redis", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let mut seen = attempt_time(Some(&failed));
        for attempt in 3..=5 {
            let previous = seen.clone();
            let done = support::wait_for(
                &api,
                "redis",
                &format!("attempt {attempt}"),
                LIMIT,
                move |b: Option<&Backup>| {
                    attempt_time(b) != previous && ready(b).is_some_and(|r| r.0 == "True")
                },
            )
            .await;
            seen = attempt_time(Some(&done));
        }
        let last = api.get("redis").await.unwrap();
        let status = last.status.unwrap();
        assert_eq!(status.snapshots.len(), 3, "keepLast: 3 in status");
        let listing = store.list().unwrap();
        let on_disk: Vec<&str> = listing.snapshots.iter().map(|m| m.id.as_str()).collect();
        let in_status: Vec<&str> = status.snapshots.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(on_disk, in_status, "status lists exactly what is on disk");
        for id in on_disk {
            store
                .verify(id, &key)
                .expect("every kept snapshot verifies");
        }
        assert_eq!(status.snapshots[0].keys, Some(1));
        assert!(status.last_successful_time.is_some());
        drop(redis_b);
    })
    .await;
}

#[tokio::test]
async fn configuration_snapshots_and_rpo_of_a_recovery() {
    let backups_dir = tempfile::tempdir().unwrap();
    let key = BackupKey::generate();
    let backup_dir_arg = backups_dir.path().display().to_string();
    let store_dir = backups_dir.path().join("config");
    support::with_namespace(|client, ns| async move {
        let restore_command = env!("CARGO_BIN_EXE_titan-dr");
        let _operator = support::Operator::start_with(
            &ns,
            &["--backup-dir", &backup_dir_arg, "--restore-command", restore_command],
        );
        create_key_secret(&client, &ns, &key).await;
        let labels = BTreeMap::from([("app".to_string(), "titan".to_string())]);
        for name in ["brain-config", "shared-config"] {
            let map = ConfigMap {
                metadata: kube::api::ObjectMeta { name: Some(name.into()), labels: Some(labels.clone()), ..Default::default() },
                data: Some(BTreeMap::from([("config.json".to_string(), format!("{{\"service\": \"{name}\"}}"))])),
                ..Default::default()
            };
            Api::<ConfigMap>::namespaced(client.clone(), &ns).create(&PostParams::default(), &map).await.unwrap();
        }
        let unrelated = ConfigMap { metadata: kube::api::ObjectMeta { name: Some("other".into()), ..Default::default() }, ..Default::default() };
        Api::<ConfigMap>::namespaced(client.clone(), &ns).create(&PostParams::default(), &unrelated).await.unwrap();

        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let source = "{configMaps: {selector: {matchLabels: {app: titan}}}}";
        api.create(&PostParams::default(), &backup("config", source, None, "config")).await.unwrap();
        let done = support::wait_for(&api, "config", "a configuration snapshot", LIMIT, |b: Option<&Backup>| {
            status(b).is_some_and(|s| !s.snapshots.is_empty())
        })
        .await;
        let snapshot = &done.status.unwrap().snapshots[0];
        assert_eq!(snapshot.keys, Some(2), "the two labelled ConfigMaps");
        assert!(snapshot.location.ends_with(".tar.age"));
        let store = Store::open(&store_dir).unwrap();
        let restored = tempfile::tempdir().unwrap();
        let tar = restored.path().join("config.tar");
        store.restore(&snapshot.id, &key, &tar).unwrap();
        let entries = titan_dr::backup::config_archive::read(std::fs::File::open(&tar).unwrap()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["configmaps/brain-config.yaml", "configmaps/shared-config.yaml"]);

        // A lost and a corrupted ConfigMap come back from the snapshot by server-side apply.
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        maps.delete("brain-config", &Default::default()).await.unwrap();
        let corrupt = serde_json::json!({"data": {"config.json": "garbage"}});
        maps.patch("shared-config", &PatchParams::default(), &Patch::Merge(&corrupt)).await.unwrap();
        let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), &ns);
        let restore: DisasterRecovery = serde_yaml::from_str(
            "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {name: configuration-corruption}\nspec:\n  scenario: configuration-corruption\n  steps: [{name: restore-config, restore: {backup: config, configuration: {}}}]\n",
        )
        .unwrap();
        drs.create(&PostParams::default(), &restore).await.unwrap();
        let done = support::wait_for(&drs, "configuration-corruption", "the restore", LIMIT, run_ended("1")).await;
        let step = &done.status.unwrap().steps[0];
        assert_eq!(step.phase, StepPhase::Succeeded, "{step:#?}");
        for name in ["brain-config", "shared-config"] {
            let map = maps.get(name).await.unwrap();
            assert_eq!(map.data.unwrap()["config.json"], format!("{{\"service\": \"{name}\"}}"));
        }

        // RPO: the newest snapshot's age at run start against the objective.
        for (name, rpo, expected) in [("within", "5m", "True"), ("missed", "1s", "False")] {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let dr: DisasterRecovery = serde_yaml::from_str(&format!(
                "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: {name}}}\nspec:\n  scenario: rpo\n  objectives: {{rpo: {rpo}}}\n  backups: [config]\n  template: {{image: toolbox}}\n  steps: [{{name: noop, command: 'true'}}]\n"
            ))
            .unwrap();
            drs.create(&PostParams::default(), &dr).await.unwrap();
            let finished = support::wait_for(&drs, name, "RPOMet", LIMIT, |d: Option<&DisasterRecovery>| {
                d.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "RPOMet" && c.status != "Unknown"))
            })
            .await;
            let status = finished.status.unwrap();
            let rpo_met = status.conditions.iter().find(|c| c.type_ == "RPOMet").unwrap();
            assert_eq!(rpo_met.status, expected, "{}", rpo_met.message);
            assert!(rpo_met.message.contains("config: "), "{}", rpo_met.message);
        }
    })
    .await;
}

/// The restore step brings a flushed Redis back to the snapshot; a tampered
/// snapshot is refused and the Redis is left alone.
#[tokio::test]
async fn a_restore_step_brings_a_flushed_redis_back_and_refuses_a_tampered_snapshot() {
    let backups_dir = tempfile::tempdir().unwrap();
    let key = BackupKey::generate();
    let backup_dir_arg = backups_dir.path().display().to_string();
    let store_dir = backups_dir.path().join("redis");
    let redis = RedisServer::start(&[]);
    let (port, data_dir) = (redis.port, redis.dir.clone());
    let mut con = redis.client();
    for i in 0..2000 {
        let _: () = redis::pipe()
            .set(format!("string:{i}"), format!("value {i}"))
            .hset(format!("hash:{}", i % 50), format!("field{i}"), i)
            .rpush(format!("list:{}", i % 20), i)
            .sadd(format!("set:{}", i % 10), i)
            .zadd(format!("zset:{}", i % 10), format!("m{i}"), i)
            .query(&mut con)
            .unwrap();
    }
    let _: () = redis::cmd("XADD")
        .arg("stream")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg("string:1")
        .arg(3600)
        .query(&mut con)
        .unwrap();
    let keys_before: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    let restart = format!(
        "redis-cli -p {port} shutdown nosave; redis-server --port {port} --bind 127.0.0.1 --dir {} \
         --dbfilename dump.rdb --save '' --appendonly no --daemonize yes",
        data_dir.display()
    );
    let restore_command = env!("CARGO_BIN_EXE_titan-dr").to_string();

    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::start_with(
            &ns,
            &[
                "--backup-dir",
                &backup_dir_arg,
                "--restore-command",
                &restore_command,
            ],
        );
        create_key_secret(&client, &ns, &key).await;
        let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let source = format!("{{redis: {{address: '127.0.0.1:{port}'}}}}");
        backups
            .create(
                &PostParams::default(),
                &backup("redis", &source, None, "redis"),
            )
            .await
            .unwrap();
        support::wait_for(
            &backups,
            "redis",
            "a snapshot",
            LIMIT,
            |b: Option<&Backup>| status(b).is_some_and(|s| !s.snapshots.is_empty()),
        )
        .await;
        let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();

        let dr: DisasterRecovery = serde_yaml::from_str(&format!(
            r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {{name: database-corruption}}
spec:
  scenario: database-corruption
  objectives: {{rto: 10m, rpo: 5m}}
  backups: [redis]
  template: {{image: toolbox}}
  steps:
    - name: restore-redis
      timeout: 2m
      restore:
        backup: redis
        snapshot: latest
        redis:
          dataVolume: {{hostPath: {{path: {data}}}}}
          address: 127.0.0.1:{port}
          restartCommand: {restart:?}
          wait: 30s
  validations:
    - name: keys-back
      command: redis-cli -p {port} dbsize
      expect: {{outputContains: "{keys_before}"}}
"#,
            data = data_dir.display()
        ))
        .unwrap();
        let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), &ns);
        drs.create(&PostParams::default(), &dr).await.unwrap();
        let done =
            support::wait_for(&drs, "database-corruption", "run 1", LIMIT, run_ended("1")).await;
        let status = done.status.unwrap();
        let step = &status.steps[0];
        assert_eq!(step.phase, StepPhase::Succeeded, "{step:#?}");
        assert!(
            step.output
                .as_deref()
                .unwrap_or("")
                .contains(&format!("restarted with {keys_before} keys")),
            "{step:#?}"
        );
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "{}", ready.message);
        let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys_after: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(keys_after, keys_before);
        let value: String = redis::cmd("GET")
            .arg("string:1999")
            .query(&mut con)
            .unwrap();
        assert_eq!(value, "value 1999");
        let ttl: i64 = redis::cmd("TTL").arg("string:1").query(&mut con).unwrap();
        assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

        // Tamper with the snapshot: the next run refuses it and touches nothing.
        let _: () = redis::cmd("SET")
            .arg("written-after")
            .arg("restore")
            .query(&mut con)
            .unwrap();
        let store = Store::open(&store_dir).unwrap();
        let manifest = store.list().unwrap().snapshots[0].clone();
        let file = store_dir.join(&manifest.file);
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&file, bytes).unwrap();
        let dump_before = std::fs::read(data_dir.join("dump.rdb")).unwrap();
        let patch =
            serde_json::json!({"metadata": {"annotations": {"dr.titan.io/run-now": "tampered"}}});
        drs.patch(
            "database-corruption",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
        let done =
            support::wait_for(&drs, "database-corruption", "run 2", LIMIT, run_ended("2")).await;
        let status = done.status.unwrap();
        let step = &status.steps[0];
        assert_eq!(step.phase, StepPhase::Failed, "{step:#?}");
        let output = step.output.clone().unwrap_or_default();
        assert!(
            output.contains(&manifest.id),
            "the snapshot is named: {output}"
        );
        assert!(output.contains("refusing to restore"), "{output}");
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert!(ready.message.contains("restore-redis"), "{}", ready.message);
        assert_eq!(
            std::fs::read(data_dir.join("dump.rdb")).unwrap(),
            dump_before,
            "dump.rdb untouched"
        );
        let still: Option<String> = redis::cmd("GET")
            .arg("written-after")
            .query(&mut con)
            .unwrap();
        assert_eq!(
            still.as_deref(),
            Some("restore"),
            "the running Redis is untouched"
        );
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").arg("NOSAVE").query(&mut con);
    })
    .await;
    drop(redis);
}
