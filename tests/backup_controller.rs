//! The Backup controller on the real cluster: the operator, installed by its chart, takes
//! scheduled, encrypted snapshots of a Redis that runs in a pod, keeps them on its backup
//! volume with retention, reports failures and RPO, and restores them from Jobs: ConfigMaps
//! by server-side apply under the Job's ServiceAccount, Redis into its running pod.
//!
//! The test reaches Redis through its pod IP and reads the snapshot files where the node keeps
//! the backup volume (the PersistentVolume's host path): nothing runs on the host but the test.

mod support;

use support::redis_pod::{REDIS_PASSWORD, connect, start_redis};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use titan_dr::api::backup::BackupStatus;
use titan_dr::api::disaster_recovery::{RunPhase, StepPhase};
use titan_dr::api::{Backup, DisasterRecovery};
use titan_dr::backup::{BackupKey, Store};

const LIMIT: Duration = Duration::from_secs(150);

async fn create_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
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
            s.run.run_id.as_deref() == Some(run)
                && matches!(s.run.phase, Some(RunPhase::Succeeded | RunPhase::Failed))
        })
    }
}

/// The size of the snapshot being written into `dir`, if one is.
fn partial_size(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .find_map(|e| e.metadata().ok().map(|m| m.len()))
}

/// Waits until a snapshot Job of Backup `backup` has a running pod; returns its name.
async fn snapshot_pod_running(client: &Client, ns: &str, backup: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("dr.titan.io/backup={backup}");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .unwrap();
        let running = list
            .items
            .iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if let Some(pod) = running {
            return pod.name_any();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot pod of {backup} ran: {:?}",
            list.items
                .iter()
                .map(|p| (p.name_any(), p.status.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The snapshot Jobs of Backup `backup` that exist.
async fn snapshot_jobs(client: &Client, ns: &str, backup: &str) -> Vec<String> {
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), ns);
    let selector = format!("dr.titan.io/backup={backup}");
    let list = jobs
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap();
    list.items.iter().map(ResourceExt::name_any).collect()
}

/// How often the Redis container of pod `name` was restarted.
async fn restarts(client: &Client, ns: &str, name: &str) -> i32 {
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    pod.status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().map(|c| c.restart_count))
        .unwrap()
}

/// Kills a pod at once: no grace period, like a node losing it.
async fn kill_pod(client: &Client, ns: &str, name: &str) {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &now)
        .await
        .unwrap();
}

/// How many keys the first Redis holds (of 200 bytes, uncompressed: 4 MiB of RDB); a
/// snapshot is quick unless `rdb-key-save-delay` slows it down.
const KEYS: u64 = 20_000;

/// A Redis pod `name` holding the [`KEYS`] keys, uncompressed; a connection to it.
async fn filled_redis(client: &Client, ns: &str, name: &str) -> redis::Connection {
    let ip = start_redis(client, ns, name, &["--rdbcompression", "no"], false, None).await;
    let mut con = connect(&ip, None);
    fill(&mut con);
    con
}

/// Writes the [`KEYS`] keys.
fn fill(con: &mut redis::Connection) {
    for chunk in 0..KEYS / 1000 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            pipe.set(format!("key:{i}"), format!("{i:0>200}")).ignore();
        }
        let () = pipe.query(con).unwrap();
    }
}

/// Makes each snapshot of that Redis take 20 s: its fork sleeps a millisecond per key.
fn slow_down(con: &mut redis::Connection) {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("rdb-key-save-delay")
        .arg(1000)
        .query(con)
        .unwrap();
}

