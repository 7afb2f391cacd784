//! The durations of the API, parsed when a resource is read, so that code past serde only sees
//! a [`Duration`] and a bad text is refused naming its field instead of becoming zero later.
//!
//! Each type's schema has the same pattern its parser checks: what the API server admits, the
//! operator can read. That matters beyond the one resource, since a single object that does not
//! deserialize makes a whole watch list fail.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Go/Kubernetes duration syntax: `300s`, `5m`, `1h30m`, `1.5h`, or `0`. At most nine digits
/// before a unit, and [`MAX_LENGTH`] in all, so that no admitted text overflows.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]{1,9}(\.[0-9]+)?(ms|s|m|h))+)$";
/// A retention age: whole numbers with days, hours, minutes or seconds (`7d`, `1d12h`), with
/// the same bounds as [`DURATION_PATTERN`].
pub const AGE_PATTERN: &str = r"^([0-9]{1,9}(d|h|m|s))+$";
/// The longest duration or age text.
pub const MAX_LENGTH: usize = 64;

/// A text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration like 300s, 5m, 1h30m or 1.5h")]
pub struct DurationError(pub String);

/// A text that is not a retention age.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an age like 7d, 36h or 1d12h")]
pub struct AgeError(pub String);

/// A duration of a spec (a timeout, an objective, a wait), as written and as parsed.
///
/// Parsed by kube's Go-compatible [`kube::core::Duration`], but only once the text matches
/// [`DURATION_PATTERN`]: on its own, kube's parser reads `""` as zero, accepts negative
/// durations and panics on `99999999999999999999h`. The text is kept because it is what the
/// user wrote and what serializes back (kube would print `1h30m` as `5400s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    duration: Duration,
}

impl GoDuration {
    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for GoDuration {
    type Error = DurationError;

    fn try_from(text: String) -> Result<Self, DurationError> {
        static PATTERN: LazyLock<Regex> = LazyLock::new(|| Regex::new(DURATION_PATTERN).unwrap());
        if text.len() > MAX_LENGTH || !PATTERN.is_match(&text) {
            return Err(DurationError(text));
        }
        match text.parse::<kube::core::Duration>() {
            Ok(parsed) => Ok(Self {
                duration: parsed.into(),
                text,
            }),
            Err(_) => Err(DurationError(text)),
        }
    }
}

/// A retention age (`spec.retention.maxAge`, `backup prune --max-age`): Go duration syntax
/// with whole numbers only, plus days, which Go has not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionAge {
    text: String,
    duration: Duration,
}

impl RetentionAge {
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl TryFrom<String> for RetentionAge {
    type Error = AgeError;

    /// Checked arithmetic rather than the pattern guards overflow: the command line has no
    /// length limit.
    fn try_from(text: String) -> Result<Self, AgeError> {
        let mut seconds: u64 = 0;
        let mut number: Option<u64> = None;
        for c in text.chars() {
            if let Some(digit) = c.to_digit(10) {
                number = number
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(digit)));
                if number.is_none() {
                    return Err(AgeError(text));
                }
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return Err(AgeError(text)),
            };
            // `take` leaves None: a unit without its number, or `7dh`, is refused.
            let part = number.take().and_then(|n| n.checked_mul(unit));
            match part.and_then(|part| seconds.checked_add(part)) {
                Some(sum) => seconds = sum,
                None => return Err(AgeError(text)),
            }
        }
        if text.is_empty() || number.is_some() {
            return Err(AgeError(text)); // nothing, or a number without its unit
        }
        Ok(Self {
            duration: Duration::from_secs(seconds),
            text,
        })
    }
}

