//! Line-level reading of the runbook form: headings, fenced code blocks and `**Field:** value`
//! lines. A line scanner rather than a CommonMark parser, because the form is line-oriented and
//! every error has to name its line.

use super::{Document, ImportError};

/// One line of a document and its 1-based number.
#[derive(Clone, Copy, Debug)]
pub(super) struct Line<'a> {
    pub no: usize,
    pub text: &'a str,
}

/// A heading (`## ` or `### `) and the lines up to the next heading of the same level.
#[derive(Debug)]
pub(super) struct Section<'a> {
    pub heading: Line<'a>,
    pub title: &'a str,
    pub body: Vec<Line<'a>>,
}

pub(super) fn lines(doc: &str) -> Vec<Line<'_>> {
    // Every trailing `\r` goes, not only the one of a `\r\n`, so that a rendered line reads back
    // the same.
    doc.lines()
        .enumerate()
        .map(|(i, text)| Line {
            no: i + 1,
            text: text.trim_end_matches('\r'),
        })
        .collect()
}

/// Splits `lines` at the headings that start with `marker` (`"## "`, `"### "`), skipping code
/// blocks, whose `## ` lines are shell comments. Returns the lines before the first heading
/// and the sections.
pub(super) fn split<'a>(
    lines: &[Line<'a>],
    marker: &str,
    doc: Document,
) -> Result<(Vec<Line<'a>>, Vec<Section<'a>>), ImportError> {
    let mut head = Vec::new();
    let mut sections: Vec<Section<'a>> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(title) = line.text.strip_prefix(marker) {
            sections.push(Section {
                heading: line,
                title: title.trim(),
                body: Vec::new(),
            });
            i += 1;
            continue;
        }
        let end = match fence_open(line.text) {
            Some(_) => fence_end(lines, i, doc)?,
            None => i + 1,
        };
        let target = match sections.last_mut() {
            Some(section) => &mut section.body,
            None => &mut head,
        };
        target.extend_from_slice(&lines[i..end]);
        i = end;
    }
    Ok((head, sections))
}

/// The number of backticks of the code fence this line opens, if it opens one.
pub(super) fn fence_open(text: &str) -> Option<usize> {
    let ticks = text.trim_start().bytes().take_while(|&b| b == b'`').count();
    (ticks >= 3).then_some(ticks)
}

/// The index just past the fence that closes the block opened at `lines[start]`.
pub(super) fn fence_end(lines: &[Line], start: usize, doc: Document) -> Result<usize, ImportError> {
    let ticks = fence_open(lines[start].text).unwrap_or(3);
    let closes = |text: &str| {
        let text = text.trim();
        text.len() >= ticks && text.bytes().all(|b| b == b'`')
    };
    (start + 1..lines.len())
        .find(|&j| closes(lines[j].text))
        .map(|j| j + 1)
        .ok_or_else(|| doc.error(lines[start].no, "code block is never closed"))
}

/// The content of the code block opened at `lines[start]`, and the index past its end.
pub(super) fn code_block(
    lines: &[Line],
    start: usize,
    doc: Document,
) -> Result<(String, usize), ImportError> {
    let end = fence_end(lines, start, doc)?;
    let content: Vec<&str> = lines[start + 1..end - 1].iter().map(|l| l.text).collect();
    Ok((content.join("\n"), end))
}

/// A fence long enough that no line of `content` closes it.
pub(super) fn fence_for(content: &str) -> String {
    let longest = content.lines().filter_map(fence_open).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// The lines as text, without the blank lines around them.
pub(super) fn text_of(lines: &[Line]) -> String {
    let blank = |l: &&Line| l.text.trim().is_empty();
    let start = lines.iter().position(|l| !blank(&l)).unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !blank(&l))
        .map_or(start, |i| i + 1);
    let text: Vec<&str> = lines[start..end].iter().map(|l| l.text).collect();
    text.join("\n")
}

/// `- **Key:** value`, `**Key:** value` or `**Key**: value` → `(Key, value)`.
pub(super) fn field(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let text = text.strip_prefix("- ").unwrap_or(text).trim_start();
    let rest = text.strip_prefix("**")?;
    let end = rest.find("**")?;
    let (key, after) = (&rest[..end], &rest[end + 2..]);
    let (key, value) = match key.strip_suffix(':') {
        Some(key) => (key, after),
        None => (key, after.strip_prefix(':')?),
    };
    let key = key.trim();
    (!key.is_empty()).then(|| (key, value.trim()))
}

/// `Step 3: Restore configuration` → `Restore configuration`: a heading of a numbered item.
pub(super) fn numbered_title(heading: &str) -> Option<&str> {
    let (label, title) = heading.split_once(':')?;
    let number = label.split_whitespace().last()?;
    let title = title.trim();
    (number.bytes().all(|b| b.is_ascii_digit()) && !title.is_empty()).then_some(title)
}

/// A DNS label made of the ASCII letters and digits of `text`, lowercased, words joined by `-`.
/// With `join_numbers`, a number sticks to the word before it (`Titan Phase 1` → `titan-phase1`,
/// the way the guide's components are named on disk).
pub(super) fn slug(text: &str, join_numbers: bool) -> String {
    let mut out = String::new();
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let number = join_numbers && word.bytes().all(|b| b.is_ascii_digit());
        if !out.is_empty() && !number {
            out.push('-');
        }
        out.push_str(&word.to_ascii_lowercase());
    }
    truncate_label(&out, 63)
}

/// `label` cut to `max` bytes, without a trailing `-`. The label is ASCII.
pub(super) fn truncate_label(label: &str, max: usize) -> String {
    label
        .get(..max.min(label.len()))
        .unwrap_or(label)
        .trim_end_matches('-')
        .to_string()
}

pub(super) fn is_dns_label(text: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = text.as_bytes();
    matches!((bytes.first(), bytes.last()), (Some(&f), Some(&l)) if alnum(f) && alnum(l))
        && bytes.len() <= 63
        && bytes.iter().all(|&b| alnum(b) || b == b'-')
}

/// Newlines would end a one-line field early. (A lone `\r` is no line break: it stays.)
pub(super) fn one_line(text: &str) -> String {
    text.replace("\r\n", " ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert_eq!(
            field("- **Timeout:** 30 seconds"),
            Some(("Timeout", "30 seconds"))
        );
        assert_eq!(
            field("**Expected Result:** PONG"),
            Some(("Expected Result", "PONG"))
        );
        assert_eq!(field("**Command**: ls"), Some(("Command", "ls")));
        assert_eq!(field("**bold** prose"), None);
        assert_eq!(field("plain"), None);
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("Start Titan services via PM2", false),
            "start-titan-services-via-pm2"
        );
        assert_eq!(slug("Titan Phase 1", true), "titan-phase1");
        assert_eq!(
            slug("Post-Recovery Actions", false),
            "post-recovery-actions"
        );
        assert_eq!(slug("¡¿!", false), "");
        assert_eq!(slug(&"ab ".repeat(40), false).len(), 62);
    }

    #[test]
    fn numbered() {
        assert_eq!(numbered_title("Step 12: Do it: now"), Some("Do it: now"));
        assert_eq!(numbered_title("Validation 1:"), None);
        assert_eq!(numbered_title("Notes"), None);
    }

    #[test]
    fn fences() {
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(fence_for("a\n```\nb"), "````");
    }
}
