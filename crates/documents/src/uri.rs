//! Document URIs, parsed once at the edge: `file:///absolute/path` (confined to the configured
//! documents root when fetched) and `s3://bucket/key`.
//!
//! This part needs no optional dependency, so the server can validate pushed URIs with the same
//! rules the worker fetches by.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::DocumentError;

/// A document's location, as a client named it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DocumentUri {
    raw: String,
    location: Location,
}

/// Where a [`DocumentUri`] points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// A local file, by absolute path (not yet checked against the documents root: that happens
    /// when it is opened, where symbolic links are resolved too).
    File(PathBuf),
    /// An object in an S3-compatible store.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key, exactly as written after `s3://bucket/` (S3 keys are not percent-encoded
        /// in `s3://` URIs, as with the AWS CLI).
        key: String,
    },
}

/// Longest URI accepted.
pub const MAX_URI_LEN: usize = 2048;

impl DocumentUri {
    /// Parses a URI. Refuses, with a message that says what to do instead: unknown schemes, path
    /// traversal (`..` segments, percent-encoded too), control characters, `file://` URIs with a
    /// host or a relative path, and `s3://` URIs without a valid bucket or key.
    pub fn parse(raw: &str) -> Result<Self, DocumentError> {
        let invalid = |problem: &str| DocumentError::InvalidUri { uri: display_safe(raw), problem: problem.to_owned() };
        if raw.is_empty() {
            return Err(invalid("it is empty"));
        }
        if raw.len() > MAX_URI_LEN {
            return Err(invalid(&format!("it is longer than {MAX_URI_LEN} bytes")));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid("it contains control characters"));
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(invalid("it has no scheme; write file:///absolute/path or s3://bucket/key"));
        };
        // Refused before anything resolves dot segments (URL parsers silently do): a traversal
        // attempt is reported as one, not as whatever path it would normalise to.
        if has_dot_dot_segment(rest) {
            return Err(DocumentError::Traversal { uri: raw.to_owned() });
        }
        let location = match scheme.to_ascii_lowercase().as_str() {
            "file" => Location::File(parse_file(raw).map_err(invalid)?),
            "s3" => {
                let (bucket, key) = parse_s3(rest).map_err(invalid)?;
                Location::S3 { bucket, key }
            }
            _ => return Err(DocumentError::UnsupportedScheme { uri: raw.to_owned(), scheme: scheme.to_owned() }),
        };
        Ok(Self { raw: raw.to_owned(), location })
    }

    /// The URI as the client wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Where it points.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The lowercase extension of the last path segment (`pdf`, `docx`, `md`, …), if any: a hint
    /// the extractor checks against the document's bytes.
    pub fn extension(&self) -> Option<String> {
        let name = match &self.location {
            Location::File(path) => path.file_name()?.to_str()?,
            Location::S3 { key, .. } => key.rsplit('/').next()?,
        };
        let (stem, ext) = name.rsplit_once('.')?;
        (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
    }
}

impl fmt::Display for DocumentUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for DocumentUri {
    type Err = DocumentError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::parse(value)
    }
}

impl TryFrom<String> for DocumentUri {
    type Error = DocumentError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DocumentUri> for String {
    fn from(uri: DocumentUri) -> String {
        uri.raw
    }
}

/// The URI for an error message: control characters (which could forge log lines) escaped.
fn display_safe(raw: &str) -> String {
    let cut: String = raw.chars().take(MAX_URI_LEN).collect();
    if cut.chars().any(char::is_control) { cut.escape_default().to_string() } else { cut }
}

/// Whether any `/`-separated segment of `path` is `..`, literally or percent-encoded
/// (`%2e%2e`, `.%2E`, …).
fn has_dot_dot_segment(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    path.split(['/', '\\']).any(|segment| {
        let lower = segment.to_ascii_lowercase();
        lower.replace("%2e", ".") == ".."
    })
}

fn parse_file(raw: &str) -> Result<PathBuf, &'static str> {
    let url = url::Url::parse(raw).map_err(|_| "it is not a valid file:// URL")?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a file:// URI must not have a query or fragment");
    }
    match url.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(_) => return Err("a file:// URI must not name a host; write file:///absolute/path"),
    }
    let path =
        url.to_file_path().map_err(|()| "it does not name an absolute local path; write file:///absolute/path")?;
    if path.file_name().is_none() || raw.ends_with('/') {
        return Err("it names a directory, not a file");
    }
    // Percent-encoding can smuggle in what the raw check refused.
    if path.to_str().is_none_or(|p| p.chars().any(char::is_control)) {
        return Err("its path contains control characters or is not UTF-8");
    }
    Ok(path)
}

fn parse_s3(rest: &str) -> Result<(String, String), &'static str> {
    let (bucket, key) = rest.split_once('/').ok_or("an s3:// URI needs a key: s3://bucket/key")?;
    if !valid_bucket(bucket) {
        return Err("the bucket name must be 3-63 lowercase letters, digits, dots or hyphens");
    }
    if key.is_empty() || key.ends_with('/') {
        return Err("an s3:// URI needs an object key, not a prefix: s3://bucket/key");
    }
    if key.len() > 1024 {
        return Err("the object key is longer than 1024 bytes");
    }
    if key.split('/').any(|segment| segment.is_empty() || segment == ".") {
        return Err("the object key must not contain empty or `.` segments");
    }
    Ok((bucket.to_owned(), key.to_owned()))
}

