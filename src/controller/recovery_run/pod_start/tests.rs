//! Verdicts from the YAML fixtures in `tests/fixtures/pod-start/`: real Job,
//! Pod and Event objects as the API server returns them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::*;
use crate::api::duration::GoDuration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pod-start");
const GRACE: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Fixture {
    now: String,
    job: Job,
    pods: Vec<Pod>,
    #[serde(default)]
    events: Vec<Event>,
    reads_events: bool,
    expect: Expected,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expected {
    cannot_start: Option<String>,
    recheck_in: Option<GoDuration>,
}

fn fixture(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixtures() -> BTreeMap<String, Fixture> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            all.insert(name, fixture(&path));
        }
    }
    all
}

fn now(fixture: &Fixture) -> Timestamp {
    fixture.now.parse().unwrap()
}

#[test]
fn every_fixture_gets_the_expected_verdict() {
    let all = fixtures();
    assert!(all.len() >= 15, "fixtures found: {:?}", all.keys());
    for (name, f) in &all {
        let pods: Vec<&Pod> = f.pods.iter().collect();
        let reads = wants_events(&f.job, &pods, now(f));
        assert_eq!(reads, f.reads_events, "{name}: whether Events are read");
        // Events are only there when they were read.
        let events = if reads { &f.events[..] } else { &[] };
        let verdict = assess(&f.job, &pods, events, now(f), GRACE);
        let expected = match (&f.expect.cannot_start, &f.expect.recheck_in) {
            (Some(message), None) => StartVerdict::CannotStart(StartFailure {
                message: message.clone(),
            }),
            (None, recheck) => StartVerdict::Wait {
                recheck: recheck.as_ref().map(GoDuration::duration),
            },
            (Some(_), Some(_)) => panic!("{name}: expect one of cannotStart or recheckIn"),
        };
        assert_eq!(verdict, expected, "{name}");
    }
}

#[test]
fn hard_errors_fail_at_once_and_others_only_after_the_grace_period() {
    let all = fixtures();
    for name in ["never-pull", "run-as-root", "invalid-image-name"] {
        let f = &all[name];
        let pods: Vec<&Pod> = f.pods.iter().collect();
        let at_once = assess(&f.job, &pods, &[], now(f), Duration::from_secs(3600));
        assert!(
            matches!(at_once, StartVerdict::CannotStart(_)),
            "{name}: {at_once:?}"
        );
    }
    let f = &all["image-pull-backoff-past-grace"];
    let pods: Vec<&Pod> = f.pods.iter().collect();
    let longer = assess(&f.job, &pods, &[], now(f), Duration::from_secs(120));
    assert_eq!(
        longer,
        StartVerdict::Wait {
            recheck: Some(Duration::from_secs(55))
        }
    );
}

#[test]
fn a_pod_being_deleted_or_finished_is_left_to_the_job() {
    let all = fixtures();
    let f = &all["never-pull"];
    let mut deleting = f.pods[0].clone();
    deleting.metadata.deletion_timestamp = deleting.metadata.creation_timestamp.clone();
    let mut failed = f.pods[0].clone();
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    for pod in [&deleting, &failed] {
        assert_eq!(
            assess(&f.job, &[pod], &[], now(f), GRACE),
            StartVerdict::Wait { recheck: None }
        );
    }
}

#[test]
fn the_stop_patch_records_what_observe_reads_back() {
    let all = fixtures();
    let f = &all["refused-past-grace"];
    let failure = StartFailure {
        message: "pod refused: FailedCreate: Error creating: forbidden".into(),
    };
    let at: Timestamp = "2026-11-25T02:01:01.734Z".parse().unwrap();
    let patch = stop_patch(&f.job, &failure, at);
    assert_eq!(patch["metadata"]["resourceVersion"], "4711");
    assert_eq!(patch["spec"]["activeDeadlineSeconds"], 1);
    assert!(recorded(&f.job).is_none());

    let mut job = serde_json::to_value(&f.job).unwrap();
    job["metadata"]["annotations"] = patch["metadata"]["annotations"].clone();
    let job: Job = serde_json::from_value(job).unwrap();
    assert_eq!(
        recorded(&job),
        Some(RecordedFailure {
            message: failure.message,
            at: Some(Time("2026-11-25T02:01:01Z".parse().unwrap())),
        })
    );
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    let message = format!("pod refused: {}", "é".repeat(MAX_MESSAGE));
    let cut = bounded(message);
    assert!(cut.len() <= MAX_MESSAGE + '…'.len_utf8(), "{}", cut.len());
    assert!(cut.ends_with('…'));
}
