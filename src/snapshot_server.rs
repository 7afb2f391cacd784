//! The operator's snapshot endpoint: restore Jobs in any namespace read a Backup's snapshots
//! here, since the operator's backup volume (a ReadWriteOnce claim in its own namespace) is
//! out of their reach.
//!
//! - `GET /v1/namespaces/{ns}/backups/{name}/snapshots`: the snapshots, newest first, with
//!   their files ([`SnapshotIndex`]).
//! - `GET /v1/namespaces/{ns}/backups/{name}/snapshots/{file}`: one of those files, streamed.
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
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::api::Backup;
use crate::backup::remote::{AUDIENCE, IndexEntry, SnapshotIndex};

type Body = BoxBody<Bytes, std::io::Error>;

/// What the endpoint needs: the API (for reviews and Backups) and the backup volume.
#[derive(Clone)]
pub struct SnapshotServer {
    pub client: Client,
    pub backup_dir: PathBuf,
}

/// A refusal, as an HTTP status and a sentence.
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

    async fn respond<B>(&self, request: Request<B>) -> Response<Body> {
        match self.answer(&request).await {
            Ok(response) => response,
            Err(Refusal(status, why)) => {
                tracing::info!(path = request.uri().path(), %status, %why, "snapshot request refused");
                text(status, format!("{why}\n"))
            }
        }
    }

    async fn answer<B>(&self, request: &Request<B>) -> Result<Response<Body>, Refusal> {
        let path: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
        let (namespace, name, file) = match path.as_slice() {
            ["v1", "namespaces", ns, "backups", name, "snapshots"] => (*ns, *name, None),
            ["v1", "namespaces", ns, "backups", name, "snapshots", file] => {
                (*ns, *name, Some(*file))
            }
            _ => return Err(Refusal(StatusCode::NOT_FOUND, "no such endpoint".into())),
        };
        if request.method() != hyper::Method::GET {
            return Err(Refusal(StatusCode::METHOD_NOT_ALLOWED, "only GET".into()));
        }
        let token = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| Refusal(StatusCode::UNAUTHORIZED, "no bearer token".into()))?;
        self.authorize(token, namespace, name).await?;

        let backup = Api::<Backup>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| Refusal(StatusCode::BAD_GATEWAY, format!("reading the Backup: {e}")))?
            .ok_or_else(|| {
                Refusal(
                    StatusCode::NOT_FOUND,
                    format!("no Backup {namespace}/{name}"),
                )
            })?;
        let dir = self.backup_dir.join(crate::backup::backup_folder(&backup));
        if !dir.is_dir() {
            return Ok(json(&SnapshotIndex::default()));
        }
        let store = crate::backup::backup_store(&self.backup_dir, &backup).map_err(internal)?;
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
                format!("no snapshot file {file} in Backup {namespace}/{name}"),
            ));
        }
        let opened = tokio::fs::File::open(store.dir().join(file))
            .await
            .map_err(internal)?;
        let frames = tokio_util::io::ReaderStream::new(opened).map_ok(Frame::data);
        Ok(Response::new(BodyExt::boxed(StreamBody::new(frames))))
    }

    /// The token's user may `get` `backups/snapshots` of this Backup.
    async fn authorize(&self, token: &str, namespace: &str, name: &str) -> Result<(), Refusal> {
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
        let user = match status.user {
            Some(user) if status.authenticated == Some(true) => user,
            _ => {
                let why = status.error.unwrap_or_else(|| "not authenticated".into());
                return Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    format!("the token is refused (audience {AUDIENCE}): {why}"),
                ));
            }
        };
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
