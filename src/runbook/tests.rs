//! The runbook importer and renderer: the seed runbook, the guide's other scenarios, resources
//! written by hand, and malformed runbooks.

use std::collections::BTreeSet;

use crate::api::disaster_recovery::{
    Component, DisasterRecovery, DisasterRecoverySpec, Expect, JsonExpect, Severity, Step,
};
use crate::api::duration::GoDuration;
use crate::runbook::{self, Document, ImportError, StepDetails};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/runbooks");
const SCENARIOS: [&str; 4] = [
    "complete-system-failure",
    "database-corruption",
    "network-partition",
    "configuration-corruption",
];

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn scenario(name: &str, guide: Option<&str>) -> DisasterRecovery {
    runbook::import(&fixture(&format!("{name}.md")), guide)
        .unwrap_or_else(|e| panic!("{name} imports: {e}"))
}

fn annotation<'a>(dr: &'a DisasterRecovery, key: &str) -> Option<&'a str> {
    let annotations = dr.metadata.annotations.as_ref()?;
    annotations.get(key).map(String::as_str)
}

fn details(dr: &DisasterRecovery, step: &str) -> StepDetails {
    let json = annotation(dr, runbook::STEP_DETAILS_ANNOTATION).expect("step details");
    let mut all: std::collections::BTreeMap<String, StepDetails> =
        serde_json::from_str(json).expect("step details are JSON");
    all.remove(step)
        .unwrap_or_else(|| panic!("no details of {step}"))
}

fn assert_round_trip(dr: &DisasterRecovery, guide: Option<&str>) {
    let markdown = runbook::render(dr);
    let again = runbook::import(&markdown, guide)
        .unwrap_or_else(|e| panic!("rendered runbook does not import: {e}\n{markdown}"));
    assert_eq!(
        (&again.metadata, &again.spec),
        (&dr.metadata, &dr.spec),
        "{markdown}"
    );
}

fn contains(text: &str) -> Option<Expect> {
    Some(Expect {
        output_contains: Some(text.into()),
        ..Expect::default()
    })
}

#[test]
fn seed_imports_as_specified() {
    let dr = scenario("complete-system-failure", None);
    let spec = &dr.spec;
    assert_eq!(dr.metadata.name.as_deref(), Some("complete-system-failure"));
    assert_eq!(spec.scenario, "complete-system-failure");
    assert_eq!(spec.severity, Severity::Critical);
    let objectives = spec.objectives.clone().expect("objectives");
    assert_eq!(
        (
            objectives.rto.as_ref().map(GoDuration::as_str),
            objectives.rpo.as_ref().map(GoDuration::as_str)
        ),
        (Some("15m"), Some("5m"))
    );
    assert!(
        spec.description
            .as_deref()
            .is_some_and(|d| d.starts_with("Total server failure"))
    );

    let timeouts: Vec<_> = spec
        .steps
        .iter()
        .map(|s| s.timeout.as_ref().map(GoDuration::as_str))
        .collect();
    let expected = ["300s", "180s", "60s", "120s", "30s", "60s", "10s"].map(Some);
    assert_eq!(timeouts, expected);
    assert!(spec.steps.iter().all(|s| s.critical == Some(true)));
    let names: Vec<_> = spec.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names[0], "provision-server-infrastructure");
    assert_eq!(names[5], "start-titan-services-via-pm2");
    assert_eq!(
        spec.steps[0].notes.as_deref(),
        Some("Ensure minimum 8GB RAM, 4 CPU cores")
    );
    let expects: Vec<_> = spec.steps.iter().map(|s| s.expect.clone()).collect();
    let mut only_step_5 = vec![None; 7];
    only_step_5[4] = contains("Active: active (running)");
    assert_eq!(expects, only_step_5);

    let validations = &spec.validations;
    assert_eq!(validations.len(), 4);
    let timeouts: Vec<_> = validations
        .iter()
        .map(|v| v.timeout.as_ref().map(GoDuration::as_str))
        .collect();
    assert_eq!(timeouts, ["10s", "5s", "10s", "10s"].map(Some));
    // "All processes show "online"" says nothing a single check could hold.
    assert_eq!(validations[0].expect, None);
    assert_eq!(validations[1].expect, contains("PONG"));
    // "HTTP 200 OK" of a lone `curl -f`: its exit code.
    let exit_0 = Expect {
        exit_code: Some(0),
        ..Expect::default()
    };
    assert_eq!(validations[2].expect, Some(exit_0.clone()));
    let trading = JsonExpect {
        path: "trading".into(),
        equals: "true".into(),
    };
    let expect = Expect {
        json: Some(trading),
        ..exit_0
    };
    assert_eq!(validations[3].expect, Some(expect));
    assert!(spec.rollback.is_empty());
    assert!(spec.components.is_empty());
}

