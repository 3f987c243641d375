//! PDF text through `pdf-extract` (which parses with `lopdf` and handles font encodings, CMaps
//! and embedded Type 1/CFF/TrueType fonts), page by page.
//!
//! `pdf-extract` knows two of the four text-showing operators (`Tj`, `TJ`); text drawn with the
//! other two (`'` and `"`, which move to the next line first) would be lost. Before extraction,
//! each content stream that uses them is rewritten into the operators they stand for (ISO 32000-1
//! §9.4.3): `string '` is `T* string Tj`; `aw ac string "` is `aw Tw ac Tc string '`.
//!
//! Bounds: the input is at most `documents.max_bytes`; all its Flate streams together may inflate
//! to at most [`MAX_INFLATED_BYTES`], checked before anything is inflated for real; the text is
//! capped; the caller runs this on a blocking thread with a time limit and a fixed number of
//! slots, and a parser panic fails the page (or the document), not the worker.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use flate2::{Decompress, FlushDecompress, Status};
use pdf_extract::{
    Document, Object, ObjectId, PlainTextOutput,
    content::{Content, Operation},
};

use super::{Problem, Raw, normalize_text};

/// Most bytes all Flate streams of one PDF may inflate to. `lopdf` inflates streams without a
/// bound, so a small PDF could otherwise expand to gigabytes inside the worker; a job description
/// or process map needs a tiny fraction of this.
pub(super) const MAX_INFLATED_BYTES: u64 = 256 * 1024 * 1024;

/// Extracts the text of every page; a page that fails (error or panic) is skipped and counted,
/// unless every page fails.
pub(super) fn extract(bytes: &[u8], raw_cap: usize) -> Result<Raw, Problem> {
    check_inflated_size(bytes, MAX_INFLATED_BYTES)?;
    let mut doc = Document::load_mem(bytes).map_err(problem)?;
    if doc.is_encrypted() {
        // Many PDFs are "encrypted" with an empty user password only to set permissions; those
        // open. A real password cannot be supplied through a document URI.
        doc.decrypt("").map_err(|_| Problem::Encrypted)?;
    }
    let pages: Vec<u32> = doc.get_pages().into_keys().collect();
    if pages.is_empty() {
        return Err(Problem::Corrupt("it has no pages".to_owned()));
    }
    rewrite_next_line_operators(&mut doc);
    let mut raw = Raw { pages: Some(u32::try_from(pages.len()).unwrap_or(u32::MAX)), ..Raw::default() };
    let mut first_failure = None;
    for number in pages.iter().copied() {
        let mut page = String::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut output = PlainTextOutput::new(&mut page);
            pdf_extract::output_doc_page(&doc, &mut output, number)
        }));
        match result {
            Ok(Ok(())) => {
                if !raw.text.is_empty() {
                    raw.text.push_str("\n\n");
                }
                raw.text.push_str(&page);
                if raw.text.len() > raw_cap {
                    return Err(Problem::TextTooLong);
                }
            }
            Ok(Err(e)) => {
                raw.skipped_pages += 1;
                first_failure.get_or_insert_with(|| Problem::Corrupt(format!("page {number}: {e}")));
            }
            Err(_) => {
                raw.skipped_pages += 1;
                first_failure.get_or_insert(Problem::Crashed);
            }
        }
    }
    if raw.skipped_pages as usize == pages.len() {
        return Err(first_failure.unwrap_or(Problem::Crashed));
    }
    // No text came out: either nothing is drawn as text (the caller says so), or text is drawn
    // with fonts that do not say which characters their glyphs are.
    if normalize_text(&raw.text).is_empty() && draws_text(&doc) {
        return Err(Problem::TextUnmapped);
    }
    Ok(raw)
}

/// The text-showing operators (ISO 32000-1 §9.4.3).
const SHOWS_TEXT: [&str; 4] = ["Tj", "TJ", "'", "\""];

/// The content streams of a PDF: its pages' and its form XObjects'.
fn content_streams(doc: &Document) -> HashSet<ObjectId> {
    let mut ids: HashSet<ObjectId> = doc.page_iter().flat_map(|page| doc.get_page_contents(page)).collect();
    ids.extend(doc.objects.iter().filter_map(|(id, object)| match object {
        Object::Stream(stream) if stream.dict.get(b"Subtype").and_then(Object::as_name).is_ok_and(|n| n == b"Form") => {
            Some(*id)
        }
        _ => None,
    }));
    ids
}

