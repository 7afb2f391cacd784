//! Judging a finished attempt: its exit code and the tail of its output against
//! the step's `expect`. Shared by the operator and the local executor, so both
//! reach the same verdict on the same output.

use regex::Regex;

use crate::api::disaster_recovery::{Expect, StepPhase};
use crate::api::duration::GoDuration;

/// How an attempt ended, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// `None` when the process was killed before it could report one.
    pub exit_code: Option<i32>,
    /// Tail of the combined output.
    pub output: String,
    pub timed_out: bool,
}

/// The verdict on an attempt: its phase and, when it failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub phase: StepPhase,
    pub message: String,
}

/// Judges an attempt. Every expectation that is set must hold; the message
/// says what was expected and what was seen.
pub fn judge(
    expect: Option<&Expect>,
    finished: &Finished,
    timeout: Option<&GoDuration>,
) -> Verdict {
    if finished.timed_out {
        let limit = timeout.map_or("its deadline", GoDuration::as_str);
        return Verdict {
            phase: StepPhase::TimedOut,
            message: format!("did not finish within {limit}"),
        };
    }
    let expect = expect.cloned().unwrap_or_default();
    let wanted_code = expect.exit_code.unwrap_or(0);
    let mut problems = Vec::new();
    match finished.exit_code {
        Some(code) if code == wanted_code => {}
        Some(code) => problems.push(format!(
            "expected exit code {wanted_code}, got {code}{}",
            last_line(&finished.output)
        )),
        None => problems.push(format!("expected exit code {wanted_code}, got none")),
    }
    let output = finished.output.as_str();
    if let Some(needle) = &expect.output_contains
        && !output.contains(needle.as_str())
    {
        problems.push(format!(
            "expected output to contain {needle:?}, got {}",
            quote_tail(output)
        ));
    }
    if let Some(pattern) = &expect.output_matches {
        // Compiled again here, which is cheap; Plan::new has refused a pattern that does not
        // compile, so the error arm is only for callers that judge without a plan.
        match output_regex(pattern) {
            Ok(re) if re.is_match(output) => {}
            Ok(_) => problems.push(format!(
                "expected output to match /{pattern}/, got {}",
                quote_tail(output)
            )),
            Err(error) => problems.push(format!(
                "outputMatches /{pattern}/ is not a valid regular expression: {error}"
            )),
        }
    }
    if let Some(json) = &expect.json {
        match json_field(output, &json.path) {
            Ok(value) if value == json.equals => {}
            Ok(value) => problems.push(format!(
                "expected JSON {} = {:?}, got {value:?}",
                json.path, json.equals
            )),
            Err(why) => problems.push(format!(
                "expected JSON {} = {:?}, but {why}",
                json.path, json.equals
            )),
        }
    }
    if problems.is_empty() {
        Verdict {
            phase: StepPhase::Succeeded,
            message: String::new(),
        }
    } else {
        Verdict {
            phase: StepPhase::Failed,
            message: problems.join("; "),
        }
    }
}

/// The regex of `expect.outputMatches`, the one way it is compiled: by [`crate::plan::Plan::new`]
/// to decide whether the spec is valid, and by [`judge`] to use it.
pub fn output_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(pattern)
}

