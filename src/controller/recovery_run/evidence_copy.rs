//! The evidence of an ended run, copied beside the snapshots of every Backup of the scenario
//! that keeps copies in object storage (`evidence/<run>-<uid>.json` in the Backup's folder),
//! authenticated by the Backup's key: it outlives the cluster and the history limit, and only
//! a holder of the key could have written it (`titan-dr evidence --s3 URL --key-file K`
//! checks one).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::api::evidence::Evidence;
use crate::api::{Backup, RecoveryRun};
use crate::backup::offsite::{Offsite, S3Location};
use crate::backup::{BackupKey, offsite_prefix};
use crate::controller::{Context, SecretProblem};
use crate::evidence::{authenticate, copy_name};

/// Copies `evidence` of `run` to the object storage of each of `backups` that has one;
/// returns the URLs written, or the first failure (the caller tries again later).
pub async fn copy(
    ctx: &Context,
    run: &RecoveryRun,
    backups: &[Backup],
    evidence: &Evidence,
) -> Result<Vec<String>, String> {
    let name = copy_name(&run.name_any(), &run.uid().unwrap_or_default());
    let mut written = Vec::new();
    for backup in backups {
        let Some(location) = location(ctx, backup).await? else {
            continue;
        };
        let key = key(ctx, backup).await?;
        let at = location.to_string();
        let offsite = Offsite::new(location).map_err(|e| format!("{at}: {e:#}"))?;
        let url = offsite
            .put(&name, authenticate(evidence, &key))
            .await
            .map_err(|e| format!("Backup {}: {e:#}", backup.name_any()))?;
        written.push(url);
    }
    Ok(written)
}

/// Where `backup` keeps its copies, with the credentials of its Secret; none when it keeps
/// none.
async fn location(ctx: &Context, backup: &Backup) -> Result<Option<S3Location>, String> {
    let Some(s3) = &backup.spec.destination.s3 else {
        return Ok(None);
    };
    let Some(prefix) = offsite_prefix(backup) else {
        return Ok(None);
    };
    let credentials = &s3.credentials_secret_ref.name;
    Ok(Some(S3Location {
        bucket: s3.bucket.clone(),
        prefix,
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        force_path_style: s3.force_path_style.unwrap_or(s3.endpoint.is_some()),
        access_key_id: secret_text(ctx, backup, credentials, "accessKeyId").await?,
        secret_access_key: secret_text(ctx, backup, credentials, "secretAccessKey").await?,
    }))
}

/// The Backup's key, which authenticates its snapshots.
async fn key(ctx: &Context, backup: &Backup) -> Result<BackupKey, String> {
    let key_ref = &backup.spec.encryption.secret_ref;
    let field = key_ref.key.as_deref().unwrap_or("key");
    let text = secret_text(ctx, backup, &key_ref.name, field).await?;
    BackupKey::parse(&text, &format!("secret {}/{field}", key_ref.name)).map_err(|e| e.to_string())
}

/// Text under `field` of Secret `name` in the Backup's namespace.
async fn secret_text(
    ctx: &Context,
    backup: &Backup,
    name: &str,
    field: &str,
) -> Result<String, String> {
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &backup.namespace().unwrap_or_default());
    crate::controller::secret_text(&secrets, name, field)
        .await
        .map_err(|problem| match problem {
            SecretProblem::Missing(message) | SecretProblem::NotText(message) => message,
        })
}
