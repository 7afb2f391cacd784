//! `import`: a runbook in the markdown form → a `DisasterRecovery`.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use super::markdown::{self, Line, Section};
use super::{
    Document, ImportError, PREAMBLE_ANNOTATION, RESERVED, STEP_DETAILS_ANNOTATION, StepDetails,
    TITLE_ANNOTATION, components, expect, section_annotation,
};
use crate::api::disaster_recovery::{
    DisasterRecovery, DisasterRecoverySpec, MAX_STEPS, Objectives, Severity, Step,
};
use crate::api::duration::GoDuration;

const DOC: Document = Document::Runbook;

/// The three lists of steps, each written in its own section.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Step,
    Validation,
    Rollback,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Step, Kind::Validation, Kind::Rollback];

    /// The slug of the section that holds the list.
    pub(super) fn section(self) -> &'static str {
        match self {
            Kind::Step => "recovery-steps",
            Kind::Validation => "validation-steps",
            Kind::Rollback => "rollback-procedure",
        }
    }

    /// The word of the item headings: `### Step 1: ...`.
    pub(super) fn heading(self) -> &'static str {
        match self {
            Kind::Validation => "Validation",
            Kind::Step | Kind::Rollback => "Step",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Validation => "validation",
            Kind::Rollback => "rollback step",
        }
    }
}

/// A step as read, not named yet (see `name_items`).
struct Item {
    step: Step,
    details: StepDetails,
    /// Where the `**Component:**` is, to point at an unknown one.
    component_line: usize,
}

/// Every component a step names is one of `components`.
fn check_components(
    lists: &[Vec<Item>; 3],
    components: &[crate::api::disaster_recovery::Component],
) -> Result<(), ImportError> {
    let known: HashSet<&str> = components.iter().map(|c| c.name.as_str()).collect();
    for item in lists.iter().flatten() {
        if let Some(component) = item
            .step
            .component
            .as_deref()
            .filter(|c| !known.contains(c))
        {
            let message = format!("unknown component `{component}`");
            return Err(DOC.error(item.component_line, message));
        }
    }
    Ok(())
}

/// Reads a runbook in the markdown form (see the module documentation). With `guide_md`, the
/// disaster-recovery guide, `spec.components` comes from its "System Architecture Overview",
/// unless the runbook has a `## Components` section of its own.
pub fn import(runbook_md: &str, guide_md: Option<&str>) -> Result<DisasterRecovery, ImportError> {
    let lines = markdown::lines(runbook_md);
    let (head, sections) = markdown::split(&lines, "## ", DOC)?;
    let mut annotations = read_head(&head);

    let (mut details, mut description, mut components) = (None, None, None);
    let (mut lists, mut steps_heading) = (<[Vec<Item>; 3]>::default(), None);
    let mut seen = HashSet::new();
    for section in &sections {
        let line = section.heading.no;
        let key = markdown::slug(section.title, false);
        if key.is_empty() {
            return Err(DOC.error(line, "a section heading needs letters or digits"));
        }
        if !seen.insert(key.clone()) {
            return Err(DOC.error(line, format!("second `## {}` section", section.title)));
        }
        if let Some(kind) = Kind::ALL.into_iter().find(|k| k.section() == key) {
            let (intro, items) = read_items(section, kind)?;
            if !intro.is_empty() {
                annotations.insert(section_annotation(&key), intro);
            }
            lists[kind as usize] = items;
            if kind == Kind::Step {
                steps_heading = Some(line);
            }
            continue;
        }
        match key.as_str() {
            "scenario-details" => details = Some(read_details(section)?),
            "description" => {
                description = Some(markdown::text_of(&section.body)).filter(|t| !t.is_empty())
            }
            "components" => components = Some(components::from_runbook(section)?),
            reserved if RESERVED.contains(&reserved) => {
                return Err(DOC.error(line, format!("`## {}` is a reserved name", section.title)));
            }
            _ => {
                annotations.insert(section_annotation(&key), markdown::text_of(&section.body));
            }
        }
    }

    let (id, severity, objectives) =
        details.ok_or_else(|| DOC.error(1, "no `## Scenario Details` section"))?;
    let steps_heading =
        steps_heading.ok_or_else(|| DOC.error(1, "no `## Recovery Steps` section"))?;
    if lists[Kind::Step as usize].is_empty() {
        return Err(DOC.error(steps_heading, "Recovery Steps has no `### Step N: title`"));
    }
    // The runbook's own components, else the guide's graph, else none.
    let components = match (components, guide_md) {
        (Some(components), _) => components,
        (None, Some(guide)) => components::from_guide(guide)?,
        (None, None) => Vec::new(),
    };
    check_components(&lists, &components)?;

    let ([steps, validations, rollback], step_details) = name_items(lists);
    annotations.insert(
        STEP_DETAILS_ANNOTATION.to_string(),
        serde_json::to_string(&step_details).unwrap_or_default(),
    );

    let spec = DisasterRecoverySpec {
        scenario: id.clone(),
        severity,
        description,
        objectives,
        components,
        steps,
        validations,
        rollback,
        ..DisasterRecoverySpec::default()
    };
    let mut dr = DisasterRecovery::new(&id, spec);
    dr.metadata.annotations = Some(annotations);
    Ok(dr)
}

