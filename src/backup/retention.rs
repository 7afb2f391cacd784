//! Which snapshots retention drops: a pure selection, so that it can be tested and shown
//! (`titan-dr backup prune --dry-run`) before anything is deleted.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::backup::Retention;
use crate::api::duration::RetentionAge;

/// Retention rules; a snapshot goes when either rule drops it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep at most this many snapshots.
    pub keep_last: Option<u32>,
    /// Drop snapshots that started longer ago than this.
    pub max_age: Option<Duration>,
}

impl RetentionPolicy {
    /// The policy of a Backup's `spec.retention`.
    pub fn from_spec(retention: &Retention) -> Self {
        Self {
            keep_last: retention.keep_last,
            max_age: retention.max_age.as_ref().map(RetentionAge::duration),
        }
    }
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
