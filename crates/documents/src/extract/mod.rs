//! Text extraction: format detection, the parsers, and the whitespace normalisation that makes the
//! text the stable reference the AI steps cite by byte offset.

mod docx;
mod pdf;
mod text;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use text::normalize_text;

use super::{DocumentError, DocumentFormat, DocumentUri, DocumentsConfig};

/// The size limits of one extraction (the time limit is applied around it, by
/// [`super::Documents::extract`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest input, in bytes.
    pub max_input_bytes: u64,
    /// Most characters of normalised text.
    pub max_text_chars: usize,
}

impl From<&DocumentsConfig> for ExtractLimits {
    fn from(config: &DocumentsConfig) -> Self {
        Self { max_input_bytes: config.max_bytes, max_text_chars: config.max_text_chars }
    }
}

/// The text of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedText {
    /// The detected format.
    pub format: DocumentFormat,
    /// Normalised UTF-8 text ([`normalize_text`]): byte offsets into it are what outputs cite.
    pub text: String,
    /// Pages (PDF only).
    pub pages: Option<u32>,
    /// PDF pages whose text could not be read and are missing from `text`.
    pub skipped_pages: u32,
    /// Non-empty lines of `text`: paragraphs, list items, headings, table rows (and, in a PDF,
    /// visual lines).
    pub lines: u32,
}

/// Why a parser gave up, before it is tied to a document.
#[derive(Debug)]
enum Problem {
    Corrupt(String),
    Encrypted,
    ExpandsTooMuch(u64),
    TextTooLong,
    NotUtf8(usize),
    Crashed,
    /// A PDF draws text, but no glyph maps to a character.
    TextUnmapped,
}

impl Problem {
    fn into_error(self, uri: &DocumentUri, format: DocumentFormat, limits: &ExtractLimits) -> DocumentError {
        let uri = uri.to_string();
        match self {
            Self::Corrupt(detail) => DocumentError::Corrupt { uri, format, detail },
            Self::Encrypted => DocumentError::Encrypted { uri },
            Self::ExpandsTooMuch(max) => DocumentError::ExpandsTooMuch { uri, max },
            Self::TextTooLong => DocumentError::TextTooLong { uri, max: limits.max_text_chars },
            Self::NotUtf8(offset) => DocumentError::NotUtf8 { uri, offset },
            Self::Crashed => DocumentError::ExtractorFailed { uri, format },
            Self::TextUnmapped => DocumentError::TextUnmapped { uri },
        }
    }
}

/// The text of a Word document body (`word/document.xml`), or why it cannot be read: the
/// DOCX parser without the ZIP layer, for the fuzz targets.
pub fn docx_xml_text(xml: &[u8], max_bytes: usize) -> Result<String, String> {
    docx::docx_xml_text(xml, max_bytes, &std::collections::HashSet::new()).map_err(|problem| format!("{problem:?}"))
}

/// What the parsers return before normalisation.
#[derive(Debug, Default)]
struct Raw {
    text: String,
    pages: Option<u32>,
    skipped_pages: u32,
}

/// Most bytes of raw (not yet normalised) text a parser collects: normalisation only shrinks
/// text, and a character is at most 4 bytes, so past this the normalised text is over the limit
/// too unless it is mostly whitespace — which a parser must not be made to buffer without end.
fn raw_cap(limits: &ExtractLimits) -> usize {
    limits.max_text_chars.saturating_mul(8).max(4096)
}

/// Extracts the text of a document's bytes, synchronously: detects the format from the bytes
/// (checked against the URI's extension), parses, normalises, and enforces the size limits.
/// A panic inside a parser is caught and reported as [`DocumentError::ExtractorFailed`].
///
/// It blocks for as long as the parser runs: call it on a blocking thread
/// ([`super::Documents::extract`] does, with a time limit).
pub fn extract_blocking(
    uri: &DocumentUri,
    bytes: &[u8],
    limits: &ExtractLimits,
) -> Result<ExtractedText, DocumentError> {
    if bytes.is_empty() {
        return Err(DocumentError::Empty { uri: uri.to_string() });
    }
    if u64::try_from(bytes.len()).map_or(true, |len| len > limits.max_input_bytes) {
        return Err(DocumentError::TooLarge { uri: uri.to_string(), max: limits.max_input_bytes });
    }
    let format = detect(uri, bytes)?;
    let cap = raw_cap(limits);
    let parsed = catch_unwind(AssertUnwindSafe(|| match format {
        DocumentFormat::Pdf => pdf::extract(bytes, cap),
        DocumentFormat::Docx => docx::extract(bytes, cap),
        DocumentFormat::Txt | DocumentFormat::Markdown => text::decode(bytes),
    }));
    let raw = match parsed {
        Ok(Ok(raw)) => raw,
        Ok(Err(problem)) => return Err(problem.into_error(uri, format, limits)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(uri = %uri, %format, panic = %message, "document parser panicked");
            return Err(Problem::Crashed.into_error(uri, format, limits));
        }
    };
    let text = normalize_text(&raw.text);
    if text.is_empty() {
        return Err(DocumentError::NoText { uri: uri.to_string(), format });
    }
    if text.chars().count() > limits.max_text_chars {
        return Err(Problem::TextTooLong.into_error(uri, format, limits));
    }
    let lines = u32::try_from(text.lines().count()).unwrap_or(u32::MAX);
    Ok(ExtractedText { format, text, pages: raw.pages, skipped_pages: raw.skipped_pages, lines })
}

