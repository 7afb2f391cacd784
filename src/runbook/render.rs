//! `render`: a `DisasterRecovery` → the markdown runbook form that `import` reads.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use super::import::Kind;
use super::markdown::{self, one_line};
use super::{
    ANNOTATION_PREFIX, PREAMBLE_ANNOTATION, RESERVED, STEP_DETAILS_ANNOTATION, StepDetails,
    TITLE_ANNOTATION, expect, section_annotation,
};
use crate::api::disaster_recovery::{DisasterRecovery, Severity, Step};

/// Text sections written after the description, in this order, with these headings.
const BEFORE_STEPS: [(&str, &str); 1] = [("prerequisites", "Prerequisites")];
/// Text sections written after the rollback procedure, before any other.
const AFTER_STEPS: [(&str, &str); 3] = [
    ("success-criteria", "Success Criteria"),
    ("troubleshooting", "Troubleshooting"),
    ("post-recovery-actions", "Post-Recovery Actions"),
];
/// Sections that `render` writes from the spec, not from a text annotation.
const STRUCTURED: [&str; 6] = [
    "scenario-details",
    "description",
    "components",
    "recovery-steps",
    "validation-steps",
    "rollback-procedure",
];

/// Writes the runbook of `dr`. The texts `import` kept in annotations come back where they
/// were; a resource written by hand gets titles from its step names and `**Expected Result:**`
/// lines that say what its `expect`s check. Not written: `backups`, `template`, and a step's
/// `after`, `image`, `env` (the form has no place for them); `args` are written as a command.
pub fn render(dr: &DisasterRecovery) -> String {
    let spec = &dr.spec;
    let no_annotations = BTreeMap::new();
    let annotations = dr.metadata.annotations.as_ref().unwrap_or(&no_annotations);
    let text = |key: &str| annotations.get(&section_annotation(key));
    let details: BTreeMap<String, StepDetails> = annotations
        .get(STEP_DETAILS_ANNOTATION)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let mut out = String::new();

    if let Some(title) = annotations.get(TITLE_ANNOTATION) {
        out += &format!("# {}\n\n", one_line(title));
    }
    if let Some(preamble) = annotations.get(PREAMBLE_ANNOTATION) {
        out += &format!("{preamble}\n\n");
    }
    out += &scenario_details(spec);
    if let Some(description) = &spec.description {
        out += &format!("## Description\n\n{description}\n\n");
    }
    for (key, heading) in BEFORE_STEPS {
        if let Some(body) = text(key) {
            out += &section(heading, body);
        }
    }
    out += &components(spec);
    for (kind, steps, heading) in [
        (Kind::Step, &spec.steps, "Recovery Steps"),
        (Kind::Validation, &spec.validations, "Validation Steps"),
        (Kind::Rollback, &spec.rollback, "Rollback Procedure"),
    ] {
        let intro = text(kind.section());
        if kind != Kind::Step && steps.is_empty() && intro.is_none() {
            continue;
        }
        out += &format!("## {heading}\n\n");
        if let Some(intro) = intro {
            out += &format!("{intro}\n\n");
        }
        for (i, step) in steps.iter().enumerate() {
            out += &render_step(kind, i + 1, step, details.get(&step.name));
        }
    }
    for (key, heading) in AFTER_STEPS {
        if let Some(body) = text(key) {
            out += &section(heading, body);
        }
    }
    out += &other_sections(annotations);
    out
}

/// The `## Scenario Details` section: ID, severity and objectives.
fn scenario_details(spec: &crate::api::DisasterRecoverySpec) -> String {
    let mut out = String::new();
    let severity = match spec.severity {
        Severity::Critical => "CRITICAL",
        Severity::High => "HIGH",
        Severity::Medium => "MEDIUM",
        Severity::Low => "LOW",
    };
    out += &format!(
        "## Scenario Details\n\n- **ID:** {}\n- **Severity:** {severity}\n",
        spec.scenario
    );
    let objectives = spec.objectives.clone().unwrap_or_default();
    for (label, value) in [("RTO", objectives.rto), ("RPO", objectives.rpo)] {
        if let Some(value) = value {
            out += &format!(
                "- **Estimated {label}:** {}\n",
                duration_text(value.as_str())
            );
        }
    }
    out += "\n";
    out
}

