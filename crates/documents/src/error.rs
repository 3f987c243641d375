//! Why a document could not be fetched or read.

use std::time::Duration;

use super::DocumentFormat;

/// The message of an invalid URI; an empty one is said to be missing.
fn invalid_uri(uri: &str, problem: &str) -> String {
    if uri.is_empty() {
        "no document URI was given; name the document as s3://bucket/key or as file:///path".to_owned()
    } else {
        format!("{uri}: not a valid document URI: {problem}")
    }
}

/// Why a document could not be fetched or its text extracted.
///
/// Every variant names the document by the URI the client gave (never by a host path it resolves
/// to), says what to do about it, and knows whether trying again can help ([`recoverable`]):
/// a missing, empty, damaged, oversized or forbidden document stays so until someone changes it;
/// an unavailable store or a busy worker may not.
///
/// The reasons of underlying failures (an I/O error, the store's answer, the parser's complaint)
/// are kept as text (`detail`, `problem`), not as [`source`](std::error::Error::source)s: this
/// message is all that reaches the client (it becomes the step's failure, sent through Temporal),
/// so the reason must be in it, and the document store's own errors are reduced to words that
/// name no host before they get here.
///
/// [`recoverable`]: DocumentError::recoverable
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not a URI this pipeline accepts.
    #[error("{}", invalid_uri(uri, problem))]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A scheme other than `file` or `s3`.
    #[error(
        "{uri}: unsupported scheme `{scheme}`; name the document as s3://bucket/key or as file:///path under the documents root"
    )]
    UnsupportedScheme {
        /// The URI as given.
        uri: String,
        /// Its scheme.
        scheme: String,
    },
    /// A `..` segment.
    #[error("{uri}: `..` is not allowed in a document's path; write the path without it")]
    Traversal {
        /// The URI as given.
        uri: String,
    },
    /// A `file://` path outside the configured documents root.
    #[error(
        "{uri}: outside the documents root the pipeline reads files from (documents.file_root); copy the document under that folder or upload it to S3"
    )]
    OutsideRoot {
        /// The URI as given.
        uri: String,
    },
    /// A `file://` path whose symbolic links lead outside the documents root.
    #[error(
        "{uri}: a symbolic link on this path leads outside the documents root; put the document itself under the root"
    )]
    SymlinkEscape {
        /// The URI as given.
        uri: String,
    },
    /// `file://` URIs while no documents root is configured.
    #[error(
        "{uri}: this deployment reads no file:// documents (documents.file_root is not set); upload the document to S3"
    )]
    FileSourceDisabled {
        /// The URI as given.
        uri: String,
    },
    /// A bucket not in `documents.s3.allowed_buckets`.
    #[error(
        "{uri}: bucket `{bucket}` is not one documents may be read from (documents.s3.allowed_buckets); upload the document to an allowed bucket"
    )]
    BucketNotAllowed {
        /// The URI as given.
        uri: String,
        /// The bucket.
        bucket: String,
    },
    /// Nothing at that location.
    #[error("{uri}: document not found; check the URI and that the upload finished")]
    NotFound {
        /// The URI as given.
        uri: String,
    },
    /// A directory, device or pipe where a file was expected.
    #[error("{uri}: not a regular file (for example a folder); name the document's file itself")]
    NotAFile {
        /// The URI as given.
        uri: String,
    },
    /// The store refused the worker's credentials or permissions.
    #[error(
        "{uri}: access denied by the document store ({detail}); check the pipeline's S3 credentials and the bucket policy, or the file's permissions"
    )]
    AccessDenied {
        /// The URI as given.
        uri: String,
        /// The store's reason.
        detail: String,
    },
    /// The store could not be reached or failed; worth retrying.
    #[error("{uri}: the document store is unavailable ({detail}); try again later")]
    Unavailable {
        /// The URI as given.
        uri: String,
        /// What failed.
        detail: String,
    },
    /// The fetch did not finish in time; worth retrying.
    #[error("{uri}: fetching the document did not finish within {timeout:?}; try again later")]
    FetchTimeout {
        /// The URI as given.
        uri: String,
        /// The limit (`documents.fetch_timeout`).
        timeout: Duration,
    },
    /// The check before queueing did not finish in time (the store is slow or unreachable).
    #[error(
        "{uri}: checking the document did not finish within {timeout:?}, so the document store may be slow or \
         unreachable; push again in a moment"
    )]
    CheckTimeout {
        /// The URI as given.
        uri: String,
        /// The limit (`documents.check_timeout`).
        timeout: Duration,
    },
    /// Zero bytes.
    #[error("{uri}: the document is empty (0 bytes); upload it again")]
    Empty {
        /// The URI as given.
        uri: String,
    },
    /// Larger than `documents.max_bytes`.
    #[error(
        "{uri}: the document is larger than the limit of {max} bytes; split it or remove images and upload it again"
    )]
    TooLarge {
        /// The URI as given.
        uri: String,
        /// The limit (`documents.max_bytes`).
        max: u64,
    },
    /// Decompresses to more than the extractor allows (a compression bomb, or absurdly large).
    #[error("{uri}: the document decompresses to more than {max} bytes; re-export it without embedded media")]
    ExpandsTooMuch {
        /// The URI as given.
        uri: String,
        /// The limit.
        max: u64,
    },
    /// Neither PDF, DOCX nor UTF-8 text.
    #[error("{uri}: unsupported document format ({found}); upload a PDF, DOCX, Markdown or plain-text file")]
    UnsupportedFormat {
        /// The URI as given.
        uri: String,
        /// What it looks like.
        found: String,
    },
    /// The extension says one format, the bytes another.
    #[error(
        "{uri}: the name says .{extension} but the content is {found}; rename the file or export it again as .{extension}"
    )]
    FormatMismatch {
        /// The URI as given.
        uri: String,
        /// The extension of the name.
        extension: String,
        /// What the content is.
        found: String,
    },
    /// A text document that is not UTF-8.
    #[error("{uri}: the text is not UTF-8 (invalid byte at offset {offset}); save it as UTF-8 and upload it again")]
    NotUtf8 {
        /// The URI as given.
        uri: String,
        /// Where the first invalid byte is.
        offset: usize,
    },
    /// A damaged or unparseable PDF or DOCX.
    #[error(
        "{uri}: the {format} is damaged or not valid ({detail}); open it, export it again as {format} and upload the new file"
    )]
    Corrupt {
        /// The URI as given.
        uri: String,
        /// The format the content claimed.
        format: DocumentFormat,
        /// What the parser reported.
        detail: String,
    },
    /// A password-protected PDF.
    #[error("{uri}: the PDF is password-protected; remove the password and upload it again")]
    Encrypted {
        /// The URI as given.
        uri: String,
    },
    /// A PDF that draws text with fonts that do not say which characters their glyphs are (no
    /// ToUnicode map, no known encoding).
    #[error(
        "{uri}: the PDF draws its text with fonts that do not say which characters they show, so the text cannot \
         be read; export the PDF again from the original document (with its fonts embedded), or upload the \
         original as DOCX"
    )]
    TextUnmapped {
        /// The URI as given.
        uri: String,
    },
    /// Parsed, but nothing in it is written as characters (a PDF that draws no text, a document
    /// of images only, or an empty one).
    #[error(
        "{uri}: the {format} contains no text: nothing in it is written as characters (text in images is not read); \
         upload a version that holds the text itself"
    )]
    NoText {
        /// The URI as given.
        uri: String,
        /// Its format.
        format: DocumentFormat,
    },
    /// More text than `documents.max_text_chars`.
    #[error("{uri}: the document has more than {max} characters of text; split it into smaller documents")]
    TextTooLong {
        /// The URI as given.
        uri: String,
        /// The limit (`documents.max_text_chars`).
        max: usize,
    },
    /// The extractor ran past `documents.extract_timeout`.
    #[error(
        "{uri}: extracting the text took longer than {timeout:?}; the file is probably malformed: export it again and upload the new file"
    )]
    ExtractTimeout {
        /// The URI as given.
        uri: String,
        /// The limit.
        timeout: Duration,
    },
    /// The parser crashed (a panic, caught) on this document.
    #[error(
        "{uri}: the {format} reader failed on this file; export it again (for example with \"Save as PDF\") and upload the new file"
    )]
    ExtractorFailed {
        /// The URI as given.
        uri: String,
        /// The format being read.
        format: DocumentFormat,
    },
    /// Every extraction slot stayed busy; worth retrying.
    #[error("{uri}: the worker is busy extracting other documents (waited {waited:?}); try again later")]
    Busy {
        /// The URI as given.
        uri: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A local I/O failure while reading; worth retrying.
    #[error("{uri}: reading the document failed ({detail}); try again later")]
    Io {
        /// The URI as given.
        uri: String,
        /// The operating system's reason.
        detail: String,
    },
    /// The documents configuration is unusable (reported at start-up, not per document).
    #[error("invalid configuration: `{key}` {problem}")]
    Config {
        /// The dotted configuration key.
        key: std::borrow::Cow<'static, str>,
        /// What is wrong with it.
        problem: String,
    },
}

