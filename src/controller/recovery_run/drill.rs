//! Drills: a run of the scenario in a throwaway namespace (`<run>-drill`, labelled
//! `dr.titan.io/drill`), which the operator creates before the first step and deletes once the
//! run has ended, whatever the outcome. The run holds a finalizer until the namespace is gone,
//! so a run deleted midway (a history limit, its recovery deleted) takes its namespace too.
//!
//! A drill never touches the real target: every step gets the drill's namespace as
//! `TITAN_TARGET_NAMESPACE`, restores and probes name it as `$(TITAN_TARGET_NAMESPACE)`, and a
//! scenario whose restore writes anywhere else, or whose probe reads the real target, is
//! refused before anything is created.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

use crate::api::recovery_run::DrillStatus;
use crate::api::target::TARGET_NAMESPACE_REF;
use crate::api::{DisasterRecoverySpec, RecoveryRun};
use crate::controller::{Context, Error};
use crate::names::{DRILL_FINALIZER, LABEL_DRILL, LABEL_OWNER_UID, LABEL_RECOVERY, LABEL_RUN_NAME};

/// The drill namespace of `run`: `<run>-drill`, or, when that is not a DNS label (a long or
/// dotted run name), it cut and hashed with the run's UID.
pub fn namespace_name(run: &RecoveryRun) -> String {
    let name = format!("{}-drill", run.name_any());
    if name.len() <= 63 && !name.contains('.') {
        return name;
    }
    crate::job::owned_name(&name.replace('.', "-"), &run.uid().unwrap_or_default())
}

/// Why `scenario`, run as a drill in `drill` instead of `real`, would reach beyond its
/// namespace: a restore that writes anywhere else, or a probe that reads the real target
/// (its result would be production's, not the drill's). Empty when it is safe.
pub fn hazards(scenario: &DisasterRecoverySpec, real: &str, drill: &str) -> Vec<String> {
    let acting = scenario.acting_on(drill);
    acting
        .endpoints()
        .into_iter()
        .filter_map(|e| match (e.writes, e.namespace) {
            (true, Some(ns)) if ns == drill => None,
            (true, _) => Some(format!(
                "step {}: {} is not in the drill's namespace (name it with {TARGET_NAMESPACE_REF})",
                e.step, e.what
            )),
            (false, Some(ns)) if ns == real => Some(format!(
                "step {}: {} reads the real target namespace {real}, not the drill's \
                 (name it with {TARGET_NAMESPACE_REF})",
                e.step, e.what
            )),
            (false, _) => None,
        })
        .collect()
}

/// Creates the drill's namespace (the run already holds the finalizer), or says why it
/// cannot: a namespace of that name that is not this run's, or an operator without the right
/// to create namespaces (a namespaced install).
pub async fn prepare(
    ctx: &Context,
    run: &RecoveryRun,
    real: &str,
) -> Result<Result<DrillStatus, String>, Error> {
    let name = namespace_name(run);
    let uid = run.uid().unwrap_or_default();
    let labels = BTreeMap::from([
        (LABEL_DRILL.to_owned(), real.to_owned()),
        (LABEL_RECOVERY.to_owned(), run.spec.recovery.clone()),
        (LABEL_RUN_NAME.to_owned(), run.name_any()),
        (LABEL_OWNER_UID.to_owned(), uid.clone()),
    ]);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                crate::names::GROUP.to_owned() + "/run",
                format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any()),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let failed = |source| Error::DrillNamespace {
        namespace: name.clone(),
        source,
    };
    match api.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let found = api.get(&name).await.map_err(failed)?;
            if found.labels().get(LABEL_OWNER_UID) != Some(&uid) {
                return Ok(Err(format!(
                    "namespace {name} exists and is not this drill's: a drill runs only in a \
                     namespace it creates"
                )));
            }
        }
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Ok(Err(format!(
                "the operator may not create the drill's namespace {name} (a namespaced \
                 install cannot run drills): {}",
                e.message
            )));
        }
        Err(e) => return Err(failed(e)),
    }
    Ok(Ok(DrillStatus {
        namespace: name,
        stands_in_for: real.to_owned(),
        deleted_at: None,
    }))
}

/// Deletes the drill's namespace; returns when it was found gone (now), else none: it is
/// being deleted, look again. A namespace that is not this run's is never deleted.
pub async fn clean_up(
    ctx: &Context,
    run: &RecoveryRun,
    drill: &DrillStatus,
) -> Result<Option<Time>, Error> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let name = &drill.namespace;
    let failed = |source| Error::DrillNamespace {
        namespace: name.clone(),
        source,
    };
    let gone = Some(Time(Timestamp::now()));
    let Some(found) = api.get_opt(name).await.map_err(failed)? else {
        return Ok(gone);
    };
    if found.labels().get(LABEL_OWNER_UID) != run.uid().as_ref() {
        return Ok(gone);
    }
    if found.metadata.deletion_timestamp.is_none() {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(namespace = %name, "deleting the drill's namespace"),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(gone),
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(None)
}

/// Whether `run` holds the drill finalizer.
pub fn holds(run: &RecoveryRun) -> bool {
    run.finalizers().iter().any(|f| f == DRILL_FINALIZER)
}

/// The finalizers of `run` with the drill's added or removed.
pub fn finalizers(run: &RecoveryRun, hold: bool) -> Vec<String> {
    let mut kept: Vec<String> = run
        .finalizers()
        .iter()
        .filter(|f| *f != DRILL_FINALIZER)
        .cloned()
        .collect();
    if hold {
        kept.push(DRILL_FINALIZER.to_owned());
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drill_may_write_only_its_namespace_and_read_anything_but_the_real_target() {
        let spec: DisasterRecoverySpec = serde_yaml::from_str(
            "scenario: s\ntargetNamespace: titan\nsteps:\n  - {name: ok, restore: {backup: b, redis: {address: 'redis.$(TITAN_TARGET_NAMESPACE).svc:6379'}}}\n  - {name: prod, restore: {backup: b, redis: {address: 'redis.titan.svc:6379'}}}\n  - {name: bare, restore: {backup: b, redis: {address: 'redis:6379'}}}\nvalidations:\n  - {name: reads-prod, probe: {http: {url: 'http://web.titan:80/'}}}\n  - {name: reads-drill, probe: {http: {url: 'http://web.$(TITAN_TARGET_NAMESPACE):80/'}}}\n  - {name: reads-outside, probe: {http: {url: 'https://status.example.org/'}}}\n",
        )
        .unwrap();
        let found = hazards(&spec, "titan", "titan-3-drill");
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("step prod: restore.redis.address redis.titan.svc:6379 is not in the drill's namespace"), "{}", found[0]);
        assert!(found[1].starts_with("step bare: "), "{}", found[1]);
        assert!(found[2].contains("step reads-prod: probe.http.url http://web.titan:80/ reads the real target namespace titan"), "{}", found[2]);
    }

    #[test]
    fn the_drill_namespace_is_the_run_name_or_a_hashed_label() {
        let run = |name: &str| -> RecoveryRun {
            serde_yaml::from_str(&format!(
                "apiVersion: dr.titan.io/v1alpha1\nkind: RecoveryRun\nmetadata: {{name: '{name}', uid: u1}}\nspec: {{recovery: r}}\n"
            ))
            .unwrap()
        };
        assert_eq!(namespace_name(&run("titan-7")), "titan-7-drill");
        let long = namespace_name(&run(&format!("a.{}", "b".repeat(70))));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with("a-bbb") && !long.contains('.'), "{long}");
    }
}
