//! `titan-step run`: a program with stdout and stderr on one pipe, its output copied as it
//! comes and its tail kept, its exit code passed on, SIGTERM and SIGINT passed to it.

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use crate::{OUTPUT_TAIL_BYTES, Tail};

/// Where the kubelet reads a container's termination message by default.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// How long output is still read after the program ended: data it wrote is already in the
/// pipe, but a daemon it started may hold the pipe open, and must not keep the step running.
const DRAIN: Duration = Duration::from_millis(500);

/// How often the program is checked for having ended while its output pipe stays open.
const POLL_MS: libc::c_int = 100;

/// The process group of the running program (0: none), for the signal handler.
static CHILD_GROUP: AtomicI32 = AtomicI32::new(0);
/// A signal that came before the program started, forwarded once it has.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let group = CHILD_GROUP.load(Ordering::SeqCst);
    if group > 0 {
        // SAFETY: kill(2) is async-signal-safe and touches no memory.
        unsafe {
            libc::kill(-group, signal);
        }
    } else {
        PENDING.store(signal, Ordering::SeqCst);
    }
}

/// Makes SIGTERM and SIGINT reach the program's whole process group instead of ending this
/// process: the kubelet signals only PID 1, which is titan-step, and a shell's children must
/// hear it too. Exec resets caught signals, so the program starts with the defaults.
pub fn forward_signals() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is valid; the handler only reads atomics and calls kill.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The program's exit code; `128 + n` when signal `n` ended it; 127 when it was not
    /// found and 126 when it could not be executed, as a shell reports them.
    pub exit_code: i32,
    /// The end of its combined output.
    pub tail: Tail,
}

/// Runs `argv`, copies its output to `echo` and writes the tail to `message_file` when it
/// ends (a failure to write is reported on stderr). Returns the exit code to exit with.
pub fn run(argv: &[OsString], message_file: &Path, echo: &mut dyn Write) -> i32 {
    let outcome = capture(argv, echo);
    write_message(message_file, &outcome.tail.text());
    outcome.exit_code
}

/// Writes the termination message; a failure is reported on stderr, and changes no exit code.
pub fn write_message(message_file: &Path, text: &str) {
    if let Err(error) = std::fs::write(message_file, text) {
        eprintln!(
            "titan-step: cannot write the termination message to {}: {error}",
            message_file.display()
        );
    }
}

