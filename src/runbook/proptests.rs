//! `import` on arbitrary and mutated markdown: it never panics, and whatever it accepts comes
//! back the same through `render`.

use crate::runbook;
use proptest::prelude::*;

const SEED: &str = include_str!("../../tests/fixtures/runbooks/complete-system-failure.md");
const DATABASE: &str = include_str!("../../tests/fixtures/runbooks/database-corruption.md");
const GUIDE: &str = include_str!("../../tests/fixtures/runbooks/guide.md");

/// Lines that mean something to the importer, to build documents that get past its first checks.
const FRAGMENTS: &[&str] = &[
    "# Title",
    "## Scenario Details",
    "- **ID:** x",
    "- **Severity:** LOW",
    "- **Estimated RTO:** 1 minute",
    "## Recovery Steps",
    "## Validation Steps",
    "## Rollback Procedure",
    "## Components",
    "- redis (depends on: redis)",
    "## Notes",
    "## Description",
    "## Step Details",
    "- **Estimated RPO:** 0 minutes",
    "**Expected Output:** `PONG`",
    "- **Timeout:** 1h30m",
    "\r",
    "### Step 1: Do it",
    "### Validation 2: Check",
    "**Command:**",
    "**Command:** `ls`",
    "**Expected Output:**",
    "**Expected Result:** PONG and exit code 0",
    "**Expected Result:** HTTP 200 OK with ok: true",
    "- **Timeout:** 5 seconds",
    "- **Critical:** NO",
    "- **Retries:** 1",
    "- **Notes:** n",
    "- **Component:** redis",
    "```bash",
    "```",
    "````",
    "---",
    "",
    "prose",
    "  ## indented",
    "**bold**: value",
];

fn assert_round_trip(markdown: &str, guide: Option<&str>) -> Result<(), TestCaseError> {
    if let Ok(dr) = runbook::import(markdown, guide) {
        let rendered = runbook::render(&dr);
        let again = runbook::import(&rendered, guide);
        prop_assert!(again.is_ok(), "{:?}\n{rendered}", again.err());
        if let Ok(again) = again {
            prop_assert_eq!((&again.metadata, &again.spec), (&dr.metadata, &dr.spec));
        }
    }
    Ok(())
}

/// A fixture with a few edits: lines deleted, doubled, or replaced by fragments or noise.
fn mutated(doc: &'static str) -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = doc.lines().collect();
    let edit = (
        any::<prop::sample::Index>(),
        0..4usize,
        prop::sample::select(FRAGMENTS),
        ".{0,12}",
    );
    prop::collection::vec(edit, 1..6).prop_map(move |edits| {
        let mut lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for (at, edit, fragment, noise) in edits {
            let Some(at) = (!lines.is_empty()).then(|| at.index(lines.len())) else {
                break;
            };
            match edit {
                0 => {
                    lines.remove(at);
                }
                1 => lines.insert(at, lines[at].clone()),
                2 => lines[at] = fragment.to_string(),
                _ => lines[at] = format!("{}{noise}", lines[at]),
            }
        }
        lines.join("\n")
    })
}

/// The least that imports, so that the soup after it is often accepted.
const MINIMAL: &str = "## Scenario Details\n- **ID:** x\n- **Severity:** LOW\n## Recovery Steps\n### Step 1: a\n**Command:** `ls`";

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Regressions would be written outside this module; a failure prints its input.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = runbook::import(&text, None);
        let _ = runbook::import(SEED, Some(&text));
    }

    #[test]
    fn fragment_soup_round_trips(
        lines in prop::collection::vec(
            prop_oneof![prop::sample::select(FRAGMENTS).prop_map(String::from), ".{0,20}"],
            0..40,
        )
    ) {
        assert_round_trip(&lines.join("\n"), None)?;
        assert_round_trip(&format!("{MINIMAL}\n{}", lines.join("\n")), None)?;
    }

    #[test]
    fn mutated_seed_round_trips(doc in mutated(SEED)) {
        assert_round_trip(&doc, None)?;
        assert_round_trip(&doc, Some(GUIDE))?;
    }

    #[test]
    fn mutated_runbook_round_trips(doc in mutated(DATABASE)) {
        assert_round_trip(&doc, None)?;
    }
}
