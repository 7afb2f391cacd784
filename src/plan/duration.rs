//! Go/Kubernetes-style durations (`300s`, `5m`, `1h30m`, `1.5h`), the syntax the API uses for
//! timeouts and objectives.

use std::time::Duration;

/// A text that is not a Go-style duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration like 300s, 5m, 1h30m or 1.5h")]
pub struct DurationError {
    /// The text that did not parse.
    pub text: String,
}

/// Parses a Go-style duration: one or more `<number><unit>` pairs, where the number may have a
/// fraction and the unit is one of `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`; a bare `0` is
/// also accepted, as in Go. Negative durations are rejected: nothing in the API can use one.
///
/// # Errors
///
/// [`DurationError`] when the text is not such a duration or exceeds [`Duration::MAX`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError {
        text: text.to_owned(),
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(invalid());
    }

    // Nanoseconds in u128, so that sums of large parts overflow into an error, not a wrap.
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after_number) = rest.split_at(number_end);
        let unit_end = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_end);
        rest = after_unit;

        let unit_nanos = unit_nanos(unit).ok_or_else(invalid)?;
        let part = part_nanos(number, unit_nanos).ok_or_else(invalid)?;
        total = total.checked_add(part).ok_or_else(invalid)?;
    }

    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// Nanoseconds in `number` units, where `number` is `12`, `1.5`, `.5` or `5.`, as in Go.
fn part_nanos(number: &str, unit_nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    // Digits beyond the 20th are below a nanosecond even in hours; dropping them keeps the
    // arithmetic within u128.
    let fraction = &fraction[..fraction.len().min(20)];
    let fraction_nanos = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().ok()?;
        digits * unit_nanos / 10u128.pow(fraction.len() as u32)
    };
    whole.checked_mul(unit_nanos)?.checked_add(fraction_nanos)
}

/// Formats a duration the way Go prints one rounded to the second: `4m12s`, `1h0m5s`, `0s`.
/// Recovery times are reported to the second; the result parses back with [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() >= 500_000_000);
    let (hours, minutes, seconds) = (secs / 3_600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("300s", Duration::from_secs(300)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1.5h", Duration::from_secs(5_400)),
            ("2h45m30s", Duration::from_secs(9_930)),
            ("1m30.5s", Duration::from_millis(90_500)),
            ("500ms", Duration::from_millis(500)),
            (".5s", Duration::from_millis(500)),
            ("1500us", Duration::from_micros(1_500)),
            ("10ns", Duration::from_nanos(10)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for text in [
            "", "5", "s", "5 m", "5min", "1d", "-5s", "1.2.3s", ".s", "5m ", " 5m",
        ] {
            let error = parse_duration(text).expect_err(text);
            assert_eq!(
                error.to_string(),
                format!("{text:?} is not a duration like 300s, 5m, 1h30m or 1.5h")
            );
        }
        assert!(parse_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn formats_like_go_to_the_second() {
        let cases = [
            (Duration::from_secs(252), "4m12s"),
            (Duration::from_secs(3_605), "1h0m5s"),
            (Duration::from_secs(7_200), "2h0m0s"),
            (Duration::from_secs(59), "59s"),
            (Duration::ZERO, "0s"),
            (Duration::from_millis(400), "0s"),
            (Duration::from_millis(999), "1s"),
            (Duration::from_millis(59_600), "1m0s"),
        ];
        for (duration, expected) in cases {
            assert_eq!(format_duration(duration), expected, "{duration:?}");
            assert_eq!(
                parse_duration(expected).map(|d| d.as_secs()),
                Ok(duration.as_secs_f64().round() as u64)
            );
        }
    }
}
