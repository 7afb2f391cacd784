//! When a scheduled run is due: the cron `schedule` read in its `timeZone`, as a CronJob reads
//! it. Pure, so it is tested without a clock.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone};
use k8s_openapi::jiff::Timestamp;

/// A parsed schedule and the time zone its times are read in.
pub struct Schedule {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

/// What the schedule asks for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// No tick since the last one handled.
    Nothing,
    /// The latest tick since the last one handled, to run now; earlier ones are passed over
    /// (a late operator never starts a burst).
    Run(Timestamp),
    /// The latest tick, too late to run by `startingDeadlineSeconds`: recorded, not run.
    Missed { tick: Timestamp, late: Duration },
}

impl Schedule {
    /// Parses `schedule` (5 or 6 fields, or a nickname like `@daily`) and the IANA time zone
    /// `zone` (default UTC); the error names the field that is wrong.
    pub fn parse(schedule: &str, zone: Option<&str>) -> Result<Self, String> {
        let cron = croner::Cron::from_str(schedule)
            .map_err(|e| format!("spec.schedule {schedule:?}: {e}"))?;
        let zone = match zone {
            None => chrono_tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| format!("spec.timeZone {name:?} is not an IANA time zone"))?,
        };
        Ok(Schedule { cron, zone })
    }

    /// The first tick after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let after = self.local(after)?;
        let next = self.cron.find_next_occurrence(&after, false).ok()?;
        Timestamp::from_second(next.timestamp()).ok()
    }

    /// What is due at `now` when ticks up to `handled` have been dealt with, under a
    /// `startingDeadlineSeconds` of `deadline`.
    pub fn due(&self, handled: Timestamp, now: Timestamp, deadline: Option<Duration>) -> Due {
        let Some(latest) = self
            .local(now)
            .and_then(|now| self.cron.find_previous_occurrence(&now, true).ok())
            .and_then(|tick| Timestamp::from_second(tick.timestamp()).ok())
        else {
            return Due::Nothing;
        };
        if latest <= handled {
            return Due::Nothing;
        }
        let late = Duration::try_from(now.duration_since(latest)).unwrap_or_default();
        match deadline {
            Some(deadline) if late > deadline => Due::Missed { tick: latest, late },
            _ => Due::Run(latest),
        }
    }

    fn local(&self, at: Timestamp) -> Option<DateTime<chrono_tz::Tz>> {
        let utc = DateTime::from_timestamp(at.as_second(), 0)?;
        Some(self.zone.from_utc_datetime(&utc.naive_utc()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn only_the_latest_missed_tick_runs() {
        let every_minute = Schedule::parse("* * * * *", None).unwrap();
        let handled = at("2026-12-01T10:00:00Z");
        // Three ticks passed while the operator was away: one run, for the latest.
        let now = at("2026-12-01T10:03:20Z");
        assert_eq!(
            every_minute.due(handled, now, None),
            Due::Run(at("2026-12-01T10:03:00Z"))
        );
        assert_eq!(
            every_minute.due(at("2026-12-01T10:03:00Z"), now, None),
            Due::Nothing
        );
        assert_eq!(
            every_minute.next_after(now),
            Some(at("2026-12-01T10:04:00Z"))
        );
    }

    #[test]
    fn a_tick_past_its_starting_deadline_is_missed_not_run() {
        let hourly = Schedule::parse("0 * * * *", None).unwrap();
        let handled = at("2026-12-01T09:00:00Z");
        let now = at("2026-12-01T10:00:45Z");
        let deadline = Some(Duration::from_secs(30));
        assert_eq!(
            hourly.due(handled, now, deadline),
            Due::Missed {
                tick: at("2026-12-01T10:00:00Z"),
                late: Duration::from_secs(45)
            }
        );
        let in_time = Some(Duration::from_secs(60));
        assert_eq!(
            hourly.due(handled, now, in_time),
            Due::Run(at("2026-12-01T10:00:00Z"))
        );
    }

    #[test]
    fn times_are_read_in_the_time_zone() {
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        let nightly = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        let winter = nightly.next_after(at("2026-12-01T12:00:00Z"));
        assert_eq!(winter, Some(at("2026-12-02T01:00:00Z")));
        let summer = nightly.next_after(at("2026-07-01T12:00:00Z"));
        assert_eq!(summer, Some(at("2026-07-02T00:00:00Z")));
    }

    #[test]
    fn a_wrong_schedule_or_zone_is_named() {
        let bad = Schedule::parse("every monday", None).err().unwrap();
        assert!(bad.starts_with("spec.schedule \"every monday\""), "{bad}");
        let zone = Schedule::parse("@daily", Some("Mars/Olympus"))
            .err()
            .unwrap();
        assert_eq!(
            zone,
            "spec.timeZone \"Mars/Olympus\" is not an IANA time zone"
        );
    }
}