/// The `# title` and any text before the first section.
fn read_head(head: &[Line]) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    let first = head.iter().position(|l| !l.text.trim().is_empty());
    let title = first.and_then(|i| {
        let title = head[i].text.strip_prefix("# ")?.trim();
        (!title.is_empty()).then_some((i, title))
    });
    let rest = match title {
        Some((i, title)) => {
            annotations.insert(TITLE_ANNOTATION.to_string(), title.to_string());
            &head[i + 1..]
        }
        None => head,
    };
    let preamble = markdown::text_of(rest);
    if !preamble.is_empty() {
        annotations.insert(PREAMBLE_ANNOTATION.to_string(), preamble);
    }
    annotations
}

/// `## Scenario Details`: ID, severity and objectives.
fn read_details(section: &Section) -> Result<(String, Severity, Option<Objectives>), ImportError> {
    const KEYS: [&str; 4] = ["id", "severity", "rto", "rpo"];
    let mut values: [Option<(usize, &str)>; 4] = [None; 4];
    for line in &section.body {
        let text = line.text.trim();
        if text.is_empty() {
            continue;
        }
        let (key, value) = markdown::field(text).ok_or_else(|| {
            DOC.error(
                line.no,
                format!("expected `- **Field:** value`, found `{text}`"),
            )
        })?;
        let lower = key.to_ascii_lowercase();
        let name = lower.strip_prefix("estimated ").unwrap_or(&lower);
        let index = KEYS.iter().position(|k| *k == name).ok_or_else(|| {
            let message = format!(
                "unknown scenario detail `{key}` (expected ID, Severity, Estimated RTO or Estimated RPO)"
            );
            DOC.error(line.no, message)
        })?;
        if values[index].replace((line.no, value)).is_some() {
            return Err(DOC.error(line.no, format!("second `{key}`")));
        }
    }
    let [id, severity, rto, rpo] = values;
    let heading = section.heading.no;
    let (id_line, id) = id.ok_or_else(|| DOC.error(heading, "Scenario Details has no **ID:**"))?;
    if !markdown::is_dns_label(id) {
        let message = format!(
            "ID `{id}` is not a DNS label (lowercase letters, digits and `-`, at most 63 characters)"
        );
        return Err(DOC.error(id_line, message));
    }
    let (severity_line, severity) =
        severity.ok_or_else(|| DOC.error(heading, "Scenario Details has no **Severity:**"))?;
    let severity = match severity.to_ascii_lowercase().as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        "low" => Severity::Low,
        _ => {
            let message =
                format!("unknown severity `{severity}` (expected CRITICAL, HIGH, MEDIUM or LOW)");
            return Err(DOC.error(severity_line, message));
        }
    };
    let objective = |value: Option<(usize, &str)>, what| {
        value
            .map(|(line, text)| duration(text, line, what, true))
            .transpose()
    };
    let objectives = Objectives {
        rto: objective(rto, "RTO")?,
        rpo: objective(rpo, "RPO")?,
        ..Objectives::default()
    };
    Ok((
        id.to_string(),
        severity,
        (objectives != Objectives::default()).then_some(objectives),
    ))
}

/// The text before the first `###` item of a list section, and the items.
fn read_items(section: &Section, kind: Kind) -> Result<(String, Vec<Item>), ImportError> {
    let (intro, items) = markdown::split(&section.body, "### ", DOC)?;
    if let Some(extra) = items.get(MAX_STEPS) {
        let message = format!("more than {MAX_STEPS} items in `## {}`", section.title);
        return Err(DOC.error(extra.heading.no, message));
    }
    let items = items
        .iter()
        .map(|item| read_item(item, kind))
        .collect::<Result<_, _>>()?;
    Ok((markdown::text_of(&intro), items))
}

