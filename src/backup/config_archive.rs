//! Configuration snapshots: ConfigMaps and Secrets as one tar archive of YAML
//! files (`configmaps/<name>.yaml`, `secrets/<name>.yaml`), stripped of what
//! the API server owns, so that restoring is a server-side apply of each file.

use std::io::{Read, Write};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

/// One archived object: its archive path and YAML.
pub struct ArchivedObject {
    pub path: String,
    pub yaml: String,
}

/// Metadata worth restoring: name, labels, annotations (not UIDs, versions or owners).
fn portable(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        labels: meta.labels.clone(),
        annotations: meta.annotations.clone().map(|a| {
            a.into_iter()
                .filter(|(k, _)| k != "kubectl.kubernetes.io/last-applied-configuration")
                .collect()
        }),
        ..Default::default()
    }
}

/// The archive entries of the given objects, in a stable order.
pub fn entries(
    config_maps: &[ConfigMap],
    secrets: &[Secret],
) -> Result<Vec<ArchivedObject>, serde_yaml::Error> {
    let mut out = Vec::new();
    for map in config_maps {
        let object = ConfigMap {
            metadata: portable(&map.metadata),
            ..map.clone()
        };
        let yaml = serde_yaml::to_string(&with_type(&object, "ConfigMap")?)?;
        out.push(ArchivedObject {
            path: format!("configmaps/{}.yaml", map.name_any()),
            yaml,
        });
    }
    for secret in secrets {
        let object = Secret {
            metadata: portable(&secret.metadata),
            ..secret.clone()
        };
        let yaml = serde_yaml::to_string(&with_type(&object, "Secret")?)?;
        out.push(ArchivedObject {
            path: format!("secrets/{}.yaml", secret.name_any()),
            yaml,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn with_type<T: serde::Serialize>(
    object: &T,
    kind: &str,
) -> Result<serde_json::Value, serde_yaml::Error> {
    let mut value =
        serde_json::to_value(object).map_err(<serde_yaml::Error as serde::ser::Error>::custom)?;
    value["apiVersion"] = "v1".into();
    value["kind"] = kind.into();
    Ok(value)
}

/// Writes the entries as a tar stream.
pub fn write(entries: &[ArchivedObject], sink: impl Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(sink);
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.yaml.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, &entry.path, entry.yaml.as_bytes())?;
    }
    tar.into_inner()?.flush()
}

/// Reads the entries of a tar stream written by [`write`].
pub fn read(source: impl Read) -> std::io::Result<Vec<ArchivedObject>> {
    let mut archive = tar::Archive::new(source);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.display().to_string();
        let mut yaml = String::new();
        entry.read_to_string(&mut yaml)?;
        out.push(ArchivedObject { path, yaml });
    }
    Ok(out)
}

/// Server-side applies every archived object to `namespace` as `client`'s user, under the
/// restore's own field manager; returns their paths.
pub async fn apply(
    client: &kube::Client,
    entries: Vec<ArchivedObject>,
    namespace: &str,
) -> anyhow::Result<Vec<String>> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let params = PatchParams::apply(crate::names::RESTORE_MANAGER).force();
    let mut applied = Vec::new();
    for entry in entries {
        let mut object: DynamicObject = serde_yaml::from_str(&entry.yaml)
            .map_err(|e| anyhow::anyhow!("{}: {e}", entry.path))?;
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        if kind != "ConfigMap" && kind != "Secret" {
            anyhow::bail!(
                "{}: only ConfigMaps and Secrets are restored, not {kind:?}",
                entry.path
            );
        }
        object.metadata.namespace = Some(namespace.to_string());
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", &kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        api.patch(&object.name_any(), &params, &Patch::Apply(&object))
            .await
            .map_err(|e| anyhow::anyhow!("applying {}: {e}", entry.path))?;
        applied.push(entry.path);
    }
    Ok(applied)
}

/// A configuration snapshot of `entries` (the objects of namespace `namespace`) in `store`.
///
/// # Errors
///
/// The store cannot be written.
pub fn snapshot(
    store: &super::Store,
    key: &super::BackupKey,
    entries: &[ArchivedObject],
    namespace: &str,
) -> Result<super::Manifest, super::StoreError> {
    let mut writer = store.begin_now(super::SnapshotKind::Configuration, key)?;
    writer.set_source(format!(
        "ConfigMaps and Secrets of namespace {namespace} selected by the Backup"
    ));
    let paths: Vec<serde_json::Value> = entries.iter().map(|e| e.path.clone().into()).collect();
    writer.details_mut().insert("objects".into(), paths.into());
    write(entries, &mut writer).map_err(|e| super::StoreError::Io {
        context: "writing the archive".into(),
        source: e,
    })?;
    writer.commit(Some(entries.len() as u64), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_through_the_archive_without_server_fields() {
        let mut map: ConfigMap = serde_yaml::from_str(
            "metadata: {name: brain, namespace: titan, uid: abc, resourceVersion: '7', labels: {app: titan}}\ndata: {brain.config.json: '{}'}",
        )
        .unwrap();
        map.metadata.managed_fields = Some(vec![]);
        let secret: Secret =
            serde_yaml::from_str("metadata: {name: redis-auth}\nstringData: {password: s3cret}")
                .unwrap();
        let mut tar = Vec::new();
        write(&entries(&[map], &[secret]).unwrap(), &mut tar).unwrap();
        let back = read(tar.as_slice()).unwrap();
        let paths: Vec<&str> = back.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["configmaps/brain.yaml", "secrets/redis-auth.yaml"]);
        let restored: ConfigMap = serde_yaml::from_str(&back[0].yaml).unwrap();
        assert_eq!(restored.metadata.uid, None);
        assert_eq!(restored.metadata.resource_version, None);
        assert_eq!(restored.metadata.namespace, None);
        assert_eq!(restored.metadata.labels.unwrap()["app"], "titan");
        assert_eq!(restored.data.unwrap()["brain.config.json"], "{}");
        assert!(
            back[0].yaml.starts_with("apiVersion: v1\n")
                || back[0].yaml.contains("kind: ConfigMap")
        );
    }
}
