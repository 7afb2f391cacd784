//! A bound on the size of a run's status. etcd refuses objects over 1.5 MiB, and a status
//! that cannot be written stalls the run, so the text that comes from steps is cut to fit:
//! all outputs together to [`OUTPUT_BUDGET`] (shared fairly: short outputs stay whole, the
//! long ones split the rest and keep their ends), every message to [`MAX_MESSAGE`] (keeping its
//! start). Sizes are counted as JSON, where a control byte takes six.

use crate::api::disaster_recovery::StepStatus;

/// The most output, as JSON bytes, all the steps of a run keep in status together.
pub const OUTPUT_BUDGET: usize = 256 * 1024;
/// The most a step's message takes, as JSON bytes.
pub const MAX_MESSAGE: usize = 1024;
/// What marks a cut.
const CUT: &str = "…";

/// Cuts the outputs and messages of `lists` (steps, validations, rollback) to their bounds.
pub fn bound(lists: [&mut Vec<StepStatus>; 3]) {
    let mut statuses: Vec<&mut StepStatus> = lists.into_iter().flatten().collect();
    for status in statuses.iter_mut() {
        if let Some(message) = &mut status.message {
            keep_start(message, MAX_MESSAGE);
        }
    }
    let sizes: Vec<usize> = statuses
        .iter()
        .map(|s| s.output.as_deref().map_or(0, json_len))
        .collect();
    let share = fair_share(&sizes, OUTPUT_BUDGET);
    for status in statuses {
        if let Some(output) = &mut status.output {
            keep_end(output, share);
        }
    }
}

/// The largest per-item limit under which `sizes` sum to at most `budget` (max-min fairness):
/// items under it keep their size, and the others get it.
fn fair_share(sizes: &[usize], budget: usize) -> usize {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    let mut left = budget;
    for (i, &size) in sorted.iter().enumerate() {
        let share = left / (sorted.len() - i);
        if size > share {
            return share;
        }
        left -= size;
    }
    usize::MAX
}

/// Bytes `c` takes in a JSON string, as serde_json writes it.
fn char_json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn json_len(text: &str) -> usize {
    text.chars().map(char_json_len).sum()
}

/// Keeps the end of `text` within `max` JSON bytes, the cut marked.
fn keep_end(text: &mut String, max: usize) {
    if json_len(text) <= max {
        return;
    }
    let mut used = CUT.len();
    let mut start = text.len();
    for (at, c) in text.char_indices().rev() {
        used += char_json_len(c);
        if used > max {
            break;
        }
        start = at;
    }
    *text = format!("{CUT}{}", &text[start..]);
}

/// Keeps the start of `text` within `max` JSON bytes, the cut marked.
fn keep_start(text: &mut String, max: usize) {
    if json_len(text) <= max {
        return;
    }
    let mut used = CUT.len();
    let mut end = 0;
    for (at, c) in text.char_indices() {
        used += char_json_len(c);
        if used > max {
            break;
        }
        end = at + c.len_utf8();
    }
    text.truncate(end);
    text.push_str(CUT);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RunStatus;

    fn step(name: &str, output: &str) -> StepStatus {
        StepStatus {
            name: name.into(),
            output: Some(output.into()),
            ..Default::default()
        }
    }

    #[test]
    fn short_outputs_stay_whole_and_long_ones_share_the_rest() {
        assert_eq!(fair_share(&[10, 20], 100), usize::MAX);
        assert_eq!(fair_share(&[10, 1000, 1000], 100), 45);
        let mut steps = vec![step("a", "PONG"), step("b", &"x".repeat(OUTPUT_BUDGET))];
        let mut validations = vec![step("c", &format!("start{}end", "y".repeat(OUTPUT_BUDGET)))];
        bound([&mut steps, &mut validations, &mut vec![]]);
        assert_eq!(steps[0].output.as_deref(), Some("PONG"));
        let (b, c) = (
            steps[1].output.as_ref().unwrap(),
            validations[0].output.as_ref().unwrap(),
        );
        assert!(c.starts_with(CUT) && c.ends_with("yend"), "the end is kept");
        let total = 4 + json_len(b) + json_len(c);
        assert!(
            total <= OUTPUT_BUDGET && total > OUTPUT_BUDGET - 8,
            "{total}"
        );
    }

    #[test]
    fn control_bytes_count_as_json_writes_them() {
        let mut out = "\u{1}".repeat(100);
        keep_end(&mut out, 60);
        let json = serde_json::to_string(&out).unwrap();
        assert!(json.len() - 2 <= 60, "{json}");
        assert_eq!(json_len(&out), json.len() - 2);
    }

    #[test]
    fn messages_keep_their_start_on_a_character_boundary() {
        let mut message = format!("why: {}", "é".repeat(MAX_MESSAGE));
        keep_start(&mut message, MAX_MESSAGE);
        assert!(message.starts_with("why: é") && message.ends_with(CUT));
        assert!(json_len(&message) <= MAX_MESSAGE);
    }

    /// The worst the API allows: 300 steps, each with a full output tail of control bytes and
    /// a long message, stays far below etcd's 1.5 MiB.
    #[test]
    fn the_largest_status_fits_in_an_object() {
        let many = || -> Vec<StepStatus> {
            (0..crate::api::disaster_recovery::MAX_STEPS)
                .map(|i| StepStatus {
                    message: Some("\u{7}".repeat(4000)),
                    ..step(&format!("step-{i}"), &"\u{1b}[0m".repeat(1000))
                })
                .collect()
        };
        let (mut steps, mut validations, mut rollback) = (many(), many(), many());
        let before = serde_json::to_vec(&steps).unwrap().len() * 3;
        bound([&mut steps, &mut validations, &mut rollback]);
        let status = RunStatus {
            steps,
            validations,
            rollback,
            ..Default::default()
        };
        let size = serde_json::to_vec(&status).unwrap().len();
        assert!(before > 3 << 20, "the unbounded status was {before} bytes");
        assert!(size < 640 * 1024, "{size} bytes");
    }
}
