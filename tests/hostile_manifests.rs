//! A corpus of malformed and hostile DisasterRecovery and Backup manifests
//! (`tests/fixtures/hostile/`), applied as `kubectl apply --server-side` would (strict field
//! validation) to the real API server with the operator installed: each is refused at
//! admission with the field named, or admitted and then marked invalid naming the culprit
//! (Ready False with `InvalidSpec` for a DisasterRecovery; a False Ready or Verified for a
//! Backup). None creates a Job. Each file's first line says which, and what the message must
//! contain: `# refused: <text>` or `# invalid: <text>`.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use titan_dr::api::{Backup, DisasterRecovery};

/// What a manifest of the corpus must meet.
#[derive(Debug)]
enum Verdict {
    Refused(String),
    Invalid(String),
}

struct Case {
    file: String,
    yaml: String,
    verdict: Verdict,
}

fn corpus() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let yaml = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let first = yaml.lines().next().unwrap_or_default();
            let verdict = if let Some(text) = first.strip_prefix("# refused: ") {
                Verdict::Refused(text.into())
            } else if let Some(text) = first.strip_prefix("# invalid: ") {
                Verdict::Invalid(text.into())
            } else {
                panic!("{file}: the first line must be `# refused: …` or `# invalid: …`")
            };
            Case {
                file,
                yaml,
                verdict,
            }
        })
        .collect()
}

fn resource_of(object: &DynamicObject) -> ApiResource {
    match object.types.as_ref().map(|t| t.kind.as_str()) {
        Some("DisasterRecovery") => ApiResource::erase::<DisasterRecovery>(&()),
        Some("Backup") => ApiResource::erase::<Backup>(&()),
        other => panic!("the corpus holds DisasterRecoveries and Backups, not {other:?}"),
    }
}

/// Type, reason and message of each False condition.
fn false_conditions(object: Option<&DynamicObject>) -> Vec<(String, String, String)> {
    let conditions = object.and_then(|o| o.data["status"]["conditions"].as_array().cloned());
    let text =
        |c: &serde_json::Value, field: &str| c[field].as_str().unwrap_or_default().to_owned();
    conditions
        .unwrap_or_default()
        .iter()
        .filter(|c| c["status"] == "False")
        .map(|c| (text(c, "type"), text(c, "reason"), text(c, "message")))
        .collect()
}

/// Creates `case`'s object; a refusal's message, or the admitted object's Api and name.
async fn create(
    client: &kube::Client,
    ns: &str,
    case: &Case,
) -> Result<(Api<DynamicObject>, String), String> {
    let mut object: DynamicObject = serde_yaml::from_str(&case.yaml)
        .unwrap_or_else(|e| panic!("{}: not YAML of an object: {e}", case.file));
    // Asked to run on creation: an invalid spec that slipped through would create a Job.
    let is_recovery = object
        .types
        .as_ref()
        .is_some_and(|t| t.kind == "DisasterRecovery");
    if let (true, Some(spec)) = (is_recovery, object.data["spec"].as_object_mut()) {
        spec.insert("runOnCreate".into(), true.into());
    }
    let api = Api::namespaced_with(client.clone(), ns, &resource_of(&object));
    // As `kubectl apply --server-side` sends it: strict field validation.
    let apply = PatchParams::apply("hostile-corpus").validation_strict();
    match api
        .patch(&object.name_any(), &apply, &Patch::Apply(&object))
        .await
    {
        Ok(created) => Ok((api, created.name_any())),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(other) => panic!("{}: creating failed outside admission: {other}", case.file),
    }
}

/// Whether an admitted `case` ends not Ready as it says; why not, otherwise.
async fn judge_admitted(api: &Api<DynamicObject>, name: &str, case: &Case) -> Result<(), String> {
    let Verdict::Invalid(expected) = &case.verdict else {
        return Err(format!(
            "admitted, but it should be refused ({:?})",
            case.verdict
        ));
    };
    // A DisasterRecovery says it in Ready (InvalidSpec); a Backup in Ready, or in Verified
    // for its verify spec.
    let is_recovery = api
        .resource_url()
        .contains(DisasterRecovery::plural(&()).as_ref());
    let names = |conditions: &[(String, String, String)]| {
        conditions.iter().any(|(type_, reason, message)| {
            message.contains(expected.as_str())
                && (!is_recovery || (type_ == "Ready" && reason == "InvalidSpec"))
        })
    };
    let wait = await_condition(api.clone(), name, |o: Option<&DynamicObject>| {
        names(&false_conditions(o))
    });
    match tokio::time::timeout(Duration::from_secs(60), wait).await {
        Ok(Ok(_)) => Ok(()),
        _ => {
            let last = api.get_opt(name).await.ok().flatten();
            let said = false_conditions(last.as_ref());
            Err(format!(
                "not marked invalid naming {expected:?} within 60 s; False conditions: {said:?}"
            ))
        }
    }
}

/// Every Job that appears in `jobs` from now on, even one deleted soon after (a Backup's
/// snapshot Job is deleted once recorded).
fn watch_jobs(jobs: Api<Job>) -> Arc<Mutex<BTreeSet<String>>> {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let record = seen.clone();
    tokio::spawn(
        watcher(jobs, watcher::Config::default())
            .applied_objects()
            .for_each(move |job| {
                if let Ok(job) = job {
                    record.lock().unwrap().insert(job.name_any());
                }
                futures::future::ready(())
            }),
    );
    seen
}

#[tokio::test]
async fn every_hostile_manifest_is_refused_or_named_invalid_and_creates_no_job() {
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        // The corpus's Backups name this key, so that each fails for its own fault (but
        // backup-key-missing, which names another).
        let key = titan_dr::backup::BackupKey::generate();
        support::create_key_secret(&client, &ns, "hostile-key", &key).await;
        let jobs_seen = watch_jobs(Api::namespaced(client.clone(), &ns));
        let cases = corpus();
        assert!(cases.len() >= 40, "the corpus has {} manifests", cases.len());
        let (mut findings, mut admitted) = (Vec::new(), Vec::new());
        let mut refused = 0;
        for case in &cases {
            match (create(&client, &ns, case).await, &case.verdict) {
                (Err(message), Verdict::Refused(expected)) if message.contains(expected) => {
                    refused += 1
                }
                (Err(message), verdict) => {
                    findings.push(format!("{}: refused saying {message:?}; {verdict:?}", case.file))
                }
                (Ok((api, name)), _) => admitted.push((case, api, name)),
            }
        }
        let invalid = admitted.len();
        for (case, api, name) in &admitted {
            if let Err(finding) = judge_admitted(api, name, case).await {
                findings.push(format!("{}: {finding}", case.file));
            }
        }
        let made = jobs_seen.lock().unwrap().clone();
        assert!(made.is_empty(), "the corpus made Jobs: {made:?}");
        assert!(findings.is_empty(), "{}", findings.join("\n"));
        println!(
            "hostile corpus: {} manifests, {refused} refused at admission, {invalid} admitted and named invalid, 0 Jobs",
            cases.len()
        );
    })
    .await;
}
