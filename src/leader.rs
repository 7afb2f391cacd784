//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager): of several
//! replicas, only the one holding the Lease runs the controllers, so no two operators create
//! the same Job, take the same snapshot or prune the same store at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
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
    /// To confirm the holding: the manager reports a change of holder, but not a renewal that
    /// keeps failing (an unreachable API server), after which another replica may hold it.
    leases: Api<Lease>,
    election: Election,
}

/// Waits until this replica holds the Lease.
///
/// # Errors
///
/// The Lease cannot be read or created (no access, no such namespace).
pub async fn acquire(client: Client, election: &Election) -> Result<Leadership, LeaseManagerError> {
    let seconds = election.duration.as_secs().max(3);
    let leases = Api::namespaced(client.clone(), &election.namespace);
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
    Ok(Leadership {
        held,
        renewing,
        leases,
        election: election.clone(),
    })
}

fn holder(lease: &Lease) -> Option<&String> {
    lease.spec.as_ref()?.holder_identity.as_ref()
}

impl Leadership {
    /// Resolves when the Lease is lost: another replica holds it, or its holding could not be
    /// confirmed for a whole lease duration (by then another replica may have taken it).
    pub async fn lost(&mut self) {
        let mut confirmed = Instant::now();
        let mut check = tokio::time::interval(self.election.duration / 4);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = self.held.changed() => {
                    if changed.is_err() || !*self.held.borrow_and_update() {
                        return;
                    }
                }
                _ = check.tick() => {
                    let read = self.leases.get(&self.election.lease);
                    let read = tokio::time::timeout(self.election.duration / 4, read).await;
                    match read {
                        Ok(Ok(lease)) if holder(&lease) == Some(&self.election.identity) => {
                            confirmed = Instant::now();
                        }
                        Ok(Ok(lease)) => {
                            tracing::warn!(holder = ?holder(&lease), "another replica holds the lease");
                            return;
                        }
                        _ if confirmed.elapsed() >= self.election.duration => {
                            tracing::warn!(for_ = ?confirmed.elapsed(), "the lease could not be confirmed");
                            return;
                        }
                        _ => {}
                    }
                }
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
