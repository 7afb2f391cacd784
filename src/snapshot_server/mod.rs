//! The operator's snapshot endpoint: restore Jobs in any namespace read a Backup's snapshots
//! here, since the operator's backup volume (a ReadWriteOnce claim in its own namespace) is
//! out of their reach.
//!
//! - `GET /v1/namespaces/{ns}/backups/{name}/snapshots`: the snapshots, newest first, with
//!   their files ([`SnapshotIndex`]).
//! - `GET /v1/namespaces/{ns}/backups/{name}/snapshots/{file}`: one of those files, streamed.
//! - `PUT` of the same: a snapshot Job delivering a new snapshot ([`upload`]); only a pod of
//!   the Backup's own snapshot Job may.
//!
//! Who may read is Kubernetes's decision, not ours: the bearer token is checked with a
//! TokenReview (audience [`AUDIENCE`], so an API server token is refused and a leaked
//! `titan-dr` token is useless against the API server), and its user with a
//! SubjectAccessReview for `get` on the subresource `backups/snapshots` of that Backup; a
//! Role grants it like `pods/log`. The files are age-encrypted and checksummed, so the
//! endpoint hands out nothing a reader could use or alter unnoticed without the key, which
//! stays in the Backup's namespace.

use std::path::PathBuf;

use futures::TryStreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};

use crate::api::Backup;
use crate::backup::remote::{AUDIENCE, IndexEntry, SnapshotIndex};
use crate::names::{KIND_SNAPSHOT, LABEL_BACKUP, LABEL_KIND};

mod upload;

type Body = BoxBody<Bytes, std::io::Error>;

/// What the endpoint needs: the API (for reviews and Backups) and the backup volume.
#[derive(Clone)]
pub struct SnapshotServer {
    pub client: Client,
    pub backup_dir: PathBuf,
}

