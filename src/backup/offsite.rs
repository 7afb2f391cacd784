//! Snapshots off the cluster: a copy of a store's snapshots in S3-compatible object storage,
//! through `object_store`. A snapshot is copied once committed in its folder, data file first
//! and manifest last, so that (as in a folder) a manifest's presence is the commit; files are
//! streamed in parts, so memory stays flat however large the snapshot. Reading back downloads
//! a snapshot's two files into a folder, where the [`Store`] verifies them as its own.
//!
//! Objects are `<prefix>/<file>`: the operator's prefix for a Backup ends in
//! `<namespace>/<uid>`, the same folder as on its volume.

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::TryStreamExt;
use k8s_openapi::jiff::Timestamp;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::manifest::{Manifest, is_snapshot_id};
use super::retention::{Candidate, RetentionPolicy, select_pruned};
use super::store::Store;

/// Size of the parts a data file is uploaded in (S3 wants at least 5 MiB but the last).
const PART: usize = 8 << 20;
/// Parts in flight at once: memory is at most about this many parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Where and as whom: a bucket, a prefix in it, and the server.
#[derive(Clone)]
pub struct S3Location {
    pub bucket: String,
    /// Folder in the bucket, without leading or trailing `/`; may be empty.
    pub prefix: String,
    /// The server's URL; none for AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible servers want.
    pub force_path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "{self}")
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// One store's copy in object storage.
pub struct Offsite {
    objects: Arc<dyn ObjectStore>,
    location: S3Location,
}

impl Offsite {
    /// A client of `location`; nothing is asked of the server yet.
    ///
    /// # Errors
    ///
    /// The settings do not make an S3 client (a malformed endpoint, say).
    pub fn new(location: S3Location) -> anyhow::Result<Self> {
        crate::tls::install_provider();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(location.region.as_deref().unwrap_or("us-east-1"))
            .with_access_key_id(&location.access_key_id)
            .with_secret_access_key(&location.secret_access_key)
            .with_virtual_hosted_style_request(!location.force_path_style);
        if let Some(endpoint) = &location.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let objects = builder
            .build()
            .with_context(|| format!("the S3 settings of {location}"))?;
        Ok(Self {
            objects: Arc::new(objects),
            location,
        })
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    fn path(&self, file: &str) -> ObjectPath {
        let prefix = self.location.prefix.trim_matches('/');
        if prefix.is_empty() {
            ObjectPath::from(file)
        } else {
            ObjectPath::from(format!("{prefix}/{file}"))
        }
    }

    /// Copies committed snapshot `manifest` of `store` here: the data file in parts, then
    /// the manifest. A copy that fails part-way leaves no manifest, so nothing that a
    /// listing takes for a snapshot.
    ///
    /// # Errors
    ///
    /// A file cannot be read, or the server refuses or cannot be reached.
    pub async fn upload(&self, store: &Store, manifest: &Manifest) -> anyhow::Result<()> {
        let data = store.dir().join(&manifest.file);
        let target = self.path(&manifest.file);
        let mut file = tokio::fs::File::open(&data)
            .await
            .with_context(|| format!("opening {}", data.display()))?;
        let upload = self
            .objects
            .put_multipart(&target)
            .await
            .with_context(|| format!("starting the upload of {target} to {}", self.location))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            parts.wait_for_capacity(PARTS_IN_FLIGHT).await?;
            parts.write(&buffer[..n]);
        }
        parts
            .finish()
            .await
            .with_context(|| format!("uploading {target} to {}", self.location))?;
        let manifest_file = Manifest::file_name(&manifest.id);
        let text = tokio::fs::read(store.dir().join(&manifest_file)).await?;
        self.objects
            .put(&self.path(&manifest_file), text.into())
            .await
            .with_context(|| format!("uploading {manifest_file} to {}", self.location))?;
        Ok(())
    }

    /// Writes a small object, `<prefix>/<file>`, in one request; returns its URL.
    ///
    /// # Errors
    ///
    /// The server refuses or cannot be reached.
    pub async fn put(&self, file: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let path = self.path(file);
        self.objects
            .put(&path, bytes.into())
            .await
            .with_context(|| format!("uploading {file} to {}", self.location))?;
        Ok(format!("s3://{}/{path}", self.location.bucket))
    }

    /// Reads a small object, `<prefix>/<file>`.
    ///
    /// # Errors
    ///
    /// There is no such object, or the server refuses or cannot be reached.
    pub async fn get(&self, file: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.path(file);
        let bytes = self.objects.get(&path).await?.bytes().await;
        Ok(bytes
            .with_context(|| format!("downloading {file} from {}", self.location))?
            .to_vec())
    }

    /// The IDs of the snapshots here, newest first: those with a manifest (committed).
    ///
    /// # Errors
    ///
    /// The server refuses or cannot be reached.
    pub async fn ids(&self) -> anyhow::Result<Vec<String>> {
        Ok(ids_in(&self.files().await?))
    }

