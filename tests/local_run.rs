//! `titan-dr plan`, `run` and `runbook` as a user runs them: the built binary on the fixtures of
//! `tests/fixtures/local/`, each run in a scratch working directory, judged by exit code,
//! output, report and the marker files the fixtures' commands write. The parallelism of a run
//! is checked through the library, on the start and end times it records.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use titan_dr::api::DisasterRecovery;
use titan_dr::cli::input;
use titan_dr::local::{Options, RunOutcome, execute};
use tokio_util::sync::CancellationToken;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_titan-dr"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `titan-dr run` of a fixture in a scratch directory, with a report in it.
struct Run {
    dir: tempfile::TempDir,
    output: Output,
    took: Duration,
}

impl Run {
    fn of(name: &str) -> Run {
        Run::of_file(&fixture(&format!("local/{name}")))
    }

    fn of_file(file: &Path) -> Run {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let started = Instant::now();
        let output = bin()
            .arg("run")
            .arg(file)
            .args(run_flags(dir.path()))
            .output()
            .expect("titan-dr runs");
        Run {
            dir,
            output,
            took: started.elapsed(),
        }
    }

    fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn stdout(&self) -> String {
        text(&self.output.stdout)
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(name)).ok()
    }

    fn report(&self) -> String {
        self.file("report.md").expect("the report was written")
    }

    /// Everything a failed assertion should show.
    fn context(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}\nreport:\n{}",
            self.code(),
            self.stdout(),
            text(&self.output.stderr),
            self.file("report.md").unwrap_or_default()
        )
    }
}

fn run_flags(dir: &Path) -> Vec<String> {
    let flag = |name: &str, path: PathBuf| [name.to_owned(), path.display().to_string()];
    [
        flag("--workdir", dir.to_path_buf()),
        flag("--log-dir", dir.join("logs")),
        flag("--report", dir.join("report.md")),
    ]
    .concat()
}

