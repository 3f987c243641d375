//! A role's documents: fetched by URI (`file://` under a configured root, `s3://` through
//! `object_store`) and turned into UTF-8 text (PDF, DOCX, TXT, Markdown) that the AI steps read
//! and cite by byte offset.
//!
//! Documents are untrusted input. Their parsers run on blocking threads, never on the async
//! runtime, with panics caught, a time limit, at most `max_concurrent_extractions` at once, and
//! bounded input, decompressed size and output (see [`Documents::extract`]).

mod config;
mod error;
mod uri;

mod extract;
mod fetch;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use config::{DocumentsConfig, S3Config};
pub use error::DocumentError;
pub use extract::{ExtractLimits, ExtractedText, extract_blocking, normalize_text};
pub use fetch::{CheckedDocument, Documents, ExtractedDocument, FetchedDocument, content_hash};
pub use uri::{DocumentUri, Location, MAX_URI_LEN};

/// The formats text is extracted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentFormat {
    /// PDF with a text layer.
    Pdf,
    /// Word (Office Open XML) document.
    Docx,
    /// Plain UTF-8 text.
    Txt,
    /// Markdown (kept as written: its markup is part of the text).
    Markdown,
}

impl fmt::Display for DocumentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pdf => "PDF",
            Self::Docx => "DOCX",
            Self::Txt => "text file",
            Self::Markdown => "Markdown file",
        })
    }
}

#[doc(hidden)]
pub mod fuzzing {
    //! Entry points for the fuzz targets in `crates/documents/fuzz` (not an API).
    pub use super::extract::docx_xml_text;
}
