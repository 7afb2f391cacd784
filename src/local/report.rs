//! The post-incident report of a local run: a markdown file with the outcome, the achieved
//! RTO against the objective, the timeline of every attempt against its timeout, validation
//! and rollback results and the output of what failed, and beside it an SVG Gantt chart of
//! the timeline that the markdown shows as an image.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::executor::{Logs, RunOutcome, RunRecord, StepRecord};
use super::{format_elapsed, svg};
use crate::api::disaster_recovery::{DisasterRecovery, StepPhase};
use crate::api::duration::format_duration;
use crate::plan::{Plan, StepKind};

/// Timestamps in UTC to the millisecond: finer is noise, coarser hides short steps.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// Lines of a failed attempt's output quoted in the report; the log has all of it.
const QUOTED_OUTPUT_LINES: usize = 20;

/// Writes `report_md` and the chart beside it (same name, `.svg`); returns the chart's path.
///
/// # Errors
///
/// When either file cannot be written.
pub fn write(
    report_md: &Path,
    record: &RunRecord,
    resource: &DisasterRecovery,
    plan: &Plan,
) -> std::io::Result<PathBuf> {
    let svg_path = report_md.with_extension("svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.svg".into());
    if let Some(dir) = report_md.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let rto = resource.rto_objective();
    std::fs::write(&svg_path, svg::gantt(record, rto))?;
    std::fs::write(report_md, markdown(record, resource, plan, &svg_name))?;
    Ok(svg_path)
}

/// The report as markdown; `svg_name` is the chart's file name, relative to the report.
pub fn markdown(
    record: &RunRecord,
    resource: &DisasterRecovery,
    plan: &Plan,
    svg_name: &str,
) -> String {
    let rto = resource.rto_objective();
    let mut out = String::new();
    // `write!` to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "# Recovery report: {}\n", record.scenario);
    if let Some(description) = &resource.spec.description {
        let _ = writeln!(out, "{}\n", description.trim());
    }
    summary_table(&mut out, record, plan, rto);
    let _ = writeln!(out, "![Timeline of the run]({svg_name})\n");
    timeline(&mut out, record);
    validations(&mut out, record);
    rollback(&mut out, record);
    failed_output(&mut out, record);
    let _ = match &record.logs {
        Logs::Dir(dir) => writeln!(
            out,
            "## Logs\n\nThe full output of every attempt is in `{}`, one file per attempt \
             (`<step>-<attempt>.log`).",
            dir.display()
        ),
        Logs::Jobs { namespace } => writeln!(
            out,
            "## Logs\n\nThe full output of each attempt is the log of its Job in namespace \
             `{namespace}` (`kubectl logs job/<name>`, the Job named in the timeline's log \
             column), while the operator keeps the run's Jobs."
        ),
    };
    out
}

fn summary_table(out: &mut String, record: &RunRecord, plan: &Plan, rto: Option<Duration>) {
    let outcome = match record.outcome {
        RunOutcome::Succeeded => "Succeeded",
        RunOutcome::Failed => "Failed",
        RunOutcome::Interrupted => "Interrupted (stopped before it ended; no rollback ran)",
    };
    let finished = record
        .started_at
        .checked_add(record.elapsed)
        .map(|t| t.strftime(TIME_FORMAT).to_string())
        .unwrap_or_default();
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| Outcome | **{outcome}** |");
    if record.degraded {
        let names = names(record.tolerated_failures());
        let _ = writeln!(
            out,
            "| Degraded | yes: non-critical {} failed |",
            cell(&names)
        );
    }
    for step in record.critical_failures() {
        let message = step
            .last_attempt()
            .map(|a| a.message.as_str())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| Failed step | `{}` ({:?}): {} |",
            step.name,
            step.phase,
            cell(message)
        );
    }
    let stopped = names(record.interrupted());
    if !stopped.is_empty() {
        let _ = writeln!(out, "| Stopped while running | {} |", cell(&stopped));
    }
    let _ = writeln!(
        out,
        "| Started | {} |",
        record.started_at.strftime(TIME_FORMAT)
    );
    let _ = writeln!(out, "| Finished | {finished} |");
    let _ = writeln!(out, "| Duration | {} |", format_elapsed(record.elapsed));
    let achieved = match record.achieved_rto() {
        Some(achieved) => format_elapsed(achieved),
        None => "not recovered".to_owned(),
    };
    let _ = writeln!(out, "| Achieved RTO | {achieved} |");
    let verdict = match (record.achieved_rto(), rto) {
        (_, None) => "no objective set".to_owned(),
        (Some(achieved), Some(rto)) if achieved <= rto => {
            format!("{} — **met**", format_duration(rto))
        }
        (Some(_), Some(rto)) => format!("{} — **missed**", format_duration(rto)),
        (None, Some(rto)) => format!("{} — **not met** (no recovery)", format_duration(rto)),
    };
    let _ = writeln!(out, "| RTO objective | {verdict} |");
    let path = plan.critical_path();
    let _ = writeln!(
        out,
        "| Planned worst case | {} along {} |\n",
        format_duration(path.worst_case),
        cell(&path.steps.join(" → "))
    );
}

