//! The structure the offline rules read in a document's text: headings, the kind of section
//! each opens, and the items (bullets, numbered steps, list paragraphs) of the sections that list
//! tasks or skills — each with its exact byte range.
//!
//! Extracted text comes in many shapes: Markdown (`## What you will do`, `- item`), plain text
//! (upper-case headings, CRLF), PDF (`• item`, headings as plain lines) and DOCX (list paragraphs,
//! possibly without a bullet character). Headings are recognised by form (Markdown, upper case, a
//! trailing colon) or by known section names; only known names say what a section holds.

/// What a section of a job document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SectionKind {
    /// Responsibilities, duties, process steps: its items are tasks.
    Tasks,
    /// Skills, competencies, "what you bring": each item is a skill.
    Skills,
    /// Requirements, qualifications, "nice to have": items *mention* skills among other things.
    Requirements,
    /// Anything else (summary, benefits, about us): not read for tasks or skills.
    Other,
}

/// An item of a section: one bullet, numbered step or list paragraph (with any wrapped
/// continuation lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// The section it is in.
    pub section: SectionKind,
    /// Whether the section is optional ("nice to have", "preferred"): its skills matter less.
    pub optional: bool,
    /// First byte of the item's text (after any bullet marker).
    pub start: usize,
    /// One past its last byte (trailing punctuation excluded).
    pub end: usize,
}

/// One line of the text: `[start, end)` without the line break and surrounding whitespace.
struct Line<'a> {
    start: usize,
    end: usize,
    text: &'a str,
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let mut offset = 0;
    text.split_inclusive('\n').map(move |raw| {
        let line_start = offset;
        offset += raw.len();
        let content = raw.trim_end_matches(['\n', '\r']);
        let lead = content.len() - content.trim_start().len();
        let trimmed = content.trim();
        Line { start: line_start + lead, end: line_start + lead + trimmed.len(), text: trimmed }
    })
}

/// The length of a leading bullet or list number (`- `, `• `, `1. `, `(a) `, `Step 3: ` is not
/// one — it is a heading), or `None` when the line does not start with one.
fn bullet_len(line: &str) -> Option<usize> {
    let first = line.chars().next()?;
    let after_marker = if matches!(first, '-' | '*' | '+' | '•' | '·' | '▪' | '◦' | '‣' | '–' | '—' | '●' | '○' | '■')
    {
        first.len_utf8()
    } else {
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        let letter = usize::from(digits == 0 && line.bytes().next().is_some_and(|b| b.is_ascii_lowercase()));
        let mark = digits.max(letter);
        if mark == 0 || mark > 3 || !matches!(line.as_bytes().get(mark), Some(b'.' | b')')) {
            return None;
        }
        mark + 1
    };
    let rest = &line[after_marker..];
    let spaces = rest.len() - rest.trim_start().len();
    // `-5%` or `*emphasis*` is text, not a bullet: a marker is followed by whitespace.
    (spaces > 0 && !rest.trim().is_empty()).then_some(after_marker + spaces)
}

