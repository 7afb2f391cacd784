//! The `titan-step` binary as an init container and a step container run it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_titan-step");

/// A fresh folder under the target directory, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(name: &str) -> Folder {
        let path =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Folder(path)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn install_copies_an_executable_that_runs() {
    let folder = Folder::new("install");
    let dest = folder.0.join("shared/titan-step");
    let status = Command::new(BIN)
        .arg("install")
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success());
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(BIN).unwrap());

    let message = folder.0.join("termination-log");
    let output = Command::new(&dest)
        .args(["run", "--message-file"])
        .arg(&message)
        .args(["--", "/bin/sh", "-c", "echo hello; exit 4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(output.stdout, b"hello\n");
    assert_eq!(std::fs::read_to_string(&message).unwrap(), "hello\n");
}

#[test]
fn fail_reports_its_message_and_exits_1() {
    let folder = Folder::new("fail");
    let message = folder.0.join("termination-log");
    let output = Command::new(BIN)
        .args(["fail", "--message-file"])
        .arg(&message)
        .arg("Backup redis does not exist")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(output.stderr, b"Backup redis does not exist\n");
    assert_eq!(
        std::fs::read_to_string(&message).unwrap(),
        "Backup redis does not exist"
    );
}

/// Starts `titan-step run` on a shell script and waits for its first line of output.
fn start(
    script: &str,
    message: &Path,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(BIN)
        .args(["run", "--message-file"])
        .arg(message)
        .args(["--", "/bin/sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

#[test]
fn sigterm_is_forwarded_to_the_program() {
    let folder = Folder::new("sigterm");
    let message = folder.0.join("termination-log");
    let script = "trap 'echo stopping; exit 5' TERM; echo ready; while :; do sleep 0.1; done";
    let (mut child, mut out) = start(script, &message);
    signal(&child, libc::SIGTERM);
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(5), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    // The signal reaches the whole group: when it kills the loop's `sleep`, the shell may
    // report that child ("Terminated") before its trap runs. That line is the shell's, not the
    // program's answer to the signal.
    let without_report = |text: &str| -> String {
        text.lines()
            .filter(|line| *line != "Terminated")
            .map(|line| format!("{line}\n"))
            .collect()
    };
    assert_eq!(without_report(&rest), "stopping\n");
    assert_eq!(
        without_report(&std::fs::read_to_string(&message).unwrap()),
        "ready\nstopping\n"
    );
}

#[test]
fn a_program_killed_by_a_forwarded_sigint_is_130() {
    let folder = Folder::new("sigint");
    let message = folder.0.join("termination-log");
    // exec: the shell becomes sleep, which dies of SIGINT.
    let (mut child, _out) = start("echo ready; exec sleep 30", &message);
    signal(&child, libc::SIGINT);
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        None,
        "titan-step itself survived the signal"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
}
