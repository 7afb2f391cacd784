//! The plan of a run: which step waits for which, derived from components, barriers and
//! `after`, and what that means for parallelism and worst-case duration.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use super::PlanError;
use crate::api::disaster_recovery::{Component, DisasterRecoverySpec, Step};
use crate::api::duration::GoDuration;

/// Worst case assumed for one attempt of a step that has no `timeout`, in worst-case estimates
/// such as [`Plan::critical_path`]. Without a deadline a Job could run forever, so any number
/// is a guess; ten minutes is long for one runbook command yet keeps estimates readable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A step, validation or rollback step, with what the plan needs to know to schedule it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    /// The step's name, unique across steps, validations and rollback.
    pub name: String,
    /// Steps that must have ended before this one may start, in written order. Only direct
    /// prerequisites: one implied through another is left out. Always empty for validations
    /// and rollback steps, which are ordered by their list instead.
    pub needs: Vec<String>,
    /// Whether a failure (after retries) stops the run.
    pub critical: bool,
    /// How many more attempts follow a failed one.
    pub retries: u32,
    /// The longest one attempt may run, if the step says.
    pub timeout: Option<Duration>,
}

impl PlannedStep {
    /// The longest the step can take: every attempt running into its timeout (or
    /// [`DEFAULT_TIMEOUT`]).
    pub fn worst_case(&self) -> Duration {
        self.timeout
            .unwrap_or(DEFAULT_TIMEOUT)
            .saturating_mul(self.retries.saturating_add(1))
    }

    /// Also where `outputMatches` is compiled first: a pattern that does not compile makes
    /// the spec invalid before any attempt runs, instead of failing the step after it ran.
    fn from_step(step: &Step, needs: Vec<String>) -> Result<Self, PlanError> {
        let pattern = step
            .expect
            .as_ref()
            .and_then(|e| e.output_matches.as_deref());
        if let Some(pattern) = pattern
            && let Err(error) = crate::expect::output_regex(pattern)
        {
            return Err(PlanError::InvalidOutputMatches {
                step: step.name.clone(),
                pattern: pattern.to_owned(),
                error: error.to_string(),
            });
        }
        Ok(PlannedStep {
            name: step.name.clone(),
            needs,
            critical: step.is_critical(),
            retries: step.retries(),
            timeout: step.timeout.as_ref().map(GoDuration::duration),
        })
    }
}

/// The longest chain of a run, by worst-case duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriticalPath {
    /// The chain of steps, first to last, followed by the slowest validation (validations all
    /// start together once the steps have ended).
    pub steps: Vec<String>,
    /// The sum of the worst cases along the chain: how long the run can take, at most, when
    /// every attempt runs into its timeout and rollback is not needed.
    pub worst_case: Duration,
}

/// A validated spec, turned into the order its steps run in.
///
/// Validations and rollback steps take no part in the step graph: their `component` and
/// `after` fields are not used, since validations all run together after the steps and
/// rollback runs in written order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub(super) steps: Vec<PlannedStep>,
    pub(super) validations: Vec<PlannedStep>,
    pub(super) rollback: Vec<PlannedStep>,
    /// `needs` of every step as indices into `steps`, so that walks need no name lookups.
    pub(super) needs: Vec<Vec<usize>>,
    /// Indices into `steps`, each after all of its needs.
    topological: Vec<usize>,
}

impl Plan {
    /// Checks the spec and builds its step graph.
    ///
    /// A step with `component: C` waits for every step of the components C depends on
    /// (transitively) and for the steps of C listed before it. A step without a component is a
    /// barrier: it waits for every step listed before it, and every step listed after it waits
    /// for it. `after` adds explicit edges.
    ///
    /// # Errors
    ///
    /// A [`PlanError`] naming the offenders when names clash, a reference points nowhere, the
    /// components or steps wait for each other in a cycle, or an `outputMatches` is not a regular
    /// expression.
    pub fn new(spec: &DisasterRecoverySpec) -> Result<Plan, PlanError> {
        check_unique_names(spec)?;
        let components = ComponentGraph::new(&spec.components)?;
        let all_needs = step_needs(&spec.steps, &components)?;
        let topological = topological_order(&all_needs).map_err(|cycle| {
            PlanError::StepCycle(cycle.iter().map(|&i| spec.steps[i].name.clone()).collect())
        })?;
        let needs = without_implied(&all_needs, &topological);

        let steps = spec
            .steps
            .iter()
            .zip(&needs)
            .map(|(step, needs)| {
                let names = needs.iter().map(|&j| spec.steps[j].name.clone()).collect();
                PlannedStep::from_step(step, names)
            })
            .collect::<Result<_, _>>()?;
        let unordered = |list: &[Step]| -> Result<Vec<PlannedStep>, PlanError> {
            list.iter()
                .map(|step| PlannedStep::from_step(step, Vec::new()))
                .collect()
        };
        Ok(Plan {
            steps,
            validations: unordered(&spec.validations)?,
            rollback: unordered(&spec.rollback)?,
            needs,
            topological,
        })
    }

