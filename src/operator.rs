//! The operator process: connects, waits for its CRDs, runs the controllers.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};

use crate::api::{Backup, DisasterRecovery};

/// Operator settings; every flag can also be set from the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// How long to wait for the CRDs to be Established before giving up.
    #[arg(long, env = "TITAN_CRD_WAIT_SECONDS", default_value_t = 60)]
    pub crd_wait_seconds: u64,
}

pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
}

/// Starts the operator. The controllers are added by the issues that build them.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    tracing::info!(version = %version.git_version, "connected to the API server");
    wait_for_crds(&client, Duration::from_secs(config.crd_wait_seconds)).await?;
    tracing::info!("titan-dr operator started");
    Ok(())
}

/// Waits until every CRD the operator serves is Established.
pub async fn wait_for_crds(client: &Client, limit: Duration) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [DisasterRecovery::crd_name(), Backup::crd_name()] {
        let established = await_condition(crds.clone(), name, conditions::is_crd_established());
        tokio::time::timeout(limit, established)
            .await
            .map_err(|_| {
                anyhow::anyhow!("CRD {name} not Established after {limit:?}; apply crds/ first")
            })??;
    }
    Ok(())
}