/// S3 bucket naming rules (the subset that matters for addressing).
fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn file_and_s3_uris_parse() -> Result<(), DocumentError> {
        let file = DocumentUri::parse("file:///srv/documents/liberty/Claims%20Adjuster.PDF")?;
        assert_eq!(file.location(), &Location::File(PathBuf::from("/srv/documents/liberty/Claims Adjuster.PDF")));
        assert_eq!(file.extension().as_deref(), Some("pdf"));
        let s3 = DocumentUri::parse("s3://etter-docs/liberty/jd v2.docx")?;
        assert_eq!(
            s3.location(),
            &Location::S3 { bucket: "etter-docs".to_owned(), key: "liberty/jd v2.docx".to_owned() }
        );
        assert_eq!(s3.extension().as_deref(), Some("docx"));
        assert_eq!(DocumentUri::parse("file://localhost/tmp/a.txt")?.as_str(), "file://localhost/tmp/a.txt");
        assert_eq!(DocumentUri::parse("s3://b-1.x/.hidden")?.extension(), None);
        Ok(())
    }

    #[test]
    fn bad_uris_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("ftp://host/jd.pdf", "DOCUMENT_URI_SCHEME_UNSUPPORTED"),
            ("https://example.com/jd.pdf", "DOCUMENT_URI_SCHEME_UNSUPPORTED"),
            ("/etc/passwd", "DOCUMENT_URI_INVALID"),
            ("file://server/share/jd.pdf", "DOCUMENT_URI_INVALID"),
            ("file:///srv/docs/", "DOCUMENT_URI_INVALID"),
            ("file:///srv/docs/../../etc/passwd", "DOCUMENT_PATH_TRAVERSAL"),
            ("file:///srv/docs/%2e%2E/etc/passwd", "DOCUMENT_PATH_TRAVERSAL"),
            ("s3://bucket/a/../b.pdf", "DOCUMENT_PATH_TRAVERSAL"),
            ("s3://bucket", "DOCUMENT_URI_INVALID"),
            ("s3://Bucket/key.pdf", "DOCUMENT_URI_INVALID"),
            ("s3://bucket/dir/", "DOCUMENT_URI_INVALID"),
            ("s3://bucket/a//b", "DOCUMENT_URI_INVALID"),
            ("file:///tmp/a\n.pdf", "DOCUMENT_URI_INVALID"),
            ("file:///tmp/a%00b.pdf", "DOCUMENT_URI_INVALID"),
            ("file:///tmp/a%0Ab.pdf", "DOCUMENT_URI_INVALID"),
            ("file:///tmp/%FF.pdf", "DOCUMENT_URI_INVALID"),
            ("", "DOCUMENT_URI_INVALID"),
        ];
        for (uri, code) in cases {
            match DocumentUri::parse(uri) {
                Ok(parsed) => panic!("{uri:?} parsed as {parsed:?}"),
                Err(e) => {
                    assert_eq!(e.code(), *code, "{uri:?}: {e}");
                    assert!(!e.recoverable(), "{uri:?}");
                }
            }
        }
        // A missing URI is said to be missing, not shown as an empty name.
        let missing = DocumentUri::parse("").map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            missing,
            Err("no document URI was given; name the document as s3://bucket/key or as file:///path".to_owned())
        );
    }

    #[test]
    fn serde_round_trips_through_the_string() -> Result<(), serde_json::Error> {
        let uri: DocumentUri = serde_json::from_str("\"s3://etter-docs/jd.pdf\"")?;
        assert_eq!(serde_json::to_string(&uri)?, "\"s3://etter-docs/jd.pdf\"");
        assert!(serde_json::from_str::<DocumentUri>("\"ftp://x/y\"").is_err());
        Ok(())
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_never_accepts_traversal(raw in "\\PC{0,80}") {
            if let Ok(uri) = DocumentUri::parse(&raw) {
                prop_assert!(!has_dot_dot_segment(uri.as_str()));
                if let Location::File(path) = uri.location() {
                    prop_assert!(path.is_absolute());
                    prop_assert!(path.components().all(|c| !matches!(c, std::path::Component::ParentDir)));
                }
            }
        }

        #[test]
        fn any_dot_dot_segment_is_traversal(
            prefix in "[a-z]{1,8}(/[a-z]{1,8}){0,3}",
            dots in prop::sample::select(vec!["..", "%2e%2e", ".%2E", "%2E."]),
            suffix in "[a-z]{1,8}\\.pdf",
            scheme in prop::sample::select(vec!["file:///", "s3://"]),
        ) {
            let raw = format!("{scheme}{prefix}/{dots}/{suffix}");
            let err = DocumentUri::parse(&raw).err();
            prop_assert_eq!(err.map(|e| e.code()), Some("DOCUMENT_PATH_TRAVERSAL"));
        }
    }
}