#[tokio::test]
async fn scheduled_snapshots_keep_the_last_three_and_survive_redis_dying_mid_snapshot() {
    let key = BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        let mut con = filled_redis(&client, &ns, "redis-a").await;
        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let source = "{redis: {address: 'redis-a:6379'}}";
        api.create(
            &PostParams::default(),
            &backup("redis", source, Some("* * * * *"), "redis"),
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
        assert_eq!(snapshot.keys, Some(KEYS));
        // One folder per Backup: <path>/<namespace>/<uid>/.
        let folder = titan_dr::backup::backup_folder(&first);
        assert_eq!(
            folder,
            std::path::Path::new("redis")
                .join(&ns)
                .join(first.uid().unwrap())
        );
        assert!(
            snapshot
                .location
                .starts_with(&format!("{}/", folder.display()))
        );
        assert!(snapshot.location.ends_with(".rdb.age"));
        assert_eq!(ready(Some(&first)).unwrap().0, "True");
        let store_dir = support::backup_volume(&client, &ns).await.join(&folder);

        // 2: the next tick; Redis dies while the snapshot streams. Its fork now sleeps a
        // millisecond per key: the transfer takes 20 s instead of a moment.
        slow_down(&mut con);
        snapshot_pod_running(&client, &ns, "redis").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        kill_pod(&client, &ns, "redis-a").await;
        let failed =
            support::wait_for(&api, "redis", "Ready=False", LIMIT, |b: Option<&Backup>| {
                ready(b).is_some_and(|r| r.0 == "False")
            })
            .await;
        let (_, reason, message) = ready(Some(&failed)).unwrap();
        eprintln!("the attempt Redis died in: {reason}: {message}");
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
        assert_eq!(partial_size(&store_dir), None, "a partial snapshot is left");
        store
            .verify(&listing.snapshots[0].id, &key)
            .expect("the first snapshot still verifies");

        // 3: a new Redis; the spec change triggers an attempt at once. 4 and 5: the schedule.
        let ip_b = start_redis(&client, &ns, "redis-b", &[], false, None).await;
        let mut con = connect(&ip_b, None);
        let () = redis::cmd("SET")
            .arg("after")
            .arg("recovery")
            .query(&mut con)
            .unwrap();
        let patch = serde_json::json!({"spec": {"source": {"redis": {"address": "redis-b:6379"}}}});
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
    })
    .await;
}

/// What someone who can write the volume but holds only the public recipient can make of
/// snapshot `genuine` in folder `dir`: a valid age file of their own content, and a manifest
/// whose checksums match it.
fn forge(dir: &Path, genuine: &titan_dr::backup::Manifest, content: &[u8]) {
    use sha2::Digest;
    use std::io::Write;
    let recipient: age::x25519::Recipient = genuine.encryption.recipient.parse().unwrap();
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .unwrap();
    let mut encrypted = Vec::new();
    let mut writer = encryptor.wrap_output(&mut encrypted).unwrap();
    writer.write_all(content).unwrap();
    writer.finish().unwrap();
    let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    let mut forged = genuine.clone();
    forged.size_bytes = encrypted.len() as u64;
    forged.sha256 = sha(&encrypted);
    forged.plaintext.size_bytes = content.len() as u64;
    forged.plaintext.sha256 = sha(content);
    std::fs::write(dir.join(&forged.file), &encrypted).unwrap();
    let manifest = dir.join(titan_dr::backup::Manifest::file_name(&forged.id));
    std::fs::write(manifest, serde_json::to_vec(&forged).unwrap()).unwrap();
}

