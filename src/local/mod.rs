//! The no-cluster executor behind `titan-dr run`: a scenario run on this machine, each attempt
//! a local process, with the operator's plan, timeouts, retries, critical and rollback
//! semantics and expectations; a live display of its progress; and a post-incident report.
//!
//! - [`executor`] runs the scenario and records what happened in a [`RunRecord`];
//! - [`display`] shows the progress on stdout;
//! - [`report`] writes the markdown report and its SVG timeline.

pub mod display;
pub mod executor;
pub mod report;
mod svg;

use std::time::Duration;

pub use executor::{Options, RunOutcome, RunRecord, execute};

/// A duration as a person reads it at the scale of local steps: `213ms`, `2.13s`, `12.4s`,
/// `3m5s`.
/// [`crate::api::duration::format_duration`] rounds to whole seconds, which hides a 200 ms step.
pub fn format_elapsed(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{}ms", duration.as_millis())
    } else if secs < 10.0 {
        format!("{secs:.2}s")
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        crate::api::duration::format_duration(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_durations_keep_their_fraction() {
        assert_eq!(format_elapsed(Duration::from_millis(213)), "213ms");
        assert_eq!(format_elapsed(Duration::from_millis(2_134)), "2.13s");
        assert_eq!(format_elapsed(Duration::from_millis(12_440)), "12.4s");
        assert_eq!(format_elapsed(Duration::from_secs(185)), "3m5s");
    }
}
