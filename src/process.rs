//! Running one command as a local process: its own process group (so a kill
//! reaches every child a shell started), combined output in a log file,
//! cancellation and a deadline. Shared by the local node agent and the
//! no-cluster executor.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// A file or folder made visible at another path, for this process only.
#[derive(Debug, Clone)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// What to run and how.
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Variables added to the environment inherited from this process.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// Where stdout and stderr go, interleaved as written.
    pub log_path: PathBuf,
    /// Bind mounts in a private mount namespace (empty: no namespace is made).
    pub mounts: Vec<BindMount>,
}

/// Why a process did not end by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Cancelled,
    DeadlineExceeded,
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code; `128 + signal` when a signal ended it, as shells report it.
    pub exit_code: i32,
    pub stopped: Option<Stopped>,
    pub duration: Duration,
}

/// How long a stopped process gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Runs the process to its end, or until `cancel` fires or `deadline` passes,
/// in which case its whole process group is terminated.
pub async fn run(
    spec: &ProcessSpec,
    cancel: &CancellationToken,
    deadline: Option<Duration>,
) -> io::Result<Outcome> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    if let Some(parent) = spec.log_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    if !spec.mounts.is_empty() {
        isolate_mounts(&mut command, &spec.mounts)?;
    }

    let started = Instant::now();
    let mut child = command.spawn()?;
    let pid = child.id().map(|p| p as i32);
    let sleep = async {
        match deadline {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        status = child.wait() => {
            // The shell may be gone while children it started still hold the group.
            if let Some(pid) = pid { signal_group(pid, libc::SIGKILL) }
            return Ok(Outcome { exit_code: exit_code(status?), stopped: None, duration: started.elapsed() });
        }
        _ = cancel.cancelled() => Stopped::Cancelled,
        _ = sleep => Stopped::DeadlineExceeded,
    };
    if let Some(pid) = pid {
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(KILL_GRACE, child.wait())
            .await
            .is_err()
        {
            signal_group(pid, libc::SIGKILL);
        }
        signal_group(pid, libc::SIGKILL);
    }
    let status = child.wait().await?;
    Ok(Outcome {
        exit_code: exit_code(status),
        stopped: Some(stopped),
        duration: started.elapsed(),
    })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; a group already gone gives ESRCH.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Gives the child a private mount namespace with the bind mounts applied,
/// the way the kubelet mounts a termination-message file or a volume.
fn isolate_mounts(command: &mut Command, mounts: &[BindMount]) -> io::Result<()> {
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with NUL byte"))
    };
    let pairs = mounts
        .iter()
        .map(|m| Ok((to_c(&m.source)?, to_c(&m.target)?)))
        .collect::<io::Result<Vec<_>>>()?;
    // SAFETY: the closure only makes syscalls on memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Private, so the binds never show up in the host's namespace.
            let root = c"/";
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for (source, target) in &pairs {
                let bind = libc::MS_BIND | libc::MS_REC;
                if libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    bind,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: Some(dir.to_path_buf()),
            log_path: dir.join("out.log"),
            mounts: vec![],
        }
    }

    #[tokio::test]
    async fn captures_output_env_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "echo $GREETING; pwd; echo oops >&2; exit 3");
        let outcome = run(&spec, &CancellationToken::new(), None).await.unwrap();
        assert_eq!(outcome.exit_code, 3);
        assert_eq!(outcome.stopped, None);
        let log = std::fs::read_to_string(dir.path().join("out.log")).unwrap();
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(log, format!("hello\n{}\noops\n", cwd.display()));
    }

    #[tokio::test]
    async fn deadline_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let outcome = run(
            &spec(dir.path(), &script),
            &CancellationToken::new(),
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        assert_eq!(outcome.stopped, Some(Stopped::DeadlineExceeded));
        assert!(outcome.duration < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed orphans may linger as zombies until init reaps them: those count as gone.
        // kill(2) returns before the target has run to its death, so on a busy machine the
        // child may still show as running for a moment: allow it a second.
        let state_of = || {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            (state, stat)
        };
        let mut seen = state_of();
        for _ in 0..20 {
            if matches!(seen.0.as_deref(), None | Some("Z" | "X")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen = state_of();
        }
        assert!(
            matches!(seen.0.as_deref(), None | Some("Z" | "X")),
            "the shell's child {child} outlived the deadline: {}",
            seen.1
        );
    }
}