#[test]
fn seed_keeps_every_text() {
    let dr = scenario("complete-system-failure", None);
    let text = |key: &str| annotation(&dr, &runbook::section_annotation(key)).unwrap_or_default();
    assert!(text("prerequisites").contains("- DNS records updated if needed"));
    assert!(text("success-criteria").contains("- No data loss is detected"));
    assert!(text("troubleshooting").contains("### Issue: Database connection fails"));
    assert!(
        text("post-recovery-actions")
            .ends_with("5. Consider implementing additional preventive measures")
    );
    assert!(text("rollback-procedure").starts_with("No specific rollback procedure defined."));
    assert_eq!(
        text("validation-steps"),
        "After completing the recovery procedure, validate the system:"
    );
    assert_eq!(
        annotation(&dr, runbook::TITLE_ANNOTATION),
        Some("Complete System Failure - Recovery Runbook")
    );
    let step_5 = details(&dr, "start-redis-service");
    assert_eq!(step_5.title, "Start Redis service");
    assert_eq!(
        step_5.expected_output.as_deref(),
        Some("Active: active (running)")
    );
    let validation_1 = details(&dr, "verify-all-pm2-processes-are-online");
    assert_eq!(
        validation_1.expected_result.as_deref(),
        Some("All processes show \"online\"")
    );

    // The seed is written exactly the way `render` writes, so it comes back byte for byte.
    let seed = fixture("complete-system-failure.md");
    assert_eq!(runbook::render(&dr).trim_end(), seed.trim_end());
}

#[test]
fn guide_gives_the_component_graph() {
    let guide = fixture("guide.md");
    let dr = scenario("complete-system-failure", Some(&guide));
    let component = |name: &str, deps: &[&str]| Component {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    };
    let expected = vec![
        component("redis", &[]),
        component("titan-brain", &["redis"]),
        component("titan-shared", &["redis", "titan-brain"]),
        component("titan-phase1", &["titan-shared"]),
        component("titan-phase2", &["titan-shared"]),
        component("titan-phase3", &["titan-shared"]),
    ];
    assert_eq!(dr.spec.components, expected);
    // The rendered runbook carries the graph, so it imports the same without the guide.
    assert_round_trip(&dr, None);
    assert_round_trip(&dr, Some(&guide));
}

#[test]
fn other_scenarios_take_objectives_from_the_guide() {
    for (name, severity, rto, rpo) in [
        ("database-corruption", Severity::High, "10m", "5m"),
        ("network-partition", Severity::High, "5m", "1m"),
        ("configuration-corruption", Severity::Medium, "8m", "0m"),
    ] {
        let dr = scenario(name, None);
        assert_eq!(dr.spec.scenario, name);
        assert_eq!(dr.spec.severity, severity, "{name}");
        let objectives = dr.spec.objectives.clone().unwrap_or_default();
        assert_eq!(
            (
                objectives.rto.as_ref().map(GoDuration::as_str),
                objectives.rpo.as_ref().map(GoDuration::as_str)
            ),
            (Some(rto), Some(rpo))
        );
    }
}

