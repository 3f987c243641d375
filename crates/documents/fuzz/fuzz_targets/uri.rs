//! The document URI parser: never panics, never accepts a `..` segment or a relative file path.
#![no_main]

use etter_documents::{DocumentUri, Location};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(uri) = DocumentUri::parse(raw) else { return };
    match uri.location() {
        Location::File(path) => {
            assert!(path.is_absolute(), "relative file path accepted: {raw:?}");
            assert!(path.components().all(|c| !matches!(c, std::path::Component::ParentDir)), "`..` accepted: {raw:?}");
        }
        Location::S3 { bucket, key } => {
            assert!(!bucket.is_empty() && !key.is_empty(), "empty bucket or key: {raw:?}");
            assert!(key.split('/').all(|s| s != ".." && s != "." && !s.is_empty()), "bad key: {raw:?}");
        }
    }
    assert_eq!(uri.as_str(), raw);
});
