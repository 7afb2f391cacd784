//! Reading a `DisasterRecovery` from a YAML file and checking it the way the cluster would
//! before the operator ever sees it: the API server's schema (the parts a local run depends
//! on), then the planner. Every command that takes a resource file goes through here, so
//! `plan`, `run` and `runbook render` reject exactly the same input.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use kube::CustomResourceExt;
use serde::Deserialize;

use crate::api::disaster_recovery::DisasterRecovery;
use crate::plan::{Plan, PlanError};

/// The `apiVersion` a resource file must have.
pub const API_VERSION: &str = "dr.titan.io/v1alpha1";
/// The `kind` a resource file must have.
pub const KIND: &str = "DisasterRecovery";

/// Why a file is not a resource that can be planned. The message names the file and what is
/// wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not YAML of a `DisasterRecovery`; serde's message names the field.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// The resource breaks rules of the CRD schema, each given with its field.
    #[error("{}: invalid resource:\n  {}", path.display(), problems.join("\n  "))]
    Schema {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// The steps cannot be planned: a cycle, an unknown name, a duplicate.
    #[error("{}: invalid plan: {source}", path.display())]
    Plan { path: PathBuf, source: PlanError },
}

/// Reads a resource file and plans it.
///
/// # Errors
///
/// An [`InputError`] when the file cannot be read, is not a `DisasterRecovery`, breaks the
/// CRD schema or cannot be planned.
pub fn load(path: &Path) -> Result<(DisasterRecovery, Plan), InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    let resource = parse(&text).map_err(|message| InputError::Parse {
        path: path.to_owned(),
        message,
    })?;
    let problems = schema_problems(&resource);
    if !problems.is_empty() {
        return Err(InputError::Schema {
            path: path.to_owned(),
            problems,
        });
    }
    let plan = Plan::new(&resource.spec).map_err(|source| InputError::Plan {
        path: path.to_owned(),
        source,
    })?;
    Ok((resource, plan))
}

/// Deserializes a resource, rejecting fields the type does not have as `kubectl apply` does
/// with its default strict field validation: a misspelt `timout` must not silently vanish.
pub fn parse(text: &str) -> Result<DisasterRecovery, String> {
    /// The type's own fields; the derived resource type does not keep them.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TypeMeta {
        api_version: Option<String>,
        kind: Option<String>,
    }
    let type_meta: TypeMeta = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if type_meta.api_version.as_deref() != Some(API_VERSION)
        || type_meta.kind.as_deref() != Some(KIND)
    {
        let show = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        return Err(format!(
            "expected apiVersion {API_VERSION} and kind {KIND}, got apiVersion {} and kind {}",
            show(type_meta.api_version),
            show(type_meta.kind)
        ));
    }

    let mut unknown = Vec::new();
    let deserializer = serde_yaml::Deserializer::from_str(text);
    let resource: DisasterRecovery = serde_ignored::deserialize(deserializer, |path| {
        let path = path.to_string();
        if path != "apiVersion" && path != "kind" {
            unknown.push(path);
        }
    })
    .map_err(|e| e.to_string())?;
    if !unknown.is_empty() {
        return Err(format!(
            "unknown field {}",
            unknown.join(", unknown field ")
        ));
    }
    Ok(resource)
}

/// What the API server would refuse of this resource, checked against the CRD's own schema:
/// its structural rules (types, patterns, lengths, item counts, ranges) by JSON Schema, its
/// `x-kubernetes-validations` CEL rules by kube's client-side CEL. A file given to
/// `titan-dr run` never went through an API server, and the schema is the one definition of
/// what is valid. Restore steps, which need the cluster, are refused too.
fn schema_problems(resource: &DisasterRecovery) -> Vec<String> {
    static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
        jsonschema::validator_for(&crd_schema()).expect("the generated CRD schema is valid")
    });
    let Ok(object) = serde_json::to_value(resource) else {
        return vec!["the resource does not serialize".into()];
    };
    let mut problems: Vec<String> = VALIDATOR
        .iter_errors(&object)
        .map(|error| format!("{}: {error}", field_path(error.instance_path.as_str())))
        .collect();
    if let Err(errors) = kube::core::cel::validate_cel(resource) {
        problems.extend(
            errors
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message)),
        );
    }
    let lists = [
        ("steps", &resource.spec.steps),
        ("validations", &resource.spec.validations),
        ("rollback", &resource.spec.rollback),
    ];
    for (list, steps) in lists {
        for (i, step) in steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.restore.is_some())
        {
            problems.push(format!(
                "spec.{list}[{i}] ({}): restore steps run only in a cluster",
                step.name
            ));
        }
    }
    problems
}