/// A spec change that makes the Backup take a snapshot at once.
async fn attempt_now(api: &Api<Backup>, keep_last: u32) {
    let patch = serde_json::json!({"spec": {"retention": {"keepLast": keep_last}}});
    api.patch("redis", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_killed_snapshot_job_or_operator_leaves_a_store_whose_latest_verifies() {
    let key = BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install(&ns).await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        let mut con = filled_redis(&client, &ns, "redis").await;
        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let source = "{redis: {address: 'redis:6379'}}";
        api.create(
            &PostParams::default(),
            &backup("redis", source, None, "redis"),
        )
        .await
        .unwrap();
        let first = support::wait_for(
            &api,
            "redis",
            "the first snapshot",
            LIMIT,
            |b: Option<&Backup>| status(b).is_some_and(|s| s.snapshots.len() == 1),
        )
        .await;
        let store_dir = support::backup_volume(&client, &ns)
            .await
            .join(titan_dr::backup::backup_folder(&first));
        let store = Store::open(&store_dir).unwrap();
        // Each snapshot from now on takes 20 s: a millisecond per key.
        slow_down(&mut con);

        // The snapshot Job's pod killed mid-snapshot: the attempt fails, nothing is stored.
        attempt_now(&api, 4).await;
        let pod = snapshot_pod_running(&client, &ns, "redis").await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        kill_pod(&client, &ns, &pod).await;
        let failed =
            support::wait_for(&api, "redis", "Ready=False", LIMIT, |b: Option<&Backup>| {
                ready(b).is_some_and(|r| r.0 == "False")
            })
            .await;
        let (_, reason, message) = ready(Some(&failed)).unwrap();
        eprintln!("the killed snapshot Job: {reason}: {message}");
        let listing = store.list().unwrap();
        assert_eq!(
            listing.snapshots.len(),
            1,
            "the killed Job stored a snapshot"
        );
        assert!(listing.problems.is_empty(), "{:?}", listing.problems);
        assert_eq!(partial_size(&store_dir), None, "a partial snapshot is left");
        let latest = store.resolve("latest").unwrap();
        store.verify(&latest, &key).expect("latest still verifies");

        // The operator killed mid-snapshot: the Job goes on, delivers to the new operator,
        // which records it.
        attempt_now(&api, 5).await;
        snapshot_pod_running(&client, &ns, "redis").await;
        operator.kill().await;
        let done = support::wait_for(
            &api,
            "redis",
            "the second snapshot",
            LIMIT,
            |b: Option<&Backup>| {
                ready(b).is_some_and(|r| r.0 == "True")
                    && status(b).is_some_and(|s| s.snapshots.len() == 2)
            },
        )
        .await;
        let listing = store.list().unwrap();
        assert_eq!(listing.snapshots.len(), 2);
        assert!(listing.problems.is_empty(), "{:?}", listing.problems);
        let latest = store.resolve("latest").unwrap();
        assert_eq!(done.status.unwrap().snapshots[0].id, latest);
        let manifest = store
            .verify(&latest, &key)
            .expect("the snapshot the Job delivered verifies");
        assert_eq!(manifest.keys, Some(KEYS));
        // Recorded Jobs are deleted.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !snapshot_jobs(&client, &ns, "redis").await.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a recorded Job stays"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
}

fn verified(b: Option<&Backup>) -> Option<(String, String, String)> {
    status(b)?
        .conditions
        .iter()
        .find(|c| c.type_ == "Verified")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn restores_checked_on_schedule_verify_the_newest_snapshot_and_refuse_a_corrupted_one() {
    let key = BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install_with(
            &ns,
            &["operator.verifyRedisImage=localhost/titan-redis:local"],
        )
        .await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        let ip = start_redis(&client, &ns, "redis", &[], false, None).await;
        let mut con = connect(&ip, None);
        for i in 0..500 {
            let () = redis::cmd("SET").arg(format!("key:{i}")).arg(i).query(&mut con).unwrap();
        }
        let mut spec = backup("redis", "{redis: {address: 'redis:6379'}}", None, "redis");
        spec.spec.verify = Some(titan_dr::api::backup::VerifySpec {
            schedule: "* * * * *".into(),
            image: None,
        });
        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &spec).await.unwrap();

        // The first check follows the first snapshot.
        let checked = support::wait_for(&api, "redis", "Verified=True", LIMIT, |b: Option<&Backup>| {
            verified(b).is_some_and(|v| v.0 == "True")
        })
        .await;
        let first = checked.status.clone().unwrap();
        let newest = &first.snapshots[0];
        assert_eq!(first.last_verified_snapshot.as_ref(), Some(&newest.id));
        assert!(first.last_verified_time.is_some());
        let (_, reason, message) = verified(Some(&checked)).unwrap();
        assert_eq!(reason, "Restored", "{message}");
        let (_, metrics) = support::http_get(&operator.pod_ip(), 8080, "/metrics").await;
        assert!(
            metrics.contains(&format!(
                "titan_dr_backup_last_verified_timestamp_seconds{{namespace=\"{ns}\",backup=\"redis\"}}"
            )),
            "{metrics}"
        );

        // The newest snapshot corrupted on the volume: the next check fails, naming it,
        // although no older snapshot could pass instead (there is none).
        let file = support::backup_volume(&client, &ns)
            .await
            .join(titan_dr::backup::backup_folder(&checked))
            .join(format!("{}.rdb.age", newest.id));
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
        let first_check = first.last_verify_time.clone();
        let failed = support::wait_for(&api, "redis", "Verified=False", LIMIT, move |b: Option<&Backup>| {
            verified(b).is_some_and(|v| v.0 == "False")
                && status(b).is_some_and(|s| s.last_verify_time != first_check)
        })
        .await;
        let (_, reason, message) = verified(Some(&failed)).unwrap();
        eprintln!("the corrupted snapshot: {reason}: {message}");
        assert_eq!(reason, "RestoreFailed", "{message}");
        assert!(message.contains(&newest.id), "{message}");
        let failed_status = failed.status.clone().unwrap();
        assert_eq!(failed_status.last_verified_snapshot.as_ref(), Some(&newest.id), "the last success stays");
        assert_eq!(failed_status.last_verified_time, first.last_verified_time);
        assert_eq!(ready(Some(&failed)).unwrap().0, "True", "the snapshot itself was taken");

        // Forged in place with only the public recipient: valid age, matching checksums, but
        // no key behind its MAC. The next check refuses it as not authentic.
        let store = Store::open(file.parent().unwrap()).unwrap();
        let genuine = store.list().unwrap().snapshots[0].clone();
        forge(file.parent().unwrap(), &genuine, b"REDIS0011 not a snapshot");
        // An attempt records its start before its outcome: wait for the outcome itself.
        let refused = support::wait_for(&api, "redis", "the forged one refused", LIMIT, |b: Option<&Backup>| {
            verified(b).is_some_and(|v| v.0 == "False" && v.2.contains("not authentic"))
        })
        .await;
        let (_, reason, message) = verified(Some(&refused)).unwrap();
        assert_eq!(reason, "RestoreFailed", "{message}");
        assert!(message.contains("not authentic"), "{message}");
        // Checks leave nothing behind: their Jobs are deleted once recorded.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !snapshot_jobs(&client, &ns, "redis").await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "a check's Job stays");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_before_any_snapshot_job() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        // The typed spec cannot even hold it: its parser refuses with checked arithmetic.
        let age: Result<titan_dr::api::duration::RetentionAge, _> = "99999999999999999999d".parse();
        assert!(age.is_err(), "{age:?}");
        let spec = backup("redis", "{redis: {address: 'redis:6379'}}", None, "redis");
        let mut raw = serde_json::to_value(&spec).unwrap();
        raw["spec"]["retention"]["maxAge"] = "99999999999999999999d".into();
        let object: kube::api::DynamicObject = serde_json::from_value(raw).unwrap();
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            client.clone(),
            &ns,
            &kube::api::ApiResource::erase::<Backup>(&()),
        );
        let error = api
            .create(&PostParams::default(), &object)
            .await
            .expect_err("the API server refuses the age");
        let kube::Error::Api(status) = error else {
            panic!("{error}")
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(status.message.contains("maxAge"), "{}", status.message);

        // A key Secret that does not exist: the attempt fails naming it, and no Job waits
        // for a volume that never comes.
        let typed: Api<Backup> = Api::namespaced(client.clone(), &ns);
        typed.create(&PostParams::default(), &spec).await.unwrap();
        let failed = support::wait_for(
            &typed,
            "redis",
            "Ready=False",
            LIMIT,
            |b: Option<&Backup>| ready(b).is_some_and(|r| r.0 == "False"),
        )
        .await;
        let (_, reason, message) = ready(Some(&failed)).unwrap();
        assert_eq!(reason, "KeyMissing", "{message}");
        assert!(message.contains("backup-key"), "{message}");
        // Retried, backing off (10 s, then 20 s), not once a tick nor in a loop.
        let retried = support::wait_for(
            &typed,
            "redis",
            "two retries",
            LIMIT,
            |b: Option<&Backup>| {
                b.and_then(|b| b.status.as_ref())
                    .and_then(|s| s.failed_attempts)
                    .is_some_and(|n| n >= 3)
            },
        )
        .await;
        let attempts = retried.status.unwrap().failed_attempts.unwrap();
        assert!(attempts <= 4, "{attempts} attempts");
        // Each failed attempt is told once its status is written, and the same note again
        // is one Event with a series, not one Event per attempt.
        let key_missing: Vec<_> = support::events_of(&client, &ns, "redis")
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("KeyMissing"))
            .collect();
        assert_eq!(key_missing.len(), 1, "{key_missing:?}");
        let told = key_missing[0].series.as_ref().map_or(1, |s| s.count);
        assert!(
            told >= 2,
            "the repeated failure is a series: {key_missing:?}"
        );
        assert!(
            snapshot_jobs(&client, &ns, "redis").await.is_empty(),
            "a Job was made"
        );
    })
    .await;
}

