//! The texts the AI steps read, and how a quote becomes a [`SourceSpan`].

use std::collections::BTreeMap;

use etter_core::outputs::{ContentHash, SourceSpan};

/// The extracted texts of one role's documents, keyed by content hash. Iteration is in hash order,
/// so prompts and rule outputs do not depend on the order documents were added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocumentTexts {
    texts: BTreeMap<ContentHash, String>,
}

impl DocumentTexts {
    /// No documents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the text of a document.
    pub fn insert(&mut self, document: ContentHash, text: impl Into<String>) {
        self.texts.insert(document, text.into());
    }

    /// The text of a document.
    pub fn get(&self, document: &ContentHash) -> Option<&str> {
        self.texts.get(document).map(String::as_str)
    }

    /// The documents in hash order.
    pub fn iter(&self) -> impl Iterator<Item = (&ContentHash, &str)> {
        self.texts.iter().map(|(hash, text)| (hash, text.as_str()))
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The span `[start, end)` of a document, when it exists and falls on character boundaries.
    pub fn span(&self, document: &ContentHash, start: usize, end: usize) -> Option<SourceSpan> {
        let text = self.get(document)?.get(start..end)?;
        Some(SourceSpan {
            document: document.clone(),
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
            text: text.to_owned(),
        })
    }

    /// Whether a span cites its document exactly: the bytes `[start, end)` are its text.
    pub fn verify(&self, span: &SourceSpan) -> bool {
        self.get(&span.document)
            .and_then(|text| text.get(span.start as usize..span.end as usize))
            .is_some_and(|cited| cited == span.text)
    }

    /// Finds a quote and returns its span, searching `preferred` first and then every document in
    /// hash order. An exact match wins; failing that, the quote matches ignoring case, runs of
    /// whitespace and typographic variants of quotes and dashes (models rewrap and "fix"
    /// punctuation), and the span covers the document's own bytes. `None` when it is nowhere.
    pub fn locate(&self, preferred: Option<&ContentHash>, quote: &str) -> Option<SourceSpan> {
        let quote = quote.trim();
        if quote.is_empty() {
            return None;
        }
        let first = preferred.and_then(|hash| self.texts.get_key_value(hash));
        let order = || first.into_iter().chain(self.texts.iter().filter(move |(h, _)| Some(*h) != preferred));
        for (hash, text) in order() {
            if let Some(start) = text.find(quote) {
                return self.span(hash, start, start + quote.len());
            }
        }
        let wanted = Normalized::of(quote);
        if wanted.text.is_empty() {
            return None;
        }
        for (hash, text) in order() {
            let hay = Normalized::of(text);
            if let Some(at) = hay.text.find(&wanted.text) {
                let (start, _) = hay.source[at];
                let (_, end) = hay.source[at + wanted.text.len() - 1];
                return self.span(hash, start, end);
            }
        }
        None
    }
}

impl FromIterator<(ContentHash, String)> for DocumentTexts {
    fn from_iter<I: IntoIterator<Item = (ContentHash, String)>>(iter: I) -> Self {
        Self { texts: iter.into_iter().collect() }
    }
}

/// A text folded for lenient matching, remembering for each of its bytes the source bytes it came
/// from.
struct Normalized {
    text: String,
    /// `source[i]` = `[start, end)` in the source of the character that produced byte `i`.
    source: Vec<(usize, usize)>,
}

impl Normalized {
    fn of(source: &str) -> Self {
        let mut out = Self { text: String::with_capacity(source.len()), source: Vec::with_capacity(source.len()) };
        let mut pending_space: Option<(usize, usize)> = None;
        for (start, c) in source.char_indices() {
            let range = (start, start + c.len_utf8());
            if c.is_whitespace() {
                // A run of whitespace folds to one space, emitted only before the next word, so
                // leading and trailing whitespace never match.
                pending_space.get_or_insert(range);
                continue;
            }
            let folded = match c {
                '\u{ad}' => continue, // soft hyphen: invisible, often dropped by models
                '‘' | '’' | '‛' | '′' => '\'',
                '“' | '”' | '„' | '″' => '"',
                '‐' | '‑' | '‒' | '–' | '—' | '―' => '-',
                _ => c,
            };
            if let Some(space) = pending_space.take()
                && !out.text.is_empty()
            {
                out.push(' ', space);
            }
            for lower in folded.to_lowercase() {
                out.push(lower, range);
            }
        }
        out
    }

    fn push(&mut self, c: char, range: (usize, usize)) {
        self.text.push(c);
        self.source.extend(std::iter::repeat_n(range, c.len_utf8()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> DocumentTexts {
        [
            (ContentHash("a".into()), "Intro\n- Review  claims\n  documentation — daily.\n".to_owned()),
            (ContentHash("b".into()), "Negotiate settlements with “claimants”.".to_owned()),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn exact_quotes_give_exact_spans() {
        let docs = docs();
        let span = docs.locate(None, "Negotiate settlements");
        assert_eq!(span.as_ref().map(|s| (s.document.0.as_str(), s.start, s.end)), Some(("b", 0, 21)));
        assert!(span.is_some_and(|s| docs.verify(&s)));
    }

    #[test]
    fn lenient_quotes_cover_the_source_bytes() {
        let docs = docs();
        let span = docs.locate(Some(&ContentHash("a".into())), "review claims documentation - Daily");
        assert_eq!(span.as_ref().map(|s| s.text.as_str()), Some("Review  claims\n  documentation — daily"));
        assert!(span.is_some_and(|s| docs.verify(&s)));
        let quoted = docs.locate(None, "with \"claimants\"");
        assert_eq!(quoted.map(|s| s.text), Some("with “claimants”".to_owned()));
    }

    #[test]
    fn missing_or_empty_quotes_are_none() {
        let docs = docs();
        assert!(docs.locate(None, "approve payments").is_none());
        assert!(docs.locate(None, "   ").is_none());
        assert!(docs.locate(None, "—").is_some(), "a dash matches a dash");
    }
}