/// What a heading's words say the section holds, `None` when they name no known section.
fn classify(heading: &str) -> Option<(SectionKind, bool)> {
    let folded: String = heading
        .chars()
        .map(|c| match c {
            '’' | '‘' => '\'',
            c if c.is_alphanumeric() || c == '\'' => c.to_ascii_lowercase(),
            _ => ' ',
        })
        .collect();
    let words: Vec<&str> = folded.split_whitespace().collect();
    let phrase = words.join(" ");
    // Process maps name their steps: `Step 3 - Triage and assignment (owner: …)`.
    if words.first() == Some(&"step") && words.get(1).is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit())) {
        return Some((SectionKind::Tasks, false));
    }
    const MODIFIERS: &[&str] =
        &["key", "core", "main", "primary", "essential", "general", "your", "the", "job", "role", "position", "our"];
    let core = words.iter().skip_while(|w| MODIFIERS.contains(w)).copied().collect::<Vec<_>>().join(" ");
    let is = |names: &[&str]| names.iter().any(|n| core == *n || phrase == *n);
    let starts = |names: &[&str]| names.iter().any(|n| phrase == *n || phrase.starts_with(&format!("{n} ")));
    if is(&[
        "responsibilities",
        "responsibility",
        "duties",
        "duties and responsibilities",
        "responsibilities and duties",
        "functions",
        "accountabilities",
        "tasks",
        "activities",
        "day to day",
        "in this role",
        "in this role you will",
        "what you'll do",
        "what you will do",
        "what you will be doing",
        "what you'll be doing",
        "the work",
    ]) {
        return Some((SectionKind::Tasks, false));
    }
    if is(&[
        "skills",
        "required skills",
        "skills and competencies",
        "skills and abilities",
        "skills and experience",
        "competencies",
        "technical skills",
        "abilities",
        "knowledge skills and abilities",
        "what you bring",
        "what you'll bring",
        "what you will bring",
        "what we're looking for",
        "what we are looking for",
        "who you are",
        "tools and technologies",
    ]) {
        return Some((SectionKind::Skills, false));
    }
    if is(&["nice to have", "nice to haves", "preferred", "preferred qualifications", "bonus points", "desirable"]) {
        return Some((SectionKind::Requirements, true));
    }
    if is(&[
        "requirements",
        "required qualifications",
        "minimum qualifications",
        "qualifications",
        "experience",
        "education",
        "education and experience",
        "must have",
        "must haves",
    ]) {
        return Some((SectionKind::Requirements, false));
    }
    if is(&[
        "summary",
        "overview",
        "purpose",
        "introduction",
        "benefits",
        "perks",
        "compensation",
        "salary",
        "location",
        "schedule",
        "systems",
        "working conditions",
        "work environment",
        "physical demands",
        "what we offer",
        "equal opportunity",
        "how to apply",
        "contact",
    ]) || starts(&["about", "why", "how we", "your first", "who we are", "what we offer", "life at"])
    {
        return Some((SectionKind::Other, false));
    }
    None
}

/// If a line is a heading, the section it opens (`Other` for headings of unknown meaning).
fn heading(line: &str) -> Option<(SectionKind, bool)> {
    if let Some(title) = line.strip_prefix('#') {
        let title = title.trim_start_matches('#');
        return title.starts_with(' ').then(|| classify(title).unwrap_or((SectionKind::Other, false)));
    }
    let words = line.split_whitespace().count();
    if bullet_len(line).is_some() || words > 16 || line.ends_with(['.', ';', ',']) {
        return None;
    }
    if let Some(known) = classify(line.trim_end_matches(':')) {
        return Some(known);
    }
    let letters = line.chars().filter(|c| c.is_alphabetic()).count();
    let upper_case = letters > 0 && !line.chars().any(char::is_lowercase);
    // Upper case alone would make `SQL` a heading: ask for a few letters or words.
    let shouted = upper_case && (letters >= 6 || (words >= 2 && letters >= 5));
    let labelled = line.ends_with(':') && words <= 6;
    (shouted || labelled).then_some((SectionKind::Other, false))
}

/// The items of a document's task, skill and requirement sections, in text order.
pub(crate) fn items(text: &str) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    let mut section = (SectionKind::Other, false);
    // Whether the previous line was an item, so a wrapped bullet's next line can join it.
    let mut previous_item = false;
    for line in lines(text) {
        if line.text.is_empty() {
            previous_item = false;
            continue;
        }
        if let Some(kind) = heading(line.text) {
            section = kind;
            previous_item = false;
            continue;
        }
        if section.0 == SectionKind::Other {
            continue;
        }
        let (start, is_bullet) = match bullet_len(line.text) {
            Some(len) => (line.start + len, true),
            None => (line.start, false),
        };
        let body = &text[start..line.end];
        let end = start + body.trim_end_matches(['.', ';', ',', ':']).len();
        let starts_lower = body.chars().next().is_some_and(char::is_lowercase);
        if !is_bullet && previous_item && starts_lower {
            // A bullet wrapped onto this line (PDFs wrap long bullets).
            if let Some(last) = items.last_mut() {
                last.end = end;
            }
            continue;
        }
        // List paragraphs without a marker (DOCX) are items; prose paragraphs and lead-ins
        // ("You will:") are not.
        let words = body.split_whitespace().count();
        if is_bullet || (words <= 20 && !body.ends_with(':')) {
            if end > start {
                items.push(Item { section: section.0, optional: section.1, start, end });
            }
            previous_item = true;
        } else {
            previous_item = false;
        }
    }
    items
}

