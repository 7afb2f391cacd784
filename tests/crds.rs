//! `crds/crds.yaml` is generated from the Rust types and must not drift.

#[test]
fn committed_crds_match_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/crds.yaml");
    let committed = std::fs::read_to_string(&path).expect("crds/crds.yaml exists");
    assert!(
        committed == titan_dr::api::crds_yaml(),
        "crds/crds.yaml is out of date: run `make crds` and commit the result"
    );
}
