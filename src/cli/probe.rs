//! `titan-dr probe --spec JSON`: what a probe step runs, in its Job or as a local process.

use super::Exit;
use crate::probe::{self, Probe};

/// Arguments of `titan-dr probe`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The step's `probe`, as JSON, e.g. `{"http":{"url":"http://localhost:3000/health"}}`.
    #[arg(long)]
    pub spec: String,
}

/// Prints the probe's output; exits 1 with why on stderr when it fails, 2 on a bad spec.
pub async fn run(args: &ProbeArgs) -> Exit {
    let spec: Probe = match serde_json::from_str(&args.spec) {
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("error: the probe spec is not a probe: {error}");
            return Exit::InvalidInput;
        }
    };
    match probe::run(&spec).await {
        Ok(output) => {
            println!("{output}");
            Exit::Succeeded
        }
        Err(error) => {
            if !error.output.is_empty() {
                println!("{}", error.output);
            }
            eprintln!("error: {error}");
            Exit::Failed
        }
    }
}