#[test]
fn a_successful_run_exits_0_and_reports_every_step() {
    let run = Run::of("success.yaml");
    assert_eq!(run.code(), Some(0), "{}", run.context());
    let report = run.report();
    assert!(report.contains("| Outcome | **Succeeded** |"), "{report}");
    assert!(
        report.contains("RTO objective | 5m0s — **met**"),
        "{report}"
    );
    assert!(
        report.contains("![Timeline of the run](report.svg)"),
        "{report}"
    );
    assert!(report.contains("## Timeline"), "{report}");
    assert!(report.contains("- **Passed** `redis-ping`"), "{report}");

    let svg = run.file("report.svg").expect("the chart beside the report");
    assert!(svg.starts_with("<svg "), "{svg}");
    let steps = [
        "provision",
        "start-redis",
        "start-brain",
        "start-shared",
        "start-phase1",
        "start-phase2",
        "start-phase3",
        "redis-ping",
        "brain-health",
    ];
    for step in steps {
        assert!(
            report.contains(&format!("| `{step}` |")),
            "{step} not in the timeline:\n{report}"
        );
        let bars = svg
            .matches(&format!(r#"<rect class="attempt" data-step="{step}""#))
            .count();
        assert_eq!(bars, 1, "one bar for {step}:\n{svg}");
    }
    assert_eq!(run.file("rollback.marker"), None, "no rollback on success");
}

#[test]
fn a_failed_critical_step_skips_the_rest_and_rolls_back() {
    let run = Run::of("critical-failure.yaml");
    assert_eq!(run.code(), Some(1), "{}", run.context());
    assert_eq!(
        run.file("rollback.marker").as_deref(),
        Some("stop-service\nnotify\n"),
        "the rollback steps ran in order\n{}",
        run.context()
    );
    assert_eq!(run.file("started.marker"), None, "a skipped step ran");
    let report = run.report();
    assert!(report.contains("| Outcome | **Failed** |"), "{report}");
    assert!(
        report.contains(
            r#"| Failed step | `restore-data` (Failed): expected exit code 0, got 3: "restore failed: no snapshot" |"#
        ),
        "{report}"
    );
    assert!(
        report.contains("| `start-service` | step | – | Skipped |"),
        "{report}"
    );
    assert!(
        report.contains("- **Skipped** `service-health`"),
        "{report}"
    );
    assert!(report.contains("restore failed: no snapshot"), "{report}");
    assert!(
        run.stdout().contains("Recovery FAILED"),
        "{}",
        run.context()
    );
}

#[test]
fn a_failed_non_critical_step_degrades_but_succeeds() {
    let run = Run::of("non-critical-failure.yaml");
    assert_eq!(run.code(), Some(0), "{}", run.context());
    assert!(
        run.stdout().contains("SUCCEEDED (degraded)"),
        "{}",
        run.context()
    );
    let report = run.report();
    assert!(
        report.contains("| Degraded | yes: non-critical `warm-cache` failed |"),
        "{report}"
    );
    assert!(
        report.contains("| `start-api` | step | 1/1 | Succeeded"),
        "{report}"
    );
    assert_eq!(run.file("rollback.marker"), None);
}

#[test]
fn retries_make_one_more_attempt_per_retry() {
    let run = Run::of("retries.yaml");
    assert_eq!(run.code(), Some(0), "{}", run.context());
    assert_eq!(run.file("flaky.count").as_deref(), Some("3\n"));
    assert_eq!(run.file("always-fails.count").as_deref(), Some("x\nx\nx\n"));
    let report = run.report();
    assert!(
        report.contains("| `flaky` | step | 3/3 | Succeeded"),
        "{report}"
    );
    assert!(
        report.contains("| `always-fails` | step | 3/3 | Failed"),
        "{report}"
    );
    let svg = run.file("report.svg").unwrap_or_default();
    let bars = svg
        .matches(r#"<rect class="attempt" data-step="flaky""#)
        .count();
    assert_eq!(bars, 3, "one bar per attempt:\n{svg}");
}

#[test]
fn a_step_that_outlives_its_timeout_ends_timed_out() {
    let run = Run::of("timeout.yaml");
    assert_eq!(run.code(), Some(1), "{}", run.context());
    // The command sleeps 30s; the 1s timeout and the 2s kill grace bound the run well below.
    assert!(run.took < Duration::from_secs(10), "took {:?}", run.took);
    let report = run.report();
    assert!(
        report.contains("| `hang` | step | 1/1 | TimedOut"),
        "{report}"
    );
    assert!(report.contains("did not finish within 1s"), "{report}");
}

#[test]
fn an_unmet_expectation_fails_and_says_why() {
    let run = Run::of("expect-mismatch.yaml");
    assert_eq!(run.code(), Some(1), "{}", run.context());
    assert!(
        run.stdout()
            .contains(r#"expected output to contain "PONG", got "Could not connect to Redis""#),
        "{}",
        run.context()
    );
}

/// An HTTP server on a loopback port that answers every request with `status` and `body`, in
/// a thread that ends with the test process; its port.
fn serve_http(status: &'static str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("bound").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.read(&mut [0; 4096]);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `titan-dr run` of the http-probe fixture against a server answering `status` and `body`.
fn run_http_probe(status: &'static str, body: &'static str) -> Run {
    let port = serve_http(status, body);
    let yaml = std::fs::read_to_string(fixture("local/http-probe.yaml")).expect("the fixture");
    let file = tempfile::NamedTempFile::new().expect("a scratch file");
    std::fs::write(file.path(), yaml.replace("PORT", &port.to_string())).expect("written");
    Run::of_file(file.path())
}

#[test]
fn an_http_probe_validation_is_judged_by_expect_on_the_body() {
    let run = run_http_probe("200 OK", r#"{"status":"ok","trading":true}"#);
    assert_eq!(run.code(), Some(0), "{}", run.context());
    assert!(
        run.report().contains("- **Passed** `brain-health`"),
        "{}",
        run.context()
    );
}

#[test]
fn an_http_probe_fails_on_an_unexpected_status_naming_url_and_status() {
    let run = run_http_probe("503 Service Unavailable", r#"{"trading":false}"#);
    assert_eq!(run.code(), Some(1), "{}", run.context());
    let report = run.report();
    assert!(
        report.contains("answered 503 Service Unavailable, expected 2xx"),
        "{}",
        run.context()
    );
    assert!(report.contains("/health"), "{}", run.context());
    assert!(
        run.stdout().contains("expected exit code 0, got 1"),
        "{}",
        run.context()
    );
}

#[test]
fn ctrl_c_stops_the_running_steps_and_exits_130() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let mut child = bin()
        .arg("run")
        .arg(fixture("local/interrupt.yaml"))
        .args(run_flags(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("titan-dr starts");

    let pid_file = dir.path().join("sleeper.pid");
    let sleeper: i32 = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
    })
    .expect("the long step started and wrote its pid");
    let titan = i32::try_from(child.id()).expect("a pid fits an i32");
    // SAFETY: kill(2) with a valid signal has no memory effects.
    assert_eq!(unsafe { libc::kill(titan, libc::SIGINT) }, 0);

    let status = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        panic!("titan-dr did not exit after SIGINT");
    };
    assert_eq!(status.code(), Some(130));
    // kill(2) returns before the target has died; give a busy machine a moment.
    let gone = wait_for(Duration::from_secs(2), || is_gone(sleeper).then_some(()));
    assert!(gone.is_some(), "the step's sleep {sleeper} outlived Ctrl-C");
    let marker = |name: &str| dir.path().join(name).exists();
    assert!(!marker("after.marker"), "a step started after Ctrl-C");
    assert!(!marker("rollback.marker"), "an interrupted run rolled back");
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap_or_default();
    assert!(report.contains("**Interrupted"), "{report}");
    assert!(
        report.contains("| Stopped while running | `long-restore` |"),
        "{report}"
    );
}

/// Polls `probe` every 50 ms until it gives a value or `limit` passes.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a process is gone; a zombie waiting for init to reap it counts as gone.
fn is_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, None | Some("Z" | "X"))
}

#[tokio::test]
async fn independent_components_run_in_parallel() {
    let (resource, plan) = input::load(&fixture("local/success.yaml")).expect("fixture loads");
    let dir = tempfile::tempdir().expect("a scratch directory");
    let options = Options {
        workdir: dir.path().to_path_buf(),
        log_dir: dir.path().join("logs"),
        cancel: CancellationToken::new(),
    };
    let record = execute(&resource, &plan, &options, &mut ()).await;
    assert_eq!(record.outcome, RunOutcome::Succeeded, "{record:#?}");

    let span = |name: &str| {
        let step = record.steps.iter().find(|s| s.name == name).expect(name);
        let attempt = step.last_attempt().expect("the step ran");
        (attempt.start, attempt.end())
    };
    let phases = ["start-phase1", "start-phase2", "start-phase3"].map(span);
    let latest_start = phases.iter().map(|p| p.0).max().unwrap_or_default();
    let earliest_end = phases.iter().map(|p| p.1).min().unwrap_or_default();
    assert!(
        latest_start < earliest_end,
        "the three phases did not overlap: {phases:?}"
    );
    let (_, shared_end) = span("start-shared");
    assert!(
        phases.iter().all(|p| p.0 >= shared_end),
        "a phase started before start-shared ended: {phases:?}, shared ended {shared_end:?}"
    );
    let (validation_start, _) = span("redis-ping");
    assert!(phases.iter().all(|p| validation_start >= p.1));
}

#[test]
fn plan_puts_the_three_phases_in_one_stage() {
    let output = bin()
        .arg("plan")
        .arg(fixture("plan/titan.yaml"))
        .output()
        .expect("titan-dr runs");
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let stage = stdout
        .split("Stage 6 — 3 in parallel")
        .nth(1)
        .and_then(|rest| rest.split("Validations").next())
        .unwrap_or_else(|| panic!("no stage of three:\n{stdout}"));
    for phase in ["start-phase1", "start-phase2", "start-phase3"] {
        assert!(stage.contains(phase), "{phase} not in stage 6:\n{stdout}");
    }
    assert!(stdout.contains("Critical path: provision-infrastructure → "));
    assert!(
        stdout.contains("RTO 15m0s: met even in the worst case"),
        "{stdout}"
    );
}

#[test]
fn plan_flags_an_rto_the_timeouts_cannot_guarantee() {
    let plan = |strict: bool| {
        let mut command = bin();
        command
            .arg("plan")
            .arg(fixture("local/rto-unmeetable.yaml"));
        if strict {
            command.arg("--strict");
        }
        command.output().expect("titan-dr runs")
    };
    let output = plan(false);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("WARNING: the worst case 10m0s exceeds the RTO objective 1m0s"),
        "{stdout}"
    );
    assert_eq!(plan(true).status.code(), Some(1));
}

#[test]
fn invalid_input_exits_2_and_names_what_is_wrong() {
    let cases = [
        (
            "local/cycle.yaml",
            "cycle between steps: step-x -> step-y -> step-x",
        ),
        (
            "local/unknown-field.yaml",
            "unknown field spec.steps.0.timout",
        ),
        (
            "local/rto-not-a-duration.yaml",
            r#"spec.objectives.rto: "soon" is not a duration like 300s, 5m, 1h30m or 1.5h"#,
        ),
        (
            "local/bad-output-matches.yaml",
            r#"invalid plan: step "step-x" has outputMatches /ok(/, which is not a regular expression"#,
        ),
        (
            "plan/invalid/step-cycle.yaml",
            "expected apiVersion dr.titan.io/v1alpha1",
        ),
    ];
    for (file, message) in cases {
        for command in ["plan", "run"] {
            let output = bin()
                .arg(command)
                .arg(fixture(file))
                .output()
                .expect("titan-dr runs");
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{command} {file}: {stderr}");
            assert!(stderr.contains(message), "{command} {file}: {stderr}");
            assert!(
                output.stdout.is_empty(),
                "{command} {file} printed on stdout"
            );
        }
    }
}

#[test]
fn a_gated_step_plans_but_never_runs_here_unapproved() {
    let planned = bin()
        .arg("plan")
        .arg(fixture("local/gated.yaml"))
        .output()
        .unwrap();
    assert_eq!(planned.status.code(), Some(0), "{}", text(&planned.stderr));
    let run = bin()
        .arg("run")
        .arg(fixture("local/gated.yaml"))
        .output()
        .unwrap();
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr
            .contains("steps overwrite need an approval, which only a run in the cluster can have"),
        "{stderr}"
    );
    assert!(run.stdout.is_empty(), "nothing ran");
}

#[test]
fn an_imported_runbook_is_a_resource_that_plans() {
    let output = bin()
        .args(["runbook", "import"])
        .arg(fixture("runbooks/complete-system-failure.md"))
        .output()
        .expect("titan-dr runs");
    let yaml = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        yaml.starts_with("apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\n"),
        "{yaml}"
    );
    let resource: DisasterRecovery = input::parse(&yaml).expect("the output parses back");
    assert_eq!(resource.spec.steps.len(), 7);

    let dir = tempfile::tempdir().expect("a scratch directory");
    let file = dir.path().join("imported.yaml");
    std::fs::write(&file, &yaml).expect("written");
    let planned = bin()
        .arg("plan")
        .arg(&file)
        .output()
        .expect("titan-dr runs");
    assert_eq!(planned.status.code(), Some(0), "{}", text(&planned.stderr));

    let json = bin()
        .args(["runbook", "import", "-o", "json"])
        .arg(fixture("runbooks/complete-system-failure.md"))
        .output()
        .expect("titan-dr runs");
    let parsed: DisasterRecovery =
        serde_json::from_slice(&json.stdout).expect("the JSON output parses");
    assert_eq!(parsed.spec, resource.spec);
    assert_eq!(parsed.metadata, resource.metadata);
}