/// A ServiceAccount `name` allowed only what `restore-config` does: read the Backups'
/// snapshots from the operator, and get, create and patch (server-side apply) ConfigMaps and
/// Secrets in the namespace.
async fn config_restorer(client: &Client, ns: &str, name: &str) {
    let objects = format!(
        r#"
- {{apiVersion: v1, kind: ServiceAccount, metadata: {{name: {name}}}}}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {{name: {name}}}
  rules:
    - {{apiGroups: [""], resources: [configmaps, secrets], verbs: [get, create, patch]}}
    - {{apiGroups: [dr.titan.io], resources: [backups/snapshots], verbs: [get]}}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {{name: {name}}}
  roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}
  subjects: [{{kind: ServiceAccount, name: {name}, namespace: {ns}}}]
"#
    );
    let [account, role, binding]: [serde_yaml::Value; 3] = serde_yaml::from_str(&objects).unwrap();
    let yaml = |v: serde_yaml::Value| serde_yaml::to_string(&v).unwrap();
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    support::create_yaml::<ServiceAccount>(client, ns, &yaml(account))
        .await
        .unwrap();
    support::create_yaml::<Role>(client, ns, &yaml(role))
        .await
        .unwrap();
    support::create_yaml::<RoleBinding>(client, ns, &yaml(binding))
        .await
        .unwrap();
}

