//! The timeline of a run as an SVG Gantt chart: one row per step, validation and rollback
//! step, one bar per attempt coloured by its verdict, a dashed outline as long as the step's
//! timeout behind it, and the RTO objective as a vertical line when it falls on the axis.
//! Plain SVG text, so the chart opens in any browser and renders beside the markdown report.

use std::fmt::Write as _;
use std::time::Duration;

use super::executor::{AttemptRecord, RunOutcome, RunRecord, StepRecord};
use super::format_elapsed;
use crate::api::disaster_recovery::StepPhase;
use crate::api::duration::format_duration;
use crate::plan::StepKind;

const LABEL_WIDTH: f64 = 240.0;
const CHART_WIDTH: f64 = 640.0;
const RIGHT_MARGIN: f64 = 30.0;
const HEADER: f64 = 56.0;
const ROW: f64 = 22.0;
const BAR: f64 = 14.0;
const FOOTER: f64 = 40.0;

/// The chart of a run. `rto` is the objective, drawn when it falls within the run.
pub fn gantt(record: &RunRecord, rto: Option<Duration>) -> String {
    let span = axis_span(record);
    let x = |t: Duration| LABEL_WIDTH + t.as_secs_f64() / span.as_secs_f64() * CHART_WIDTH;
    let width = LABEL_WIDTH + CHART_WIDTH + RIGHT_MARGIN;
    let height = HEADER + ROW * record.steps.len() as f64 + FOOTER;
    let bottom = HEADER + ROW * record.steps.len() as f64;

    let mut svg = String::new();
    // `write!` to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    let title = format!(
        "{}: {} in {}",
        record.scenario,
        outcome_word(record),
        format_elapsed(record.elapsed)
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(&title)
    );
    rows(&mut svg, record, width);
    time_axis(&mut svg, span, bottom, &x);
    for (i, step) in record.steps.iter().enumerate() {
        let y = HEADER + ROW * i as f64 + (ROW - BAR) / 2.0;
        if step.attempts.is_empty() {
            not_run(&mut svg, record, step, y);
        }
        for attempt in &step.attempts {
            draw_attempt(&mut svg, step, attempt, y, span, &x);
        }
    }
    if let Some(rto) = rto.filter(|&rto| rto <= span) {
        let rx = x(rto);
        let _ = writeln!(
            svg,
            r##"<line class="rto" x1="{rx:.1}" y1="{}" x2="{rx:.1}" y2="{bottom}" stroke="#c62828" stroke-width="2" stroke-dasharray="6 3"/><text x="{rx:.1}" y="{}" fill="#c62828" text-anchor="middle">RTO</text>"##,
            HEADER - 24.0,
            HEADER - 26.0
        );
    }
    legend(&mut svg, bottom + 24.0, rto.filter(|&rto| rto > span));
    svg.push_str("</svg>\n");
    svg
}

/// Alternate row shading and each row's label.
fn rows(svg: &mut String, record: &RunRecord, width: f64) {
    for (i, step) in record.steps.iter().enumerate() {
        let y = HEADER + ROW * i as f64;
        let fill = if i % 2 == 0 { "#f4f5f7" } else { "#ffffff" };
        let _ = writeln!(
            svg,
            r#"<rect class="row" x="0" y="{y}" width="{width}" height="{ROW}" fill="{fill}"/>"#
        );
        let label = match step.kind {
            StepKind::Step => step.name.clone(),
            StepKind::Validation => format!("✓ {}", step.name),
            StepKind::Rollback => format!("↩ {}", step.name),
        };
        let colour = if step.kind == StepKind::Step {
            "#222"
        } else {
            "#555"
        };
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{:.1}" fill="{colour}">{}</text>"#,
            y + ROW / 2.0 + 4.0,
            escape(&label)
        );
    }
}

/// The time axis, over the rows.
fn time_axis(svg: &mut String, span: Duration, bottom: f64, x: &dyn Fn(Duration) -> f64) {
    let tick = tick_interval(span);
    let mut t = Duration::ZERO;
    while t <= span {
        let tx = x(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{tx:.1}" y1="{top}" x2="{tx:.1}" y2="{bottom}" stroke="#d0d4da" stroke-width="1"/><text x="{tx:.1}" y="{label}" text-anchor="middle" fill="#555">{}</text>"##,
            escape(&format_elapsed(t)),
            top = HEADER - 4.0,
            label = HEADER - 10.0,
        );
        t += tick;
    }
}

/// Why a row has no bar.
fn not_run(svg: &mut String, record: &RunRecord, step: &StepRecord, y: f64) {
    let why = match step.phase {
        StepPhase::Skipped => "skipped",
        _ if step.kind == StepKind::Rollback && record.outcome == RunOutcome::Succeeded => {
            "not needed"
        }
        _ => "not started",
    };
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" fill="#888" font-style="italic">{why}</text>"##,
        LABEL_WIDTH + 4.0,
        y + BAR - 3.0
    );
}

