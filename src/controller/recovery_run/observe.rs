//! What the Jobs of a run say about its steps. Everything here is read from
//! the cluster, so an operator restarted at any moment sees the same run.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::pod_start::{self, StartVerdict};
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
    pods: &RunPods<'_>,
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
        // A recorded start failure wins over whatever the Job says: the
        // operator stopped it, so even a late completion is not a success.
        if let Some(failure) = pod_start::recorded(latest) {
            status.phase = StepPhase::Failed;
            status.finished_at = failure.at.or_else(|| job_end(latest).and_then(|e| e.at));
            status.message = Some(failure.message);
        } else if let Some(end) = job_end(latest) {
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
                    let verdict = judge(step.expect.as_ref(), &finished, step.timeout.as_ref());
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

/// The verdict on every unfinished attempt of the run not yet recorded as
/// unable to start, by index into `jobs`. One Pod list for the run (`selector`)
/// when there is such an attempt; a Job's Events only while it has no Pod.
pub async fn pod_starts(
    pods: &RunPods<'_>,
    events: &Api<Event>,
    jobs: &[Job],
    now: Timestamp,
    grace: Duration,
) -> Result<Vec<(usize, StartVerdict)>, Error> {
    let open: Vec<usize> = (0..jobs.len())
        .filter(|&i| job_end(&jobs[i]).is_none() && pod_start::recorded(&jobs[i]).is_none())
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let run_pods = &pods.cached;
    let mut verdicts = Vec::with_capacity(open.len());
    for index in open {
        let job = &jobs[index];
        let uid = job.uid().unwrap_or_default();
        let of_job: Vec<&Pod> = run_pods
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
            .collect();
        let found = if pod_start::wants_events(job, &of_job, now) {
            let fields = format!("regarding.uid={uid},reason=FailedCreate");
            events
                .list(&ListParams::default().fields(&fields))
                .await
                .map_err(Error::Observe)?
                .items
        } else {
            Vec::new()
        };
        let verdict = pod_start::assess(job, &of_job, &found, now, grace);
        verdicts.push((index, verdict));
    }
    Ok(verdicts)
}

/// Whether a phase is the end of an attempt.
pub fn is_final(phase: StepPhase) -> bool {
    matches!(
        phase,
        StepPhase::Succeeded | StepPhase::Failed | StepPhase::TimedOut | StepPhase::Skipped
    )
}

/// The Pods of one run: those the operator's cache holds, and the API for what it may not
/// hold yet.
pub struct RunPods<'a> {
    pub cached: Vec<std::sync::Arc<Pod>>,
    pub api: &'a Api<Pod>,
}

/// The terminated state of the step container of a Pod of `job`.
fn terminated<'p>(
    pods: impl IntoIterator<Item = &'p Pod>,
    job: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    crate::job::newest_first(pods)
        .into_iter()
        .filter(|pod| {
            pod.labels()
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str)
                == Some(job)
        })
        .find_map(|pod| {
            pod.status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .iter()
                .find_map(|c| c.state.as_ref()?.terminated.clone())
        })
}