/// What the first bytes say a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Pdf,
    Zip,
    Text,
    Other(&'static str),
}

/// How many of a document's first bytes its format is told from.
pub(crate) const SNIFF_BYTES: u64 = 8192;

fn sniff(bytes: &[u8]) -> Sniffed {
    let head = &bytes[..bytes.len().min(1024)];
    // Readers accept the PDF header anywhere in the first 1024 bytes (some generators prepend junk).
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Sniffed::Pdf;
    }
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Sniffed::Zip;
    }
    if bytes.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Sniffed::Other("a legacy Word .doc or a password-protected Office file; save it as .docx or PDF");
    }
    if bytes.starts_with(b"{\\rtf") {
        return Sniffed::Other("RTF; save it as .docx or PDF");
    }
    if bytes.starts_with(b"\x89PNG") || bytes.starts_with(&[0xFF, 0xD8, 0xFF]) || bytes.starts_with(b"GIF8") {
        return Sniffed::Other("an image; upload a text-based PDF or run OCR first");
    }
    if bytes[..bytes.len().min(SNIFF_BYTES as usize)].contains(&0) {
        return Sniffed::Other("binary data");
    }
    Sniffed::Text
}

/// The format of a document from its first bytes ([`SNIFF_BYTES`] of them suffice), checked
/// against its extension.
pub(crate) fn detect(uri: &DocumentUri, bytes: &[u8]) -> Result<DocumentFormat, DocumentError> {
    let sniffed = sniff(bytes);
    let extension = uri.extension();
    let ext = extension.as_deref();
    let mismatch = |found: &str| DocumentError::FormatMismatch {
        uri: uri.to_string(),
        extension: ext.unwrap_or_default().to_owned(),
        found: found.to_owned(),
    };
    let described = match sniffed {
        Sniffed::Pdf => "a PDF",
        Sniffed::Zip => "a ZIP archive (DOCX)",
        Sniffed::Text => "plain text",
        Sniffed::Other(what) => what,
    };
    match (ext, sniffed) {
        (_, Sniffed::Other(what)) => {
            Err(DocumentError::UnsupportedFormat { uri: uri.to_string(), found: what.to_owned() })
        }
        (Some("pdf"), Sniffed::Pdf) => Ok(DocumentFormat::Pdf),
        (Some("docx"), Sniffed::Zip) => Ok(DocumentFormat::Docx),
        (Some("pdf" | "docx"), _) => Err(mismatch(described)),
        (Some("txt" | "text" | "md" | "markdown"), Sniffed::Pdf | Sniffed::Zip) => Err(mismatch(described)),
        (_, Sniffed::Pdf) => Ok(DocumentFormat::Pdf),
        (_, Sniffed::Zip) => Ok(DocumentFormat::Docx),
        (Some("md" | "markdown"), Sniffed::Text) => Ok(DocumentFormat::Markdown),
        (_, Sniffed::Text) => Ok(DocumentFormat::Txt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> anyhow::Result<DocumentUri> {
        Ok(DocumentUri::parse(s)?)
    }

    const LIMITS: ExtractLimits = ExtractLimits { max_input_bytes: 1 << 20, max_text_chars: 10_000 };

    #[test]
    fn format_comes_from_the_bytes_and_must_agree_with_the_extension() -> anyhow::Result<()> {
        let text = b"Summary\n\n- Review claims\n";
        assert_eq!(detect(&uri("s3://b-1/jd.md")?, text)?, DocumentFormat::Markdown);
        assert_eq!(detect(&uri("s3://b-1/jd.txt")?, text)?, DocumentFormat::Txt);
        assert_eq!(detect(&uri("s3://b-1/jd")?, text)?, DocumentFormat::Txt);
        assert_eq!(detect(&uri("s3://b-1/jd")?, b"%PDF-1.7 ...")?, DocumentFormat::Pdf);
        let err = detect(&uri("s3://b-1/jd.pdf")?, text).err().map(|e| e.code());
        assert_eq!(err, Some("DOCUMENT_FORMAT_MISMATCH"));
        let err = detect(&uri("s3://b-1/jd.txt")?, b"PK\x03\x04rest").err().map(|e| e.code());
        assert_eq!(err, Some("DOCUMENT_FORMAT_MISMATCH"));
        let ole = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0];
        let err = detect(&uri("s3://b-1/jd.doc")?, &ole).err();
        assert_eq!(err.as_ref().map(DocumentError::code), Some("DOCUMENT_FORMAT_UNSUPPORTED"));
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("save it as .docx or PDF"));
        Ok(())
    }

    #[test]
    fn limits_are_enforced() -> anyhow::Result<()> {
        let doc = uri("s3://b-1/a.txt")?;
        let tiny = ExtractLimits { max_input_bytes: 4, max_text_chars: 3 };
        assert_eq!(extract_blocking(&doc, b"12345", &tiny).err().map(|e| e.code()), Some("DOCUMENT_TOO_LARGE"));
        assert_eq!(extract_blocking(&doc, b"1234", &tiny).err().map(|e| e.code()), Some("DOCUMENT_TEXT_TOO_LONG"));
        assert_eq!(extract_blocking(&doc, b"", &tiny).err().map(|e| e.code()), Some("DOCUMENT_EMPTY"));
        assert_eq!(extract_blocking(&doc, b" \r\n\t ", &LIMITS).err().map(|e| e.code()), Some("DOCUMENT_NO_TEXT"));
        assert_eq!(extract_blocking(&doc, b"ok", &tiny)?.text, "ok");
        Ok(())
    }
}