#[test]
fn database_corruption() {
    let dr = scenario("database-corruption", None);
    let spec = &dr.spec;
    assert_eq!(spec.steps.len(), 7);
    let preserve = &spec.steps[2];
    assert_eq!(preserve.critical, Some(false));
    assert_eq!(
        details(&dr, &preserve.name).text.as_deref(),
        Some(
            "Keeps the evidence for the post-incident review; the recovery does not depend on it."
        )
    );
    // A multi-line command stays one command; a multi-line expected output stays prose.
    let restore = &spec.steps[3];
    assert_eq!(
        restore.command.as_deref().map(|c| c.lines().count()),
        Some(3)
    );
    assert_eq!(restore.expect, None);
    assert_eq!(spec.steps[4].expect, contains("\\o/ RDB looks OK! \\o/"));
    assert_eq!(spec.steps[6].retries, Some(2));

    let expects: Vec<_> = spec.validations.iter().map(|v| v.expect.clone()).collect();
    let health = Expect {
        exit_code: Some(0),
        json: Some(JsonExpect {
            path: "status".into(),
            equals: "ok".into(),
        }),
        ..Expect::default()
    };
    assert_eq!(expects, vec![contains("PONG"), None, Some(health)]);

    let rollback: Vec<_> = spec
        .rollback
        .iter()
        .map(|s| (s.name.as_str(), s.critical))
        .collect();
    assert_eq!(
        rollback,
        [
            ("put-the-preserved-data-file-back", Some(false)),
            ("page-the-on-call-engineer", None)
        ]
    );
    let text = |key: &str| annotation(&dr, &runbook::section_annotation(key));
    assert!(text("rollback-procedure").is_some_and(|t| t.starts_with("If the restored snapshot")));
    assert!(text("recovery-steps").is_some_and(|t| t.starts_with("Run the steps in order")));
    assert_eq!(text("post-recovery-actions"), None);
}

#[test]
fn network_partition() {
    let dr = scenario("network-partition", None);
    let spec = &dr.spec;
    let critical: Vec<_> = spec.steps.iter().map(|s| s.critical).collect();
    assert_eq!(
        critical,
        [Some(false), Some(true), None, Some(true), Some(true)]
    );
    // A step may say what to expect the way validations do.
    assert_eq!(
        spec.steps[1].expect.as_ref().and_then(|e| e.exit_code),
        Some(0)
    );
    assert_eq!(
        spec.steps[3].timeout.as_ref().map(GoDuration::as_str),
        Some("2m")
    );
    assert_eq!(spec.steps[3].retries, Some(3));
    let expects: Vec<_> = spec.validations.iter().map(|v| v.expect.clone()).collect();
    let exit_0 = Expect {
        exit_code: Some(0),
        ..Expect::default()
    };
    assert_eq!(expects, vec![Some(exit_0), None, contains("reachable")]);
    assert_eq!(spec.validations[2].critical, Some(false));
    assert!(spec.rollback.is_empty());
    assert_eq!(
        annotation(&dr, &runbook::section_annotation("prerequisites")),
        None
    );
}

#[test]
fn configuration_corruption() {
    let dr = scenario("configuration-corruption", None);
    let spec = &dr.spec;
    assert_eq!(spec.steps.len(), 5);
    assert_eq!(spec.steps[0].expect, None);
    assert_eq!(spec.steps[1].timeout, None);
    assert_eq!(spec.steps[3].expect, contains("Configuration valid"));
    let valid = JsonExpect {
        path: "valid".into(),
        equals: "true".into(),
    };
    assert_eq!(
        spec.validations[0]
            .expect
            .as_ref()
            .and_then(|e| e.json.clone()),
        Some(valid)
    );
    assert_eq!(spec.validations[1].expect, None);
    for missing in ["rollback-procedure", "success-criteria", "troubleshooting"] {
        assert_eq!(annotation(&dr, &runbook::section_annotation(missing)), None);
    }
}

#[test]
fn every_runbook_round_trips() {
    let guide = fixture("guide.md");
    for name in SCENARIOS {
        assert_round_trip(&scenario(name, None), None);
        assert_round_trip(&scenario(name, Some(&guide)), Some(&guide));
    }
}

#[test]
fn crlf_line_endings_read_the_same() {
    let seed = fixture("complete-system-failure.md");
    let crlf = runbook::import(&seed.replace('\n', "\r\n"), None).expect("imports");
    let lf = scenario("complete-system-failure", None);
    assert_eq!((&crlf.metadata, &crlf.spec), (&lf.metadata, &lf.spec));
}

