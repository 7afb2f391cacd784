use clap::{Parser, Subcommand};

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
    Operator(titan_dr::operator::Config),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// Encrypted snapshots in a folder: snapshot, list, verify, restore, prune, keygen.
    /// Works without a cluster.
    Backup(titan_dr::backup::cli::BackupCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Operator(config) => {
            titan_dr::operator::init_tracing();
            titan_dr::operator::run(config).await
        }
        Command::Crds => {
            print!("{}", titan_dr::api::crds_yaml());
            Ok(())
        }
        // Blocking file and socket I/O: keep it off the async workers.
        Command::Backup(command) => {
            tokio::task::spawn_blocking(move || titan_dr::backup::cli::run(command)).await?
        }
    }
}
