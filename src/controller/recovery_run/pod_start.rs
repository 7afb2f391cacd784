//! Whether the pod of an unfinished attempt can start at all.
//!
//! A Job only says "active": an absent image, a container the kubelet cannot
//! create, a pod no node fits, or a pod admission refuses (so none exists)
//! would leave the step Running until its timeout, or forever without one.
//! This module turns a Job, its Pods and its Events into a verdict. It is pure:
//! the same cluster state always gives the same verdict, also in an operator
//! restarted after a crash, and the verdict, once reached, is written onto the
//! Job itself (see [`stop_patch`]) so it never has to be reached again.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

use super::status::elapsed;
use crate::api::duration::format_duration;

pub use crate::names::{FAILED_TO_START, FAILED_TO_START_AT};

/// Waiting reasons of the kubelet that waiting will not clear.
const HARD: &[&str] = &[
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreStartHookError",
];
/// Waiting reasons that may clear (a registry back, a tag pushed): failed
/// only once they have lasted the grace period.
const MAY_CLEAR: &[&str] = &["ErrImagePull", "ImagePullBackOff"];

/// How long a Job may be active without any Pod before its Events are read
/// for a refused pod (the Job controller creates one within a second or so).
pub const NO_POD_WAIT: Duration = Duration::from_secs(5);

/// Longest message kept: Pod Security lists every violation.
const MAX_MESSAGE: usize = 1024;

/// Why the pod of an attempt cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailure {
    pub message: String,
}

/// What the Pods and Events of an unfinished Job say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartVerdict {
    /// Nothing says the pod cannot start, or not for long enough yet;
    /// `recheck` is when a grace period being counted runs out.
    Wait { recheck: Option<Duration> },
    /// The attempt is to be failed with this reason.
    CannotStart(StartFailure),
}

impl StartVerdict {
    fn wait(recheck: Duration) -> Self {
        StartVerdict::Wait {
            recheck: Some(recheck),
        }
    }

    fn cannot_start(message: String) -> Self {
        StartVerdict::CannotStart(StartFailure {
            message: bounded(message),
        })
    }
}

/// A start failure already written onto a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFailure {
    pub message: String,
    pub at: Option<Time>,
}

/// The start failure written onto a Job, if any.
pub fn recorded(job: &Job) -> Option<RecordedFailure> {
    let annotations = job.annotations();
    let message = annotations.get(FAILED_TO_START)?.clone();
    let at = annotations
        .get(FAILED_TO_START_AT)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(Time);
    Some(RecordedFailure { message, at })
}

/// The merge patch that records `failure` on the Job and stops it, in one
/// write so that no Job is ever stopped without its reason: the annotations
/// (observe fails the attempt with this message, not as timed out), and a
/// deadline of one second, past already, so the Job controller fails the Job
/// and deletes its pod instead of retrying it. The resourceVersion makes it
/// conditional: a Job that changed meanwhile (it may have just completed) is
/// looked at again instead.
pub fn stop_patch(job: &Job, failure: &StartFailure, now: Timestamp) -> serde_json::Value {
    let at = Timestamp::from_second(now.as_second()).unwrap_or(now);
    json!({
        "metadata": {
            "resourceVersion": job.resource_version(),
            "annotations": {
                FAILED_TO_START: failure.message,
                FAILED_TO_START_AT: at.to_string(),
            },
        },
        "spec": {"activeDeadlineSeconds": 1},
    })
}

/// Whether the Job's Events are needed: it has been active for a while and
/// has no Pod, which is what a pod refused by admission looks like.
pub fn wants_events(job: &Job, pods: &[&Pod], now: Timestamp) -> bool {
    pods.is_empty() && age(job, now) >= NO_POD_WAIT
}

/// The verdict on an unfinished Job that carries no recorded failure, from its
/// Pods and, when [`wants_events`] said so, its Events (otherwise none).
pub fn assess(
    job: &Job,
    pods: &[&Pod],
    events: &[Event],
    now: Timestamp,
    grace: Duration,
) -> StartVerdict {
    let clock = Clock::new(job, now, grace);
    if pods.is_empty() {
        return without_pod(job, events, &clock);
    }
    let mut recheck: Option<Duration> = None;
    for pod in pods {
        match assess_pod(pod, &clock) {
            StartVerdict::CannotStart(failure) => return StartVerdict::CannotStart(failure),
            StartVerdict::Wait { recheck: Some(r) } => {
                recheck = Some(recheck.map_or(r, |sooner| sooner.min(r)));
            }
            StartVerdict::Wait { recheck: None } => {}
        }
    }
    StartVerdict::Wait { recheck }
}

/// Time as one assessment sees it.
struct Clock {
    now: Timestamp,
    grace: Duration,
    /// Until shortly before the Job's own deadline (its step's timeout), if it
    /// has one: a failure still there by then is reported with its reason,
    /// rather than left to end the attempt as merely timed out.
    left: Option<Duration>,
}

impl Clock {
    /// How long before the Job's deadline a failure waiting out its grace is reported.
    const BEFORE_DEADLINE: Duration = Duration::from_secs(3);