/// Exit code and output of a finished Job, from its Pod's terminated container: from the
/// cache, or, when the cache has not seen the Pod end yet (the Job's watch can be ahead of the
/// Pods'), from the API.
async fn finished_attempt(
    pods: &RunPods<'_>,
    job: &str,
    timed_out: bool,
) -> Result<Finished, Error> {
    let terminated = match terminated(pods.cached.iter().map(AsRef::as_ref), job) {
        Some(found) => Some(found),
        None => {
            let selector = format!("batch.kubernetes.io/job-name={job}");
            let listed = pods
                .api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(Error::Observe)?;
            terminated(&listed.items, job)
        }
    };
    Ok(Finished {
        // What the deadline's kill made the process exit with is not the step's answer (a
        // local run reports none either), whether or not the kubelet saw it end.
        exit_code: terminated
            .as_ref()
            .map(|t| t.exit_code)
            .filter(|_| !timed_out),
        output: terminated.and_then(|t| t.message).unwrap_or_default(),
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::config::{KubeConfigOptions, Kubeconfig};

    /// A client of an address nothing listens on: a test using it makes no call.
    async fn unused_client() -> kube::Client {
        let kubeconfig = Kubeconfig::from_yaml(
            "clusters: [{name: none, cluster: {server: 'http://127.0.0.1:9'}}]\n\
             contexts: [{name: none, context: {cluster: none, user: none}}]\n\
             users: [{name: none, user: {}}]\n\
             current-context: none\n",
        )
        .unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// A Job the operator stopped because its pod could not start; `conditions`
    /// is what the Job controller did afterwards.
    fn stopped_job(conditions: &str) -> Job {
        serde_yaml::from_str(&format!(
            r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: restore-1-start-redis-0
  namespace: titan
  creationTimestamp: "2026-11-25T02:00:00Z"
  labels: {{dr.titan.io/step: start-redis, dr.titan.io/attempt: "0"}}
  annotations:
    dr.titan.io/failed-to-start: 'pod cannot start: ErrImageNeverPull: Container image "localhost/nope:1" is not present with pull policy of Never'
    dr.titan.io/failed-to-start-at: "2026-11-25T02:00:04Z"
spec: {{template: {{}}}}
status: {{startTime: "2026-11-25T02:00:00Z", conditions: {conditions}}}
"#
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_finished_attempt_is_judged_from_the_cached_pod_without_asking_the_api() {
        let api: Api<Pod> = Api::namespaced(unused_client().await, "titan");
        let pod: Pod = serde_yaml::from_str(
            r#"
metadata:
  name: restore-1-start-redis-0-abcde
  namespace: titan
  labels: {batch.kubernetes.io/job-name: restore-1-start-redis-0}
status:
  containerStatuses:
    - {name: step, image: x, imageID: "", ready: false, restartCount: 0,
       state: {terminated: {exitCode: 0, message: "PONG"}}}
"#,
        )
        .unwrap();
        let pods = RunPods {
            cached: vec![std::sync::Arc::new(pod)],
            api: &api,
        };
        let step: Step = serde_yaml::from_str(
            "{name: start-redis, command: 'true', expect: {outputContains: PONG}}",
        )
        .unwrap();
        let steps = BTreeMap::from([("start-redis", &step)]);
        let mut job = stopped_job("[{type: Complete, status: 'True'}]");
        job.metadata.annotations = None;
        let observed = observe_steps(&pods, &[job], &steps, &BTreeMap::new())
            .await
            .expect("no API call: the client reaches nothing");
        let status = &observed["start-redis"];
        assert_eq!(status.phase, StepPhase::Succeeded, "{status:?}");
        assert_eq!(status.output.as_deref(), Some("PONG"));
    }

    #[tokio::test]
    async fn a_recorded_start_failure_fails_the_attempt_whatever_the_job_says() {
        let api: Api<Pod> = Api::namespaced(unused_client().await, "titan");
        let pods = RunPods {
            cached: Vec::new(),
            api: &api,
        };
        let step: Step = serde_yaml::from_str("{name: start-redis, command: 'true'}").unwrap();
        let steps = BTreeMap::from([("start-redis", &step)]);
        for conditions in [
            // Not yet failed by the Job controller.
            "[]",
            "[{type: Failed, status: 'True', reason: DeadlineExceeded, lastTransitionTime: '2026-11-25T02:00:05Z'}]",
            // Completed in a race with the stop: still not a success.
            "[{type: Complete, status: 'True', lastTransitionTime: '2026-11-25T02:00:05Z'}]",
        ] {
            let jobs = [stopped_job(conditions)];
            let observed = observe_steps(&pods, &jobs, &steps, &BTreeMap::new())
                .await
                .unwrap();
            let status = &observed["start-redis"];
            assert_eq!(status.phase, StepPhase::Failed, "{conditions}");
            assert_eq!(
                status.message.as_deref(),
                Some(
                    r#"pod cannot start: ErrImageNeverPull: Container image "localhost/nope:1" is not present with pull policy of Never"#
                )
            );
            assert_eq!(
                status.finished_at,
                Some(Time("2026-11-25T02:00:04Z".parse().unwrap()))
            );
            assert_eq!((status.attempts, status.exit_code), (1, None));
        }
    }
}
