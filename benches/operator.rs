//! Operator benchmark on the local control plane (`make bench`).
//!
//! 1. Added latency: chains of sequential steps (`true`); a watch on the Jobs
//!    records when each Job is seen Complete and when the next Job appears.
//!    The gap is what the operator adds between one step finishing and the
//!    next starting (watch delivery + reconcile + Job creation). The same is
//!    measured, in the same run, for the floor: a minimal client that watches
//!    its own Jobs and creates the next the moment the previous is Complete.
//!    `TITAN_BENCH_STEPS` (default 100) sets the steps per chain;
//!    `TITAN_BENCH_LATENCY_ONLY=1` stops after this part.
//! 2. Memory: 50 recoveries at once; the operator's peak RSS (VmHWM).
//! 3. A Backup of a Redis holding about 1 GiB, taken by the operator: the
//!    snapshot's throughput and the operator's peak RSS while it streams.
//!
//! Writes a markdown section to `target/bench/operator.md`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use titan_dr::api::DisasterRecovery;
use titan_dr::api::disaster_recovery::RunPhase;
use titan_dr::job::LABEL_STEP;

const CHAINS: usize = 3;

/// Steps per chain: `TITAN_BENCH_STEPS`, default 100.
fn chain_steps() -> usize {
    std::env::var("TITAN_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}
const CONCURRENT: usize = 50;
const CONCURRENT_STEPS: usize = 6;

fn chain(name: &str, steps: usize, command: &str) -> DisasterRecovery {
    let steps: String = (0..steps)
        .map(|i| format!("    - {{name: s{i:03}, command: '{command}'}}\n"))
        .collect();
    serde_yaml::from_str(&format!(
        "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\nmetadata: {{name: {name}}}\nspec:\n  runOnCreate: true\n  scenario: bench\n  template: {{image: {toolbox}}}\n  steps:\n{steps}",
        toolbox = support::TOOLBOX
    ))
    .unwrap()
}

/// When each Job (by recovery/step) was first seen, and first seen Complete.
#[derive(Default)]
struct Seen {
    appeared: BTreeMap<String, Instant>,
    completed: BTreeMap<String, Instant>,
}

async fn watch_jobs(client: Client, ns: String, seen: Arc<Mutex<Seen>>) {
    let jobs: Api<Job> = Api::namespaced(client, &ns);
    let mut stream = watcher(jobs, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(Ok(job)) = stream.next().await {
        let now = Instant::now();
        let key = format!(
            "{}/{}",
            job.labels()["dr.titan.io/recovery"],
            job.labels()[LABEL_STEP]
        );
        let mut seen = seen.lock().unwrap();
        seen.appeared.entry(key.clone()).or_insert(now);
        let complete = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            });
        if complete {
            seen.completed.entry(key).or_insert(now);
        }
    }
}

async fn wait_all_finished(api: &Api<DisasterRecovery>, names: &[String]) {
    for name in names {
        let done = |dr: Option<&DisasterRecovery>| {
            let phase = dr.and_then(|d| d.status.as_ref()).and_then(|s| s.run.phase);
            matches!(phase, Some(RunPhase::Succeeded | RunPhase::Failed))
        };
        support::wait_for(
            api,
            name,
            "the run to finish",
            Duration::from_secs(900),
            done,
        )
        .await;
    }
}

/// A Job of the floor's chain `name`: step `i`, running `true` in the toolbox image as a
/// restricted pod, labelled like the operator's so the same watch measures both.
fn floor_job(name: &str, i: usize) -> Job {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "generateName": format!("{name}-s{i:03}-"),
            "labels": {"dr.titan.io/recovery": name, LABEL_STEP: format!("s{i:03}")}
        },
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "step", "image": support::TOOLBOX, "command": ["true"],
                    "securityContext": {"allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"]}}}]
            }}
        }
    }))
    .unwrap()
}

fn complete(job: &Job) -> bool {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| {
        cs.iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    })
}

/// The floor: creates the chain's next Job the moment its watch sees the previous Complete,
/// and returns once the last one is.
async fn floor_chain(client: Client, ns: &str, name: &str, steps: usize) {
    let jobs: Api<Job> = Api::namespaced(client, ns);
    let config = watcher::Config::default().labels(&format!("dr.titan.io/recovery={name}"));
    let mut changes = watcher(jobs.clone(), config).applied_objects().boxed();
    jobs.create(&PostParams::default(), &floor_job(name, 0))
        .await
        .unwrap();
    let mut done = 0;
    while done < steps {
        let job = changes
            .next()
            .await
            .expect("the floor's watch ended")
            .unwrap();
        if complete(&job) && job.labels()[LABEL_STEP] == format!("s{done:03}") {
            done += 1;
            if done < steps {
                jobs.create(&PostParams::default(), &floor_job(name, done))
                    .await
                    .unwrap();
            }
        }
    }
}

