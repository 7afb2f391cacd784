//! Runbooks: the markdown form the team writes, imported as `DisasterRecovery` resources and
//! rendered back.
//!
//! The form (see `tests/fixtures/runbooks/complete-system-failure.md`):
//!
//! - `# Title`, then `## Scenario Details` with `- **ID:**`, `- **Severity:**` (CRITICAL, HIGH,
//!   MEDIUM, LOW) and optionally `- **Estimated RTO:**` / `- **Estimated RPO:**`;
//! - `## Description`: the spec's description;
//! - `## Recovery Steps`, `## Validation Steps`, `## Rollback Procedure`: text, then items
//!   `### Step N: title` (`### Validation N: title`) with `**Command:**` and a code block, an
//!   optional `**Expected Output:**` code block or `**Expected Result:**` line, and
//!   `**Timeout:**`, `**Critical:** YES|NO`, `**Retries:**`, `**Component:**`, `**Notes:**`
//!   lines (with or without a leading `- `);
//! - `## Components` (optional): `- name (depends on: a, b)` lines;
//! - any other section (Prerequisites, Success Criteria, Troubleshooting, Post-Recovery
//!   Actions, ...): free text.
//!
//! Expected outputs become machine-checked `expect`s only where they say unambiguously what
//! to check: a one-line `**Expected Output:**` block → `outputContains`; in an
//! `**Expected Result:**`, a word in capitals (`PONG`) or a quoted string → `outputContains`,
//! `HTTP 200 OK` of a lone `curl -f` → `exitCode: 0`, `exit code N`, `field: <JSON value>`
//! (`trading: true`) → `json`, joined by "with" / "and". The text is kept beside the `expect`.
//!
//! Text without a field of its own is kept in annotations (the `*_ANNOTATION` constants and
//! [`section_annotation`]), so that `import(render(import(x))) == import(x)`.

mod components;
mod expect;
mod import;
mod markdown;
mod render;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use import::import;
pub use render::render;

/// Prefix of every annotation the importer writes.
pub const ANNOTATION_PREFIX: &str = "runbook.dr.titan.io/";
/// The runbook's `# title` line.
pub const TITLE_ANNOTATION: &str = "runbook.dr.titan.io/title";
/// Text between the title and the first section.
pub const PREAMBLE_ANNOTATION: &str = "runbook.dr.titan.io/preamble";
/// JSON object: step, validation or rollback step name → [`StepDetails`].
pub const STEP_DETAILS_ANNOTATION: &str = "runbook.dr.titan.io/step-details";

/// Section slugs that name the annotations above, not sections.
const RESERVED: [&str; 3] = ["title", "preamble", "step-details"];

/// The annotation that keeps the text of the section `slug` (e.g. `prerequisites`,
/// `success-criteria`, `troubleshooting`, `post-recovery-actions`, `rollback-procedure`, and
/// the text before the first item of `recovery-steps` and `validation-steps`).
pub fn section_annotation(slug: &str) -> String {
    format!("{ANNOTATION_PREFIX}{slug}")
}

/// What a runbook says about a step beyond the `Step` fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepDetails {
    /// The `### Step N: title` title, which the step's name is derived from.
    pub title: String,
    /// The `**Expected Output:**` code block, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// The `**Expected Result:**` text, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_result: Option<String>,
    /// Other paragraphs of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The document an error is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Document {
    Runbook,
    Guide,
}

impl Document {
    fn error(self, line: usize, message: impl Into<String>) -> ImportError {
        ImportError {
            document: self,
            line,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Document::Runbook => "runbook",
            Document::Guide => "guide",
        })
    }
}

/// What is wrong with a runbook (or guide), and on which line (1-based).
#[derive(thiserror::Error, Clone, Debug, PartialEq, Eq)]
#[error("{document} line {line}: {message}")]
pub struct ImportError {
    pub document: Document,
    pub line: usize,
    pub message: String,
}
