//! Retention: which snapshots a policy drops (the pure choice is
//! [`crate::backup::retention`]), deleting them manifest first, and removing partial files
//! left over from crashes.

use std::fs;
use std::io;

use k8s_openapi::jiff::Timestamp;

use super::{PARTIAL, STALE_PARTIAL, Store, sync_dir};
use crate::backup::error::StoreError;
use crate::backup::manifest::{Manifest, SnapshotKind};
use crate::backup::retention::{Candidate, RetentionPolicy, select_pruned};

impl Store {
    /// The snapshots that `policy` drops at `now`, oldest first (nothing is deleted).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the folder cannot be read.
    pub fn select_pruned(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let candidates: Vec<Candidate> = self
            .list()?
            .snapshots
            .into_iter()
            .map(|m| Candidate {
                id: m.id,
                started_at: m.started_at,
            })
            .collect();
        Ok(select_pruned(&candidates, policy, now))
    }

    /// Deletes the snapshots that `policy` drops at `now`, and partial files left over from
    /// crashes; returns the IDs deleted. Incomplete snapshots (data without manifest) are
    /// left for a person to look at: they are listed as problems.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when a file cannot be deleted.
    pub fn prune(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let pruned = self.select_pruned(policy, now)?;
        for id in &pruned {
            self.delete(id)?;
        }
        self.remove_partials(STALE_PARTIAL)?;
        Ok(pruned)
    }

    /// Deletes snapshot `id`: the manifest first, so that it stops being a snapshot before
    /// its data goes.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when a file cannot be deleted.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut names = vec![Manifest::file_name(id)];
        names.extend(
            SnapshotKind::all()
                .iter()
                .map(|kind| format!("{id}.{}", kind.extension())),
        );
        for name in names {
            let path = self.dir.join(&name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => {
                    let context = format!("deleting {}", path.display());
                    return Err(StoreError::io(context, err, &self.dir));
                }
            }
        }
        sync_dir(&self.dir).map_err(|err| StoreError::io("syncing the folder", err, &self.dir))
    }

    /// Removes the partial files older than `age`: with zero, every partial file, which is
    /// right only when no snapshot is being written into the folder (the operator's folder
    /// of a Backup, before its next attempt).
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when a file cannot be deleted.
    pub fn remove_partials(&self, age: std::time::Duration) -> Result<(), StoreError> {
        for entry in self.read_dir()? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with('.') && name.ends_with(PARTIAL)) {
                continue;
            }
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age);
            if stale {
                let path = entry.path();
                fs::remove_file(&path).map_err(|err| {
                    StoreError::io(format!("deleting {}", path.display()), err, &self.dir)
                })?;
            }
        }
        Ok(())
    }
}