/// The gaps of `chains` chains of `steps` in `seen`: from one step seen Complete to the next
/// step's Job seen.
fn gaps_of(seen: &Seen, chains: &[String], steps: usize) -> Vec<Duration> {
    let mut gaps = Vec::new();
    for chain in chains {
        for i in 1..steps {
            let done = seen.completed[&format!("{chain}/s{:03}", i - 1)];
            let next = seen.appeared[&format!("{chain}/s{i:03}")];
            gaps.push(next.saturating_duration_since(done));
        }
    }
    gaps.sort();
    gaps
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let mut report = String::from(
        "## Operator: added latency and memory\n\n\
         Method (`benches/operator.rs`): the operator, installed by its chart from the local image, \
         watches one namespace. A watch on \
         its Jobs stamps, with the bench's own clock, when each Job is first seen Complete and when \
         the next step's Job is first seen; the gap is the time the operator adds (watch delivery, \
         reconcile, Job creation). It does not include the Job controller or the kubelet running \
         the step. Peak RSS is the operator's VmHWM from /proc after every run has finished.\n\n",
    );

    let steps = chain_steps();
    let measured = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let out = measured.clone();
    support::with_namespace(|client, ns| async move {
        let _operator = support::Operator::install(&ns).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let watch = tokio::spawn(watch_jobs(client.clone(), ns.clone(), seen.clone()));
        let api: Api<DisasterRecovery> = Api::namespaced(client.clone(), &ns);
        let (mut chains, mut floors) = (Vec::new(), Vec::new());
        // Alternated, so that a slower minute of the machine falls on both.
        for c in 0..CHAINS {
            let name = format!("chain-{c}");
            api.create(&PostParams::default(), &chain(&name, steps, "true"))
                .await
                .unwrap();
            wait_all_finished(&api, std::slice::from_ref(&name)).await;
            chains.push(name);
            let floor = format!("floor-{c}");
            floor_chain(client.clone(), &ns, &floor, steps).await;
            floors.push(floor);
        }
        // The last Complete of each chain is seen by the watch as well.
        tokio::time::sleep(Duration::from_secs(1)).await;
        watch.abort();
        let seen = seen.lock().unwrap();
        *out.lock().unwrap() = (
            gaps_of(&seen, &chains, steps),
            gaps_of(&seen, &floors, steps),
        );
    })
    .await;
    let (gaps, floor) = measured.lock().unwrap().clone();
    let row = |gaps: &[Duration]| {
        (
            percentile(gaps, 0.5),
            percentile(gaps, 0.99),
            gaps[gaps.len() - 1],
        )
    };
    let ((p50, p99, max), (f50, f99, fmax)) = (row(&gaps), row(&floor));
    println!(
        "added latency over {} transitions: p50 {p50:?}, p99 {p99:?}, max {max:?}; floor p50 {f50:?}, p99 {f99:?}, max {fmax:?}",
        gaps.len()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-6);
    report += &format!(
        "Added time between a Job seen Complete and the next Job seen created, over {} step transitions \
         each ({CHAINS} recoveries of {steps} sequential steps, one at a time), for the operator and, \
         alternated with it in the same run, for the floor: a client of a few lines that watches its own \
         Jobs and creates the next one the moment the previous is seen Complete (no status, no Events, \
         no plan) — the least any controller can add on this cluster.\n\n\
         | | p50 | p99 | max |\n|---|---|---|---|\n\
         | operator | {:.1} ms | {:.1} ms | {:.1} ms |\n\
         | floor | {:.1} ms | {:.1} ms | {:.1} ms |\n\
         | operator ÷ floor | {:.2}× | {:.2}× | {:.2}× |\n\n\
         Targets: p50 within 1.5× of the floor's; p99 ≤ 25 ms.\n\n",
        gaps.len(),
        ms(p50),
        ms(p99),
        ms(max),
        ms(f50),
        ms(f99),
        ms(fmax),
        ratio(p50, f50),
        ratio(p99, f99),
        ratio(max, fmax),
    );
    if std::env::var_os("TITAN_BENCH_LATENCY_ONLY").is_some() {
        std::fs::create_dir_all(support::root().join("target/bench")).unwrap();
        std::fs::write(support::root().join("target/bench/operator.md"), report).unwrap();
        return;
    }

    let peak = Arc::new(Mutex::new(0u64));
    let out = peak.clone();
    support::with_namespace(|client, ns| async move {
        let operator = support::Operator::install(&ns).await;
        let api: Api<DisasterRecovery> = Api::namespaced(client.clone(), &ns);
        let names: Vec<String> = (0..CONCURRENT).map(|i| format!("load-{i:02}")).collect();
        for name in &names {
            api.create(
                &PostParams::default(),
                &chain(name, CONCURRENT_STEPS, "sleep 0.5"),
            )
            .await
            .unwrap();
        }
        wait_all_finished(&api, &names).await;
        *out.lock().unwrap() = peak_rss_kib(operator.host_pid());
    })
    .await;
    let peak = *peak.lock().unwrap();
    println!(
        "peak RSS with {CONCURRENT} recoveries at once: {:.1} MiB",
        peak as f64 / 1024.0
    );
    report += &format!(
        "Peak RSS (VmHWM) of the operator with {CONCURRENT} recoveries of {CONCURRENT_STEPS} steps running at once: \
         **{:.1} MiB** (target ≤ 64 MiB).\n",
        peak as f64 / 1024.0
    );
    report += &backup_by_the_operator().await;
    std::fs::create_dir_all(support::root().join("target/bench")).unwrap();
    std::fs::write(support::root().join("target/bench/operator.md"), report).unwrap();
}