#[tokio::test]
async fn configuration_snapshots_and_rpo_of_a_recovery() {
    let key = BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
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
        // A selector of expressions selects as Kubernetes does (it once selected everything);
        // one that selects nothing takes no snapshot, which would restore nothing.
        let expressions = "{configMaps: {selector: {matchExpressions: [{key: app, operator: In, values: [titan]}]}}}";
        api.create(&PostParams::default(), &backup("by-expression", expressions, None, "by-expression")).await.unwrap();
        let nothing = "{configMaps: {selector: {matchLabels: {app: nothing}}}}";
        api.create(&PostParams::default(), &backup("nothing", nothing, None, "nothing")).await.unwrap();
        let by_expression = support::wait_for(&api, "by-expression", "a snapshot", LIMIT, |b: Option<&Backup>| {
            status(b).is_some_and(|s| !s.snapshots.is_empty())
        })
        .await;
        assert_eq!(by_expression.status.unwrap().snapshots[0].keys, Some(2));
        let refused = support::wait_for(&api, "nothing", "a failed attempt", LIMIT, |b: Option<&Backup>| {
            ready(b).is_some_and(|(status, _, _)| status == "False")
        })
        .await;
        let (_, reason, message) = ready(Some(&refused)).unwrap();
        assert_eq!(reason, "NothingSelected", "{message}");
        assert!(status(Some(&refused)).is_none_or(|s| s.snapshots.is_empty()));
        let folder = titan_dr::backup::backup_folder(&api.get("config").await.unwrap());
        let store = Store::open(support::backup_volume(&client, &ns).await.join(folder)).unwrap();
        let restored = tempfile::tempdir().unwrap();
        let tar = restored.path().join("config.tar");
        store.restore(&snapshot.id, &key, &tar).unwrap();
        let entries = titan_dr::backup::config_archive::read(std::fs::File::open(&tar).unwrap()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["configmaps/brain-config.yaml", "configmaps/shared-config.yaml"]);

        // A lost and a corrupted ConfigMap come back from the snapshot by server-side apply,
        // made by the restore Job under its own ServiceAccount.
        config_restorer(&client, &ns, "config-restorer").await;
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        maps.delete("brain-config", &Default::default()).await.unwrap();
        let corrupt = serde_json::json!({"data": {"config.json": "garbage"}});
        maps.patch("shared-config", &PatchParams::default(), &Patch::Merge(&corrupt)).await.unwrap();
        let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), &ns);
        let restore: DisasterRecovery = serde_yaml::from_str(
            "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {name: configuration-corruption}\nspec:\n  runOnCreate: true\n  scenario: configuration-corruption\n  template: {serviceAccountName: config-restorer}\n  steps: [{name: restore-config, timeout: 2m, restore: {backup: config, configuration: {}}}]\n",
        )
        .unwrap();
        drs.create(&PostParams::default(), &restore).await.unwrap();
        let done = support::wait_for(&drs, "configuration-corruption", "the restore", LIMIT, run_ended("1")).await;
        let step = &done.status.unwrap().run.steps[0];
        assert_eq!(step.phase, StepPhase::Succeeded, "{step:#?}");
        assert!(step.output.as_deref().unwrap_or("").contains("applied 2 objects"), "{step:#?}");
        for name in ["brain-config", "shared-config"] {
            let map = maps.get(name).await.unwrap();
            assert_eq!(map.data.unwrap()["config.json"], format!("{{\"service\": \"{name}\"}}"));
        }

        // RPO: the newest snapshot's age at run start against the objective.
        for (name, rpo, expected) in [("within", "5m", "True"), ("missed", "1s", "False")] {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let dr: DisasterRecovery = serde_yaml::from_str(&format!(
                "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: {name}}}\nspec:\n  runOnCreate: true\n  scenario: rpo\n  objectives: {{rpo: {rpo}}}\n  backups: [config]\n  template: {{image: {toolbox}}}\n  steps: [{{name: noop, command: 'true'}}]\n",
                toolbox = support::TOOLBOX
            ))
            .unwrap();
            drs.create(&PostParams::default(), &dr).await.unwrap();
            let finished = support::wait_for(&drs, name, "RPOMet", LIMIT, |d: Option<&DisasterRecovery>| {
                d.and_then(|d| d.status.as_ref())
                    .is_some_and(|s| s.run.conditions.iter().any(|c| c.type_ == "RPOMet" && c.status != "Unknown"))
            })
            .await;
            let status = finished.status.unwrap();
            let rpo_met = status.run.conditions.iter().find(|c| c.type_ == "RPOMet").unwrap();
            assert_eq!(rpo_met.status, expected, "{}", rpo_met.message);
            assert!(rpo_met.message.contains("config: "), "{}", rpo_met.message);
        }
    })
    .await;
}