/// The operations of a content stream, when it can be read.
fn operations(doc: &Document, id: ObjectId) -> Option<Vec<Operation>> {
    let Ok(Object::Stream(stream)) = doc.get_object(id) else { return None };
    let plain = stream.get_plain_content().ok()?;
    Content::decode(&plain).ok().map(|content| content.operations)
}

/// Rewrites `'` and `"` into the operators they stand for, in every content stream that uses them.
fn rewrite_next_line_operators(doc: &mut Document) {
    for id in content_streams(doc) {
        let Some(operations) = operations(doc, id) else { continue };
        if !operations.iter().any(|op| op.operator == "'" || op.operator == "\"") {
            continue;
        }
        let rewritten: Content = Content { operations: operations.into_iter().flat_map(spelled_out).collect() };
        let (Ok(bytes), Some(Object::Stream(stream))) = (rewritten.encode(), doc.objects.get_mut(&id)) else {
            continue;
        };
        stream.set_plain_content(bytes);
    }
}

/// `'` and `"` as the operators they stand for; any other operation as it is.
fn spelled_out(op: Operation) -> Vec<Operation> {
    match (op.operator.as_str(), op.operands.as_slice()) {
        ("'", [text]) => vec![Operation::new("T*", vec![]), Operation::new("Tj", vec![text.clone()])],
        ("\"", [word_spacing, char_spacing, text]) => vec![
            Operation::new("Tw", vec![word_spacing.clone()]),
            Operation::new("Tc", vec![char_spacing.clone()]),
            Operation::new("T*", vec![]),
            Operation::new("Tj", vec![text.clone()]),
        ],
        _ => vec![op],
    }
}

/// Whether any content stream shows text.
fn draws_text(doc: &Document) -> bool {
    content_streams(doc)
        .into_iter()
        .filter_map(|id| operations(doc, id))
        .any(|ops| ops.iter().any(|op| SHOWS_TEXT.contains(&op.operator.as_str())))
}

fn problem(e: pdf_extract::Error) -> Problem {
    match e {
        pdf_extract::Error::Decryption(_) | pdf_extract::Error::InvalidPassword => Problem::Encrypted,
        other => Problem::Corrupt(other.to_string()),
    }
}

/// Refuses a PDF whose Flate streams inflate to more than `max` bytes in total, before `lopdf`
/// inflates them without a bound. Streams are found by their `stream` keyword, without parsing:
/// a stream that is not Flate data stops the inflater at once and counts nothing.
fn check_inflated_size(bytes: &[u8], max: u64) -> Result<(), Problem> {
    let mut total = 0u64;
    let mut pos = 0;
    while let Some(found) = bytes[pos..].windows(6).position(|w| w == b"stream") {
        let keyword = pos + found;
        pos = keyword + 6;
        if bytes[..keyword].ends_with(b"end") {
            continue;
        }
        let data = &bytes[pos..];
        let data = data.strip_prefix(b"\r\n").or_else(|| data.strip_prefix(b"\n")).unwrap_or(data);
        total = total.saturating_add(inflated_len(data, max - total + 1));
        if total > max {
            return Err(Problem::ExpandsTooMuch(max));
        }
    }
    Ok(())
}

/// How many bytes zlib data inflates to, counting no further than `limit`.
fn inflated_len(data: &[u8], limit: u64) -> u64 {
    let mut inflater = Decompress::new(true);
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        let consumed = usize::try_from(inflater.total_in()).unwrap_or(usize::MAX).min(data.len());
        let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
        match inflater.decompress(&data[consumed..], &mut scratch, FlushDecompress::None) {
            Ok(Status::Ok | Status::BufError) => {
                let stuck = inflater.total_in() == before_in && inflater.total_out() == before_out;
                if stuck || inflater.total_out() > limit {
                    return inflater.total_out();
                }
            }
            Ok(Status::StreamEnd) | Err(_) => return inflater.total_out(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{Compression, write::ZlibEncoder};

    use super::*;

    #[test]
    fn a_flate_bomb_is_refused_before_parsing() -> anyhow::Result<()> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![b' '; 8 * 1024 * 1024])?;
        let bomb = encoder.finish()?;
        let mut pdf = b"%PDF-1.7\n1 0 obj\n<< /Length 1 /Filter /FlateDecode >>\nstream\n".to_vec();
        pdf.extend_from_slice(&bomb);
        pdf.extend_from_slice(b"\nendstream\nendobj\n");
        assert!(pdf.len() < 16 * 1024, "{} bytes", pdf.len());
        assert!(matches!(check_inflated_size(&pdf, 1024 * 1024), Err(Problem::ExpandsTooMuch(_))));
        assert!(check_inflated_size(&pdf, 16 * 1024 * 1024).is_ok());
        Ok(())
    }
}