/// One `### Step N: title` item: its fields, and its other lines as paragraphs.
fn read_item(item: &Section, kind: Kind) -> Result<Item, ImportError> {
    let heading = item.heading.no;
    let title = markdown::numbered_title(item.title).ok_or_else(|| {
        let message = format!(
            "expected `### {} N: title`, found `### {}`",
            kind.heading(),
            item.title
        );
        DOC.error(heading, message)
    })?;
    let mut read = Item {
        step: Step::default(),
        details: StepDetails {
            title: title.to_string(),
            ..StepDetails::default()
        },
        component_line: heading,
    };
    let mut prose = Prose::default();
    let mut seen = HashSet::new();
    let body = &item.body;
    let mut i = 0;
    while i < body.len() {
        let line = body[i];
        let Some((key, value)) = markdown::field(line.text.trim()) else {
            i = read_prose(body, i, &mut prose)?;
            continue;
        };
        prose.end();
        if !seen.insert(key.to_ascii_lowercase()) {
            return Err(DOC.error(
                line.no,
                format!("second `**{key}:**` in this {}", kind.noun()),
            ));
        }
        i = read_field(&mut read, body, i, key, value)?;
    }
    let command = read.step.command.as_deref().ok_or_else(|| {
        DOC.error(
            heading,
            format!("{} \"{title}\" has no **Command:**", kind.noun()),
        )
    })?;
    read.step.expect = expect::derive(
        read.details.expected_output.as_deref(),
        read.details.expected_result.as_deref(),
        command,
    );
    read.details.text = prose.text();
    Ok(read)
}

/// The line `body[i]` of an item, which is no field: a line of a paragraph, the start of a
/// code block (kept whole), or a blank or `---` that ends a paragraph. Returns the index of
/// the line after it.
fn read_prose(body: &[Line], i: usize, prose: &mut Prose) -> Result<usize, ImportError> {
    let line = body[i];
    let text = line.text.trim();
    if markdown::fence_open(text).is_some() {
        let end = markdown::fence_end(body, i, DOC)?;
        let block: Vec<&str> = body[i..end].iter().map(|l| l.text).collect();
        prose.block(block.join("\n"));
        return Ok(end);
    }
    if text.is_empty() || text == "---" {
        // `---` separates steps: no text of theirs.
        prose.end();
    } else {
        prose.line(line.text);
    }
    Ok(i + 1)
}

/// The field `**key:** value` on the line `body[i]`, into the item. Returns the index of the
/// line after it, or after the code block that a Command or an Expected Output may hold.
fn read_field(
    item: &mut Item,
    body: &[Line],
    i: usize,
    key: &str,
    value: &str,
) -> Result<usize, ImportError> {
    let line = body[i];
    let next = i + 1;
    let (step, details) = (&mut item.step, &mut item.details);
    let error = |what: &str| DOC.error(line.no, format!("{what}, found `{value}`"));
    match key.to_ascii_lowercase().as_str() {
        "command" => {
            let (command, next) = block_after(body, next, line.no, key, value)?;
            if command.trim().is_empty() {
                return Err(DOC.error(line.no, "empty command"));
            }
            step.command = Some(command);
            return Ok(next);
        }
        "expected output" => {
            let (output, next) = block_after(body, next, line.no, key, value)?;
            details.expected_output = Some(output);
            return Ok(next);
        }
        "expected result" => {
            details.expected_result = Some(value.to_string()).filter(|v| !v.is_empty())
        }
        "timeout" => step.timeout = Some(duration(value, line.no, "timeout", false)?),
        "critical" => {
            step.critical = Some(match value.to_ascii_lowercase().as_str() {
                "yes" | "true" => true,
                "no" | "false" => false,
                _ => return Err(error("Critical must be YES or NO")),
            })
        }
        "retries" => {
            let retries = value.parse().ok().filter(|r| *r <= 10);
            step.retries =
                Some(retries.ok_or_else(|| error("Retries must be a number from 0 to 10"))?);
        }
        "component" => {
            if !markdown::is_dns_label(value) {
                return Err(error("a component must be a DNS label"));
            }
            (step.component, item.component_line) = (Some(value.to_string()), line.no);
        }
        "notes" => step.notes = Some(value.to_string()).filter(|v| !v.is_empty()),
        _ => {
            let message = format!(
                "unknown field `**{key}:**` (expected Command, Expected Output, Expected Result, Timeout, Critical, Retries, Component or Notes)"
            );
            return Err(DOC.error(line.no, message));
        }
    }
    Ok(next)
}