/// Keys × value size of the Redis the operator snapshots (about 1 GiB of RDB).
const BACKUP_KEYS: u64 = 1_048_576;
const BACKUP_VALUE_BYTES: u64 = 1024;

async fn backup_by_the_operator() -> String {
    use titan_dr::api::Backup;
    use titan_dr::backup::BackupKey;
    let result = Arc::new(Mutex::new(String::new()));
    let out = result.clone();
    support::with_namespace(|client, ns| async move {
        let extra = ["--rdbcompression", "no", "--repl-diskless-sync", "yes", "--enable-debug-command", "yes"];
        let ip = support::redis_pod::start_redis(&client, &ns, "big", &extra, false, None).await;
        tokio::task::spawn_blocking(move || {
            let mut con = support::redis_pod::connect(&ip, None);
            let _: () = redis::cmd("DEBUG")
                .arg("POPULATE")
                .arg(BACKUP_KEYS)
                .arg("key")
                .arg(BACKUP_VALUE_BYTES)
                .query(&mut con)
                .unwrap();
        })
        .await
        .unwrap();
        let address = "big:6379";
        let operator = support::Operator::install_with(
            &ns,
            &["backups.persistence.size=4Gi", "resources.limits.memory=512Mi"],
        )
        .await;
        let key = BackupKey::generate();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "backup-key"},
            "stringData": {"key": key.to_key_file()},
        }))
        .unwrap();
        Api::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret).await.unwrap();
        let backup: Backup = serde_yaml::from_str(&format!(
            "apiVersion: dr.titan.io/v1alpha1\nkind: Backup\nmetadata: {{name: big}}\nspec:\n  source: {{redis: {{address: '{address}'}}}}\n  destination: {{path: big}}\n  encryption: {{secretRef: {{name: backup-key}}}}\n"
        ))
        .unwrap();
        let api: Api<Backup> = Api::namespaced(client.clone(), &ns);
        let before = peak_rss_kib(operator.host_pid());
        api.create(&PostParams::default(), &backup).await.unwrap();
        let done = support::wait_for(&api, "big", "the snapshot", Duration::from_secs(600), |b: Option<&Backup>| {
            b.and_then(|b| b.status.as_ref()).is_some_and(|s| !s.snapshots.is_empty() || s.conditions.iter().any(|c| c.status == "False"))
        })
        .await;
        let peak = peak_rss_kib(operator.host_pid());
        let snapshot = done.status.unwrap().snapshots.first().cloned().expect("the snapshot succeeded");
        let seconds = snapshot.completed_at.unwrap().0.duration_since(snapshot.started_at.unwrap().0).as_secs_f64().max(1.0);
        let mb_per_s = snapshot.size_bytes as f64 / 1e6 / seconds;
        println!("operator snapshot: {} bytes in {seconds:.0}s = {mb_per_s:.0} MB/s, peak RSS {:.1} MiB (before: {:.1} MiB)", snapshot.size_bytes, peak as f64 / 1024.0, before as f64 / 1024.0);
        *out.lock().unwrap() = format!(
            "\nA Backup of a Redis holding {BACKUP_KEYS} keys of {BACKUP_VALUE_BYTES} bytes, taken by the operator \
             (encrypted file {} bytes): **{mb_per_s:.0} MB/s** from the snapshot's own start and completion times \
             (whole seconds, so ±1 s), operator peak RSS **{:.1} MiB** during it ({:.1} MiB before). \
             Compare with `redis-cli --rdb` in the next section.\n",
            snapshot.size_bytes,
            peak as f64 / 1024.0,
            before as f64 / 1024.0,
        );
    })
    .await;
    result.lock().unwrap().clone()
}
