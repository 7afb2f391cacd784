//! `titan-dr trigger NAME`: starts a run of a DisasterRecovery in the cluster by creating a
//! RecoveryRun, requested by the user the API server says the caller is.

use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

use super::Exit;
use crate::api::recovery_run::{RunMode, RunTrigger};
use crate::api::{DisasterRecovery, RecoveryRun, RecoveryRunSpec};
use crate::names::LABEL_RECOVERY;

#[derive(Args, Debug)]
pub struct TriggerArgs {
    /// The DisasterRecovery to run.
    pub name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// A drill (a throwaway namespace) instead of a recovery.
    #[arg(long)]
    pub drill: bool,
    /// Why, e.g. an incident's ID.
    #[arg(long)]
    pub reason: Option<String>,
}

/// `titan-dr trigger`: prints the new run's name.
pub async fn trigger(args: &TriggerArgs) -> Exit {
    said(create(args).await)
}

/// Prints what a cluster command did, or its error, and exits accordingly.
pub(super) fn said(result: Result<String, (Exit, String)>) -> Exit {
    match result {
        Ok(line) => {
            println!("{line}");
            Exit::Succeeded
        }
        Err((exit, message)) => {
            eprintln!("error: {message}");
            exit
        }
    }
}

/// The kubeconfig's cluster, and `namespace` or the kubeconfig's.
pub(super) async fn cluster(
    namespace: &Option<String>,
) -> Result<(Client, String), (Exit, String)> {
    let client = Client::try_default()
        .await
        .map_err(|e| (Exit::Failed, format!("no cluster: {e}")))?;
    let namespace = namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, namespace))
}

async fn create(args: &TriggerArgs) -> Result<String, (Exit, String)> {
    let failed = |message: String| (Exit::Failed, message);
    let (client, namespace) = cluster(&args.namespace).await?;
    let drs: Api<DisasterRecovery> = Api::namespaced(client.clone(), &namespace);
    let name = &args.name;
    match drs.get_opt(name).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            let message = format!("no DisasterRecovery {name} in namespace {namespace}");
            return Err((Exit::InvalidInput, message));
        }
        Err(e) => return Err(failed(format!("reading DisasterRecovery {name}: {e}"))),
    }
    let run = RecoveryRun {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            labels: Some([(LABEL_RECOVERY.to_string(), name.clone())].into()),
            ..Default::default()
        },
        spec: RecoveryRunSpec {
            recovery: name.clone(),
            mode: if args.drill {
                RunMode::Drill
            } else {
                RunMode::Recovery
            },
            trigger: RunTrigger::Manual,
            requested_by: who_am_i(&client).await,
            reason: args.reason.clone(),
            ..Default::default()
        },
        status: None,
    };
    let runs: Api<RecoveryRun> = Api::namespaced(client, &namespace);
    let created = runs
        .create(&PostParams::default(), &run)
        .await
        .map_err(|e| failed(format!("creating a RecoveryRun of {name}: {e}")))?;
    Ok(created.name_any())
}

/// The caller's user name as the API server authenticates it (a SelfSubjectReview), not as
/// anything local says; `None` when the server does not tell.
async fn who_am_i(client: &Client) -> Option<String> {
    whoami(client).await.map(|(user, _)| user)
}

/// The user name and groups the API server says the caller is (SelfSubjectReview).
pub(super) async fn whoami(client: &Client) -> Option<(String, Vec<String>)> {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    let user = review.status?.user_info?;
    Some((user.username?, user.groups.unwrap_or_default()))
}