/// One attempt: the timeout outline, then the bar with a tooltip.
fn draw_attempt(
    svg: &mut String,
    step: &StepRecord,
    attempt: &AttemptRecord,
    y: f64,
    span: Duration,
    x: &impl Fn(Duration) -> f64,
) {
    let start = x(attempt.start);
    if let Some(timeout) = step.timeout {
        let (top, bottom) = (y - 1.5, y + BAR + 1.5);
        let limit = attempt.start + timeout;
        // A timeout beyond the axis is drawn open on the right: a 5m timeout on a 2s run
        // would otherwise flatten every bar.
        let outline = if limit <= span {
            let end = x(limit);
            format!("M{start:.1} {top:.1}H{end:.1}V{bottom:.1}H{start:.1}Z")
        } else {
            let end = x(span);
            format!("M{end:.1} {top:.1}H{start:.1}V{bottom:.1}H{end:.1}")
        };
        let _ = writeln!(
            svg,
            r##"<path class="timeout" d="{outline}" fill="none" stroke="#9aa3ad" stroke-dasharray="3 2"/>"##
        );
    }
    let width = (x(attempt.end()) - start).max(2.0);
    let timeout = step
        .timeout
        .map(|t| format!(" of {}", format_duration(t)))
        .unwrap_or_default();
    let mut tooltip = format!(
        "{} attempt {}: {:?} in {}{timeout}",
        step.name,
        attempt.number,
        attempt.phase,
        format_elapsed(attempt.duration)
    );
    if !attempt.message.is_empty() {
        tooltip += &format!(" — {}", attempt.message);
    }
    let _ = writeln!(
        svg,
        r#"<rect class="attempt" data-step="{}" data-attempt="{}" x="{start:.1}" y="{y:.1}" width="{width:.1}" height="{BAR}" rx="2" fill="{}"><title>{}</title></rect>"#,
        escape(&step.name),
        attempt.number,
        phase_colour(attempt),
        escape(&tooltip)
    );
}

fn legend(svg: &mut String, y: f64, rto_beyond: Option<Duration>) {
    let entries = [
        ("#2e7d32", "succeeded"),
        ("#c62828", "failed"),
        ("#ef6c00", "timed out"),
        ("#9e9e9e", "interrupted"),
    ];
    let mut lx = 10.0;
    for (colour, name) in entries {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{}" y="{y:.1}">{name}</text>"#,
            y - 10.0,
            lx + 16.0
        );
        lx += 110.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{lx}" y="{:.1}" width="24" height="12" fill="none" stroke="#9aa3ad" stroke-dasharray="3 2"/><text x="{}" y="{y:.1}">timeout</text>"##,
        y - 10.0,
        lx + 30.0
    );
    if let Some(rto) = rto_beyond {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{y:.1}" fill="#555">RTO objective {} (beyond the axis)</text>"##,
            lx + 110.0,
            format_duration(rto)
        );
    }
}

fn phase_colour(attempt: &AttemptRecord) -> &'static str {
    match attempt.phase {
        _ if attempt.interrupted => "#9e9e9e",
        StepPhase::Succeeded => "#2e7d32",
        StepPhase::TimedOut => "#ef6c00",
        _ => "#c62828",
    }
}

fn outcome_word(record: &RunRecord) -> &'static str {
    match record.outcome {
        RunOutcome::Succeeded if record.degraded => "Succeeded (degraded)",
        RunOutcome::Succeeded => "Succeeded",
        RunOutcome::Failed => "Failed",
        RunOutcome::Interrupted => "Interrupted",
    }
}

/// The length of the time axis: the run, or the latest attempt end if later; never zero, so
/// that scaling never divides by it.
fn axis_span(record: &RunRecord) -> Duration {
    record
        .steps
        .iter()
        .flat_map(|s| &s.attempts)
        .map(AttemptRecord::end)
        .fold(record.elapsed, Duration::max)
        .max(Duration::from_millis(10))
}

/// A round interval (1, 2 or 5 times a power of ten seconds) that puts 4 to 10 ticks on the
/// axis.
fn tick_interval(span: Duration) -> Duration {
    let rough = span.as_secs_f64() / 6.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * power);
    Duration::from_secs_f64(step.max(0.001))
}

/// Text made safe for SVG content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0; command output may have them.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(
            tick_interval(Duration::from_secs(12)),
            Duration::from_secs(2)
        );
        assert_eq!(
            tick_interval(Duration::from_millis(900)),
            Duration::from_millis(200)
        );
        assert_eq!(
            tick_interval(Duration::from_secs(600)),
            Duration::from_secs(100)
        );
    }

    #[test]
    fn escaping_keeps_the_svg_well_formed() {
        assert_eq!(
            escape("a<b & \"c\"\u{1b}"),
            "a&lt;b &amp; &quot;c&quot;\u{fffd}"
        );
    }
}