/// A refusal, as an HTTP status and a sentence.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl SnapshotServer {
    /// Serves until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving Backup snapshots to restore Jobs");
        }
        crate::telemetry::serve_http(listener, "snapshots", move |request| {
            let server = self.clone();
            async move { server.respond(request).await }
        })
        .await
    }

    async fn respond<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = request.uri().path().to_owned();
        match self.answer(request).await {
            Ok(response) => response,
            Err(Refusal(status, why)) => {
                tracing::info!(%path, %status, %why, "snapshot request refused");
                text(status, format!("{why}\n"))
            }
        }
    }

    async fn answer<B>(&self, request: Request<B>) -> Result<Response<Body>, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let uri_path = request.uri().path().to_owned();
        let path: Vec<&str> = uri_path.trim_matches('/').split('/').collect();
        let (namespace, name, file) = match path.as_slice() {
            ["v1", "namespaces", ns, "backups", name, "snapshots"] => (*ns, *name, None),
            ["v1", "namespaces", ns, "backups", name, "snapshots", file] => {
                (*ns, *name, Some(*file))
            }
            _ => return Err(Refusal(StatusCode::NOT_FOUND, "no such endpoint".into())),
        };
        let token = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "no bearer token".into()))?
            .to_owned();
        match (request.method(), file) {
            (&hyper::Method::GET, _) => {}
            (&hyper::Method::PUT, Some(file)) => {
                let file = file.to_owned();
                let backup = self.backup(namespace, name).await?;
                let said = self
                    .receive(&token, &backup, &file, request.into_body())
                    .await?;
                tracing::info!(path = %uri_path, %said, "snapshot upload");
                return Ok(text(StatusCode::OK, format!("{said}\n")));
            }
            _ => {
                return Err(Refusal(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "GET, or PUT of a file".into(),
                ));
            }
        }
        // Whoever the RBAC lets read (restore Jobs), and the Backup's own Jobs (its checks).
        let user = self.review_token(&token).await?;
        if let Err(refusal) = self.may_read(&user, namespace, name).await {
            let backup = self.backup(namespace, name).await?;
            let own = self.own_job(&user, &backup, None).await;
            own.map_err(|_| refusal)?;
        }
        let backup = self.backup(namespace, name).await?;
        self.serve_files(&backup, file).await
    }

    /// The index of the Backup's snapshots, or one of their files.
    async fn serve_files(
        &self,
        backup: &Backup,
        file: Option<&str>,
    ) -> Result<Response<Body>, Refusal> {
        let dir = self.backup_dir.join(crate::backup::backup_folder(backup));
        if !dir.is_dir() {
            return Ok(json(&SnapshotIndex::default()));
        }
        let store = crate::backup::backup_store(&self.backup_dir, backup).map_err(internal)?;
        let index = SnapshotIndex {
            snapshots: store
                .ids()
                .map_err(internal)?
                .into_iter()
                .map(|id| IndexEntry {
                    files: store.files_of(&id),
                    id,
                })
                .collect(),
        };
        let Some(file) = file else {
            return Ok(json(&index));
        };
        // Only a file the index names: nothing else of the volume is reachable.
        if !index
            .snapshots
            .iter()
            .any(|s| s.files.iter().any(|f| f == file))
        {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                format!(
                    "no snapshot file {file} in Backup {}/{}",
                    backup.namespace().unwrap_or_default(),
                    backup.name_any()
                ),
            ));
        }
        let opened = tokio::fs::File::open(store.dir().join(file))
            .await
            .map_err(internal)?;
        let frames = tokio_util::io::ReaderStream::new(opened).map_ok(Frame::data);
        Ok(Response::new(BodyExt::boxed(StreamBody::new(frames))))
    }

    /// A file of a new snapshot, from the Backup's snapshot Job.
    async fn receive<B>(
        &self,
        token: &str,
        backup: &Backup,
        file: &str,
        body: B,
    ) -> Result<String, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::fmt::Display + Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let user = self.review_token(token).await?;
        self.own_job(&user, backup, Some(KIND_SNAPSHOT)).await?;
        let dir = self.backup_dir.join(crate::backup::backup_folder(backup));
        let owner = crate::backup::owner_of(backup);
        upload::receive(&dir, &owner, file, body).await
    }

    async fn backup(&self, namespace: &str, name: &str) -> Result<Backup, Refusal> {
        Api::<Backup>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, format!("reading the Backup: {e}")))?
            .ok_or_else(|| {
                Refusal(
                    StatusCode::NOT_FOUND,
                    format!("no Backup {namespace}/{name}"),
                )
            })
    }

    /// Who the token is, if the API server vouches for it for audience [`AUDIENCE`].
    async fn review_token(&self, token: &str) -> Result<UserInfo, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![AUDIENCE.to_owned()]),
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, format!("TokenReview failed: {e}")))?;
        let status = reviewed.status.unwrap_or_default();
        match status.user {
            Some(user) if status.authenticated == Some(true) => Ok(user),
            _ => {
                let why = status.error.unwrap_or_else(|| "not authenticated".into());
                Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    format!("the token is refused (audience {AUDIENCE}): {why}"),
                ))
            }
        }
    }

    /// The token is bound to a pod of a Job that this Backup controls: the only writer of
    /// its snapshots is the snapshot Job the operator made for it.
    async fn own_job(
        &self,
        user: &UserInfo,
        backup: &Backup,
        kind: Option<&str>,
    ) -> Result<(), Refusal> {
        let extra = |key: &str| {
            user.extra
                .as_ref()
                .and_then(|e| e.get(key))
                .and_then(|v| v.first().cloned())
        };
        let forbidden = |why: String| Refusal(StatusCode::FORBIDDEN, why);
        let (Some(pod_name), Some(pod_uid)) = (
            extra("authentication.kubernetes.io/pod-name"),
            extra("authentication.kubernetes.io/pod-uid"),
        ) else {
            return Err(forbidden(
                "only a pod's token may deliver a snapshot".into(),
            ));
        };
        let namespace = backup.namespace().unwrap_or_default();
        let pod = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .get_opt(&pod_name)
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, format!("reading pod: {e}")))?
            .filter(|pod| pod.uid().as_deref() == Some(pod_uid.as_str()))
            .ok_or_else(|| forbidden(format!("pod {namespace}/{pod_name} is gone")))?;
        let job_name = controller_of(&pod, "Job")
            .ok_or_else(|| forbidden(format!("pod {pod_name} belongs to no Job")))?;
        let job = Api::<Job>::namespaced(self.client.clone(), &namespace)
            .get_opt(&job_name)
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, format!("reading Job: {e}")))?
            .ok_or_else(|| forbidden(format!("Job {job_name} is gone")))?;
        let controlled = job.owner_references().iter().any(|o| {
            o.controller == Some(true)
                && o.kind == "Backup"
                && Some(&o.uid) == backup.uid().as_ref()
        });
        let of_kind =
            kind.is_none_or(|k| job.labels().get(LABEL_KIND).map(String::as_str) == Some(k));
        if controlled && of_kind && job.labels().get(LABEL_BACKUP) == Some(&backup.name_any()) {
            return Ok(());
        }
        Err(forbidden(format!(
            "Job {job_name} is not a Job of Backup {namespace}/{}",
            backup.name_any()
        )))
    }

    /// The token's user may `get` `backups/snapshots` of this Backup.
    async fn may_read(&self, user: &UserInfo, namespace: &str, name: &str) -> Result<(), Refusal> {
        let user = user.clone();
        let username = user.username.clone().unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    group: Some("dr.titan.io".into()),
                    resource: Some("backups".into()),
                    subresource: Some("snapshots".into()),
                    verb: Some("get".into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await
            .map_err(|e| {
                Refusal(
                    StatusCode::BAD_GATEWAY,
                    format!("SubjectAccessReview failed: {e}"),
                )
            })?
            .status
            .unwrap_or_default();
        if decided.allowed {
            return Ok(());
        }
        Err(Refusal(
            StatusCode::FORBIDDEN,
            format!(
                "{username} may not get backups/snapshots of {namespace}/{name}{}",
                decided
                    .reason
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ))
    }
}

/// The name of the object of `kind` that controls `pod`.
fn controller_of(pod: &Pod, kind: &str) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == kind)
        .map(|o| o.name.clone())
}

fn internal(error: impl std::fmt::Display) -> Refusal {
    Refusal(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(full(body.into_bytes()));
    *response.status_mut() = status;
    response
}

fn json(index: &SnapshotIndex) -> Response<Body> {
    let body = serde_json::to_vec(index).unwrap_or_default();
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}