/// The `## Components` section, when the scenario has a component graph.
fn components(spec: &crate::api::DisasterRecoverySpec) -> String {
    let mut out = String::new();
    if !spec.components.is_empty() {
        out += "## Components\n\n";
        for component in &spec.components {
            out += &format!("- {}", component.name);
            if !component.depends_on.is_empty() {
                out += &format!(" (depends on: {})", component.depends_on.join(", "));
            }
            out += "\n";
        }
        out += "\n";
    }
    out
}

/// The sections the runbook had that this form has no place for, by their slugs.
fn other_sections(annotations: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    // Any other section the runbook had, by its slug.
    let known = |key: &str| {
        RESERVED.contains(&key)
            || STRUCTURED.contains(&key)
            || BEFORE_STEPS
                .iter()
                .chain(&AFTER_STEPS)
                .any(|(k, _)| *k == key)
    };
    for (key, body) in annotations {
        if let Some(key) = key.strip_prefix(ANNOTATION_PREFIX).filter(|k| !known(k)) {
            out += &section(&heading_of(key), body);
        }
    }
    out
}

fn render_step(kind: Kind, number: usize, step: &Step, details: Option<&StepDetails>) -> String {
    // Validations are written the way the seed writes them: field lines without a bullet.
    let bullet = if kind == Kind::Validation { "" } else { "- " };
    // A stored title counts only while the name still comes from it.
    let title = details
        .map(|d| one_line(&d.title))
        .filter(|t| step.name.starts_with(&markdown::slug(t, false)))
        .unwrap_or_else(|| heading_of(&step.name));
    let command = match (&step.command, &step.args) {
        (Some(command), _) => command.clone(),
        (None, Some(args)) => args.join(" "),
        (None, None) => String::new(),
    };
    let mut out = format!("### {} {number}: {title}\n\n", kind.heading());
    if let Some(text) = details.and_then(|d| d.text.as_ref()) {
        out += &format!("{text}\n\n");
    }
    out += &format!("**Command:**\n{}\n\n", code_block("bash", &command));

    // The written texts, as long as they still say what `expect` checks.
    let (mut output, mut result) = match details {
        Some(d) => (d.expected_output.clone(), d.expected_result.clone()),
        None => (None, None),
    };
    if expect::derive(output.as_deref(), result.as_deref(), &command) != step.expect {
        output = None;
        result = step.expect.as_ref().map(expect::describe);
    }
    if let Some(output) = output {
        out += &format!("**Expected Output:**\n{}\n\n", code_block("", &output));
    }
    let mut field = |key: &str, value: String| out += &format!("{bullet}**{key}:** {value}\n");
    if let Some(result) = result.filter(|r| !r.is_empty()) {
        field("Expected Result", one_line(&result));
    }
    if let Some(component) = &step.component {
        field("Component", component.clone());
    }
    if let Some(timeout) = &step.timeout {
        field("Timeout", duration_text(timeout.as_str()));
    }
    if let Some(critical) = step.critical {
        field("Critical", if critical { "YES" } else { "NO" }.to_string());
    }
    if let Some(retries) = step.retries {
        field("Retries", retries.to_string());
    }
    if let Some(notes) = &step.notes {
        field("Notes", one_line(notes));
    }
    out + "\n---\n\n"
}

fn section(heading: &str, body: &str) -> String {
    if body.is_empty() {
        format!("## {heading}\n\n")
    } else {
        format!("## {heading}\n\n{body}\n\n")
    }
}

fn code_block(language: &str, content: &str) -> String {
    let fence = markdown::fence_for(content);
    format!("{fence}{language}\n{content}\n{fence}")
}

/// `post-recovery-actions` → `Post Recovery Actions`.
fn heading_of(slug: &str) -> String {
    let words = slug.split('-').map(|word| {
        let mut chars = word.chars();
        chars.next().map_or(String::new(), |c| {
            c.to_ascii_uppercase().to_string() + chars.as_str()
        })
    });
    words.collect::<Vec<_>>().join(" ")
}

/// `300s` → `300 seconds`, `15m` → `15 minutes`; other durations (`1h30m`) as they are.
fn duration_text(duration: &str) -> String {
    static SIMPLE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^([0-9]+(?:\.[0-9]+)?)([smh])$").expect("a valid regular expression")
    });
    let Some(parts) = SIMPLE.captures(duration) else {
        return duration.to_string();
    };
    let number = &parts[1];
    let unit = match &parts[2] {
        "s" => "second",
        "m" => "minute",
        _ => "hour",
    };
    let plural = if number == "1" { "" } else { "s" };
    format!("{number} {unit}{plural}")
}
