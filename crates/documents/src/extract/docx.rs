//! DOCX text: `zip` opens the package, `quick-xml` streams `word/document.xml`.
//!
//! A reading library that builds the whole document model (docx-rs) would inflate every part
//! without a bound and allocate a tree for formatting we throw away; the text of a Word document
//! is the `w:t` runs of its paragraphs, which a streaming pass reads with a hard cap on the
//! decompressed size.

use std::{
    collections::{HashMap, HashSet},
    io::{Cursor, Read},
};

use quick_xml::{
    Reader,
    escape::resolve_predefined_entity,
    events::{BytesRef, BytesStart, Event},
};
use zip::{ZipArchive, result::ZipError};

use super::{Problem, Raw};

/// Most bytes `word/document.xml` may inflate to (a 300-page Word document is ~20 MB of XML).
pub(super) const MAX_DOCUMENT_XML_BYTES: u64 = 64 * 1024 * 1024;

/// Most bytes `word/styles.xml` may inflate to.
const MAX_STYLES_XML_BYTES: u64 = 8 * 1024 * 1024;

/// Deepest nesting of paragraphs (text boxes in paragraphs) and tables (tables in cells) read.
const MAX_NESTING: usize = 32;

pub(super) fn extract(bytes: &[u8], raw_cap: usize) -> Result<Raw, Problem> {
    let mut zip =
        ZipArchive::new(Cursor::new(bytes)).map_err(|e| Problem::Corrupt(format!("not a valid ZIP archive: {e}")))?;
    let list_styles = match read_part(&mut zip, "word/styles.xml", MAX_STYLES_XML_BYTES) {
        Ok(styles) => list_styles(&styles),
        // Styles are optional; without them, lists are known by their own numbering only.
        Err(Problem::Corrupt(_)) => HashSet::new(),
        Err(other) => return Err(other),
    };
    let xml = read_part(&mut zip, "word/document.xml", MAX_DOCUMENT_XML_BYTES).map_err(|problem| match problem {
        Problem::Corrupt(detail) if detail == MISSING => Problem::Corrupt(
            "it has no word/document.xml, so it is not a Word document; .xlsx, .pptx and .odt are not supported"
                .to_owned(),
        ),
        other => other,
    })?;
    docx_xml_text(&xml, raw_cap, &list_styles).map(|text| Raw { text, ..Raw::default() })
}

const MISSING: &str = "missing";

/// Inflates one part of the package, refusing it past `max` bytes.
fn read_part(zip: &mut ZipArchive<Cursor<&[u8]>>, name: &str, max: u64) -> Result<Vec<u8>, Problem> {
    let mut part = match zip.by_name(name) {
        Ok(part) => part,
        Err(ZipError::FileNotFound) => return Err(Problem::Corrupt(MISSING.to_owned())),
        Err(e) => return Err(Problem::Corrupt(format!("cannot open {name}: {e}"))),
    };
    if part.size() > max {
        return Err(Problem::ExpandsTooMuch(max));
    }
    // The declared size can lie: the cap is enforced on what is actually inflated.
    let mut xml = Vec::with_capacity(usize::try_from(part.size()).unwrap_or(0));
    (&mut part)
        .take(max + 1)
        .read_to_end(&mut xml)
        .map_err(|e| Problem::Corrupt(format!("cannot inflate {name}: {e}")))?;
    if xml.len() as u64 > max {
        return Err(Problem::ExpandsTooMuch(max));
    }
    Ok(xml)
}

/// The value of an element's attribute, by local name (`w:val` → `val`), whatever its prefix.
fn attribute(element: &BytesStart<'_>, local_name: &[u8]) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == local_name)
        .map(|a| String::from_utf8_lossy(&a.value).into_owned())
}

/// The paragraph styles that make a paragraph a list item: those with numbering (`w:numPr` with
/// a `w:numId` other than 0) and those based on one. Word's "List Bullet" style works this way,
/// with no numbering on the paragraph itself. Unreadable styles are ignored.
fn list_styles(xml: &[u8]) -> HashSet<String> {
    let mut reader = Reader::from_reader(xml);
    // style id -> (based on, own numbering: Some(true) list, Some(false) explicitly none)
    let mut styles: HashMap<String, (Option<String>, Option<bool>)> = HashMap::new();
    let mut current: Option<String> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) if e.local_name().as_ref() == b"style" => current = attribute(&e, b"styleId"),
            Ok(Event::End(e)) if e.local_name().as_ref() == b"style" => current = None,
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let Some(id) = &current else { continue };
                let entry = styles.entry(id.clone()).or_default();
                match e.local_name().as_ref() {
                    b"basedOn" => entry.0 = attribute(&e, b"val"),
                    b"numPr" => entry.1 = entry.1.or(Some(true)),
                    b"numId" => entry.1 = Some(attribute(&e, b"val").as_deref() != Some("0")),
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    styles
        .keys()
        .filter(|id| {
            let mut id = (*id).clone();
            for _ in 0..MAX_NESTING {
                match styles.get(&id) {
                    Some((_, Some(list))) => return *list,
                    Some((Some(parent), None)) => id = parent.clone(),
                    _ => return false,
                }
            }
            false
        })
        .cloned()
        .collect()
}