#[test]
fn a_malformed_runbook_names_its_line_and_prints_nothing() {
    let output = bin()
        .args(["runbook", "import"])
        .arg(fixture("local/malformed-runbook.md"))
        .output()
        .expect("titan-dr runs");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(
        stderr.contains("runbook line 18: Critical must be YES or NO"),
        "{stderr}"
    );
}

#[test]
fn render_prints_a_runbook_that_imports_back() {
    let output = bin()
        .args(["runbook", "render"])
        .arg(fixture("local/success.yaml"))
        .output()
        .expect("titan-dr runs");
    let markdown = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let imported =
        titan_dr::runbook::import(&markdown, None).expect("the rendered runbook imports");
    assert_eq!(imported.spec.steps.len(), 7);
}

/// The first of `n` consecutive loopback ports that are all free at once: the example's
/// services listen on the HTTP port and the next four (one found free, with neighbours
/// unchecked, was once taken when the fourth service started).
fn free_block(n: u16) -> u16 {
    loop {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = first.local_addr().unwrap().port();
        let Some(last) = base.checked_add(n - 1) else {
            continue;
        };
        let rest: Result<Vec<_>, _> = (base + 1..=last)
            .map(|port| std::net::TcpListener::bind(("127.0.0.1", port)))
            .collect();
        if rest.is_ok() {
            return base;
        }
    }
}