/// The `openAPIV3Schema` of the DisasterRecovery CRD, as JSON.
fn crd_schema() -> serde_json::Value {
    let crd = DisasterRecovery::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema).unwrap_or_default()
}

/// A JSON pointer (`/spec/steps/0/name`) as Kubernetes writes a field (`spec.steps[0].name`).
fn field_path(pointer: &str) -> String {
    let mut path = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            path += &format!("[{part}]");
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path += part;
        }
    }
    if path.is_empty() {
        "(root)".into()
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::GROUP;

    #[test]
    fn api_version_is_of_the_group() {
        assert!(API_VERSION.starts_with(&format!("{GROUP}/")));
    }

    const MINIMAL: &str = "apiVersion: dr.titan.io/v1alpha1\nkind: DisasterRecovery\n\
        metadata: {name: x}\nspec:\n  scenario: x\n  steps:\n    - {name: a, command: 'true'}\n";

    #[test]
    fn a_minimal_resource_parses() {
        let resource = parse(MINIMAL).expect("valid");
        assert!(schema_problems(&resource).is_empty());
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let typo = MINIMAL.replace("command:", "comand:");
        let error = parse(&typo).expect_err("unknown field");
        assert!(error.contains("spec.steps.0.comand"), "{error}");
        let missing = MINIMAL.replace("name: a, ", "");
        let error = parse(&missing).expect_err("missing name");
        assert!(
            error.contains("spec.steps[0]") && error.contains("name"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_objective_is_refused_naming_the_field() {
        let yaml = MINIMAL.replace("scenario: x\n", "scenario: x\n  objectives: {rto: soon}\n");
        let error = parse(&yaml).expect_err("not a duration");
        assert!(
            error.starts_with(
                r#"spec.objectives.rto: "soon" is not a duration like 300s, 5m, 1h30m or 1.5h"#
            ),
            "{error}"
        );
    }

    #[test]
    fn another_kind_is_rejected() {
        let error = parse(&MINIMAL.replace("DisasterRecovery", "Backup")).expect_err("kind");
        assert!(error.contains("Backup"), "{error}");
    }

    #[test]
    fn schema_rules_name_the_field() {
        let both = MINIMAL.replace("command: 'true'", "command: 'true', args: ['x']");
        let resource = parse(&both).expect("parses");
        let problems = schema_problems(&resource);
        assert_eq!(
            problems,
            ["spec.steps[0]: exactly one of command, args, restore or probe must be set"]
        );
        let probe = MINIMAL.replace("command: 'true'", "probe: {}");
        let problems = schema_problems(&parse(&probe).expect("parses"));
        assert_eq!(
            problems,
            ["spec.steps[0].probe: set exactly one of http, redis or kubernetes"]
        );
        let retries = MINIMAL.replace("command: 'true'", "command: 'true', retries: 11");
        let problems = schema_problems(&parse(&retries).expect("parses"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("spec.steps[0].retries: 11"),
            "{problems:?}"
        );
        let none = MINIMAL.replace(
            "  steps:\n    - {name: a, command: 'true'}\n",
            "  steps: []\n",
        );
        let problems = schema_problems(&parse(&none).expect("parses"));
        assert!(problems[0].starts_with("spec.steps: []"), "{problems:?}");
        let http = MINIMAL.replace("command: 'true'", "probe: {http: {url: 'http://x/'}}");
        assert!(schema_problems(&parse(&http).expect("parses")).is_empty());
        let resource = parse(&MINIMAL.replace("name: a", "name: Bad_Name")).expect("parses");
        assert!(schema_problems(&resource)[0].starts_with("spec.steps[0].name:"));
    }
}