/// Where text goes while a paragraph or table row is open.
#[derive(Default)]
struct Block {
    text: String,
    /// From the paragraph's own numbering, when it has some (`numId` 0 = explicitly none).
    numbered: Option<bool>,
    style: Option<String>,
}

/// The text of a WordprocessingML body (`word/document.xml`): one line per paragraph, list
/// items prefixed `- ` (Word keeps bullets in numbering definitions, not in the text), table rows
/// on one line with cells separated by ` | `, tabs as spaces, line breaks kept. Deleted text of
/// tracked changes and field codes are left out (they are not `w:t`); of alternate content only
/// the first choice is read, so text boxes are not doubled by their VML fallback.
///
/// `list_styles` are the paragraph styles that make a list item; `raw_cap` bounds the bytes of
/// text collected.
pub(super) fn docx_xml_text(xml: &[u8], raw_cap: usize, list_styles: &HashSet<String>) -> Result<String, Problem> {
    let mut reader = Reader::from_reader(xml);
    let mut out = String::new();
    let mut paragraphs: Vec<Block> = Vec::new();
    let mut rows: Vec<(String, bool)> = Vec::new(); // (row text, next cell is the first)
    let mut in_text = false;
    let mut runs = 0usize;
    let mut skipping = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Problem::Corrupt(format!("invalid XML at byte {}: {e}", reader.error_position())))?;
        if skipping > 0 {
            match event {
                Event::Start(_) => skipping += 1,
                Event::End(_) => skipping -= 1,
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        let mut piece: Option<std::borrow::Cow<'_, str>> = None;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                b"Fallback" => skipping = 1,
                b"p" => {
                    if paragraphs.len() >= MAX_NESTING {
                        return Err(Problem::Corrupt("paragraphs are nested too deeply".to_owned()));
                    }
                    paragraphs.push(Block::default());
                }
                b"t" => in_text = true,
                b"r" => runs += 1,
                b"numPr" => {
                    if let Some(p) = paragraphs.last_mut() {
                        p.numbered = p.numbered.or(Some(true));
                    }
                }
                b"tr" => {
                    if rows.len() >= MAX_NESTING {
                        return Err(Problem::Corrupt("tables are nested too deeply".to_owned()));
                    }
                    rows.push((String::new(), true));
                }
                b"tc" => {
                    if let Some((row, first)) = rows.last_mut() {
                        if !*first {
                            row.push_str(" | ");
                        }
                        *first = false;
                    }
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" if runs > 0 => piece = Some(" ".into()),
                b"br" | b"cr" if runs > 0 => piece = Some("\n".into()),
                b"noBreakHyphen" => piece = Some("-".into()),
                b"numId" => {
                    if let Some(p) = paragraphs.last_mut() {
                        p.numbered = Some(attribute(&e, b"val").as_deref() != Some("0"));
                    }
                }
                b"pStyle" => {
                    if let Some(p) = paragraphs.last_mut() {
                        p.style = attribute(&e, b"val");
                    }
                }
                b"p" if rows.is_empty() => out.push('\n'),
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"r" => runs = runs.saturating_sub(1),
                b"p" => {
                    if let Some(p) = paragraphs.pop() {
                        let list_item =
                            p.numbered.unwrap_or_else(|| p.style.as_ref().is_some_and(|s| list_styles.contains(s)));
                        let line = if list_item { format!("- {}", p.text) } else { p.text };
                        match rows.last_mut() {
                            Some((row, _)) if paragraphs.is_empty() => {
                                if !row.is_empty() && !row.ends_with(' ') {
                                    row.push(' ');
                                }
                                row.push_str(&line);
                            }
                            _ => {
                                out.push_str(&line);
                                out.push('\n');
                            }
                        }
                    }
                }
                b"tr" => {
                    if let Some((row, _)) = rows.pop() {
                        match rows.last_mut() {
                            Some((outer, _)) => {
                                outer.push(' ');
                                outer.push_str(&row);
                            }
                            None => {
                                out.push_str(&row);
                                out.push('\n');
                            }
                        }
                    }
                }
                _ => {}
            },
            Event::Text(e) if in_text => {
                piece = Some(e.xml10_content().map_err(|e| Problem::Corrupt(format!("invalid text: {e}")))?);
            }
            Event::CData(e) if in_text => {
                piece = Some(e.decode().map_err(|e| Problem::Corrupt(format!("invalid text: {e}")))?);
            }
            Event::GeneralRef(e) if in_text => piece = resolve_reference(&e)?.map(Into::into),
            Event::Eof => break,
            _ => {}
        }
        if let Some(piece) = piece {
            match paragraphs.last_mut() {
                Some(p) => p.text.push_str(&piece),
                None => out.push_str(&piece),
            }
        }
        // Everything buffered counts, separators too: empty paragraphs and cells are text-free
        // but not free.
        let buffered = out.len()
            + paragraphs.iter().map(|p| p.text.len()).sum::<usize>()
            + rows.iter().map(|(row, _)| row.len()).sum::<usize>();
        if buffered > raw_cap {
            return Err(Problem::TextTooLong);
        }
    }
    Ok(out)
}

