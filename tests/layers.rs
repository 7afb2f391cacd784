//! The crate's layering, checked from its source: every module imports only modules of a
//! lower layer (or itself), so there is no import cycle and no upward import. A new module
//! must be given its layer here.

use std::collections::BTreeMap;
use std::path::Path;

/// Layers, bottom first.
const LAYERS: &[&[&str]] = &[
    &["names", "tls"],
    &["api"],
    &[
        "expect",
        "leader",
        "redis",
        "process",
        "runbook",
        "telemetry",
    ],
    &["plan"],
    &["backup"],
    &["probe", "evidence"],
    &["job", "local"],
    &["controller", "snapshot_server"],
    &["operator", "cli"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} has no layer in tests/layers.rs"))
}

/// `crate::<module>` references of every top-level module, outside comments.
fn imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if matches!(module.as_str(), "lib" | "main") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (number, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for part in line.split("crate::").skip(1) {
                    let used: String = part
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !used.is_empty() && used != module {
                        found
                            .entry(module.clone())
                            .or_default()
                            .entry(used)
                            .or_insert_with(|| format!("{}:{}", relative.display(), number + 1));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_lower_layers() {
    let mut upward = Vec::new();
    for (module, used) in imports() {
        for (target, at) in used {
            if layer_of(&target) >= layer_of(&module) {
                upward.push(format!("{module} uses {target} ({at})"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that are not downward:\n{}",
        upward.join("\n")
    );
}
