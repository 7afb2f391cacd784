//! The commands that work on files rather than on a cluster: `plan`, `run`, `runbook` and
//! `backup` (the snapshot store); `probe`, which probe steps run; and `status` and `report`,
//! which show a run in the cluster as `run` shows a local one.
//! Each returns an [`Exit`], so that scripts and CI can tell a failed recovery from bad input
//! and from an interruption.

pub mod approve;
pub mod backup;
pub mod evidence;
pub mod input;
pub mod plan;
pub mod probe;
pub mod run;
pub mod runbook;
pub mod status;
pub mod trigger;

pub use approve::ApproveArgs;
pub use backup::BackupCommand;
pub use evidence::EvidenceArgs;
pub use plan::PlanArgs;
pub use probe::ProbeArgs;
pub use run::RunArgs;
pub use runbook::RunbookCommand;
pub use status::{ReportArgs, StatusArgs};
pub use trigger::TriggerArgs;

/// How a command ended, as its process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: the recovery succeeded (or the command did what it was asked).
    Succeeded,
    /// 1: the recovery failed, or a file could not be written.
    Failed,
    /// 2: the input is invalid; nothing was run. Also what clap exits with on a usage error.
    InvalidInput,
    /// 130: stopped by Ctrl-C (or SIGTERM), as shells report an interrupted command.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Succeeded => 0,
            Exit::Failed => 1,
            Exit::InvalidInput => 2,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}