/// Runs `argv` to its end, with stdout and stderr on one pipe (interleaved as written),
/// copying what comes to `echo` and keeping the tail.
pub fn capture(argv: &[OsString], echo: &mut dyn Write) -> Outcome {
    let mut tail = Tail::new(OUTPUT_TAIL_BYTES);
    let mut say = |tail: &mut Tail, bytes: &[u8]| {
        // A closed stdout loses the log, never the tail.
        let _ = echo.write_all(bytes).and_then(|()| echo.flush());
        tail.push(bytes);
    };
    let started = pipe().and_then(|(read, write)| Ok((spawn(argv, write)?, read)));
    let (mut child, read) = match started {
        Ok(started) => started,
        Err(error) => {
            let program = argv
                .first()
                .map(|p| p.to_string_lossy())
                .unwrap_or_default();
            let line = format!("titan-step: cannot run {program:?}: {error}\n");
            say(&mut tail, line.as_bytes());
            let exit_code = match error.kind() {
                io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            return Outcome { exit_code, tail };
        }
    };
    let group = child.id() as i32;
    CHILD_GROUP.store(group, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: kill(2) has no memory effects.
        unsafe {
            libc::kill(-group, pending);
        }
    }

    let mut ended: Option<ExitStatus> = None;
    let mut drain_until = None;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if ended.is_none() {
            ended = child.try_wait().ok().flatten();
            if ended.is_some() {
                drain_until = Some(Instant::now() + DRAIN);
            }
        }
        let timeout = match drain_until {
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                left.as_millis().min(POLL_MS as u128) as libc::c_int
            }
            None => POLL_MS,
        };
        match read_some(&read, &mut buffer, timeout) {
            Ok(Some(0)) => break,
            Ok(Some(n)) => say(&mut tail, &buffer[..n]),
            Ok(None) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let status = match ended {
        Some(status) => status,
        None => wait(&mut child),
    };
    CHILD_GROUP.store(0, Ordering::SeqCst);
    // What the program left running dies now, as it would anyway once this process, PID 1 of
    // the container, exits and the kernel ends the rest of the PID namespace.
    // SAFETY: kill(2) has no memory effects; a group already gone gives ESRCH.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Outcome { exit_code, tail }
}

/// A pipe whose ends are closed on exec; the child gets the write end as stdout and stderr.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, which we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Starts the program in its own process group, so that a forwarded signal reaches every
/// process a shell starts. The Command, and with it this process's copies of the write end,
/// is dropped on return: the pipe ends when the program and its children have closed it.
fn spawn(argv: &[OsString], write: OwnedFd) -> io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no program given"))?;
    let stderr = write.try_clone()?;
    Command::new(program)
        .args(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .spawn()
}

/// Waits up to `timeout_ms` for output: `Some(0)` at the end of the stream, `None` if nothing
/// came in time.
fn read_some(
    read: &OwnedFd,
    buffer: &mut [u8],
    timeout_ms: libc::c_int,
) -> io::Result<Option<usize>> {
    let mut poll = libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; read(2) into a buffer of the length given.
    unsafe {
        match libc::poll(&mut poll, 1, timeout_ms) {
            0 => Ok(None),
            n if n < 0 => Err(io::Error::last_os_error()),
            _ => {
                let n = libc::read(read.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len());
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(Some(n as usize))
                }
            }
        }
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    loop {
        match child.wait() {
            Ok(status) => return status,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            // Only if the child was reaped elsewhere, which nothing here does.
            Err(_) => return ExitStatus::from_raw(1 << 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        ["/bin/sh", "-c", script].map(OsString::from).to_vec()
    }

    #[test]
    fn the_exit_code_is_kept() {
        let mut echo = Vec::new();
        assert_eq!(capture(&sh("exit 7"), &mut echo).exit_code, 7);
        assert_eq!(capture(&sh("true"), &mut echo).exit_code, 0);
    }

    #[test]
    fn stdout_and_stderr_share_one_stream_in_order() {
        let mut echo = Vec::new();
        let outcome = capture(
            &sh("echo one; echo two >&2; echo three; echo four >&2"),
            &mut echo,
        );
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(String::from_utf8(echo).unwrap(), "one\ntwo\nthree\nfour\n");
        assert_eq!(outcome.tail.text(), "one\ntwo\nthree\nfour\n");
    }

    #[test]
    fn the_tail_is_cut_at_a_character_and_the_echo_is_whole() {
        // 3000 "é" and a newline are 6001 bytes; the last 4000 begin inside an "é", which is
        // dropped: 1999 of them and the newline are left.
        let mut echo = Vec::new();
        let outcome = capture(
            &sh("i=0; while [ $i -lt 3000 ]; do printf é; i=$((i+1)); done; printf '\\n'"),
            &mut echo,
        );
        assert_eq!(echo.len(), 6001);
        let text = outcome.tail.text();
        assert!(text.len() <= OUTPUT_TAIL_BYTES);
        assert_eq!(text, format!("{}\n", "é".repeat(1999)));
    }

    #[test]
    fn the_message_file_holds_the_tail() {
        let dir = std::env::temp_dir().join(format!("titan-step-msg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let message = dir.join("termination-log");
        let mut echo = Vec::new();
        let code = run(
            &sh("echo to-out; echo to-err >&2; exit 3"),
            &message,
            &mut echo,
        );
        assert_eq!(code, 3);
        assert_eq!(
            std::fs::read_to_string(&message).unwrap(),
            "to-out\nto-err\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_signal_becomes_128_plus_its_number() {
        let mut echo = Vec::new();
        let outcome = capture(&sh("echo before; kill -TERM $$"), &mut echo);
        assert_eq!(outcome.exit_code, 128 + libc::SIGTERM);
        assert_eq!(outcome.tail.text(), "before\n");
    }

    #[test]
    fn a_missing_program_is_127_with_a_message() {
        let mut echo = Vec::new();
        let outcome = capture(&[OsString::from("/no/such/program")], &mut echo);
        assert_eq!(outcome.exit_code, 127);
        let text = outcome.tail.text();
        assert!(
            text.starts_with("titan-step: cannot run \"/no/such/program\": No such file"),
            "{text}"
        );
        assert_eq!(String::from_utf8(echo).unwrap(), text);
    }

    #[test]
    fn a_program_that_is_not_executable_is_126() {
        let mut echo = Vec::new();
        // A folder exists but cannot be executed.
        let outcome = capture(&[OsString::from("/")], &mut echo);
        assert_eq!(outcome.exit_code, 126, "{}", outcome.tail.text());
        assert!(
            outcome
                .tail
                .text()
                .starts_with("titan-step: cannot run \"/\": ")
        );
    }

    #[test]
    fn a_daemon_holding_the_pipe_does_not_keep_the_step_running() {
        let mut echo = Vec::new();
        let started = Instant::now();
        let outcome = capture(&sh("sleep 5 & echo started"), &mut echo);
        assert_eq!(outcome.exit_code, 0);
        assert_eq!(outcome.tail.text(), "started\n");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
