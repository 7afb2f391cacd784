//! Snapshots over HTTP: the operator serves each Backup's snapshots (its snapshot endpoint,
//! `snapshot_server.rs`) to restore Jobs in any namespace, which cannot mount the
//! operator's backup volume. This is the client: it lists a Backup's snapshots and downloads
//! the files of one into a local folder, where the [`Store`](super::Store) verifies them
//! exactly as it verifies its own.
//!
//! Requests carry the pod's ServiceAccount token for the audience [`AUDIENCE`], read from
//! its file at each request (the kubelet rotates it); the operator checks that the account
//! may `get` the Backup's `snapshots` subresource.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

pub use crate::names::AUDIENCE;

/// A Backup's snapshots as the operator lists them, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIndex {
    pub snapshots: Vec<IndexEntry>,
}

/// One snapshot and the files it has (manifest, data file); an incomplete one lacks one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub id: String,
    pub files: Vec<String>,
}

/// The snapshots of one Backup, at the operator.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The operator's snapshot endpoint, e.g. `http://titan-dr.titan-dr-system.svc:8081`.
    pub url: String,
    pub namespace: String,
    pub backup: String,
    /// File holding the bearer token.
    pub token_file: PathBuf,
}

impl Remote {
    fn snapshots_url(&self) -> String {
        format!(
            "{}/v1/namespaces/{}/backups/{}/snapshots",
            self.url.trim_end_matches('/'),
            self.namespace,
            self.backup
        )
    }

    async fn get(&self, url: &str) -> anyhow::Result<reqwest::Response> {
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading the token {}", self.token_file.display()))?;
        crate::tls::install_provider();
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token.trim())
            .send()
            .await
            .with_context(|| format!("asking {url}"))?;
        let status = response.status();
        if !status.is_success() {
            let why = response.text().await.unwrap_or_default();
            bail!("{url} answered {status}: {}", why.trim());
        }
        Ok(response)
    }

    /// The Backup's snapshots, newest first.
    ///
    /// # Errors
    ///
    /// The operator is unreachable, refuses the token, or answers something else.
    pub async fn index(&self) -> anyhow::Result<SnapshotIndex> {
        let url = self.snapshots_url();
        let body = self.get(&url).await?.bytes().await?;
        serde_json::from_slice(&body).with_context(|| format!("{url} sent no snapshot index"))
    }

    /// Downloads every file of `entry` into `dir`, streaming (a snapshot may not fit in
    /// memory).
    ///
    /// # Errors
    ///
    /// A request or a write failed; files written so far stay for the caller to remove.
    pub async fn download(&self, entry: &IndexEntry, dir: &Path) -> anyhow::Result<()> {
        for file in &entry.files {
            // The operator names the files; never let a name leave `dir`.
            if file.contains('/') || file.starts_with('.') {
                bail!("the operator listed an unexpected file name {file:?}");
            }
            let url = format!("{}/{file}", self.snapshots_url());
            let mut response = self.get(&url).await?;
            let path = dir.join(file);
            let mut out = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("creating {}", path.display()))?;
            while let Some(chunk) = response
                .chunk()
                .await
                .with_context(|| format!("reading {url}"))?
            {
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
        }
        Ok(())
    }
}
