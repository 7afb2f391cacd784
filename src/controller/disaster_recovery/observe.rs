//! What the Jobs of a run say about its steps. Everything here is read from
//! the cluster, so an operator restarted at any moment sees the same run.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::api::disaster_recovery::{Step, StepPhase, StepStatus};
use crate::controller::Error;
use crate::expect::{Finished, judge};
use crate::job::{LABEL_ATTEMPT, LABEL_STEP};

/// How a Job ended, from its terminal condition.
struct JobEnd {
    timed_out: bool,
    at: Option<Time>,
}

fn job_end(job: &Job) -> Option<JobEnd> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| JobEnd {
            timed_out: c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded"),
            at: c.last_transition_time.clone(),
        })
}

fn attempt_index(job: &Job) -> u32 {
    job.labels()
        .get(LABEL_ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

/// The state of every step that has a Job in this run, by step name.
///
/// `recorded` is what status already says: a finished attempt recorded there
/// under the same Job name is not judged again (its Pod may be gone by now).
pub async fn observe_steps(
    pods: &Api<Pod>,
    jobs: &[Job],
    steps: &BTreeMap<&str, &Step>,
    recorded: &BTreeMap<&str, &StepStatus>,
) -> Result<BTreeMap<String, StepStatus>, Error> {
    let mut by_step: BTreeMap<&str, Vec<&Job>> = BTreeMap::new();
    for job in jobs {
        if let Some(step) = job.labels().get(LABEL_STEP) {
            by_step.entry(step.as_str()).or_default().push(job);
        }
    }
    let mut observed = BTreeMap::new();
    for (name, mut attempts) in by_step {
        let Some(step) = steps.get(name) else {
            continue;
        };
        attempts.sort_by_key(|j| attempt_index(j));
        let (Some(first), Some(latest)) = (attempts.first(), attempts.last()) else {
            continue;
        };
        let job_name = latest.name_any();
        let mut status = StepStatus {
            name: name.to_string(),
            phase: StepPhase::Running,
            job: Some(job_name.clone()),
            attempts: attempt_index(latest) + 1,
            started_at: first
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or(first.metadata.creation_timestamp.clone()),
            ..Default::default()
        };
        if let Some(end) = job_end(latest) {
            status.finished_at = end.at;
            match recorded.get(name) {
                Some(before)
                    if before.job.as_deref() == Some(job_name.as_str())
                        && is_final(before.phase) =>
                {
                    status.phase = before.phase;
                    status.exit_code = before.exit_code;
                    status.output = before.output.clone();
                    status.message = before.message.clone();
                }
                _ => {
                    let finished = finished_attempt(pods, &job_name, end.timed_out).await?;
                    let verdict = judge(step.expect.as_ref(), &finished, step.timeout.as_deref());
                    status.phase = verdict.phase;
                    status.exit_code = finished.exit_code;
                    status.output = Some(finished.output).filter(|o| !o.is_empty());
                    status.message = Some(verdict.message).filter(|m| !m.is_empty());
                }
            }
        }
        observed.insert(name.to_string(), status);
    }
    Ok(observed)
}

/// Whether a phase is the end of an attempt.
pub fn is_final(phase: StepPhase) -> bool {
    matches!(
        phase,
        StepPhase::Succeeded | StepPhase::Failed | StepPhase::TimedOut | StepPhase::Skipped
    )
}

/// Exit code and output of a finished Job, from its Pod's terminated container.
async fn finished_attempt(pods: &Api<Pod>, job: &str, timed_out: bool) -> Result<Finished, Error> {
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await
        .map_err(Error::Observe)?;
    let terminated = list.items.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|c| c.state.as_ref()?.terminated.clone())
    });
    Ok(Finished {
        exit_code: terminated.as_ref().map(|t| t.exit_code),
        output: terminated.and_then(|t| t.message).unwrap_or_default(),
        timed_out,
    })
}