    /// The recovery steps, in written order.
    pub fn steps(&self) -> &[PlannedStep] {
        &self.steps
    }

    /// The validations, in written order.
    pub fn validations(&self) -> &[PlannedStep] {
        &self.validations
    }

    /// The rollback steps, in the order they run.
    pub fn rollback(&self) -> &[PlannedStep] {
        &self.rollback
    }

    /// The step, validation or rollback step of that name.
    pub fn find(&self, name: &str) -> Option<&PlannedStep> {
        self.steps
            .iter()
            .chain(&self.validations)
            .chain(&self.rollback)
            .find(|step| step.name == name)
    }

    /// The steps grouped by how many steps must run before them, at the least: stage 0 needs
    /// nothing, stage 1 needs only stage-0 steps, and so on. Steps of one stage may run in
    /// parallel. Within a stage, steps keep their written order.
    ///
    /// A run does not wait for a whole stage to end: each step starts as soon as its own
    /// `needs` have ended.
    pub fn stages(&self) -> Vec<Vec<&str>> {
        let mut level = vec![0; self.steps.len()];
        for &i in &self.topological {
            level[i] = self.needs[i]
                .iter()
                .map(|&j| level[j] + 1)
                .max()
                .unwrap_or(0);
        }
        let mut stages = vec![Vec::new(); level.iter().max().map_or(0, |&deepest| deepest + 1)];
        for (step, &level) in self.steps.iter().zip(&level) {
            stages[level].push(step.name.as_str());
        }
        stages
    }

    /// The chain of steps with the longest worst-case duration (see
    /// [`PlannedStep::worst_case`]). Ties go to the step written first.
    pub fn critical_path(&self) -> CriticalPath {
        let mut finish = vec![Duration::ZERO; self.steps.len()];
        let mut slowest_need: Vec<Option<usize>> = vec![None; self.steps.len()];
        for &i in &self.topological {
            slowest_need[i] = self.needs[i]
                .iter()
                .copied()
                .max_by_key(|&j| (finish[j], Reverse(j)));
            let start = slowest_need[i].map_or(Duration::ZERO, |j| finish[j]);
            finish[i] = start.saturating_add(self.steps[i].worst_case());
        }

        let last = (0..self.steps.len()).max_by_key(|&i| (finish[i], Reverse(i)));
        let mut chain: Vec<String> = std::iter::successors(last, |&i| slowest_need[i])
            .map(|i| self.steps[i].name.clone())
            .collect();
        chain.reverse();
        let mut worst_case = last.map_or(Duration::ZERO, |i| finish[i]);

        // `rev` so that, of equally slow validations, the one written first wins.
        if let Some(slowest) = self.validations.iter().rev().max_by_key(|v| v.worst_case()) {
            chain.push(slowest.name.clone());
            worst_case = worst_case.saturating_add(slowest.worst_case());
        }
        CriticalPath {
            steps: chain,
            worst_case,
        }
    }
}

/// Components must be unique among themselves; steps, validations and rollback steps across
/// all three lists, since each becomes part of a Job name.
fn check_unique_names(spec: &DisasterRecoverySpec) -> Result<(), PlanError> {
    let components = duplicates(spec.components.iter().map(|c| c.name.as_str()));
    if !components.is_empty() {
        return Err(PlanError::DuplicateComponents(components));
    }
    let steps = duplicates(
        spec.steps
            .iter()
            .chain(&spec.validations)
            .chain(&spec.rollback)
            .map(|s| s.name.as_str()),
    );
    if !steps.is_empty() {
        return Err(PlanError::DuplicateSteps(steps));
    }
    Ok(())
}

/// Each name that occurs more than once, once, in order of its second occurrence.
fn duplicates<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut reported = HashSet::new();
    names
        .filter(|&name| !seen.insert(name) && reported.insert(name))
        .map(str::to_owned)
        .collect()
}

/// The components by name, with everything each one depends on, directly or not.
struct ComponentGraph<'a> {
    index: HashMap<&'a str, usize>,
    /// Per component, the indices of every component it depends on, transitively.
    closure: Vec<BTreeSet<usize>>,
}

