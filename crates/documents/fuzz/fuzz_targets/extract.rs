//! Every extractor, through the same entry point as the worker: format detection, PDF
//! (pdf-extract), DOCX (zip + quick-xml), text, normalisation and the limits.
//!
//! Contained failures (an error, or a panic inside pdf-extract caught and reported as
//! `ExtractorFailed`) are fine. A crash is: a panic in our own parsers, a violated invariant of
//! the text, or anything `catch_unwind` cannot contain (stack overflow, abort, out of memory past
//! `-rss_limit_mb`, a hang past `-timeout`). `ETTER_FUZZ_STRICT_PDF=1` also stops at pdf-extract
//! panics, to collect them for upstream.
#![no_main]

use std::sync::OnceLock;

use etter_documents::{
    DocumentError, DocumentFormat, DocumentUri, ExtractLimits, extract_blocking, normalize_text,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: ExtractLimits = ExtractLimits { max_input_bytes: 1 << 20, max_text_chars: 200_000 };

fn uri() -> &'static DocumentUri {
    static URI: OnceLock<DocumentUri> = OnceLock::new();
    // No extension: the bytes alone decide the format, so every parser is reachable.
    URI.get_or_init(|| DocumentUri::parse("s3://etter-fuzz/input").unwrap_or_else(|e| fail(&e.to_string())))
}

fn strict_pdf() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("ETTER_FUZZ_STRICT_PDF").is_some_and(|v| v == "1"))
}

/// Reports and aborts, so libFuzzer keeps the input.
fn fail(message: &str) -> ! {
    eprintln!("fuzz invariant violated: {message}");
    std::process::abort()
}

fuzz_target!(
    init: {
        // libfuzzer-sys aborts on any panic, even one that is caught; the worker catches parser
        // panics, so the fuzzer must let catch_unwind do its job (unless asked to stop at them).
        // Our own checks abort explicitly.
        if !strict_pdf() {
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| {
        match extract_blocking(uri(), data, &LIMITS) {
            Ok(doc) => {
                if doc.text.is_empty() {
                    fail("empty text returned as success");
                }
                if normalize_text(&doc.text) != doc.text {
                    fail("text is not normalised");
                }
                if doc.text.chars().count() > LIMITS.max_text_chars {
                    fail("text over the limit");
                }
            }
            Err(DocumentError::ExtractorFailed { format, .. }) if format != DocumentFormat::Pdf || strict_pdf() => {
                fail(&format!("the {format} parser panicked"));
            }
            Err(e) if e.recoverable() => fail(&format!("extraction error marked recoverable: {e}")),
            Err(_) => {}
        }
    }
);
