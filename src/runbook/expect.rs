//! Which expected-output texts of a runbook become machine-checked `expect`s.
//!
//! Only text that says unambiguously what to check becomes an `Expect`; any other text stays
//! prose for the engineer (it is kept either way). `describe` writes an `Expect` as a text that
//! `from_result` reads back as the same `Expect`, so `render` can write expectations that came
//! without a text.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::api::disaster_recovery::{Expect, JsonExpect};

/// The expectation of an `**Expected Output:**` code block, which shows literal output: the
/// output must contain it, if it is one line without a placeholder (`...`, `<pid>`).
pub(super) fn from_output(block: &str) -> Option<Expect> {
    let text = block.trim();
    let placeholder = text.contains("...") || text.contains('…') || text.contains('<');
    if text.is_empty() || text.contains('\n') || placeholder {
        return None;
    }
    Some(Expect {
        output_contains: Some(text.to_string()),
        ..Expect::default()
    })
}

/// The expectation of an `**Expected Result:**` text, made of clauses joined by "with" or
/// "and", every one of which must be understood (else the text is prose):
///
/// - `HTTP 200` / `HTTP 200 OK`, when the command is a lone `curl -f`: exit code 0;
/// - `exit code N`;
/// - `output contains "text"`, `output matches "regex"`;
/// - a quoted string or a word in capitals (`PONG`): the output contains it;
/// - `field: value` with a JSON value (`trading: true`, `status: "ok"`): a JSON field.
pub(super) fn from_result(text: &str, command: &str) -> Option<Expect> {
    let mut expect = Expect::default();
    for clause in clauses(text) {
        expect = combine(expect, clause_expect(clause, command)?)?;
    }
    (expect != Expect::default()).then_some(expect)
}

/// The expectation of a step with these texts.
pub(super) fn derive(output: Option<&str>, result: Option<&str>, command: &str) -> Option<Expect> {
    let output = output.and_then(from_output);
    let result = result.and_then(|r| from_result(r, command));
    match (output, result) {
        (Some(a), Some(b)) => combine(a, b),
        (a, b) => a.or(b),
    }
}

/// An `**Expected Result:**` text that `from_result` reads as `expect`.
pub(super) fn describe(expect: &Expect) -> String {
    let mut clauses = Vec::new();
    if let Some(code) = expect.exit_code {
        clauses.push(format!("exit code {code}"));
    }
    if let Some(text) = &expect.output_contains {
        clauses.push(quote(text));
    }
    if let Some(re) = &expect.output_matches {
        clauses.push(format!("output matches {}", quote(re)));
    }
    if let Some(json) = &expect.json {
        let bare = matches!(
            serde_json::from_str::<Value>(&json.equals),
            Ok(Value::Bool(_) | Value::Null | Value::Number(_))
        ) && json.equals.trim() == json.equals;
        let value = if bare {
            json.equals.clone()
        } else {
            quote(&json.equals)
        };
        clauses.push(format!("{}: {value}", json.path));
    }
    clauses.join(" and ")
}

fn clause_expect(clause: &str, command: &str) -> Option<Expect> {
    let mut expect = Expect::default();
    let lower = clause.to_ascii_lowercase();
    if lower == "http 200" || lower == "http 200 ok" {
        // curl -f exits 0 only for a successful HTTP status; without -f the code says nothing.
        if !lone_curl_fail(command) {
            return None;
        }
        expect.exit_code = Some(0);
    } else if let Some(code) = strip_prefix_ci(clause, "exit code") {
        expect.exit_code = Some(code.trim_start_matches(':').trim().parse().ok()?);
    } else if let Some(re) = strip_prefix_ci(clause, "output matches ") {
        let re = quoted(re.trim())?;
        Regex::new(&re).ok()?;
        expect.output_matches = Some(re);
    } else if let Some(text) = strip_prefix_ci(clause, "output contains ") {
        expect.output_contains = Some(quoted(text.trim())?);
    } else if let Some(text) = quoted(clause) {
        expect.output_contains = Some(text);
    } else if is_capitals(clause) {
        expect.output_contains = Some(clause.to_string());
    } else {
        expect.json = Some(json_field(clause)?);
    }
    Some(expect)
}