impl<'a> ComponentGraph<'a> {
    fn new(components: &'a [Component]) -> Result<Self, PlanError> {
        let index: HashMap<&str, usize> = components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let depends_on = components
            .iter()
            .map(|component| {
                component
                    .depends_on
                    .iter()
                    .map(|dependency| {
                        index.get(dependency.as_str()).copied().ok_or_else(|| {
                            PlanError::UnknownDependency {
                                component: component.name.clone(),
                                dependency: dependency.clone(),
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;

        let order = topological_order(&depends_on).map_err(|cycle| {
            PlanError::ComponentCycle(cycle.iter().map(|&i| components[i].name.clone()).collect())
        })?;
        let mut closure = vec![BTreeSet::new(); components.len()];
        for i in order {
            let mut all = BTreeSet::new();
            for &dependency in &depends_on[i] {
                all.insert(dependency);
                all.extend(&closure[dependency]);
            }
            closure[i] = all;
        }
        Ok(ComponentGraph { index, closure })
    }

    /// The index of the step's component; `None` for a barrier.
    fn of_step(&self, step: &Step) -> Result<Option<usize>, PlanError> {
        let Some(name) = step.component.as_deref() else {
            return Ok(None);
        };
        match self.index.get(name) {
            Some(&index) => Ok(Some(index)),
            None => Err(PlanError::UnknownComponent {
                step: step.name.clone(),
                component: name.to_owned(),
            }),
        }
    }
}

/// Every step each step waits for, by index into `steps`, per the ordering rules of the API.
fn step_needs(steps: &[Step], components: &ComponentGraph) -> Result<Vec<Vec<usize>>, PlanError> {
    let position: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let component_of = steps
        .iter()
        .map(|step| components.of_step(step))
        .collect::<Result<Vec<_>, _>>()?;

    let mut all_needs = Vec::with_capacity(steps.len());
    let mut last_barrier = None;
    for (i, step) in steps.iter().enumerate() {
        let mut needs = BTreeSet::new();
        match component_of[i] {
            None => {
                needs.extend(0..i);
                last_barrier = Some(i);
            }
            Some(mine) => {
                needs.extend(last_barrier);
                let depends_on = &components.closure[mine];
                for (j, theirs) in component_of.iter().enumerate() {
                    let earlier_of_mine = j < i && *theirs == Some(mine);
                    let of_a_dependency = theirs.is_some_and(|c| depends_on.contains(&c));
                    if earlier_of_mine || of_a_dependency {
                        needs.insert(j);
                    }
                }
            }
        }
        for after in &step.after {
            let &j = position
                .get(after.as_str())
                .ok_or_else(|| PlanError::UnknownAfter {
                    step: step.name.clone(),
                    after: after.clone(),
                })?;
            needs.insert(j);
        }
        all_needs.push(needs.into_iter().collect());
    }
    Ok(all_needs)
}

/// Drops every need that another need already implies (the transitive reduction), so that
/// `needs` reads as the graph a person would draw.
fn without_implied(needs: &[Vec<usize>], topological: &[usize]) -> Vec<Vec<usize>> {
    let mut reachable = vec![BTreeSet::new(); needs.len()];
    for &i in topological {
        let mut all = BTreeSet::new();
        for &j in &needs[i] {
            all.insert(j);
            all.extend(&reachable[j]);
        }
        reachable[i] = all;
    }
    needs
        .iter()
        .map(|mine| {
            mine.iter()
                .copied()
                .filter(|&j| !mine.iter().any(|&k| k != j && reachable[k].contains(&j)))
                .collect()
        })
        .collect()
}

/// Orders the nodes so that each comes after every node it has an edge to, or returns a cycle
/// as a path that starts and ends with the same node. Nodes are visited in index order, so the
/// result is the same for the same input.
fn topological_order(edges: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }

    fn visit(
        node: usize,
        edges: &[Vec<usize>],
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        order: &mut Vec<usize>,
    ) -> Result<(), Vec<usize>> {
        match marks[node] {
            Mark::Done => return Ok(()),
            Mark::OnPath => {
                let start = path.iter().position(|&n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Err(cycle);
            }
            Mark::Unvisited => {}
        }
        marks[node] = Mark::OnPath;
        path.push(node);
        for &next in &edges[node] {
            visit(next, edges, marks, path, order)?;
        }
        path.pop();
        marks[node] = Mark::Done;
        order.push(node);
        Ok(())
    }

    let mut marks = vec![Mark::Unvisited; edges.len()];
    let mut path = Vec::new();
    let mut order = Vec::with_capacity(edges.len());
    for node in 0..edges.len() {
        visit(node, edges, &mut marks, &mut path, &mut order)?;
    }
    Ok(order)
}