    /// The manifests of the snapshots here, newest first (nothing else is downloaded).
    ///
    /// # Errors
    ///
    /// The server refuses or cannot be reached, or a manifest does not parse.
    pub async fn manifests(&self) -> anyhow::Result<Vec<Manifest>> {
        let mut manifests = Vec::new();
        for id in self.ids().await? {
            let path = self.path(&Manifest::file_name(&id));
            let bytes = self.objects.get(&path).await?.bytes().await?;
            let manifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("the manifest {path} at {}", self.location))?;
            manifests.push(manifest);
        }
        Ok(manifests)
    }

    /// The file names directly under the prefix.
    async fn files(&self) -> anyhow::Result<BTreeSet<String>> {
        let prefix = self.location.prefix.trim_matches('/');
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        let listed: Vec<_> = self
            .objects
            .list(prefix.as_ref())
            .try_collect()
            .await
            .with_context(|| format!("listing {}", self.location))?;
        let depth = prefix.as_ref().map_or(0, |p| p.parts().count());
        Ok(listed
            .into_iter()
            .filter(|meta| meta.location.parts().count() == depth + 1)
            .filter_map(|meta| meta.location.filename().map(str::to_owned))
            .collect())
    }

    /// Downloads snapshot `id` (manifest and data file) into the folder of `store`, streamed.
    ///
    /// # Errors
    ///
    /// The snapshot has no manifest here, or a download or write failed.
    pub async fn download(&self, id: &str, store: &Store) -> anyhow::Result<()> {
        let files = self.files().await?;
        let manifest = Manifest::file_name(id);
        if !files.contains(&manifest) {
            bail!("no snapshot {id} at {}", self.location);
        }
        let data = files
            .iter()
            .filter(|f| f.starts_with(&format!("{id}.")) && f.ends_with(".age"))
            .cloned();
        for file in data.chain([manifest]) {
            let source = self.path(&file);
            let mut stream = self
                .objects
                .get(&source)
                .await
                .with_context(|| format!("downloading {source} from {}", self.location))?
                .into_stream();
            let path = store.dir().join(&file);
            let mut out = tokio::fs::File::create(&path)
                .await
                .with_context(|| format!("creating {}", path.display()))?;
            while let Some(chunk) = stream.try_next().await? {
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
        }
        Ok(())
    }

    /// Deletes snapshot `id` here: the manifest first, so that it stops being a snapshot
    /// before its data goes.
    ///
    /// # Errors
    ///
    /// The server refuses or cannot be reached.
    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        self.delete_in(&self.files().await?, id).await
    }

    /// [`Offsite::delete`], given the files here (one listing serves a whole prune).
    async fn delete_in(&self, files: &BTreeSet<String>, id: &str) -> anyhow::Result<()> {
        let manifest = Manifest::file_name(id);
        let data = files
            .iter()
            .filter(|f| f.starts_with(&format!("{id}.")) && **f != manifest);
        for file in std::iter::once(&manifest).chain(data) {
            match self.objects.delete(&self.path(file)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    return Err(err).context(format!("deleting {file} at {}", self.location));
                }
            }
        }
        Ok(())
    }

    /// Deletes the snapshots here that `policy` drops at `now` (judged on what is here, not
    /// on what the volume still holds); their IDs.
    ///
    /// # Errors
    ///
    /// The server refuses or cannot be reached.
    pub async fn prune(
        &self,
        policy: &RetentionPolicy,
        now: Timestamp,
    ) -> anyhow::Result<Vec<String>> {
        let files = self.files().await?;
        let candidates: Vec<Candidate> = ids_in(&files)
            .into_iter()
            .filter_map(|id| {
                let started_at = start_of(&id)?;
                Some(Candidate { id, started_at })
            })
            .collect();
        let pruned = select_pruned(&candidates, policy, now);
        for id in &pruned {
            self.delete_in(&files, id).await?;
        }
        Ok(pruned)
    }
}

/// The IDs of the snapshots among `files` (those with a manifest: committed), newest first.
fn ids_in(files: &BTreeSet<String>) -> Vec<String> {
    let mut ids: Vec<String> = files
        .iter()
        .filter_map(|file| file.strip_suffix(".manifest.json"))
        .filter(|id| is_snapshot_id(id))
        .map(str::to_owned)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// The start time a snapshot ID names (`20261125T020000Z`).
fn start_of(id: &str) -> Option<Timestamp> {
    let civil = k8s_openapi::jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", id).ok()?;
    civil
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Object storage on the command line: `--s3 s3://bucket/prefix` and how to reach it; the
/// credentials come from the environment, as the AWS tools take them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct S3Args {
    /// Snapshots in object storage, `s3://bucket/prefix` (a Backup's status names its own).
    #[arg(long, value_name = "URL")]
    pub s3: Option<String>,
    /// The S3 server's URL, for a server other than AWS.
    #[arg(long, requires = "s3")]
    pub s3_endpoint: Option<String>,
    #[arg(long, requires = "s3")]
    pub s3_region: Option<String>,
    /// Virtual-hosted-style requests (`bucket.endpoint`) instead of path-style ones.
    #[arg(long, requires = "s3")]
    pub s3_virtual_hosted: bool,
    // Also from the environment, where they are ignored without --s3.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
}

impl S3Args {
    /// The location these arguments name, if any.
    ///
    /// # Errors
    ///
    /// The URL is not `s3://bucket[/prefix]`, or credentials are missing.
    pub fn location(&self) -> anyhow::Result<Option<S3Location>> {
        let Some(url) = &self.s3 else {
            return Ok(None);
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("--s3 {url:?} is not s3://bucket/prefix");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("--s3 {url:?} names no bucket");
        }
        let (Some(access_key_id), Some(secret_access_key)) =
            (&self.s3_access_key_id, &self.s3_secret_access_key)
        else {
            bail!(
                "--s3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --s3-access-key-id and --s3-secret-access-key)"
            );
        };
        Ok(Some(S3Location {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: !self.s3_virtual_hosted,
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
        }))
    }
}