/// The text of a field of JSON output; strings without their quotes. The JSON
/// is the last line of the output that parses, so a command may log before it.
fn json_field(output: &str, path: &str) -> Result<String, String> {
    let document: serde_json::Value = serde_json::from_str(output.trim())
        .ok()
        .or_else(|| {
            output
                .lines()
                .rev()
                .find_map(|line| serde_json::from_str(line.trim()).ok())
        })
        .ok_or_else(|| "the output is not JSON".to_string())?;
    let mut value = &document;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        value = match value {
            serde_json::Value::Array(items) => {
                part.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            other => other.get(part),
        }
        .ok_or_else(|| format!("the output has no field {path}"))?;
    }
    Ok(match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// The end of the output, short enough for a condition message.
/// `: "<the output's last line>"` (what a failing program says last is most often why), or
/// nothing for no output.
fn last_line(output: &str) -> String {
    match output.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(line) => format!(": {}", quote_tail(line)),
        None => String::new(),
    }
}

fn quote_tail(output: &str) -> String {
    const MAX: usize = 200;
    let trimmed = output.trim_end();
    if trimmed.len() <= MAX {
        return format!("{trimmed:?}");
    }
    let mut start = trimmed.len() - MAX;
    while !trimmed.is_char_boundary(start) {
        start += 1;
    }
    format!("\"…{}\"", &trimmed[start..].escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::disaster_recovery::JsonExpect;

    fn finished(code: i32, output: &str) -> Finished {
        Finished {
            exit_code: Some(code),
            output: output.into(),
            timed_out: false,
        }
    }

    #[test]
    fn exit_code_zero_is_success_by_default() {
        assert_eq!(
            judge(None, &finished(0, ""), None).phase,
            StepPhase::Succeeded
        );
        let verdict = judge(None, &finished(3, ""), None);
        assert_eq!(verdict.phase, StepPhase::Failed);
        assert_eq!(verdict.message, "expected exit code 0, got 3");
    }

    #[test]
    fn an_unexpected_exit_code_is_told_with_the_last_line_of_output() {
        let output = "connecting\nBackup redis-x does not exist in namespace titan\n\n";
        let verdict = judge(None, &finished(1, output), None);
        assert_eq!(
            verdict.message,
            r#"expected exit code 0, got 1: "Backup redis-x does not exist in namespace titan""#
        );
    }

    #[test]
    fn an_expected_non_zero_exit_code_is_success() {
        let expect = Expect {
            exit_code: Some(3),
            ..Default::default()
        };
        assert_eq!(
            judge(Some(&expect), &finished(3, ""), None).phase,
            StepPhase::Succeeded
        );
    }

    #[test]
    fn output_contains_says_expected_and_got() {
        let expect = Expect {
            output_contains: Some("PONG".into()),
            ..Default::default()
        };
        assert_eq!(
            judge(Some(&expect), &finished(0, "PONG\n"), None).phase,
            StepPhase::Succeeded
        );
        let verdict = judge(Some(&expect), &finished(0, "Could not connect\n"), None);
        assert_eq!(verdict.phase, StepPhase::Failed);
        assert_eq!(
            verdict.message,
            r#"expected output to contain "PONG", got "Could not connect""#
        );
    }

    #[test]
    fn output_matches_and_json_fields() {
        let expect = Expect {
            output_matches: Some(r"online\s+\d+".into()),
            json: Some(JsonExpect {
                path: "services.1.state".into(),
                equals: "up".into(),
            }),
            ..Default::default()
        };
        let good = "online 3\n{\"services\":[{\"state\":\"down\"},{\"state\":\"up\"}]}";
        assert_eq!(
            judge(Some(&expect), &finished(0, good), None).phase,
            StepPhase::Succeeded
        );
        let bad = "offline\n{\"services\":[{\"state\":\"down\"},{\"state\":\"down\"}]}";
        let verdict = judge(Some(&expect), &finished(0, bad), None);
        assert!(
            verdict
                .message
                .contains(r"expected output to match /online\s+\d+/"),
            "{}",
            verdict.message
        );
        assert!(
            verdict
                .message
                .contains(r#"expected JSON services.1.state = "up", got "down""#),
            "{}",
            verdict.message
        );
        let not_json = judge(Some(&expect), &finished(0, "online 1"), None);
        assert!(
            not_json.message.contains("the output is not JSON"),
            "{}",
            not_json.message
        );
    }

    #[test]
    fn a_timeout_wins_over_everything() {
        let verdict = judge(
            None,
            &Finished {
                exit_code: None,
                output: String::new(),
                timed_out: true,
            },
            Some(&"30s".parse().unwrap()),
        );
        assert_eq!(verdict.phase, StepPhase::TimedOut);
        assert_eq!(verdict.message, "did not finish within 30s");
    }
}
