//! Two Backups with the same name and `destination.path`, in two namespaces, served by one
//! operator that watches every namespace: each keeps, lists and prunes only its own
//! snapshots, and a restore of one refuses the other's.
//!
//! Its own test binary: an operator watching every namespace would also reconcile the other
//! tests' resources, and cargo runs test binaries one after another.

mod support;

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use support::redis_pod::{connect, start_redis};
use titan_dr::api::Backup;
use titan_dr::backup::{BackupKey, Store};

const LIMIT: Duration = Duration::from_secs(150);

async fn create_backup(client: &Client, ns: &str, redis_ns: &str, key: &BackupKey) {
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: backup-key}}\nstringData: {{key: {:?}}}\n",
        key.to_key_file()
    );
    support::create_yaml::<k8s_openapi::api::core::v1::Secret>(client, ns, &secret)
        .await
        .unwrap();
    let backup = format!(
        "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {{name: redis}}\nspec:\n  source: {{namespace: {redis_ns}, redis: {{address: 'redis.{redis_ns}:6379'}}}}\n  retention: {{keepLast: 1}}\n  destination: {{path: shared}}\n  encryption: {{secretRef: {{name: backup-key}}}}\n"
    );
    support::create_yaml::<Backup>(client, ns, &backup)
        .await
        .unwrap();
}

/// Waits until the Backup lists `count` snapshots after attempt `after` and is Ready.
async fn snapshots_after(api: &Api<Backup>, after: Option<String>, count: usize) -> Backup {
    support::wait_for(
        api,
        "redis",
        "a new snapshot",
        LIMIT,
        move |b: Option<&Backup>| {
            let Some(status) = b.and_then(|b| b.status.as_ref()) else {
                return false;
            };
            let attempt = status.last_schedule_time.as_ref().map(|t| t.0.to_string());
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            attempt != after && ready && status.snapshots.len() == count
        },
    )
    .await
}

#[tokio::test]
async fn two_backups_with_one_path_in_two_namespaces_never_see_or_prune_each_other() {
    support::with_namespace(|client, first| async move {
        support::with_namespace(|_, second| async move {
            let operator =
                support::Operator::install_with(&first, &["operator.watchNamespace="]).await;
            let ip = start_redis(&client, &first, "redis", &[], false, None).await;
            let mut con = connect(&ip, None);
            let () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
            let (key_a, key_b) = (BackupKey::generate(), BackupKey::generate());
            create_backup(&client, &first, &first, &key_a).await;
            // The Redis of the first namespace, which lets the second's Backups read it.
            let consent = serde_json::json!({"metadata": {"annotations": {
                "dr.titan.io/backup-namespaces": second.as_str()}}});
            Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
                .patch(&first, &PatchParams::default(), &Patch::Merge(&consent))
                .await
                .unwrap();
            create_backup(&client, &second, &first, &key_b).await;
            let (api_a, api_b): (Api<Backup>, Api<Backup>) = (
                Api::namespaced(client.clone(), &first),
                Api::namespaced(client.clone(), &second),
            );
            let a = snapshots_after(&api_a, None, 1).await;
            let b = snapshots_after(&api_b, None, 1).await;

            // B takes two more snapshots with keepLast: 1; A's stays.
            for keep in [2, 1] {
                let attempt = api_b.get("redis").await.unwrap();
                let last = attempt
                    .status
                    .as_ref()
                    .and_then(|s| s.last_schedule_time.clone());
                let patch = serde_json::json!({"spec": {"retention": {"keepLast": keep}}});
                api_b
                    .patch("redis", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                let expected = if keep == 2 { 2 } else { 1 };
                snapshots_after(&api_b, last.map(|t| t.0.to_string()), expected).await;
            }
            let volume = support::backup_volume(&client, &first).await;
            let folder_a = volume.join(titan_dr::backup::backup_folder(&a));
            let folder_b = volume.join(titan_dr::backup::backup_folder(&b));
            assert_ne!(folder_a, folder_b);
            let store_a = Store::open(&folder_a).unwrap();
            let listing_a = store_a.list().unwrap();
            let ids_a: Vec<&str> = listing_a.snapshots.iter().map(|m| m.id.as_str()).collect();
            let status_a = api_a.get("redis").await.unwrap().status.unwrap();
            assert_eq!(
                ids_a,
                [status_a.snapshots[0].id.as_str()],
                "A's snapshot was pruned"
            );
            store_a
                .verify(ids_a[0], &key_a)
                .expect("A's snapshot verifies");
            let owner = listing_a.snapshots[0].owner.clone().unwrap();
            assert_eq!(
                (owner.namespace.as_str(), owner.uid),
                (first.as_str(), a.uid().unwrap())
            );

            let status_b = api_b.get("redis").await.unwrap().status.unwrap();
            assert_eq!(status_b.snapshots.len(), 1);
            assert!(
                status_b.snapshots[0]
                    .location
                    .contains(&format!("/{second}/")),
                "B lists a snapshot outside its folder: {:?}",
                status_b.snapshots
            );

            // Restoring A's folder as B's is refused, naming the owner.
            let key_file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(key_file.path(), key_a.to_key_file()).unwrap();
            let target = tempfile::tempdir().unwrap();
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_titan-dr"))
                .args(["backup", "restore", "--dir"])
                .arg(&folder_a)
                .arg(format!("--backup={second}/redis"))
                .arg("--key-file")
                .arg(key_file.path())
                .arg("--to")
                .arg(target.path().join("dump.rdb"))
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{said}");
            assert!(said.contains(&first), "{said}");
            assert!(!target.path().join("dump.rdb").exists());
            operator.uninstall().await;
        })
        .await;
    })
    .await;
}
