//! `titan-dr approve RUN STEP`: approves a gated step of a run in the cluster, as the user the
//! API server says the caller is (admission holds the recorded name and groups to it, and
//! refuses the run's requester; the operator checks the step's approvers).

use clap::Args;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Exit;
use crate::api::RecoveryRun;
use crate::api::approval::StepApproval;

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The RecoveryRun.
    pub run: String,
    /// The step to approve.
    pub step: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// Exits 0 once the approval is recorded, 1 when the API server refuses it (admission says
/// why), 2 when there is no such run or step.
pub async fn approve(args: &ApproveArgs) -> Exit {
    let recorded = record(args).await;
    super::trigger::said(
        recorded.map(|user| format!("{}: step {} approved by {user}", args.run, args.step)),
    )
}

async fn record(args: &ApproveArgs) -> Result<String, (Exit, String)> {
    let failed = |message: String| (Exit::Failed, message);
    let (client, namespace) = super::trigger::cluster(&args.namespace).await?;
    let runs: Api<RecoveryRun> = Api::namespaced(client.clone(), &namespace);
    let (run, step) = (&args.run, &args.step);
    let found = runs
        .get_opt(run)
        .await
        .map_err(|e| failed(format!("reading RecoveryRun {run}: {e}")))?
        .ok_or_else(|| {
            (
                Exit::InvalidInput,
                format!("no RecoveryRun {run} in namespace {namespace}"),
            )
        })?;
    let gated = found
        .status
        .as_ref()
        .and_then(|s| s.scenario.as_ref())
        .is_some_and(|s| {
            s.steps
                .iter()
                .chain(&s.validations)
                .any(|s| s.name == *step && s.approval.is_some())
        });
    if !gated {
        return Err((
            Exit::InvalidInput,
            format!("run {run} has no step {step} that needs an approval"),
        ));
    }
    let (user, groups) = super::trigger::whoami(&client).await.ok_or_else(|| {
        failed("the API server did not say who you are (SelfSubjectReview)".into())
    })?;
    let mut approvals = found.spec.approvals.clone();
    approvals.retain(|a| a.step != *step || a.approved_by != user);
    approvals.push(StepApproval {
        step: step.clone(),
        approved_by: user.clone(),
        groups,
    });
    // The whole list, as of the version read: another approval meanwhile makes this retry.
    let patch = json!({
        "metadata": {"resourceVersion": found.resource_version()},
        "spec": {"approvals": approvals},
    });
    runs.patch(run, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| failed(format!("recording the approval: {e}")))?;
    Ok(user)
}