impl DocumentError {
    /// Whether trying again, unchanged, can succeed: only for an unavailable store, a timed-out
    /// fetch, a busy worker and local I/O failures. Everything else needs someone to fix the
    /// document, its URI or the configuration first.
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::FetchTimeout { .. }
                | Self::CheckTimeout { .. }
                | Self::Busy { .. }
                | Self::Io { .. }
        )
    }

    /// A stable machine-readable reason (for `ErrorInfo.reason` and step errors).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidUri { .. } => "DOCUMENT_URI_INVALID",
            Self::UnsupportedScheme { .. } => "DOCUMENT_URI_SCHEME_UNSUPPORTED",
            Self::Traversal { .. } => "DOCUMENT_PATH_TRAVERSAL",
            Self::OutsideRoot { .. } => "DOCUMENT_OUTSIDE_ROOT",
            Self::SymlinkEscape { .. } => "DOCUMENT_SYMLINK_ESCAPE",
            Self::FileSourceDisabled { .. } => "DOCUMENT_FILE_SOURCE_DISABLED",
            Self::BucketNotAllowed { .. } => "DOCUMENT_BUCKET_NOT_ALLOWED",
            Self::NotFound { .. } => "DOCUMENT_NOT_FOUND",
            Self::NotAFile { .. } => "DOCUMENT_NOT_A_FILE",
            Self::AccessDenied { .. } => "DOCUMENT_ACCESS_DENIED",
            Self::Unavailable { .. } => "DOCUMENT_STORE_UNAVAILABLE",
            Self::FetchTimeout { .. } => "DOCUMENT_FETCH_TIMEOUT",
            Self::CheckTimeout { .. } => "DOCUMENT_CHECK_TIMEOUT",
            Self::Empty { .. } => "DOCUMENT_EMPTY",
            Self::TooLarge { .. } => "DOCUMENT_TOO_LARGE",
            Self::ExpandsTooMuch { .. } => "DOCUMENT_EXPANDS_TOO_MUCH",
            Self::UnsupportedFormat { .. } => "DOCUMENT_FORMAT_UNSUPPORTED",
            Self::FormatMismatch { .. } => "DOCUMENT_FORMAT_MISMATCH",
            Self::NotUtf8 { .. } => "DOCUMENT_NOT_UTF8",
            Self::Corrupt { .. } => "DOCUMENT_CORRUPT",
            Self::Encrypted { .. } => "DOCUMENT_ENCRYPTED",
            Self::NoText { .. } => "DOCUMENT_NO_TEXT",
            Self::TextUnmapped { .. } => "DOCUMENT_TEXT_UNMAPPED",
            Self::TextTooLong { .. } => "DOCUMENT_TEXT_TOO_LONG",
            Self::ExtractTimeout { .. } => "DOCUMENT_EXTRACT_TIMEOUT",
            Self::ExtractorFailed { .. } => "DOCUMENT_EXTRACTOR_FAILED",
            Self::Busy { .. } => "DOCUMENT_EXTRACTOR_BUSY",
            Self::Io { .. } => "DOCUMENT_IO",
            Self::Config { .. } => "DOCUMENT_CONFIG_INVALID",
        }
    }

    /// The document the error is about (`None` for a configuration error).
    pub fn uri(&self) -> Option<&str> {
        match self {
            Self::InvalidUri { uri, .. }
            | Self::UnsupportedScheme { uri, .. }
            | Self::Traversal { uri }
            | Self::OutsideRoot { uri }
            | Self::SymlinkEscape { uri }
            | Self::FileSourceDisabled { uri }
            | Self::BucketNotAllowed { uri, .. }
            | Self::NotFound { uri }
            | Self::NotAFile { uri }
            | Self::AccessDenied { uri, .. }
            | Self::Unavailable { uri, .. }
            | Self::FetchTimeout { uri, .. }
            | Self::CheckTimeout { uri, .. }
            | Self::Empty { uri }
            | Self::TooLarge { uri, .. }
            | Self::ExpandsTooMuch { uri, .. }
            | Self::UnsupportedFormat { uri, .. }
            | Self::FormatMismatch { uri, .. }
            | Self::NotUtf8 { uri, .. }
            | Self::Corrupt { uri, .. }
            | Self::Encrypted { uri }
            | Self::NoText { uri, .. }
            | Self::TextUnmapped { uri }
            | Self::TextTooLong { uri, .. }
            | Self::ExtractTimeout { uri, .. }
            | Self::ExtractorFailed { uri, .. }
            | Self::Busy { uri, .. }
            | Self::Io { uri, .. } => Some(uri),
            Self::Config { .. } => None,
        }
    }
}

impl From<etter_config::ConfigError> for DocumentError {
    fn from(error: etter_config::ConfigError) -> Self {
        match error {
            etter_config::ConfigError::Invalid { key, problem } => Self::Config { key, problem },
            // `problem` is all that is kept: the cause (figment's error naming the key) goes in too.
            other => Self::Config { key: "documents".into(), problem: etter_core::error::chain(&other).to_string() },
        }
    }
}