#[test]
fn a_resource_written_by_hand_renders_to_a_runbook() {
    let step = |name: &str, command: &str| Step {
        name: name.into(),
        command: Some(command.into()),
        timeout: Some("30s".parse().unwrap()),
        ..Step::default()
    };
    let start_redis = Step {
        component: Some("redis".into()),
        expect: contains("Active: active (running)"),
        ..step("start-redis", "sudo systemctl start redis")
    };
    let start_phase1 = Step {
        component: Some("titan-phase1".into()),
        critical: Some(false),
        retries: Some(2),
        timeout: Some("1h30m".parse().unwrap()),
        ..step(
            "start-phase1",
            "pm2 start ecosystem.config.js --only titan-phase1",
        )
    };
    let health = Step {
        expect: Some(Expect {
            exit_code: Some(0),
            output_matches: Some("^ok".into()),
            json: Some(JsonExpect {
                path: "services.0.state".into(),
                equals: "up".into(),
            }),
            ..Expect::default()
        }),
        ..step("health", "curl -s localhost:3000/health")
    };
    let component = |name: &str, deps: &[&str]| Component {
        name: name.into(),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
    };
    let spec = DisasterRecoverySpec {
        scenario: "complete-system-failure".into(),
        severity: Severity::Low,
        components: vec![
            component("redis", &[]),
            component("titan-phase1", &["redis"]),
        ],
        steps: vec![start_redis, start_phase1],
        validations: vec![health],
        rollback: vec![step("notify", "bash scripts/notify-oncall.sh")],
        ..DisasterRecoverySpec::default()
    };
    let dr = DisasterRecovery::new("complete-system-failure", spec.clone());
    let markdown = runbook::render(&dr);
    let imported = runbook::import(&markdown, None).unwrap_or_else(|e| panic!("{e}\n{markdown}"));
    assert_eq!(imported.spec, spec, "{markdown}");
    assert!(markdown.contains("### Step 1: Start Redis\n"), "{markdown}");
    assert!(markdown.contains("- **Timeout:** 1h30m\n"), "{markdown}");
}

#[test]
fn a_guide_without_the_architecture_section_is_an_error() {
    let error = runbook::import(&fixture("complete-system-failure.md"), Some("# Guide\n")).err();
    let expected = ImportError {
        document: Document::Guide,
        line: 1,
        message: "no `## System Architecture Overview` section".into(),
    };
    assert_eq!(error, Some(expected));
}

#[test]
fn malformed_runbooks_name_the_line_and_the_problem() {
    let cases = [
        (
            "command-without-code-block.md",
            13,
            "`**Command:**` must be followed by a code block",
        ),
        (
            "critical-not-yes-or-no.md",
            19,
            "Critical must be YES or NO, found `MAYBE`",
        ),
        (
            "duplicate-section.md",
            20,
            "second `## Recovery Steps` section",
        ),
        (
            "id-not-a-dns-label.md",
            5,
            "ID `Complete System Failure` is not a DNS label (lowercase letters, digits and `-`, at most 63 characters)",
        ),
        ("missing-id.md", 3, "Scenario Details has no **ID:**"),
        ("no-recovery-steps.md", 1, "no `## Recovery Steps` section"),
        (
            "recovery-steps-without-steps.md",
            9,
            "Recovery Steps has no `### Step N: title`",
        ),
        (
            "rto-not-a-duration.md",
            7,
            "RTO `fast` is not a number of seconds, minutes or hours",
        ),
        (
            "second-timeout.md",
            19,
            "second `**Timeout:**` in this step",
        ),
        (
            "step-heading-without-number.md",
            11,
            "expected `### Step N: title`, found `### Start Redis`",
        ),
        (
            "step-without-command.md",
            11,
            "step \"Start Redis\" has no **Command:**",
        ),
        (
            "timeout-not-a-number.md",
            18,
            "timeout `thirty seconds` is not a number of seconds, minutes or hours",
        ),
        ("unclosed-code-block.md", 14, "code block is never closed"),
        ("unknown-component.md", 19, "unknown component `redis`"),
        (
            "unknown-field.md",
            18,
            "unknown field `**Timout:**` (expected Command, Expected Output, Expected Result, Timeout, Critical, Retries, Component or Notes)",
        ),
        (
            "unknown-severity.md",
            6,
            "unknown severity `URGENT` (expected CRITICAL, HIGH, MEDIUM or LOW)",
        ),
        ("zero-timeout.md", 18, "timeout must be more than zero"),
    ];
    for (file, line, message) in cases {
        let error = runbook::import(&fixture(&format!("malformed/{file}")), None).err();
        let expected = ImportError {
            document: Document::Runbook,
            line,
            message: message.into(),
        };
        assert_eq!(error.as_ref(), Some(&expected), "{file}");
        assert_eq!(
            expected.to_string(),
            format!("runbook line {line}: {message}")
        );
    }
    // Every malformed fixture has its case.
    let listed: BTreeSet<String> = cases.iter().map(|(file, _, _)| file.to_string()).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(format!("{FIXTURES}/malformed"))
        .expect("malformed fixtures")
        .filter_map(|entry| Some(entry.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(listed, on_disk);
}