/// The restore step brings a flushed Redis, running in a pod, back to the snapshot: it writes
/// the RDB into the pod's data claim and shuts Redis down without saving, the kubelet starts
/// it again on that file. A tampered snapshot is refused and the Redis is left alone. The
/// restore Job reads the snapshot from the operator as its own ServiceAccount.
#[tokio::test]
async fn a_restore_step_brings_a_flushed_redis_back_and_refuses_a_tampered_snapshot() {
    let key = BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        create_secret(&client, &ns, "redis-auth", "password", REDIS_PASSWORD).await;
        config_restorer(&client, &ns, "restorer").await;
        let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: redis-data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 64Mi}}}";
        support::create_yaml::<PersistentVolumeClaim>(&client, &ns, claim)
            .await
            .unwrap();
        let ip = start_redis(&client, &ns, "redis", &[], true, Some("redis-data")).await;
        let data_dir = support::claim_path(&client, &ns, "redis-data").await;
        let mut con = connect(&ip, Some(REDIS_PASSWORD));
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

        let backups: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let source = "{redis: {address: 'redis:6379', passwordSecretRef: {name: redis-auth, key: password}}}";
        backups
            .create(
                &PostParams::default(),
                &backup("redis", source, None, "redis"),
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
        assert_eq!(restarts(&client, &ns, "redis").await, 0);

        let dr: DisasterRecovery = serde_yaml::from_str(&format!(
            r#"
apiVersion: dr.titan.io/v1alpha1
kind: DisasterRecovery
metadata: {{name: database-corruption}}
spec:
  runOnCreate: true
  scenario: database-corruption
  objectives: {{rto: 10m, rpo: 5m}}
  backups: [redis]
  template: {{image: {toolbox}, serviceAccountName: restorer}}
  steps:
    - name: restore-redis
      timeout: 3m
      restore:
        backup: redis
        snapshot: latest
        redis:
          dataVolume: {{persistentVolumeClaim: {{claimName: redis-data}}}}
          address: redis:6379
          wait: 90s
  validations:
    - name: keys-back
      command: redis-cli -h redis dbsize
      env: [{{name: REDISCLI_AUTH, valueFrom: {{secretKeyRef: {{name: redis-auth, key: password}}}}}}]
      expect: {{outputContains: "{keys_before}"}}
"#,
            toolbox = support::TOOLBOX
        ))
        .unwrap();
        let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), &ns);
        drs.create(&PostParams::default(), &dr).await.unwrap();
        let done =
            support::wait_for(&drs, "database-corruption", "run 1", LIMIT, run_ended("1")).await;
        let status = done.status.unwrap();
        let step = &status.run.steps[0];
        assert_eq!(step.phase, StepPhase::Succeeded, "{step:#?}");
        let output = step.output.as_deref().unwrap_or("");
        assert!(output.contains("sent SHUTDOWN NOSAVE to Redis at redis:6379"), "{step:#?}");
        assert!(output.contains("restarted on the restored file"), "{step:#?}");
        assert!(
            output.contains(&format!("holds {keys_before} keys, as the snapshot")),
            "{step:#?}"
        );
        let ready = status
            .run.conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True", "{}", ready.message);
        assert_eq!(
            restarts(&client, &ns, "redis").await,
            1,
            "the kubelet restarted Redis once"
        );
        let mut con = connect(&ip, Some(REDIS_PASSWORD));
        let keys_after: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(keys_after, keys_before);
        let value: String = redis::cmd("GET")
            .arg("string:1999")
            .query(&mut con)
            .unwrap();
        assert_eq!(value, "value 1999");
        let field: String = redis::cmd("HGET")
            .arg("hash:49")
            .arg("field1999")
            .query(&mut con)
            .unwrap();
        assert_eq!(field, "1999");
        let list: u64 = redis::cmd("LLEN").arg("list:19").query(&mut con).unwrap();
        assert_eq!(list, 100);
        let score: f64 = redis::cmd("ZSCORE")
            .arg("zset:9")
            .arg("m1999")
            .query(&mut con)
            .unwrap();
        assert_eq!(score, 1999.0);
        let stream: u64 = redis::cmd("XLEN").arg("stream").query(&mut con).unwrap();
        assert_eq!(stream, 1);
        let ttl: i64 = redis::cmd("TTL").arg("string:1").query(&mut con).unwrap();
        assert!((3000..=3600).contains(&ttl), "ttl {ttl}");
        let persistent: i64 = redis::cmd("TTL").arg("string:2").query(&mut con).unwrap();
        assert_eq!(persistent, -1);

        // Tamper with the snapshot: the next run refuses it and touches nothing.
        let _: () = redis::cmd("SET")
            .arg("written-after")
            .arg("restore")
            .query(&mut con)
            .unwrap();
        let folder = titan_dr::backup::backup_folder(&backups.get("redis").await.unwrap());
        let store_dir = support::backup_volume(&client, &ns).await.join(folder);
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
        let step = &status.run.steps[0];
        assert_eq!(step.phase, StepPhase::Failed, "{step:#?}");
        let output = step.output.clone().unwrap_or_default();
        assert!(
            output.contains(&manifest.id),
            "the snapshot is named: {output}"
        );
        assert!(output.contains("no snapshot verified"), "{output}");
        assert!(!output.contains("SHUTDOWN"), "{output}");
        let ready = status
            .run.conditions
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
        assert_eq!(restarts(&client, &ns, "redis").await, 1, "Redis was not restarted");
    })
    .await;
}

