//! The images built without an engine (`scripts/build-images.sh`): reproducible, and the
//! operator's describes the same image as the `Dockerfile` users build with an engine.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn images_dir() -> PathBuf {
    // The cluster's start builds them; a running cluster rebuilds what changed.
    support::kubeconfig();
    support::run(
        std::process::Command::new(support::root().join("scripts/build-images.sh"))
            .stderr(std::process::Stdio::inherit()),
    );
    support::root().join("target/images")
}

/// The files of an OCI image-layout archive, by path.
fn archive(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(path).expect("the image archive"));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        files.insert(name, content);
    }
    files
}

fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    &files[&format!("blobs/sha256/{hex}")]
}

struct Image {
    config: Value,
    /// Path in the image (no leading slash) → (mode, is a directory).
    entries: BTreeMap<String, (u32, bool)>,
}

fn image(name: &str) -> Image {
    let files = archive(&images_dir().join(format!("{name}.tar")));
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest: Value = serde_json::from_slice(blob(
        &files,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let config: Value =
        serde_json::from_slice(blob(&files, manifest["config"]["digest"].as_str().unwrap()))
            .unwrap();
    let layer = blob(&files, manifest["layers"][0]["digest"].as_str().unwrap());
    let mut entries = BTreeMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        let path = entry.path().unwrap().display().to_string();
        let path = path.trim_end_matches('/').to_string();
        entries.insert(path, (header.mode().unwrap(), header.entry_type().is_dir()));
    }
    Image { config, entries }
}

/// `INSTRUCTION args` lines of the Dockerfile's last stage.
fn dockerfile_runtime_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(support::root().join("Dockerfile")).unwrap();
    let last = text.rsplit("\nFROM ").next().unwrap();
    last.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .map(|(i, rest)| (i.to_string(), rest.trim().to_string()))
        .collect()
}

#[test]
fn the_operator_image_matches_the_dockerfile() {
    let image = image("titan-dr");
    let config = &image.config["config"];
    let mut copied = Vec::new();
    for (instruction, args) in dockerfile_runtime_stage() {
        match instruction.as_str() {
            "USER" => assert_eq!(config["User"], args.as_str(), "USER"),
            "WORKDIR" => assert_eq!(config["WorkingDir"], args.as_str(), "WORKDIR"),
            "ENTRYPOINT" => {
                let expected: Value = serde_json::from_str(&args).unwrap();
                assert_eq!(config["Entrypoint"], expected, "ENTRYPOINT");
            }
            "CMD" => {
                let expected: Value = serde_json::from_str(&args).unwrap();
                assert_eq!(config["Cmd"], expected, "CMD");
            }
            "COPY" => copied.push(args.rsplit(' ').next().unwrap().to_string()),
            other => panic!("the test does not know Dockerfile instruction {other}"),
        }
    }
    assert!(!copied.is_empty(), "the Dockerfile copies the binaries");
    for file in copied {
        let (mode, dir) = image
            .entries
            .get(file.trim_start_matches('/'))
            .unwrap_or_else(|| panic!("{file} is missing from the local image"));
        assert!(!dir && mode & 0o111 != 0, "{file} is an executable file");
    }
    // What distroless/cc:nonroot brings: the nonroot user, CA certificates, glibc, /tmp.
    for path in [
        "etc/passwd",
        "etc/ssl/certs/ca-certificates.crt",
        "tmp",
        "usr/lib64/ld-linux-x86-64.so.2",
    ] {
        assert!(image.entries.contains_key(path), "{path} is missing");
    }
    assert!(
        !image.entries.contains_key("usr/bin/sh"),
        "no shell in the operator image"
    );
}

#[test]
fn images_are_reproducible_from_the_same_inputs() {
    let dir = images_dir();
    let spec = dir.join("titan-toolbox.tar.json");
    let out = tempfile::tempdir().unwrap();
    let build = |name: &str| {
        let path = out.path().join(name);
        let digest = support::run(
            std::process::Command::new(support::root().join("scripts/oci-image.py"))
                .arg(&spec)
                .arg(&path),
        );
        (digest.trim().to_string(), std::fs::read(&path).unwrap())
    };
    let (first_digest, first) = build("a.tar");
    let (second_digest, second) = build("b.tar");
    assert!(first_digest.starts_with("sha256:"), "{first_digest}");
    assert_eq!(first_digest, second_digest);
    assert!(
        first == second,
        "two builds of the same inputs differ byte for byte"
    );
    // And the archive the cluster imported is that one.
    let index = std::fs::read_to_string(dir.join("index")).unwrap();
    assert!(
        index.contains(&format!("localhost/titan-toolbox:local {first_digest}")),
        "{index}"
    );
}

#[test]
fn the_toolbox_has_what_recovery_steps_reach_for() {
    let image = image("titan-toolbox");
    for tool in [
        "sh",
        "cat",
        "tail",
        "sleep",
        "curl",
        "jq",
        "redis-cli",
        "kubectl",
    ] {
        assert!(
            image.entries.contains_key(&format!("usr/bin/{tool}")),
            "no {tool} in the toolbox"
        );
    }
    assert_eq!(image.image_user(), "65532:65532");
}

impl Image {
    fn image_user(&self) -> &str {
        self.config["config"]["User"].as_str().unwrap_or_default()
    }
}
