//! What a configuration snapshot Job may read: a ServiceAccount of the Backup (in its
//! namespace), and in the source namespace a Role that may `list` only the kinds the Backup
//! selects, bound to it. Applied before each attempt, so a source namespace that was deleted
//! and made again gets them back. In the Backup's own namespace all three are owned by the
//! Backup and go with it; a Role in another namespace (which consented by annotation) cannot
//! be, and carries the label `dr.titan.io/backup` instead.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use std::collections::BTreeMap;

use super::Failure;
use crate::api::Backup;
use crate::controller::{Context, MANAGER};
use crate::names::LABEL_BACKUP;

/// The name of the ServiceAccount of `backup`'s configuration snapshots.
pub fn account_name(backup: &Backup) -> String {
    let name = format!("titan-dr-snapshot-{}", backup.name_any());
    name.chars().take(253).collect()
}

/// Applies the ServiceAccount, Role and RoleBinding; returns the account's name.
pub async fn grant(
    ctx: &Context,
    backup: &Backup,
    source_ns: &str,
    resources: &[&str],
) -> Result<String, Failure> {
    let ns = backup.namespace().unwrap_or_default();
    let account = account_name(backup);
    let role_name: String = format!("titan-dr-snapshot-{ns}-{}", backup.name_any())
        .chars()
        .take(253)
        .collect();
    let owned = |name: &str, namespace: &str| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([(
            LABEL_BACKUP.to_string(),
            backup.name_any(),
        )])),
        owner_references: (namespace == ns)
            .then(|| backup.controller_owner_ref(&()))
            .flatten()
            .map(|o| vec![o]),
        ..Default::default()
    };
    let service_account = ServiceAccount {
        metadata: owned(&account, &ns),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let role = Role {
        metadata: owned(&role_name, source_ns),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: owned(&role_name, source_ns),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: role_name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: account.clone(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    apply(Api::namespaced(ctx.client.clone(), &ns), &service_account).await?;
    apply(Api::namespaced(ctx.client.clone(), source_ns), &role).await?;
    apply(Api::namespaced(ctx.client.clone(), source_ns), &binding).await?;
    Ok(account)
}

async fn apply<K>(api: Api<K>, object: &K) -> Result<(), Failure>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let mut value =
        serde_json::to_value(object).map_err(|e| Failure::new("Internal", e.to_string()))?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let name = object.name_any();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map(|_| ())
    .map_err(|e| {
        Failure::new(
            "AccessNotGranted",
            format!("applying {} {name}: {e}", K::kind(&())),
        )
    })
}
