//! The component graph: from a runbook's `## Components` section, or from the guide's
//! "System Architecture Overview".

use std::collections::HashSet;

use super::markdown::{self, Section};
use super::{Document, ImportError};
use crate::api::disaster_recovery::{Component, MAX_COMPONENTS};

/// A component as read, with the lines to point at.
struct Entry {
    line: usize,
    name: String,
    depends_on: Vec<String>,
    depends_line: usize,
}

/// `- name` or `- name (depends on: a, b)` lines.
pub(super) fn from_runbook(section: &Section) -> Result<Vec<Component>, ImportError> {
    let doc = Document::Runbook;
    let mut entries = Vec::new();
    for line in &section.body {
        let text = line.text.trim();
        if text.is_empty() {
            continue;
        }
        let expected = || {
            let message = format!("expected `- name (depends on: a, b)`, found `{text}`");
            doc.error(line.no, message)
        };
        let item = text.strip_prefix("- ").ok_or_else(expected)?.trim();
        let (name, depends_on) = match item.split_once("(depends on:") {
            Some((name, rest)) => {
                let list = rest.strip_suffix(')').ok_or_else(expected)?;
                (
                    name.trim(),
                    list.split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .collect(),
                )
            }
            None => (item, Vec::new()),
        };
        if !markdown::is_dns_label(name) {
            return Err(doc.error(line.no, format!("component `{name}` is not a DNS label")));
        }
        entries.push(Entry {
            line: line.no,
            name: name.to_string(),
            depends_on: depends_on.into_iter().map(String::from).collect(),
            depends_line: line.no,
        });
    }
    if entries.is_empty() {
        return Err(doc.error(section.heading.no, "Components lists no component"));
    }
    resolve(entries, doc, section.heading.no)
}

/// The guide's numbered `N. **Display Name** (kind)` items and their `- Dependencies: A, B`
/// lines; names are the display names as DNS labels (`Titan Phase 1` → `titan-phase1`).
pub(super) fn from_guide(guide: &str) -> Result<Vec<Component>, ImportError> {
    let doc = Document::Guide;
    let lines = markdown::lines(guide);
    let (_, sections) = markdown::split(&lines, "## ", doc)?;
    let section = sections
        .iter()
        .find(|s| markdown::slug(s.title, false) == "system-architecture-overview")
        .ok_or_else(|| doc.error(1, "no `## System Architecture Overview` section"))?;
    let mut entries: Vec<Entry> = Vec::new();
    for line in &section.body {
        let text = line.text.trim();
        if let Some(display) = numbered_bold(text) {
            let name = markdown::slug(display, true);
            if name.is_empty() {
                return Err(doc.error(line.no, "a component name needs letters or digits"));
            }
            entries.push(Entry {
                line: line.no,
                name,
                depends_on: Vec::new(),
                depends_line: line.no,
            });
        } else if let Some(list) = dependencies(text) {
            let entry = entries
                .last_mut()
                .ok_or_else(|| doc.error(line.no, "Dependencies before any component"))?;
            let none = list.is_empty() || list.eq_ignore_ascii_case("none");
            let names = list.split(',').map(|d| markdown::slug(d, true));
            entry.depends_on = if none {
                Vec::new()
            } else {
                names.filter(|d| !d.is_empty()).collect()
            };
            entry.depends_line = line.no;
        }
    }
    if entries.is_empty() {
        return Err(doc.error(section.heading.no, "no `N. **Component**` items"));
    }
    resolve(entries, doc, section.heading.no)
}

/// Checks names are unique, dependencies known and the count bounded.
fn resolve(
    entries: Vec<Entry>,
    doc: Document,
    heading: usize,
) -> Result<Vec<Component>, ImportError> {
    if entries.len() > MAX_COMPONENTS {
        return Err(doc.error(heading, format!("more than {MAX_COMPONENTS} components")));
    }
    let mut names = HashSet::new();
    for entry in &entries {
        if !names.insert(entry.name.as_str()) {
            return Err(doc.error(entry.line, format!("second component `{}`", entry.name)));
        }
    }
    for entry in &entries {
        if let Some(unknown) = entry
            .depends_on
            .iter()
            .find(|d| !names.contains(d.as_str()))
        {
            return Err(doc.error(entry.depends_line, format!("unknown component `{unknown}`")));
        }
    }
    Ok(entries
        .into_iter()
        .map(|e| Component {
            name: e.name,
            depends_on: e.depends_on,
        })
        .collect())
}

/// `3. **Titan Shared** (service)` → `Titan Shared`.
fn numbered_bold(text: &str) -> Option<&str> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let rest = text[digits..]
        .strip_prefix('.')?
        .trim_start()
        .strip_prefix("**")?;
    (digits > 0).then_some(())?;
    rest.split_once("**").map(|(name, _)| name.trim())
}

/// `- Dependencies: Redis, Titan Brain` (the key may be bold) → `Redis, Titan Brain`.
fn dependencies(text: &str) -> Option<&str> {
    let text = text.strip_prefix("- ")?;
    let (key, value) = text.split_once(':')?;
    let key = key.trim().trim_matches('*');
    key.eq_ignore_ascii_case("dependencies")
        .then(|| value.trim().trim_start_matches('*').trim())
}