/// Both types: parsed from, shown and serialized as their text, and a string with their
/// pattern in the CRD schema, so that the API server refuses `soon`.
macro_rules! text_type {
    ($type:ty, $error:ty, $pattern:expr) => {
        impl FromStr for $type {
            type Err = $error;

            fn from_str(text: &str) -> Result<Self, $error> {
                Self::try_from(text.to_owned())
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.text)
            }
        }

        /// With a visitor rather than `serde(try_from = "String")`, so that the error is
        /// raised inside the field and serde_yaml names the field, not its parent.
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl de::Visitor<'_> for Visitor {
                    type Value = $type;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a string matching {}", $pattern)
                    }

                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$type, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Visitor)
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.text)
            }
        }

        impl schemars::JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                stringify!($type).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "maxLength": MAX_LENGTH,
                })
            }
        }
    };
}

text_type!(GoDuration, DurationError, DURATION_PATTERN);
text_type!(RetentionAge, AgeError, AGE_PATTERN);

/// Formats a duration the way Go prints one rounded to the second: `4m12s`, `1h0m5s`, `0s`,
/// for what status and reports say took how long. (kube's Display would print `252s`.)
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

    fn go(text: &str) -> Result<Duration, DurationError> {
        text.parse::<GoDuration>().map(|d| d.duration())
    }

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("300s", Duration::from_secs(300)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1.5h", Duration::from_secs(5_400)),
            ("2h45m30s", Duration::from_secs(9_930)),
            ("1m30.5s", Duration::from_millis(90_500)),
            ("500ms", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("999999999h", Duration::from_secs(999_999_999 * 3_600)),
        ];
        for (text, expected) in cases {
            assert_eq!(go(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn what_kube_alone_would_misread_is_refused() {
        let long = "1h".repeat(33);
        for text in [
            "",
            "soon",
            "5",
            "s",
            "5 m",
            "5min",
            "1d",
            "-5s",
            "+5s",
            "1h0",
            "1.2.3s",
            " 5m",
            // kube's parser panics on these two.
            "99999999999999999999h",
            "1e300h",
            &long,
        ] {
            let error = go(text).expect_err(text);
            assert_eq!(
                error.to_string(),
                format!("{text:?} is not a duration like 300s, 5m, 1h30m or 1.5h")
            );
        }
    }

    #[test]
    fn a_duration_serializes_as_written() {
        let parsed: GoDuration = serde_json::from_str(r#""1h30m""#).unwrap();
        assert_eq!(parsed.duration(), Duration::from_secs(5_400));
        assert_eq!(serde_json::to_string(&parsed).unwrap(), r#""1h30m""#);
        let error = serde_json::from_str::<GoDuration>(r#""soon""#).unwrap_err();
        assert!(
            error.to_string().contains(r#""soon" is not a duration"#),
            "{error}"
        );
    }

    #[test]
    fn ages_parse_with_days_and_refuse_overflow() {
        let age = |text: &str| text.parse::<RetentionAge>().map(|a| a.duration());
        assert_eq!(age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(age("1d12h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(age("90s"), Ok(Duration::from_secs(90)));
        for bad in [
            "",
            "7",
            "d",
            "7dh",
            "7w",
            "1.5h",
            "-1d",
            "99999999999999999999d",
            "213503982334602d", // 2^64 seconds and a bit: fits u64 days, not seconds
        ] {
            assert_eq!(age(bad), Err(AgeError(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn the_patterns_admit_only_what_parses() {
        let duration = Regex::new(DURATION_PATTERN).unwrap();
        let age = Regex::new(AGE_PATTERN).unwrap();
        for text in ["0", "1.5h", "999999999h999999999m", "500ms"] {
            assert!(duration.is_match(text) && go(text).is_ok(), "{text}");
        }
        for text in ["soon", "-5s", "1d", "9999999999h", ""] {
            assert!(!duration.is_match(text), "{text}");
        }
        assert!(age.is_match("999999999d") && "999999999d".parse::<RetentionAge>().is_ok());
        assert!(!age.is_match("9999999999d"));
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
                go(expected).map(|d| d.as_secs()),
                Ok(duration.as_secs_f64().round() as u64)
            );
        }
    }
}
