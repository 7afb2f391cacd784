//! `titan-dr plan FILE.yaml`: the dry run. Checks the resource as the operator would and
//! prints what a run would do: the stages, what runs in parallel, the critical path and
//! whether its worst case fits the RTO objective.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{Exit, input};
use crate::api::disaster_recovery::DisasterRecovery;
use crate::api::duration::{GoDuration, format_duration};
use crate::plan::{Plan, PlannedStep};

/// Arguments of `titan-dr plan`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// The DisasterRecovery resource, as YAML.
    pub file: PathBuf,
    /// Exit with 1 when the worst case of the critical path exceeds the RTO objective.
    #[arg(long, env = "TITAN_DR_STRICT")]
    pub strict: bool,
}

/// Runs `titan-dr plan`: prints the plan on stdout, or what is wrong on stderr.
pub fn plan(args: &PlanArgs) -> Exit {
    match input::load(&args.file) {
        Err(error) => {
            eprintln!("error: {error}");
            Exit::InvalidInput
        }
        Ok((resource, plan)) => {
            print!("{}", describe(&resource, &plan));
            match rto_check(&resource, &plan) {
                RtoCheck::Exceeded { .. } if args.strict => Exit::Failed,
                _ => Exit::Succeeded,
            }
        }
    }
}

/// How the worst case of a plan compares with its RTO objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtoCheck {
    /// The resource sets no RTO.
    NoObjective { worst_case: Duration },
    /// Even if every attempt runs into its timeout, the run ends within the RTO.
    Fits { worst_case: Duration, rto: Duration },
    /// The timeouts allow a run longer than the RTO: the plan cannot promise to meet it.
    Exceeded { worst_case: Duration, rto: Duration },
}

/// Compares the worst case of the critical path with `spec.objectives.rto`.
pub fn rto_check(resource: &DisasterRecovery, plan: &Plan) -> RtoCheck {
    let worst_case = plan.critical_path().worst_case;
    match resource.rto_objective() {
        None => RtoCheck::NoObjective { worst_case },
        Some(rto) if worst_case <= rto => RtoCheck::Fits { worst_case, rto },
        Some(rto) => RtoCheck::Exceeded { worst_case, rto },
    }
}

/// The stages of the steps, the validations and the rollback, one line per step.
fn stages(plan: &Plan, width: usize) -> String {
    let mut out = String::new();
    let stages = plan.stages();
    let _ = writeln!(
        out,
        "\nSteps, in {} stages (each step starts once the steps it needs have ended; \
         the steps of one stage may run in parallel):",
        stages.len()
    );
    for (i, stage) in stages.iter().enumerate() {
        let parallel = if stage.len() > 1 {
            format!(" — {} in parallel", stage.len())
        } else {
            String::new()
        };
        let _ = writeln!(out, "  Stage {}{parallel}", i + 1);
        for name in stage {
            if let Some(step) = plan.find(name) {
                let _ = writeln!(out, "    {}", step_line(step, width, Column::Needs));
            }
        }
    }
    if !plan.validations().is_empty() {
        let _ = writeln!(
            out,
            "\nValidations, in parallel once every step has ended without a critical failure:"
        );
        for step in plan.validations() {
            let _ = writeln!(out, "    {}", step_line(step, width, Column::Critical));
        }
    }
    if !plan.rollback().is_empty() {
        let _ = writeln!(out, "\nRollback, in order, when a critical step fails:");
        for step in plan.rollback() {
            let _ = writeln!(out, "    {}", step_line(step, width, Column::None));
        }
    }

    out
}

