//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): of several
//! replicas, only the one holding the Lease runs the controllers, so no two operators create
//! the same Job, take the same snapshot or prune the same store at once.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which Lease, held by whom, for how long.
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    /// This replica's name in the Lease's `holderIdentity` (its pod name).
    pub identity: String,
    /// How long the Lease holds without a renewal: the longest a dead leader keeps the others
    /// waiting. It is renewed a third of this before it would expire.
    pub duration: Duration,
}

/// The Lease, held: renewed in the background until [`Leadership::release`].
pub struct Leadership {
    held: watch::Receiver<bool>,
    renewing: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the Lease.
///
/// # Errors
///
/// The Lease cannot be read or created (no access, no such namespace).
pub async fn acquire(client: Client, election: &Election) -> Result<Leadership, LeaseManagerError> {
    let seconds = election.duration.as_secs().max(3);
    let manager = LeaseManagerBuilder::new(client, &election.lease)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(seconds)
        .with_grace((seconds / 3).max(1))
        .with_field_manager(format!("titan-dr-lease-{}", election.identity))
        .build()
        .await?;
    let (mut held, renewing) = manager.watch().await;
    tracing::info!(lease = %election.lease, namespace = %election.namespace, identity = %election.identity, "waiting for the lease");
    while !*held.borrow_and_update() {
        if held.changed().await.is_err() {
            // The renewing task ended: its error says why.
            return Err(match renewing.await {
                Ok(Err(error)) => error,
                _ => LeaseManagerError::InconsistentState("the lease task ended".into()),
            });
        }
    }
    tracing::info!(lease = %election.lease, identity = %election.identity, "holding the lease");
    Ok(Leadership { held, renewing })
}

impl Leadership {
    /// Resolves when the Lease is lost (a renewal failed past its expiry, another holder).
    pub async fn lost(&mut self) {
        while *self.held.borrow_and_update() {
            if self.held.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the Lease up, so that another replica need not wait for it to expire.
    pub async fn release(self) {
        drop(self.held);
        match tokio::time::timeout(Duration::from_secs(5), self.renewing).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the lease"),
            Ok(Ok(Err(error))) => tracing::warn!(%error, "releasing the lease failed"),
            Ok(Err(error)) => tracing::warn!(%error, "the lease task failed"),
            Err(_) => tracing::warn!("releasing the lease timed out; it expires by itself"),
        }
    }
}