/// Sentences anywhere in the text that start with one of `verbs` (lowercase): the tasks of a
/// document that has no task section.
pub(crate) fn imperative_sentences(text: &str, verbs: &[&str]) -> Vec<Item> {
    let mut found = Vec::new();
    for line in lines(text) {
        let mut start = bullet_len(line.text).map_or(line.start, |len| line.start + len);
        for sentence in text[start..line.end].split_inclusive(['.', ';', '!', '?']) {
            let sentence_start = start;
            start += sentence.len();
            let lead = sentence.len() - sentence.trim_start().len();
            let trimmed = sentence.trim().trim_end_matches(['.', ';', '!', '?']);
            let first = trimmed.split_whitespace().next().unwrap_or_default().to_ascii_lowercase();
            if trimmed.split_whitespace().count() >= 3 && verbs.contains(&first.as_str()) {
                let begin = sentence_start + lead;
                found.push(Item {
                    section: SectionKind::Other,
                    optional: false,
                    start: begin,
                    end: begin + trimmed.len(),
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, kind: SectionKind) -> Vec<&str> {
        items(text).into_iter().filter(|i| i.section == kind).map(|i| &text[i.start..i.end]).collect()
    }

    #[test]
    fn markdown_text_and_pdf_shapes() {
        let md = "# Title\n\n## What you will do\n\n- Run reviews.\n- Build plans\n\n## What you bring\n\n- SQL\n\n## Why us\n\n- Equity\n";
        assert_eq!(texts(md, SectionKind::Tasks), ["Run reviews", "Build plans"]);
        assert_eq!(texts(md, SectionKind::Skills), ["SQL"]);
        let txt =
            "TITLE OF ROLE\r\n\r\nRESPONSIBILITIES\r\n\r\n  - Review pull requests\r\n\r\nNICE TO HAVE\r\n  - Go\r\n";
        assert_eq!(texts(txt, SectionKind::Tasks), ["Review pull requests"]);
        assert_eq!(items(txt).last().map(|i| i.optional), Some(true));
        let pdf = "Key Responsibilities\n• Verify coverage and\nlimits for each claim\n• Negotiate settlements\nAbout Us\nWe are nice.\n";
        assert_eq!(
            texts(pdf, SectionKind::Tasks),
            ["Verify coverage and\nlimits for each claim", "Negotiate settlements"]
        );
    }

    #[test]
    fn unmarked_list_paragraphs_and_process_steps() {
        let docx =
            "Responsibilities\nAssess patients\nPerform wound care\nPhysical Demands\nStands for most of a shift\n";
        assert_eq!(texts(docx, SectionKind::Tasks), ["Assess patients", "Perform wound care"]);
        let map = "Step 1 - First notice (owner: Assistant)\n- Record the loss\nSystems\nGuidewire\n";
        assert_eq!(texts(map, SectionKind::Tasks), ["Record the loss"]);
    }

    #[test]
    fn imperative_sentences_without_sections() {
        let text = "We are hiring. Review claims daily. Negotiate settlements with shops; answer the phone.";
        let found: Vec<&str> =
            imperative_sentences(text, &["review", "negotiate"]).iter().map(|i| &text[i.start..i.end]).collect();
        assert_eq!(found, ["Review claims daily", "Negotiate settlements with shops"]);
    }
}