/// The Backup's copy in object storage outlives the cluster: the CLI restores it from the S3
/// server alone, with no cluster and no volume.
#[tokio::test]
async fn a_backup_copied_to_object_storage_is_restored_from_there_by_the_cli() {
    use support::s3_pod::{ACCESS_KEY, BUCKET, PORT, SECRET_KEY, start_s3};
    let key = BackupKey::generate();
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install(&ns).await;
        support::create_key_secret(&client, &ns, "backup-key", &key).await;
        let redis_ip = start_redis(&client, &ns, "redis", &[], false, None).await;
        let mut con = connect(&redis_ip, None);
        for i in 0..500 {
            let () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query(&mut con)
                .unwrap();
        }
        let s3_ip = start_s3(&client, &ns).await;
        let mut backup = backup("redis", "{redis: {address: 'redis:6379'}}", None, "redis");
        backup.spec.destination.s3 = Some(
            serde_json::from_value(serde_json::json!({
                "bucket": BUCKET, "prefix": "titan", "endpoint": format!("http://s3:{PORT}"),
                "credentialsSecretRef": {"name": "s3-credentials"},
            }))
            .unwrap(),
        );
        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        api.create(&PostParams::default(), &backup).await.unwrap();
        let done = support::wait_for(&api, "redis", "Ready", LIMIT, |b: Option<&Backup>| {
            ready(b).is_some_and(|r| r.0 != "Unknown")
                && status(b).is_some_and(|s| s.offsite.is_some())
        })
        .await;
        let (state, reason, message) = ready(Some(&done)).unwrap();
        assert_eq!(state, "True", "{reason}: {message}");
        let status = done.status.clone().unwrap();
        let offsite = status.offsite.clone().unwrap();
        assert_eq!(
            offsite,
            format!("s3://{BUCKET}/titan/{ns}/{}", done.uid().unwrap())
        );

        // From this host, as from any machine that reaches the server: no cluster, no volume.
        let work = tempfile::tempdir().unwrap();
        let key_file = work.path().join("key.txt");
        std::fs::write(&key_file, key.to_key_file()).unwrap();
        let restored = work.path().join("dump.rdb");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_titan-dr"))
            .args(["backup", "restore", "--s3", &offsite])
            .args(["--s3-endpoint", &format!("http://{s3_ip}:{PORT}")])
            .arg("--key-file")
            .arg(&key_file)
            .arg("--to")
            .arg(&restored)
            .arg("--work-dir")
            .arg(work.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{text}");
        let (info, _) = titan_dr::redis::rdb::scan_expiries(std::io::BufReader::new(
            std::fs::File::open(&restored).unwrap(),
        ))
        .unwrap();
        assert_eq!(
            info.total_keys(),
            500,
            "the restored RDB holds the keys: {text}"
        );
        assert_eq!(status.snapshots[0].keys, Some(500));

        // Seen from Prometheus: the newest snapshot's time and size, per Backup.
        let (_, metrics) = support::http_get(&operator.pod_ip(), 8080, "/metrics").await;
        let labels = format!(r#"{{namespace="{ns}",backup="redis"}}"#);
        let series = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}{labels} ")))
                .map(str::to_owned)
        };
        let completed = status.snapshots[0]
            .completed_at
            .as_ref()
            .unwrap()
            .0
            .as_second();
        let last = series("titan_dr_backup_last_success_timestamp_seconds").expect("the time");
        assert_eq!(last.parse::<f64>().unwrap() as i64, completed, "{metrics}");
        let size = series("titan_dr_backup_last_size_bytes").expect("the size");
        assert_eq!(size.parse::<u64>().unwrap(), status.snapshots[0].size_bytes);
    })
    .await;
}
