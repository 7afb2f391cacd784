//! The progress of a local run on stdout: one line per event, and on a terminal a status line
//! below them, redrawn as time passes, that shows what is running and for how long. When
//! stdout is not a terminal (CI, a pipe, a file) only the plain lines are written, without
//! colours or control sequences.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use super::executor::{RunOutcome, RunRecord, StepRecord};
use super::format_elapsed;
use crate::api::disaster_recovery::StepPhase;
use crate::api::duration::format_duration;
use crate::plan::StepKind;

/// Prints a run's progress; see the module documentation.
pub struct Display {
    out: std::io::Stdout,
    /// Whether stdout is a terminal: redraw a status line and use colours.
    live: bool,
    /// Whether to use colours: on a terminal, unless `NO_COLOR` is set.
    colour: bool,
    /// Whether the status line is on the screen now, to be cleared before the next line.
    status_shown: bool,
}

impl Default for Display {
    fn default() -> Self {
        Self::new()
    }
}

impl Display {
    /// A display for stdout, live when stdout is a terminal.
    pub fn new() -> Self {
        let out = std::io::stdout();
        let live = out.is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
        Display {
            out,
            live,
            colour: live && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            status_shown: false,
        }
    }

    /// Prints a line above the status line. Output errors are ignored: a closed stdout must
    /// not stop a recovery.
    pub fn line(&mut self, text: &str) {
        self.clear_status();
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// The closing lines: outcome, achieved RTO against the objective, what failed.
    pub fn summary(&mut self, record: &RunRecord, rto: Option<Duration>) {
        self.clear_status();
        let verdict = match record.outcome {
            RunOutcome::Succeeded if record.degraded => "SUCCEEDED (degraded)",
            RunOutcome::Succeeded => "SUCCEEDED",
            RunOutcome::Failed => "FAILED",
            RunOutcome::Interrupted => "INTERRUPTED",
        };
        let colour = match record.outcome {
            RunOutcome::Succeeded if !record.degraded => GREEN,
            RunOutcome::Succeeded => YELLOW,
            _ => RED,
        };
        let mut text = format!(
            "Recovery {} in {}",
            self.paint(colour, verdict),
            format_elapsed(record.elapsed)
        );
        match (record.achieved_rto(), rto) {
            (Some(achieved), Some(rto)) if achieved <= rto => {
                text += &format!(": RTO objective {} met", format_duration(rto));
            }
            (Some(_), Some(rto)) => {
                text += &format!(": RTO objective {} MISSED", format_duration(rto));
            }
            _ => {}
        }
        self.line(&text);
        for step in record.critical_failures() {
            self.line(&format!("  failed: {}", describe_failure(step)));
        }
        for step in record.tolerated_failures() {
            self.line(&format!("  degraded: {}", describe_failure(step)));
        }
        for step in record.interrupted() {
            self.line(&format!("  stopped: {}", qualified(step)));
        }
        self.line(&format!("  logs: {}", record.logs));
    }

    fn event(&mut self, at: Duration, marker: &str, colour: &str, step: &StepRecord, rest: &str) {
        let text = format!(
            "{:>8}  {}  {}{}",
            format_elapsed(at),
            self.paint(colour, &format!("{marker:<7}")),
            qualified(step),
            rest
        );
        self.line(&text);
    }

    fn paint(&self, colour: &str, text: &str) -> String {
        if self.colour {
            format!("{colour}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn clear_status(&mut self) {
        if self.status_shown {
            let _ = write!(self.out, "\r\x1b[2K");
            self.status_shown = false;
        }
    }
}

impl super::executor::Observer for Display {
    fn attempt_started(&mut self, step: &StepRecord, number: u32) {
        let at = step.running_since.unwrap_or_default();
        let mut parts = Vec::new();
        if step.retries > 0 {
            parts.push(format!("attempt {number}/{}", step.retries + 1));
        }
        if let Some(timeout) = step.timeout {
            parts.push(format!("timeout {}", format_duration(timeout)));
        }
        let rest = format!("  {}", parts.join(", "));
        self.event(at, "start", BLUE, step, rest.trim_end());
    }

    fn attempt_ended(&mut self, step: &StepRecord) {
        let Some(attempt) = step.last_attempt() else {
            return;
        };
        let (marker, colour) = match attempt.phase {
            StepPhase::Succeeded => ("ok", GREEN),
            StepPhase::TimedOut => ("TIMEOUT", RED),
            _ if attempt.interrupted => ("stopped", YELLOW),
            _ => ("FAILED", RED),
        };
        let mut rest = format!("  after {}", format_elapsed(attempt.duration));
        if !attempt.message.is_empty() {
            rest += &format!(": {}", attempt.message);
        }
        if attempt.phase != StepPhase::Succeeded && !step.critical {
            rest += " (not critical)";
        }
        self.event(attempt.end(), marker, colour, step, &rest);
    }

    fn skipped(&mut self, step: &StepRecord) {
        self.line(&format!(
            "{:>8}  {}  {}",
            "",
            self.paint(DIM, &format!("{:<7}", "skip")),
            qualified(step)
        ));
    }

    fn tick(&mut self, elapsed: Duration, steps: &[StepRecord]) {
        if !self.live {
            return;
        }
        let running: Vec<String> = steps
            .iter()
            .filter_map(|s| {
                let since = s.running_since?;
                let limit = s
                    .timeout
                    .map(|t| format!("/{}", format_duration(t)))
                    .unwrap_or_default();
                Some(format!(
                    "{} {}{limit}",
                    s.name,
                    format_elapsed(elapsed.saturating_sub(since))
                ))
            })
            .collect();
        let ended = steps
            .iter()
            .filter(|s| !matches!(s.phase, StepPhase::Pending | StepPhase::Running))
            .count();
        let text = format!(
            "{} elapsed · {ended}/{} ended · running: {}",
            format_elapsed(elapsed),
            steps.len(),
            running.join(", ")
        );
        let text: String = text
            .chars()
            .take(terminal_width().saturating_sub(1))
            .collect();
        self.clear_status();
        let _ = write!(self.out, "{}", self.paint(DIM, &text));
        let _ = self.out.flush();
        self.status_shown = true;
    }
}

/// `validation x`, `rollback y` or just the name of a recovery step.
fn qualified(step: &StepRecord) -> String {
    match step.kind {
        StepKind::Step => step.name.clone(),
        StepKind::Validation => format!("validation {}", step.name),
        StepKind::Rollback => format!("rollback {}", step.name),
    }
}

/// `name (TimedOut after 3 attempts): message`.
fn describe_failure(step: &StepRecord) -> String {
    // The number of the last attempt: a cluster run's record folds the earlier ones.
    let attempts = step.last_attempt().map_or(0, |a| a.number);
    let plural = if attempts == 1 { "" } else { "s" };
    let message = step
        .last_attempt()
        .map(|a| a.message.as_str())
        .unwrap_or_default();
    format!(
        "{} ({:?} after {attempts} attempt{plural}): {message}",
        qualified(step),
        step.phase
    )
}

/// The width of the terminal on stdout; 80 when it cannot be told.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct it is given, nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

const RESET: &str = "\x1b[0m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const BLUE: &str = "\x1b[34m";
const DIM: &str = "\x1b[2m";