/// Splits at " with " and " and " outside quotes; trims each clause and a final full stop.
fn clauses(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let (mut out, mut start, mut quote, mut i) = (Vec::new(), 0, None, 0);
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(b'"') if b == b'\\' => i += 1, // the escaped byte cannot end the quote
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'`' => quote = Some(b),
            None => {
                let separator = [" with ", " and "].iter().find(|s| {
                    bytes
                        .get(i..i + s.len())
                        .is_some_and(|w| w.eq_ignore_ascii_case(s.as_bytes()))
                });
                if let Some(separator) = separator {
                    // Both ends are ASCII spaces, so both are char boundaries.
                    out.push(&text[start..i]);
                    i += separator.len();
                    start = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push(text.get(start..).unwrap_or(""));
    out.into_iter()
        .map(|c| c.trim().strip_suffix('.').unwrap_or(c.trim()).trim())
        .collect()
}

fn combine(a: Expect, b: Expect) -> Option<Expect> {
    // Two clauses that set one field differently are a contradiction, not a check.
    fn either<T: PartialEq>(a: Option<T>, b: Option<T>) -> Option<Option<T>> {
        match (a, b) {
            (Some(x), Some(y)) if x != y => None,
            (x, y) => Some(x.or(y)),
        }
    }
    Some(Expect {
        exit_code: either(a.exit_code, b.exit_code)?,
        output_contains: either(a.output_contains, b.output_contains)?,
        output_matches: either(a.output_matches, b.output_matches)?,
        json: either(a.json, b.json)?,
    })
}

/// Whether the command is one `curl` with `-f`/`--fail`: with a pipe or a list, the exit code
/// is another command's.
fn lone_curl_fail(command: &str) -> bool {
    if command.contains(['|', ';', '&', '\n']) {
        return false;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    let fail = |w: &str| match w.strip_prefix('-') {
        Some(long) if long.starts_with('-') => matches!(long, "-fail" | "-fail-with-body"),
        Some(short) => short.contains('f') && short.bytes().all(|b| b.is_ascii_alphabetic()),
        None => false,
    };
    words.iter().any(|w| *w == "curl" || w.ends_with("/curl")) && words.iter().any(|w| fail(w))
}

/// `"text"` (JSON string syntax) or `` `text` `` → text.
fn quoted(text: &str) -> Option<String> {
    let inner = if text.len() >= 2 && text.starts_with('"') && text.ends_with('"') {
        serde_json::from_str::<String>(text).ok()?
    } else {
        let inner = text.strip_prefix('`')?.strip_suffix('`')?;
        (!inner.contains('`')).then(|| inner.to_string())?
    };
    (!inner.is_empty()).then_some(inner)
}

/// `PONG`, `OK`: literal output, as prose words are not written in capitals.
fn is_capitals(text: &str) -> bool {
    text.len() >= 2
        && text.bytes().any(|b| b.is_ascii_uppercase())
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// `trading: true`, `"status": "ok"` → a JSON field and the text of its value.
fn json_field(clause: &str) -> Option<JsonExpect> {
    static PATH: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$").expect("a valid regular expression")
    });
    let (path, value) = clause.split_once(':')?;
    let path = path.trim();
    let path = path
        .strip_prefix('"')
        .and_then(|p| p.strip_suffix('"'))
        .unwrap_or(path);
    if !PATH.is_match(path) {
        return None;
    }
    let value = value.trim();
    let equals = match serde_json::from_str::<Value>(value).ok()? {
        Value::String(text) => text,
        Value::Bool(_) | Value::Null | Value::Number(_) => value.to_string(),
        Value::Array(_) | Value::Object(_) => return None,
    };
    Some(JsonExpect {
        path: path.to_string(),
        equals,
    })
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(text: &str) -> Expect {
        Expect {
            output_contains: Some(text.into()),
            ..Expect::default()
        }
    }

    #[test]
    fn seed_texts() {
        assert_eq!(
            from_output("Active: active (running)"),
            Some(contains("Active: active (running)"))
        );
        assert_eq!(
            from_result("PONG", "redis-cli ping"),
            Some(contains("PONG"))
        );
        assert_eq!(
            from_result("All processes show \"online\"", "pm2 jlist"),
            None
        );
        let curl = "curl -f http://localhost:3000/health/trading";
        assert_eq!(
            from_result("HTTP 200 OK with trading: true", curl),
            Some(Expect {
                exit_code: Some(0),
                json: Some(JsonExpect {
                    path: "trading".into(),
                    equals: "true".into()
                }),
                ..Expect::default()
            })
        );
    }

    #[test]
    fn ambiguous_texts_stay_prose() {
        assert_eq!(from_result("HTTP 200 OK", "curl http://x"), None);
        assert_eq!(from_result("HTTP 200 OK", "curl -f http://x | jq ."), None);
        assert_eq!(from_result("Status: online", "systemctl status"), None);
        assert_eq!(from_result("PONG and \"pong\"", "x"), None);
        assert_eq!(from_output("pid <pid> started"), None);
        assert_eq!(from_output("line 1\nline 2"), None);
    }

    #[test]
    fn describe_reads_back() {
        let expect = Expect {
            exit_code: Some(3),
            output_contains: Some("a \"quoted\" and with".into()),
            output_matches: Some("^ok$".into()),
            json: Some(JsonExpect {
                path: "services.0.state".into(),
                equals: "up and running".into(),
            }),
        };
        assert_eq!(from_result(&describe(&expect), "true"), Some(expect));
    }
}
