//! The command line of the `titan-step` binary.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::run::{self, TERMINATION_LOG};

const USAGE: &str = "usage: titan-step install DEST
       titan-step run [--message-file PATH] -- PROGRAM [ARGS...]
       titan-step fail [--message-file PATH] MESSAGE";

/// Runs the command line (without the program name) and returns the exit code.
pub fn main(args: Vec<OsString>) -> i32 {
    let Some((command, rest)) = args.split_first() else {
        return usage("no command given");
    };
    match command.to_str() {
        Some("install") => match rest {
            [dest] => match install(Path::new(dest)) {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!(
                        "titan-step: cannot install to {}: {error}",
                        Path::new(dest).display()
                    );
                    1
                }
            },
            _ => usage("install takes one destination"),
        },
        Some("run") => match message_file(rest) {
            Ok((message, argv)) if !argv.is_empty() => {
                if let Err(error) = run::forward_signals() {
                    eprintln!("titan-step: cannot forward signals: {error}");
                }
                run::run(&argv, &message, &mut io::stdout())
            }
            Ok(_) => usage("run needs a program after --"),
            Err(problem) => usage(&problem),
        },
        Some("fail") => match message_file(rest) {
            Ok((message, text)) if text.len() == 1 => {
                fail(&text[0].to_string_lossy(), &message);
                1
            }
            Ok(_) => usage("fail takes one message"),
            Err(problem) => usage(&problem),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        _ => usage(&format!("unknown command {command:?}")),
    }
}

fn usage(problem: &str) -> i32 {
    eprintln!("titan-step: {problem}\n{USAGE}");
    2
}

/// Splits `[--message-file PATH] [--] REST...`; the message file defaults to the kubelet's.
fn message_file(args: &[OsString]) -> Result<(PathBuf, Vec<OsString>), String> {
    let mut message = PathBuf::from(TERMINATION_LOG);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            break;
        }
        if text == "--message-file" {
            message = args.next().ok_or("--message-file needs a path")?.into();
        } else if let Some(path) = text.strip_prefix("--message-file=") {
            message = path.into();
        } else if text.starts_with('-') {
            return Err(format!("unknown option {text}"));
        } else {
            let rest = std::iter::once(arg).chain(args).cloned().collect();
            return Ok((message, rest));
        }
    }
    Ok((message, args.cloned().collect()))
}

/// Copies this very executable to `dest`, mode 0755: the init container's whole job, which
/// needs no shell and no `cp` in the image. Written beside `dest` and renamed, so a step never
/// sees half a binary.
pub fn install(dest: &Path) -> io::Result<()> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    std::fs::copy("/proc/self/exe", &partial)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, dest)
}

/// Reports a step that cannot even start (its Job could not be built as asked): the message
/// goes to the log and becomes the termination message.
pub fn fail(message: &str, message_file: &Path) {
    eprintln!("{message}");
    // Held to the tail's bounds like any output, so the kubelet never cuts it.
    let text = crate::tail_text(message.as_bytes(), crate::OUTPUT_TAIL_BYTES);
    run::write_message(message_file, &text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_message_file_and_the_program_are_told_apart() {
        let (file, rest) = message_file(&args(&["--", "sh", "-c", "x"])).unwrap();
        assert_eq!(file, Path::new(TERMINATION_LOG));
        assert_eq!(rest, args(&["sh", "-c", "x"]));
        let (file, rest) = message_file(&args(&["--message-file", "/m", "--", "-x"])).unwrap();
        assert_eq!((file.as_path(), rest), (Path::new("/m"), args(&["-x"])));
        let (file, rest) = message_file(&args(&["--message-file=/n", "ls", "--", "-l"])).unwrap();
        assert_eq!(
            (file.as_path(), rest),
            (Path::new("/n"), args(&["ls", "--", "-l"]))
        );
        assert!(message_file(&args(&["--bogus", "--", "ls"])).is_err());
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        assert_eq!(main(args(&[])), 2);
        assert_eq!(main(args(&["jump"])), 2);
        assert_eq!(main(args(&["run", "--"])), 2);
        assert_eq!(main(args(&["install"])), 2);
    }
}
