//! A real S3-compatible server for tests: SeaweedFS's `weed mini` (built by
//! `scripts/build-seaweedfs.sh`) on loopback ports, in a temporary folder, with one bucket
//! and one access key, stopped when the guard drops.
#![allow(dead_code)] // each test binary uses a different part of it

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "titan-test";
pub const SECRET_KEY: &str = "titan-test-secret";
pub const BUCKET: &str = "titan-backups";

pub struct S3Server {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The weed binary, built once per machine.
fn weed() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/build-seaweedfs.sh"))
        .output()
        .expect("running scripts/build-seaweedfs.sh");
    assert!(
        output.status.success(),
        "building weed failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// Starts the server and waits until its S3 gateway answers.
    pub fn start() -> Self {
        let weed = weed();
        let dir = tempfile::tempdir().expect("temporary folder");
        let config = dir.path().join("s3.json");
        let identities = serde_json::json!({"identities": [{
            "name": "titan",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]});
        std::fs::write(&config, identities.to_string()).unwrap();
        let port = free_port();
        let port_flag = |name: &str, port: u16| format!("-{name}={port}");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(dir.path().join("weed.log")).unwrap();
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-s3.config={}", config.display()))
            .arg(format!("-bucket={BUCKET}"))
            .arg(port_flag("s3.port", port))
            .arg(port_flag("s3.port.grpc", free_port()))
            .arg(port_flag("master.port", free_port()))
            .arg(port_flag("master.port.grpc", free_port()))
            .arg(port_flag("volume.port", free_port()))
            .arg(port_flag("volume.port.grpc", free_port()))
            .arg(port_flag("filer.port", free_port()))
            .arg(port_flag("filer.port.grpc", free_port()))
            .arg(port_flag("admin.port", free_port()))
            .arg(port_flag("admin.port.grpc", free_port()))
            .args(["-admin.port.legacy=0", "-s3.port.iceberg=0"])
            .args(["-webdav=false", "-admin.ui=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting weed mini");
        let mut server = Self { child, port, dir };
        server.wait_ready();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    /// Until the bucket can be listed (the gateway answers only once the filer is up).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!("{}/{BUCKET}", self.endpoint());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("weed mini exited ({status}):\n{}", self.log());
            }
            let answered = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            // Anonymous: refused (403) once the gateway and its bucket are up.
            if answered == "403" || answered == "200" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "weed mini not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the group this guard created.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
