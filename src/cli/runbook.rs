//! `titan-dr runbook import|render`: between the markdown runbooks the team writes and the
//! `DisasterRecovery` resources the operator runs.

use std::path::{Path, PathBuf};

use super::{Exit, input};
use crate::api::disaster_recovery::DisasterRecovery;

/// The `runbook` subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum RunbookCommand {
    /// Print the DisasterRecovery resource that a markdown runbook describes.
    Import(ImportArgs),
    /// Print a DisasterRecovery resource as a markdown runbook.
    Render(RenderArgs),
}

/// Arguments of `titan-dr runbook import`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// The runbook, in markdown.
    pub runbook: PathBuf,
    /// The disaster-recovery guide, whose "System Architecture Overview" gives the components
    /// when the runbook has no `## Components` section.
    #[arg(long, env = "TITAN_DR_GUIDE")]
    pub guide: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

/// Arguments of `titan-dr runbook render`.
#[derive(clap::Args, Debug, Clone)]
pub struct RenderArgs {
    /// The DisasterRecovery resource, as YAML.
    pub file: PathBuf,
}

/// How `runbook import` prints the resource.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// Runs a `runbook` subcommand. Errors go to stderr and nothing to stdout, so that
/// `titan-dr runbook import x.md > x.yaml` never leaves half a resource behind.
pub fn runbook(command: &RunbookCommand) -> Exit {
    let printed = match command {
        RunbookCommand::Import(args) => import(args),
        RunbookCommand::Render(args) => input::load(&args.file)
            .map(|(resource, _)| crate::runbook::render(&resource))
            .map_err(|e| e.to_string()),
    };
    match printed {
        Ok(text) => {
            print!("{text}");
            Exit::Succeeded
        }
        Err(message) => {
            eprintln!("error: {message}");
            Exit::InvalidInput
        }
    }
}

/// The imported resource as text, or what is wrong (with the file and line).
fn import(args: &ImportArgs) -> Result<String, String> {
    let runbook = read(&args.runbook)?;
    let guide = args.guide.as_deref().map(read).transpose()?;
    let resource = crate::runbook::import(&runbook, guide.as_deref()).map_err(|e| {
        let file = match e.document {
            crate::runbook::Document::Runbook => &args.runbook,
            crate::runbook::Document::Guide => args.guide.as_ref().unwrap_or(&args.runbook),
        };
        format!("{}: {e}", file.display())
    })?;
    format_resource(&resource, args.output)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A resource as `kubectl apply` takes it: `apiVersion` and `kind` first, no empty status.
pub fn format_resource(resource: &DisasterRecovery, format: Format) -> Result<String, String> {
    let result = match format {
        Format::Yaml => serde_yaml::to_string(resource).map_err(|e| e.to_string()),
        Format::Json => serde_json::to_string_pretty(resource)
            .map(|text| text + "\n")
            .map_err(|e| e.to_string()),
    };
    result.map_err(|e| format!("cannot serialize the resource: {e}"))
}
