//! `titan-dr run FILE.yaml`: executes a scenario on this machine (see [`crate::local`]),
//! stops cleanly on Ctrl-C, and tells by its exit code whether the recovery succeeded.

use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::{Exit, input};
use crate::api::disaster_recovery::DisasterRecovery;
use crate::api::duration::format_duration;
use crate::local::display::Display;
use crate::local::executor::{self, Options, RunOutcome};
use crate::local::report;
use crate::plan::Plan;

/// Arguments of `titan-dr run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The DisasterRecovery resource, as YAML.
    pub file: PathBuf,
    /// Write a post-incident report (markdown) here, and its timeline as an SVG beside it
    /// (same name, `.svg`).
    #[arg(long, env = "TITAN_DR_REPORT")]
    pub report: Option<PathBuf>,
    /// The working directory of every command [default: the current directory].
    #[arg(long, env = "TITAN_DR_WORKDIR")]
    pub workdir: Option<PathBuf>,
    /// Where each attempt's output is written, as `<step>-<attempt>.log` [default: a new
    /// directory under the system's temporary directory].
    #[arg(long, env = "TITAN_DR_LOG_DIR")]
    pub log_dir: Option<PathBuf>,
}

/// Runs `titan-dr run`.
pub async fn run(args: &RunArgs) -> Exit {
    let (mut resource, plan) = match input::load(&args.file) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::InvalidInput;
        }
    };
    // Addresses may name the target as `$(TITAN_TARGET_NAMESPACE)`, as in the cluster.
    if let Some(target) = resource.spec.target_namespace.clone() {
        resource.spec = resource.spec.acting_on(&target);
    }
    let options = match options(args, &resource) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::InvalidInput;
        }
    };
    if let Err(error) = stop_on_signals(options.cancel.clone()) {
        eprintln!("error: cannot handle Ctrl-C: {error}");
        return Exit::Failed;
    }

    let mut display = Display::new();
    header(&mut display, &args.file, &resource, &plan, &options);
    let record = executor::execute(&resource, &plan, &options, &mut display).await;
    let rto = resource.rto_objective();
    display.summary(&record, rto);

    if let Some(path) = &args.report {
        match report::write(path, &record, &resource, &plan) {
            Ok(svg) => display.line(&format!(
                "  report: {} (timeline: {})",
                path.display(),
                svg.display()
            )),
            Err(error) => {
                eprintln!("error: cannot write the report {}: {error}", path.display());
                return Exit::Failed;
            }
        }
    }
    match record.outcome {
        RunOutcome::Succeeded => Exit::Succeeded,
        RunOutcome::Failed => Exit::Failed,
        RunOutcome::Interrupted => Exit::Interrupted,
    }
}

/// Where the commands run and log; the log directory is made here.
fn options(args: &RunArgs, resource: &DisasterRecovery) -> Result<Options, String> {
    let workdir = match &args.workdir {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| format!("no current directory: {e}"))?,
    };
    if !workdir.is_dir() {
        return Err(format!(
            "--workdir {} is not a directory",
            workdir.display()
        ));
    }
    let spec = &resource.spec;
    let gated: Vec<&str> = (spec.steps.iter().chain(&spec.validations))
        .filter(|s| s.approval.as_ref().is_some_and(|a| a.required))
        .map(|s| s.name.as_str())
        .collect();
    if !gated.is_empty() {
        // Nobody here can say who approves: a gate is never skipped quietly.
        return Err(format!(
            "steps {} need an approval, which only a run in the cluster can have (the API \
             server says who approves); set approval.required: false to run them here",
            gated.join(", ")
        ));
    }
    let log_dir = args.log_dir.clone().unwrap_or_else(|| {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
        let name = format!(
            "titan-dr-{}-{stamp}-{}",
            resource.spec.scenario,
            std::process::id()
        );
        std::env::temp_dir().join(name)
    });
    std::fs::create_dir_all(&log_dir)
        .map_err(|e| format!("cannot make the log directory {}: {e}", log_dir.display()))?;
    Ok(Options {
        workdir,
        log_dir,
        cancel: CancellationToken::new(),
    })
}

/// The first SIGINT or SIGTERM cancels the run, which stops the running commands and ends
/// with exit code 130; a second one exits at once, for a command that ignores SIGTERM during
/// its grace period.
fn stop_on_signals(cancel: CancellationToken) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        for round in 0.. {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if round == 0 {
                eprintln!("\ninterrupted: stopping the running steps (again to exit at once)");
                cancel.cancel();
            } else {
                std::process::exit(i32::from(Exit::Interrupted.code()));
            }
        }
    });
    Ok(())
}

fn header(
    display: &mut Display,
    file: &Path,
    resource: &DisasterRecovery,
    plan: &Plan,
    options: &Options,
) {
    let spec = &resource.spec;
    let worst = plan.critical_path().worst_case;
    let rto = spec
        .objectives
        .as_ref()
        .and_then(|o| o.rto.as_ref())
        .map(|rto| format!(", RTO objective {rto}"))
        .unwrap_or_default();
    display.line(&format!(
        "Running {} from {}: {}, {}, {}, {}; worst case {}{rto}",
        spec.scenario,
        file.display(),
        count(plan.steps().len(), "step"),
        count(plan.stages().len(), "stage"),
        count(plan.validations().len(), "validation"),
        count(plan.rollback().len(), "rollback step"),
        format_duration(worst)
    ));
    display.line(&format!(
        "  workdir: {}  logs: {}",
        options.workdir.display(),
        options.log_dir.display()
    ));
    let unavailable = executor::unavailable_env(resource);
    if !unavailable.is_empty() {
        display.line(&format!(
            "  warning: env from secrets, config maps or fields is not available locally and \
             stays unset: {}",
            unavailable.join(", ")
        ));
    }
}

/// `1 step`, `3 steps`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
