//! `titan-dr evidence RUN`: prints an ended run's evidence and checks it against the run as
//! the cluster records it (its seal, and every step's output digest).

use clap::Args;
use kube::{Api, Client};

use super::Exit;
use crate::api::RecoveryRun;
use crate::evidence;

#[derive(Args, Debug)]
pub struct EvidenceArgs {
    /// The RecoveryRun.
    pub run: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// Exits 0 when the evidence verifies, 1 when it does not (or the run has none yet), 2 when
/// there is no such run.
pub async fn show(args: &EvidenceArgs) -> Exit {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("error: no cluster: {error}");
            return Exit::Failed;
        }
    };
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let runs: Api<RecoveryRun> = Api::namespaced(client, &namespace);
    let run = match runs.get_opt(&args.run).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            eprintln!(
                "error: no RecoveryRun {} in namespace {namespace}",
                args.run
            );
            return Exit::InvalidInput;
        }
        Err(error) => {
            eprintln!("error: reading RecoveryRun {}: {error}", args.run);
            return Exit::Failed;
        }
    };
    let Some(record) = run.status.as_ref().and_then(|s| s.evidence.as_ref()) else {
        eprintln!("error: {} has no evidence: it has not ended", args.run);
        return Exit::Failed;
    };
    print!("{}", serde_yaml::to_string(record).unwrap_or_default());
    let problems = evidence::verify(record, &run.run_status());
    if problems.is_empty() {
        println!(
            "verified: the seal {} and the outputs of {} steps",
            record.seal_sha256,
            record.steps.len()
        );
        return Exit::Succeeded;
    }
    for problem in problems {
        eprintln!("not verified: {problem}");
    }
    Exit::Failed
}
