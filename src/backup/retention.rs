//! Which snapshots retention drops: a pure selection, so that it can be tested and shown
//! (`titan-dr backup prune --dry-run`) before anything is deleted.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::backup::Retention;

/// Retention rules; a snapshot goes when either rule drops it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many snapshots.
    pub keep_last: Option<u32>,
    /// Drop snapshots that started longer ago than this.
    pub max_age: Option<Duration>,
}

/// A retention age that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an age like 7d, 36h or 1d12h")]
pub struct AgeError(pub String);

impl RetentionPolicy {
    /// The policy of a Backup's `spec.retention`.
    ///
    /// # Errors
    ///
    /// [`AgeError`] when `maxAge` does not parse.
    pub fn from_spec(retention: &Retention) -> Result<Self, AgeError> {
        Ok(Self {
            keep_last: retention.keep_last,
            max_age: retention.max_age.as_deref().map(parse_age).transpose()?,
        })
    }
}

/// Parses a retention age: whole numbers with `d`, `h`, `m` or `s` (`7d`, `1d12h`), the
/// syntax of `spec.retention.maxAge`.
///
/// # Errors
///
/// [`AgeError`] for anything else.
pub fn parse_age(text: &str) -> Result<Duration, AgeError> {
    let invalid = || AgeError(text.to_owned());
    if text.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(digit)))
                    .ok_or_else(invalid)?,
            );
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let seconds = number.take().ok_or_else(invalid)?.checked_mul(unit);
        total = seconds
            .and_then(|s| total.checked_add(s))
            .ok_or_else(invalid)?;
    }
    if number.is_some() {
        return Err(invalid()); // a number without its unit
    }
    Ok(Duration::from_secs(total))
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub started_at: Timestamp,
}

/// The IDs of the snapshots that `policy` drops at `now`, oldest first.
///
/// The newest snapshot is always kept, even when it is older than `maxAge`: when backups
/// have been failing for longer than that, the last good one is the one that matters most.
pub fn select_pruned(
    candidates: &[Candidate],
    policy: &RetentionPolicy,
    now: Timestamp,
) -> Vec<String> {
    let mut newest_first: Vec<&Candidate> = candidates.iter().collect();
    newest_first.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let max_age = policy
        .max_age
        .and_then(|age| SignedDuration::try_from(age).ok());
    let mut pruned: Vec<String> = newest_first
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(index, candidate)| {
            let too_many = policy.keep_last.is_some_and(|keep| *index >= keep as usize);
            let too_old = max_age.is_some_and(|age| now.duration_since(candidate.started_at) > age);
            too_many || too_old
        })
        .map(|(_, candidate)| candidate.id.clone())
        .collect();
    pruned.reverse();
    pruned
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn candidates(starts: &[i64]) -> Vec<Candidate> {
        starts
            .iter()
            .map(|&s| Candidate {
                id: format!("s{s}"),
                started_at: at(s),
            })
            .collect()
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("1d12h"), Ok(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        for bad in ["", "7", "d", "7w", "1.5h", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let policy = RetentionPolicy {
            keep_last: Some(2),
            max_age: None,
        };
        let pruned = select_pruned(&candidates(&[10, 40, 20, 30]), &policy, at(50));
        assert_eq!(pruned, ["s10", "s20"]);
    }

    #[test]
    fn max_age_drops_old_ones_but_never_the_newest() {
        let policy = RetentionPolicy {
            keep_last: None,
            max_age: Some(Duration::from_secs(15)),
        };
        assert_eq!(
            select_pruned(&candidates(&[0, 10, 20, 30]), &policy, at(35)),
            ["s0", "s10"]
        );
        // Everything is too old: the newest stays anyway.
        assert_eq!(
            select_pruned(&candidates(&[0, 10]), &policy, at(1_000)),
            ["s0"]
        );
    }

    #[test]
    fn no_policy_prunes_nothing() {
        let pruned = select_pruned(&candidates(&[1, 2, 3]), &RetentionPolicy::default(), at(9));
        assert!(pruned.is_empty());
    }

    proptest! {
        #[test]
        fn the_newest_survives_and_keep_last_bounds_the_rest(
            starts in proptest::collection::btree_set(0i64..10_000, 0..30),
            keep_last in proptest::option::of(1u32..10),
            max_age in proptest::option::of(0u64..10_000),
        ) {
            let starts: Vec<i64> = starts.into_iter().collect();
            let policy = RetentionPolicy { keep_last, max_age: max_age.map(Duration::from_secs) };
            let all = candidates(&starts);
            let pruned = select_pruned(&all, &policy, at(10_000));
            let kept = all.len() - pruned.len();
            if let Some(newest) = starts.iter().max() {
                let newest_id = format!("s{newest}");
                prop_assert!(!pruned.contains(&newest_id));
            }
            if let Some(keep) = keep_last {
                prop_assert!(kept <= keep as usize || all.is_empty());
            }
            if keep_last.is_none() && max_age.is_none() {
                prop_assert!(pruned.is_empty());
            }
        }
    }
}
