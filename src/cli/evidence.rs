//! `titan-dr evidence RUN`: prints an ended run's evidence and checks it against the run as
//! the cluster records it (its seal, and every step's output digest). With `--s3 URL
//! --key-file KEY` it checks a copy kept in object storage instead (the run's
//! `status.evidenceCopies`), with no cluster: its MAC under the Backup's key, and its seal.

use std::path::PathBuf;

use clap::Args;
use kube::{Api, Client};

use super::Exit;
use crate::api::RecoveryRun;
use crate::backup::BackupKey;
use crate::backup::offsite::{Offsite, S3Args};
use crate::evidence;

#[derive(Args, Debug)]
pub struct EvidenceArgs {
    /// The RecoveryRun.
    #[arg(required_unless_present = "s3")]
    pub run: Option<String>,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// A copy in object storage: `--s3` is its URL, as the run's `status.evidenceCopies`
    /// lists it.
    #[command(flatten)]
    pub s3: S3Args,
    /// The Backup's key file, which authenticates the copy.
    #[arg(long, requires = "s3")]
    pub key_file: Option<PathBuf>,
}

/// Exits 0 when the evidence verifies, 1 when it does not (or the run has none yet), 2 when
/// there is no such run or copy.
pub async fn show(args: &EvidenceArgs) -> Exit {
    if args.s3.s3.is_some() {
        return show_copy(args).await;
    }
    let run_name = args.run.clone().unwrap_or_default();
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
    let run = match runs.get_opt(&run_name).await {
        Ok(Some(run)) => run,
        Ok(None) => {
            eprintln!("error: no RecoveryRun {run_name} in namespace {namespace}");
            return Exit::InvalidInput;
        }
        Err(error) => {
            eprintln!("error: reading RecoveryRun {run_name}: {error}");
            return Exit::Failed;
        }
    };
    let Some(record) = run.status.as_ref().and_then(|s| s.evidence.as_ref()) else {
        eprintln!("error: {run_name} has no evidence: it has not ended");
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

/// `--s3 URL --key-file KEY`: the copy at URL, opened with the key.
async fn show_copy(args: &EvidenceArgs) -> Exit {
    let Some(key_file) = &args.key_file else {
        eprintln!("error: --s3 needs --key-file: the Backup's key authenticates the copy");
        return Exit::InvalidInput;
    };
    let key = match BackupKey::from_file(key_file) {
        Ok(key) => key,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::InvalidInput;
        }
    };
    let mut location = match args.s3.location() {
        Ok(Some(location)) => location,
        Ok(None) => return Exit::InvalidInput,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Exit::InvalidInput;
        }
    };
    let Some((folder, file)) = location
        .prefix
        .rsplit_once('/')
        .map(|(f, n)| (f.to_owned(), n.to_owned()))
    else {
        eprintln!("error: --s3 names no object: s3://bucket/<folder>/evidence/<run>-<uid>.json");
        return Exit::InvalidInput;
    };
    location.prefix = folder;
    let fetched = match Offsite::new(location) {
        Ok(offsite) => offsite.get(&file).await,
        Err(error) => Err(error),
    };
    let bytes = match fetched {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("error: {error:#}");
            return Exit::InvalidInput;
        }
    };
    match evidence::open_copy(&bytes, &key) {
        Ok(record) => {
            print!("{}", serde_yaml::to_string(&record).unwrap_or_default());
            println!(
                "verified: authenticated by the key, and the seal {}",
                record.seal_sha256
            );
            Exit::Succeeded
        }
        Err(problem) => {
            eprintln!("not verified: {problem}");
            Exit::Failed
        }
    }
}
