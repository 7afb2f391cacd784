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

/// How the operator took one file.
enum Sent {
    Stored,
    Exists,
    Refused(String),
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

    /// Delivers a snapshot of `store` to the operator (only the Backup's snapshot Job may):
    /// the data file, then the manifest, which the operator checks against it before it
    /// stores either. An operator that is away (restarting) is waited for, up to `patience`.
    ///
    /// # Errors
    ///
    /// The operator refused a file, or stayed unreachable.
    pub async fn push(
        &self,
        store: &super::Store,
        manifest: &super::Manifest,
        patience: std::time::Duration,
    ) -> anyhow::Result<()> {
        let manifest_file = super::Manifest::file_name(&manifest.id);
        for file in [&manifest.file, &manifest_file] {
            let url = format!("{}/{file}", self.snapshots_url());
            let path = store.dir().join(file);
            let deadline = tokio::time::Instant::now() + patience;
            let mut pause = std::time::Duration::from_millis(500);
            loop {
                match self.put(&url, &path).await {
                    Ok(Sent::Stored) => break,
                    // Stored by an attempt whose answer was lost.
                    Ok(Sent::Exists) => break,
                    Ok(Sent::Refused(why)) => bail!("{why}"),
                    Err(error) if tokio::time::Instant::now() + pause > deadline => {
                        return Err(
                            error.context(format!("the operator stayed away for {patience:?}"))
                        );
                    }
                    Err(error) => {
                        eprintln!("{error:#}; again in {pause:?}");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(std::time::Duration::from_secs(10));
                    }
                }
            }
        }
        Ok(())
    }

    /// One PUT of a file, streamed: `Err` for what may pass (no connection, 5xx).
    async fn put(&self, url: &str, path: &Path) -> anyhow::Result<Sent> {
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("reading the token {}", self.token_file.display()))?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let length = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        crate::tls::install_provider();
        let response = reqwest::Client::new()
            .put(url)
            .bearer_auth(token.trim())
            .header(reqwest::header::CONTENT_LENGTH, length)
            .body(body)
            .send()
            .await
            .with_context(|| format!("sending {}", path.display()))?;
        let status = response.status();
        let why = response.text().await.unwrap_or_default();
        let why = format!("{url} answered {status}: {}", why.trim());
        Ok(match status {
            s if s.is_success() => Sent::Stored,
            reqwest::StatusCode::CONFLICT => Sent::Exists,
            s if s.is_server_error() => bail!("{why}"),
            _ => Sent::Refused(why),
        })
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