/// The plan as text for a person: stages, validations, rollback, critical path and the RTO
/// verdict.
pub fn describe(resource: &DisasterRecovery, plan: &Plan) -> String {
    let spec = &resource.spec;
    let width = plan
        .steps()
        .iter()
        .chain(plan.validations())
        .chain(plan.rollback())
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    // `write!` to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "Scenario {} ({:?})", spec.scenario, spec.severity);
    if let Some(description) = &spec.description {
        let _ = writeln!(out, "  {}", description.trim());
    }
    if let Some(objectives) = &spec.objectives {
        let show = |o: &Option<GoDuration>| o.as_ref().map_or("none".to_owned(), |d| d.to_string());
        let _ = writeln!(
            out,
            "Objectives: RTO {}, RPO {}",
            show(&objectives.rto),
            show(&objectives.rpo)
        );
    }

    out += &stages(plan, width);
    let path = plan.critical_path();
    let _ = writeln!(out, "\nCritical path: {}", path.steps.join(" → "));
    let _ = writeln!(
        out,
        "Worst case: {} (every attempt on the path running into its timeout)",
        format_duration(path.worst_case)
    );
    let untimed: Vec<&str> = plan
        .steps()
        .iter()
        .chain(plan.validations())
        .filter(|s| s.timeout.is_none())
        .map(|s| s.name.as_str())
        .collect();
    if !untimed.is_empty() {
        let _ = writeln!(
            out,
            "Note: no timeout on {}; each is counted as {} and could run forever",
            untimed.join(", "),
            format_duration(crate::plan::DEFAULT_TIMEOUT)
        );
    }
    let _ = writeln!(out, "{}", rto_sentence(rto_check(resource, plan)));
    out
}

/// One line saying how the worst case compares with the RTO objective.
pub fn rto_sentence(check: RtoCheck) -> String {
    match check {
        RtoCheck::NoObjective { .. } => "RTO: no objective set".to_owned(),
        RtoCheck::Fits { worst_case, rto } => format!(
            "RTO {}: met even in the worst case ({} to spare)",
            format_duration(rto),
            format_duration(rto - worst_case)
        ),
        RtoCheck::Exceeded { worst_case, rto } => format!(
            "WARNING: the worst case {} exceeds the RTO objective {} by {}: \
             as planned, the RTO cannot be guaranteed",
            format_duration(worst_case),
            format_duration(rto),
            format_duration(worst_case - rto)
        ),
    }
}

/// What [`step_line`] shows after the timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Column {
    /// Criticality and the steps it needs: recovery steps.
    Needs,
    /// Criticality only: validations, which wait for all steps.
    Critical,
    /// Nothing more: rollback steps, which run in order whatever becomes of each.
    None,
}

/// A step's name, timeout and attempts, and what `column` asks for, aligned in columns.
fn step_line(step: &PlannedStep, width: usize, column: Column) -> String {
    let timeout = match step.timeout {
        Some(limit) => format!("timeout {}", format_duration(limit)),
        None => "no timeout".to_owned(),
    };
    let attempts = match step.retries {
        0 => String::new(),
        n => format!(" × {} attempts", n + 1),
    };
    let critical = if step.critical {
        "critical"
    } else {
        "non-critical"
    };
    let needs = if step.needs.is_empty() {
        String::new()
    } else {
        format!("needs {}", step.needs.join(", "))
    };
    let line = match column {
        Column::Needs => format!("{critical:<12}  {needs}"),
        Column::Critical => critical.to_owned(),
        Column::None => String::new(),
    };
    format!(
        "{:width$}  {:<26}  {line}",
        step.name,
        format!("{timeout}{attempts}")
    )
    .trim_end()
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titan() -> (DisasterRecovery, Plan) {
        let text = include_str!("../../tests/fixtures/plan/titan.yaml");
        let resource = input::parse(text).expect("fixture parses");
        let plan = Plan::new(&resource.spec).expect("fixture plans");
        (resource, plan)
    }

    #[test]
    fn the_three_phases_share_a_stage() {
        let (resource, plan) = titan();
        let text = describe(&resource, &plan);
        assert!(text.contains("Stage 6 — 3 in parallel"), "{text}");
        let stage = text
            .split("Stage 6")
            .nth(1)
            .expect("a sixth stage")
            .split("Validations")
            .next()
            .unwrap_or_default();
        for phase in ["start-phase1", "start-phase2", "start-phase3"] {
            assert!(stage.contains(phase), "{phase} not in stage 6:\n{text}");
        }
    }

    #[test]
    fn a_worst_case_over_the_rto_is_flagged() {
        let (mut resource, plan) = titan();
        assert!(matches!(rto_check(&resource, &plan), RtoCheck::Fits { .. }));
        if let Some(objectives) = resource.spec.objectives.as_mut() {
            objectives.rto = Some("1m".parse().unwrap());
        }
        let check = rto_check(&resource, &plan);
        assert!(matches!(check, RtoCheck::Exceeded { .. }), "{check:?}");
        assert!(rto_sentence(check).starts_with("WARNING"));
    }
}
