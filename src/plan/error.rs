//! Why a spec cannot be planned. Each message names the offending names, because it becomes the
//! message of the `Ready=False`, reason `InvalidSpec` condition the user reads.

/// A spec that cannot be turned into a plan; no Job may be created for it.
///
/// In cycles, `a -> b` reads "a waits for b".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two or more components share a name.
    #[error("duplicate component names: {}", .0.join(", "))]
    DuplicateComponents(Vec<String>),

    /// Two or more steps share a name. Steps, validations and rollback steps count as one list,
    /// because each name becomes part of a Job name.
    #[error(
        "duplicate step names (names must be unique across steps, validations and rollback): {}",
        .0.join(", ")
    )]
    DuplicateSteps(Vec<String>),

    /// A component's `dependsOn` names a component that does not exist.
    #[error("component {component:?} depends on unknown component {dependency:?}")]
    UnknownDependency {
        /// The component whose `dependsOn` is wrong.
        component: String,
        /// The name it depends on.
        dependency: String,
    },

    /// Components depend on each other in a circle; the path starts and ends with one of them.
    #[error("cycle between components: {}", .0.join(" -> "))]
    ComponentCycle(Vec<String>),

    /// A step's `component` names a component that does not exist.
    #[error("step {step:?} names unknown component {component:?}")]
    UnknownComponent {
        /// The step.
        step: String,
        /// The component it names.
        component: String,
    },

    /// A step's `after` names something that is not one of `steps`.
    #[error("step {step:?} is after unknown step {after:?}")]
    UnknownAfter {
        /// The step whose `after` is wrong.
        step: String,
        /// The name it waits for.
        after: String,
    },

    /// Steps wait for each other in a circle, through `after`, barriers or components listed
    /// against their written order; the path starts and ends with one of them.
    #[error("cycle between steps: {}", .0.join(" -> "))]
    StepCycle(Vec<String>),

    /// A step's `expect.outputMatches` is not a regular expression.
    #[error(
        "step {step:?} has outputMatches /{pattern}/, which is not a regular expression: {error}"
    )]
    InvalidOutputMatches {
        /// The step, validation or rollback step.
        step: String,
        /// The pattern as written.
        pattern: String,
        /// Why it does not compile.
        error: String,
    },
}