/// The lines of a step that are not fields: lines in a row make a paragraph, and a code block
/// is one of its own.
#[derive(Default)]
struct Prose {
    paragraphs: Vec<String>,
    open: bool,
}

impl Prose {
    fn line(&mut self, text: &str) {
        match self.paragraphs.last_mut() {
            Some(paragraph) if self.open => *paragraph = format!("{paragraph}\n{text}"),
            _ => self.paragraphs.push(text.to_string()),
        }
        self.open = true;
    }

    fn block(&mut self, block: String) {
        self.paragraphs.push(block);
        self.open = false;
    }

    fn end(&mut self) {
        self.open = false;
    }

    fn text(self) -> Option<String> {
        Some(self.paragraphs.join("\n\n")).filter(|t| !t.is_empty())
    }
}

/// The value of a `**Command:**` or `**Expected Output:**` field: the inline value (without
/// its backticks), or else the code block that follows. Returns the index past it.
fn block_after(
    body: &[Line],
    i: usize,
    line: usize,
    key: &str,
    value: &str,
) -> Result<(String, usize), ImportError> {
    if !value.is_empty() {
        let inner = value.strip_prefix('`').and_then(|v| v.strip_suffix('`'));
        let value = inner.filter(|v| !v.contains('`')).unwrap_or(value);
        return Ok((value.to_string(), i));
    }
    match (i..body.len()).find(|&j| !body[j].text.trim().is_empty()) {
        Some(j) if markdown::fence_open(body[j].text).is_some() => {
            markdown::code_block(body, j, DOC)
        }
        _ => Err(DOC.error(
            line,
            format!("`**{key}:**` must be followed by a code block"),
        )),
    }
}

/// `300 seconds`, `5 min`, `1.5 hours`, a bare number of seconds, or a Go duration (`1h30m`)
/// → a Go duration (`300s`, `5m`, `1.5h`, `1h30m`).
pub(super) fn duration(
    value: &str,
    line: usize,
    what: &str,
    zero: bool,
) -> Result<GoDuration, ImportError> {
    static NUMBER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[0-9]+(\.[0-9]+)?$").expect("a valid regular expression"));
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = (&value[..split], value[split..].trim());
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => Some('s'),
        "m" | "min" | "mins" | "minute" | "minutes" => Some('m'),
        "h" | "hr" | "hrs" | "hour" | "hours" => Some('h'),
        _ => None,
    };
    let go = match unit {
        Some(unit) if NUMBER.is_match(number) => format!("{number}{unit}"),
        _ => value.to_string(),
    };
    let Ok(go) = go.parse::<GoDuration>() else {
        let message = format!("{what} `{value}` is not a number of seconds, minutes or hours");
        return Err(DOC.error(line, message));
    };
    if !zero && go.duration().is_zero() {
        return Err(DOC.error(line, format!("{what} must be more than zero")));
    }
    Ok(go)
}

/// Names every item after its title, in the order `render` writes the lists (so that names
/// come out the same whatever order the sections were in); returns the lists of steps and the
/// items' details by name.
fn name_items(mut lists: [Vec<Item>; 3]) -> ([Vec<Step>; 3], BTreeMap<String, StepDetails>) {
    let (mut taken, mut details) = (HashSet::new(), BTreeMap::new());
    let steps = Kind::ALL.map(|kind| {
        let items = std::mem::take(&mut lists[kind as usize]);
        let named = items.into_iter().enumerate().map(|(i, item)| {
            let fallback = format!("{}-{}", kind.noun().replace(' ', "-"), i + 1);
            let name = unique_name(&mut taken, &item.details.title, fallback);
            details.insert(name.clone(), item.details);
            Step { name, ..item.step }
        });
        named.collect()
    });
    (steps, details)
}

/// A DNS label from the title, unique across steps, validations and rollback steps because
/// Job names are made from it.
fn unique_name(taken: &mut HashSet<String>, title: &str, fallback: String) -> String {
    let base = Some(markdown::slug(title, false))
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback);
    let mut name = base.clone();
    let mut n = 1;
    while taken.contains(&name) {
        n += 1;
        let suffix = format!("-{n}");
        name = format!(
            "{}{suffix}",
            markdown::truncate_label(&base, 63 - suffix.len())
        );
    }
    taken.insert(name.clone());
    name
}
