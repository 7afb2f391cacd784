use std::process::ExitCode;

use clap::{Parser, Subcommand};
use titan_dr::cli::{self, Exit};

/// titan-dr: disaster-recovery runbooks that a cluster executes, measures and proves.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig.
    Operator(Box<titan_dr::operator::Config>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Check a DisasterRecovery file and print its execution plan (a dry run). Exits 2 when
    /// the file is invalid.
    Plan(cli::PlanArgs),
    /// Run a DisasterRecovery on this machine, each step a local process. Exits 0 when the
    /// recovery succeeded, 1 when it failed, 2 on invalid input, 130 when interrupted.
    Run(cli::RunArgs),
    /// Show the run of a DisasterRecovery in the cluster as `run` shows a local one; with
    /// --watch follow it to its end. Exits 0 when it succeeded (or still runs), 1 when it
    /// failed, 2 when there is no such DisasterRecovery. Also `kubectl titan status`.
    Status(cli::StatusArgs),
    /// Write the markdown report and SVG timeline of a DisasterRecovery's ended run in the
    /// cluster, as `run --report` does for a local one.
    Report(cli::ReportArgs),
    /// Start a run of a DisasterRecovery in the cluster: creates a RecoveryRun requested by
    /// the user the API server authenticates, and prints its name. Also `kubectl titan
    /// trigger`.
    Trigger(cli::TriggerArgs),
    /// Approve a gated step of a RecoveryRun, as the user the API server authenticates (never
    /// the run's requester). Also `kubectl titan approve`.
    Approve(cli::ApproveArgs),
    /// Print an ended RecoveryRun's evidence and verify it against the run the cluster
    /// records: exits 0 when its seal and every step's output digest hold, 1 when not.
    Evidence(cli::EvidenceArgs),
    /// Convert between markdown runbooks and DisasterRecovery resources.
    #[command(subcommand)]
    Runbook(cli::RunbookCommand),
    /// Encrypted snapshots in a folder or object storage: snapshot, list, verify, restore,
    /// prune, push, keygen. Works without a cluster.
    Backup(Box<cli::BackupCommand>),
    /// Run a step's probe, given as JSON, and print its output; what probe steps run. Exits 0
    /// when the check passed, 1 when it failed, 2 on an invalid spec.
    #[command(hide = true)]
    Probe(cli::ProbeArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    titan_dr::tls::install_provider();
    let cli = Cli::parse();
    match cli.command {
        Command::Operator(config) => {
            titan_dr::operator::init_tracing();
            exit_with(titan_dr::operator::run(*config).await)
        }
        Command::Crds => {
            print!("{}", titan_dr::api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Plan(args) => cli::plan::plan(&args).into(),
        Command::Run(args) => cli::run::run(&args).await.into(),
        Command::Status(args) => cli::status::status(&args).await.into(),
        Command::Report(args) => cli::status::report(&args).await.into(),
        Command::Trigger(args) => cli::trigger::trigger(&args).await.into(),
        Command::Approve(args) => cli::approve::approve(&args).await.into(),
        Command::Evidence(args) => cli::evidence::show(&args).await.into(),
        Command::Runbook(command) => cli::runbook::runbook(&command).into(),
        Command::Probe(args) => cli::probe::run(&args).await.into(),
        Command::Backup(command) => cli::backup::run(*command).await.into(),
    }
}

fn exit_with(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            Exit::Failed.into()
        }
    }
}