/// `titan-dr run` on the Titan example itself (with its own folder and ports):
/// a real redis-server and the services' health endpoints come up, every
/// validation passes, and the report has its SVG timeline.
#[test]
fn the_titan_example_recovers_locally_with_a_report_and_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let home = dir.path().join("titan");
    let env = [
        ("TITAN_HOME", home.display().to_string()),
        ("TITAN_REDIS_PORT", free().to_string()),
        ("TITAN_HTTP_PORT", free_block(5).to_string()),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/titan/recovery.yaml")).unwrap();
    let mut dr: DisasterRecovery = serde_yaml::from_str(&example).unwrap();
    dr.spec.template.as_mut().unwrap().env = env
        .iter()
        .map(|(name, value)| k8s_openapi::api::core::v1::EnvVar {
            name: name.to_string(),
            value: Some(value.clone()),
            ..Default::default()
        })
        .collect();
    let file = dir.path().join("recovery.yaml");
    std::fs::write(&file, serde_yaml::to_string(&dr).unwrap()).unwrap();
    let report = dir.path().join("report.md");
    let output = bin()
        .arg("run")
        .arg(&file)
        .arg("--report")
        .arg(&report)
        .current_dir(root)
        .output()
        .unwrap();
    let stop = Command::new("bash")
        .arg(root.join("examples/titan/scripts/stop-all.sh"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .status();
    assert!(stop.is_ok_and(|s| s.success()));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let report_text = std::fs::read_to_string(&report).unwrap();
    assert!(
        report_text.contains("| Outcome | **Succeeded** |"),
        "{report_text}"
    );
    for validation in [
        "processes-online",
        "redis-connectivity",
        "websocket-connections",
        "trading-status",
    ] {
        assert!(
            report_text.contains(&format!("- **Passed** `{validation}`")),
            "{report_text}"
        );
    }
    let svg = std::fs::read_to_string(dir.path().join("report.svg")).unwrap();
    let bars = svg.matches(r#"<rect class="attempt""#).count();
    assert_eq!(bars, 15, "one bar per step and validation attempt:\n{svg}");
}
