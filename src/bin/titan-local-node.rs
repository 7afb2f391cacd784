//! `titan-local-node`: a kubelet stand-in for the local control plane; see
//! `titan_dr::node_agent`.

use clap::Parser;

/// Runs the Pods of a local control plane as processes on this machine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: titan_dr::node_agent::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    titan_dr::operator::init_tracing();
    titan_dr::node_agent::run(Cli::parse().config).await
}