/// One row per attempt, and one per step that never ran.
fn timeline(out: &mut String, record: &RunRecord) {
    let _ = writeln!(out, "## Timeline\n");
    let _ = writeln!(
        out,
        "| Step | Kind | Attempt | Result | Start | Duration | Timeout | Exit code | Message |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for step in &record.steps {
        let kind = kind_word(step.kind);
        if step.attempts.is_empty() {
            let phase = match step.phase {
                StepPhase::Skipped => "Skipped",
                _ if step.kind == StepKind::Rollback && record.outcome == RunOutcome::Succeeded => {
                    "Not needed"
                }
                _ => "Not started",
            };
            let _ = writeln!(
                out,
                "| `{}` | {kind} | – | {phase} | – | – | {} | – | |",
                step.name,
                timeout_text(step.timeout)
            );
            continue;
        }
        for attempt in &step.attempts {
            let result = if attempt.interrupted {
                "Interrupted".to_owned()
            } else {
                format!("{:?}", attempt.phase)
            };
            let share = step
                .timeout
                .filter(|t| !t.is_zero())
                .map(|t| {
                    let percent = attempt.duration.as_secs_f64() / t.as_secs_f64() * 100.0;
                    format!(" ({percent:.0}%)")
                })
                .unwrap_or_default();
            let exit = attempt
                .exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                out,
                "| `{}` | {kind} | {}/{} | {result} | +{} | {}{share} | {} | {exit} | {} |",
                step.name,
                attempt.number,
                step.retries + 1,
                format_elapsed(attempt.start),
                format_elapsed(attempt.duration),
                timeout_text(step.timeout),
                cell(&attempt.message)
            );
        }
    }
    out.push('\n');
}

fn validations(out: &mut String, record: &RunRecord) {
    let validations: Vec<&StepRecord> = record.of_kind(StepKind::Validation).collect();
    if validations.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Validations\n");
    for step in validations {
        let verdict = match step.phase {
            StepPhase::Succeeded => "Passed",
            StepPhase::Failed => "Failed",
            StepPhase::TimedOut => "TimedOut",
            StepPhase::Skipped => "Skipped",
            StepPhase::Pending | StepPhase::Running => "Not run",
        };
        let detail = step
            .last_attempt()
            .map(|a| {
                let mut text = format!(" in {}", format_elapsed(a.duration));
                if !a.message.is_empty() {
                    text += &format!(": {}", a.message);
                }
                text
            })
            .unwrap_or_default();
        let critical = if step.critical { "" } else { " (not critical)" };
        let _ = writeln!(out, "- **{verdict}** `{}`{critical}{detail}", step.name);
    }
    out.push('\n');
}

fn rollback(out: &mut String, record: &RunRecord) {
    let steps: Vec<&StepRecord> = record.of_kind(StepKind::Rollback).collect();
    if steps.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Rollback\n");
    if steps.iter().all(|s| s.attempts.is_empty()) {
        let _ = writeln!(out, "Not run: no critical step failed.\n");
        return;
    }
    for step in steps {
        let detail = match step.last_attempt() {
            Some(a) if a.message.is_empty() => format!(" in {}", format_elapsed(a.duration)),
            Some(a) => format!(" in {}: {}", format_elapsed(a.duration), a.message),
            None => String::new(),
        };
        let _ = writeln!(out, "- **{:?}** `{}`{detail}", step.phase, step.name);
    }
    out.push('\n');
}

/// The tail of every failed attempt's output, which is what an engineer reads first.
fn failed_output(out: &mut String, record: &RunRecord) {
    let failed: Vec<_> = record
        .steps
        .iter()
        .flat_map(|s| s.attempts.iter().map(move |a| (s, a)))
        .filter(|(_, a)| a.phase != StepPhase::Succeeded && !a.output.trim().is_empty())
        .collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(out, "## Output of failed attempts\n");
    for (step, attempt) in failed {
        let lines: Vec<&str> = attempt.output.lines().collect();
        let tail = lines[lines.len().saturating_sub(QUOTED_OUTPUT_LINES)..].join("\n");
        // A fence longer than any run of backticks in the output keeps it closed.
        let fence = "`".repeat(longest_backtick_run(&tail).max(2) + 1);
        let _ = writeln!(
            out,
            "`{}` attempt {} ({}):\n\n{fence}text\n{tail}\n{fence}\n",
            step.name,
            attempt.number,
            attempt.log.display()
        );
    }
}

fn kind_word(kind: StepKind) -> &'static str {
    match kind {
        StepKind::Step => "step",
        StepKind::Validation => "validation",
        StepKind::Rollback => "rollback",
    }
}

fn timeout_text(timeout: Option<Duration>) -> String {
    timeout.map_or_else(|| "none".to_owned(), format_duration)
}

fn names<'a>(steps: impl Iterator<Item = &'a StepRecord>) -> String {
    steps
        .map(|s| format!("`{}`", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text made safe for one cell of a markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}