/// `&amp;`, `&#8217;` and the like inside text.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<Option<String>, Problem> {
    let invalid = |e: &dyn std::fmt::Display| Problem::Corrupt(format!("invalid character reference: {e}"));
    if let Some(c) = reference.resolve_char_ref().map_err(|e| invalid(&e))? {
        return Ok(Some(c.to_string()));
    }
    let name = reference.decode().map_err(|e| invalid(&e))?;
    Ok(resolve_predefined_entity(&name).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(xml: &str) -> String {
        let styles = HashSet::from(["ListBullet".to_owned()]);
        docx_xml_text(xml.as_bytes(), 1 << 20, &styles).unwrap_or_else(|e| format!("error: {e:?}"))
    }

    #[test]
    fn paragraphs_lists_tables_and_references() {
        let xml = r#"<w:document xmlns:w="w" xmlns:mc="mc"><w:body>
            <w:p><w:pPr><w:tabs><w:tab w:val="left"/></w:tabs></w:pPr><w:r><w:t>Claims</w:t><w:tab/><w:t xml:space="preserve">Adjuster &amp; Co&#8217;s</w:t></w:r></w:p>
            <w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t>Review reports</w:t></w:r></w:p>
            <w:p><w:pPr><w:pStyle w:val="ListBullet"/></w:pPr><w:r><w:t>Styled item</w:t></w:r></w:p>
            <w:p><w:pPr><w:pStyle w:val="ListBullet"/><w:numPr><w:numId w:val="0"/></w:numPr></w:pPr><w:r><w:t>Not an item</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>Department</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>4 West</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            <w:p><w:r><w:delText>deleted</w:delText><w:instrText>PAGE</w:instrText><w:t>kept</w:t><w:br/><w:t>next</w:t></w:r></w:p>
            <w:p><w:r><mc:AlternateContent><mc:Choice><w:t>box</w:t></mc:Choice><mc:Fallback><w:t>box</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
            </w:body></w:document>"#;
        assert_eq!(
            text(xml),
            "Claims Adjuster & Co\u{2019}s\n- Review reports\n- Styled item\nNot an item\nDepartment | 4 West\nkept\nnext\nbox\n"
        );
    }

    #[test]
    fn list_styles_follow_based_on_and_numbering_zero() {
        let xml = br#"<w:styles xmlns:w="w">
            <w:style w:styleId="ListBullet"><w:pPr><w:numPr><w:numId w:val="3"/></w:numPr></w:pPr></w:style>
            <w:style w:styleId="MyBullets"><w:basedOn w:val="ListBullet"/></w:style>
            <w:style w:styleId="NoBullets"><w:basedOn w:val="ListBullet"/><w:pPr><w:numPr><w:numId w:val="0"/></w:numPr></w:pPr></w:style>
            <w:style w:styleId="Loop"><w:basedOn w:val="Loop"/></w:style>
            <w:style w:styleId="Normal"/></w:styles>"#;
        let mut found: Vec<String> = list_styles(xml).into_iter().collect();
        found.sort();
        assert_eq!(found, ["ListBullet", "MyBullets"]);
    }

    #[test]
    fn malformed_or_oversized_xml_is_an_error() {
        assert!(text("<w:p><w:t>a</w:p>").starts_with("error: Corrupt"));
        let deep = "<w:p>".repeat(MAX_NESTING + 1);
        assert!(text(&deep).starts_with("error: Corrupt"));
        let long = format!("<w:p><w:t>{}</w:t></w:p>", "x".repeat(100));
        assert!(matches!(docx_xml_text(long.as_bytes(), 10, &HashSet::new()), Err(Problem::TextTooLong)));
    }
}