    fn new(job: &Job, now: Timestamp, grace: Duration) -> Self {
        let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds);
        let left = deadline.map(|seconds| {
            let limit = Duration::from_secs(seconds.max(0).unsigned_abs());
            limit
                .saturating_sub(Self::BEFORE_DEADLINE)
                .saturating_sub(age(job, now))
        });
        Clock { now, grace, left }
    }

    fn since(&self, time: Option<&Time>) -> Duration {
        time.map_or(Duration::ZERO, |t| elapsed(t, &Time(self.now)))
    }

    /// Fails with `describe(how long it lasted)` once `since` is the grace
    /// period ago (or the Job's deadline is near); otherwise says when to look again.
    fn after_grace(
        &self,
        since: Option<&Time>,
        describe: impl FnOnce(String) -> String,
    ) -> StartVerdict {
        let lasted = self.since(since);
        if lasted >= self.grace || self.left == Some(Duration::ZERO) {
            return StartVerdict::cannot_start(describe(format_duration(lasted)));
        }
        self.wait(self.grace - lasted)
    }

    /// Look again after `after`, or sooner if the Job's deadline comes first;
    /// once it has come, the Job's own timeout ends the attempt.
    fn wait(&self, after: Duration) -> StartVerdict {
        match self.left {
            Some(Duration::ZERO) => StartVerdict::Wait { recheck: None },
            Some(left) => StartVerdict::wait(after.min(left)),
            None => StartVerdict::wait(after),
        }
    }
}

/// One pod: a hard waiting reason fails at once; an image pull failure or an
/// unschedulable pod once it has lasted the grace period.
fn assess_pod(pod: &Pod, clock: &Clock) -> StartVerdict {
    let Some(status) = &pod.status else {
        return StartVerdict::Wait { recheck: None };
    };
    // A pod that runs, ran or is going away started, or is the Job's business.
    if pod.metadata.deletion_timestamp.is_some()
        || status.phase.as_deref().is_some_and(|p| p != "Pending")
    {
        return StartVerdict::Wait { recheck: None };
    }
    let created = pod.metadata.creation_timestamp.as_ref();
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for (reason, message) in containers.filter_map(waiting) {
        if HARD.contains(&reason) {
            return StartVerdict::cannot_start(format!(
                "pod cannot start: {}",
                reason_and_message(reason, message)
            ));
        }
        if MAY_CLEAR.contains(&reason) {
            // Measured from when the kubelet took the pod on, so a slow pull
            // (reason ContainerCreating) never counts, only failed ones.
            let since = status.start_time.as_ref().or(created);
            return clock.after_grace(since, |lasted| {
                format!(
                    "pod cannot start for {lasted}: {}",
                    reason_and_message(reason, message)
                )
            });
        }
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    });
    if let Some(condition) = unschedulable {
        let since = condition.last_transition_time.as_ref().or(created);
        let message = condition.message.as_deref().unwrap_or_default().trim();
        return clock.after_grace(since, |lasted| {
            format!("pod unschedulable for {lasted}: {message}")
        });
    }
    StartVerdict::Wait { recheck: None }
}

/// A Job without a Pod: refused when the Job controller reported FailedCreate
/// and the Job has been without one for the grace period (a quota may free up).
fn without_pod(job: &Job, events: &[Event], clock: &Clock) -> StartVerdict {
    let uid = job.uid();
    let refused = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .filter(|e| uid.is_none() || e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid)
        .max_by_key(|e| last_seen(e));
    if let Some(event) = refused {
        let note = event.note.as_deref().unwrap_or_default();
        return clock.after_grace(started(job), |_| {
            format!("pod refused: {}", reason_and_message("FailedCreate", note))
        });
    }
    // Events are read from NO_POD_WAIT on, and again as often while none
    // says why, until the grace period is over.
    let age = age(job, clock.now);
    if age < NO_POD_WAIT {
        clock.wait(NO_POD_WAIT - age)
    } else if age < clock.grace {
        clock.wait(NO_POD_WAIT)
    } else {
        StartVerdict::Wait { recheck: None }
    }
}

/// When the Job started (the Job controller's start, else its creation).
fn started(job: &Job) -> Option<&Time> {
    let start = job.status.as_ref().and_then(|s| s.start_time.as_ref());
    start.or(job.metadata.creation_timestamp.as_ref())
}

/// How long the Job has existed.
fn age(job: &Job, now: Timestamp) -> Duration {
    started(job).map_or(Duration::ZERO, |t| elapsed(t, &Time(now)))
}

/// A container's waiting reason and message.
fn waiting(status: &ContainerStatus) -> Option<(&str, &str)> {
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    Some((
        waiting.reason.as_deref()?,
        waiting.message.as_deref().unwrap_or_default(),
    ))
}

fn reason_and_message(reason: &str, message: &str) -> String {
    match message.trim() {
        "" => reason.to_string(),
        message => format!("{reason}: {message}"),
    }
}

/// When an Event was last seen, whichever API wrote it.
fn last_seen(event: &Event) -> Option<Timestamp> {
    let series = event.series.as_ref().map(|s| s.last_observed_time.0);
    series
        .or(event.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or(event.event_time.as_ref().map(|t| t.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests;
