//! `[documents]`: where documents are fetched from and how much of them is read. The server
//! checks pushed documents against it before their runs are queued; the worker fetches and
//! extracts within it.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use etter_config::{ConfigError, Secret};

use crate::DocumentError;
use crate::DocumentUri;
use crate::Location;

/// `[documents]`: fetching documents and extracting their text.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// The only directory `file://` URIs may point into (symbolic links included); empty =
    /// `file://` URIs are refused.
    pub file_root: PathBuf,
    /// Largest document fetched, in bytes.
    pub max_bytes: u64,
    /// Most characters of text one document may yield.
    pub max_text_chars: usize,
    /// Longest one fetch may take, retries included.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub fetch_timeout: Duration,
    /// Longest one text extraction may take (and longest it waits for a free extraction slot).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub extract_timeout: Duration,
    /// Extractions run at once by one worker process (each on a blocking thread).
    pub max_concurrent_extractions: usize,
    /// Longest the server's check of one document before its run is queued may take (that it
    /// exists, is readable, within `max_bytes`, and its first bytes match its extension). A check
    /// that runs out of time refuses the document, saying so.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub check_timeout: Duration,
    /// Documents the server checks at once for one push or batch.
    pub max_concurrent_checks: usize,
    /// Most remote (`s3://`) documents a `PushBatch` checks before it answers. A batch with more
    /// is answered without waiting for them: its items with remote documents are stored
    /// VALIDATING, checked in the background, then queued or stored as VALIDATION_ERROR. 0 = a
    /// batch's remote documents are always checked in the background. A `Push`, and a quote,
    /// check every document before answering.
    pub max_inline_checks: usize,
    /// `s3://` documents.
    pub s3: S3Config,
}

/// `[documents.s3]`: the S3-compatible store of `s3://` documents.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible store (MinIO, moto, …); empty = AWS S3 of `region`.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Allow plain-HTTP endpoints (local stores and tests only).
    pub allow_http: bool,
    /// PEM CA certificates an `https://` endpoint's certificate may chain to, besides the
    /// system's roots (a store behind a private CA). Empty = the system's roots only.
    pub ca_file: PathBuf,
    /// Access key id; empty = the AWS credential chain (`AWS_*` environment, web identity,
    /// instance metadata).
    pub access_key_id: String,
    /// Secret access key (with `access_key_id`).
    pub secret_access_key: Secret,
    /// Session token of temporary credentials; empty when not needed.
    pub session_token: Secret,
    /// Buckets `s3://` URIs may name; empty = any bucket the credentials can read.
    pub allowed_buckets: Vec<String>,
    /// Retries of a failed request within `fetch_timeout`.
    pub max_retries: usize,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self {
            file_root: PathBuf::new(),
            max_bytes: 20 * 1024 * 1024,
            max_text_chars: 2_000_000,
            fetch_timeout: Duration::from_secs(60),
            extract_timeout: Duration::from_secs(60),
            max_concurrent_extractions: 2,
            check_timeout: Duration::from_secs(10),
            max_concurrent_checks: 32,
            max_inline_checks: 256,
            s3: S3Config::default(),
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            allow_http: false,
            ca_file: PathBuf::new(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            session_token: Secret::default(),
            allowed_buckets: Vec::new(),
            max_retries: 3,
        }
    }
}

impl DocumentsConfig {
    /// Checks values that deserialize but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = etter_config::invalid::<()>;
        if self.max_bytes == 0 {
            return invalid("documents.max_bytes", "must be at least 1");
        }
        if self.max_text_chars == 0 {
            return invalid("documents.max_text_chars", "must be at least 1");
        }
        if self.fetch_timeout.is_zero() {
            return invalid("documents.fetch_timeout", "must be positive");
        }
        if self.extract_timeout.is_zero() {
            return invalid("documents.extract_timeout", "must be positive");
        }
        if self.max_concurrent_extractions == 0 {
            return invalid("documents.max_concurrent_extractions", "must be at least 1");
        }
        if self.check_timeout.is_zero() {
            return invalid("documents.check_timeout", "must be positive");
        }
        if self.max_concurrent_checks == 0 {
            return invalid("documents.max_concurrent_checks", "must be at least 1");
        }
        if !self.file_root.as_os_str().is_empty() && !self.file_root.is_absolute() {
            return invalid("documents.file_root", "must be an absolute path, or empty to refuse file:// URIs");
        }
        if !self.s3.endpoint.is_empty() {
            match url::Url::parse(&self.s3.endpoint) {
                Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && self.s3.allow_http) => {}
                Ok(u) if u.scheme() == "http" => {
                    return invalid(
                        "documents.s3.endpoint",
                        "is plain http: set documents.s3.allow_http for local stores",
                    );
                }
                _ => return invalid("documents.s3.endpoint", "must be an http(s):// URL, or empty for AWS S3"),
            }
        }
        if self.s3.region.is_empty() {
            return invalid("documents.s3.region", "must not be empty");
        }
        if !self.s3.ca_file.as_os_str().is_empty() {
            etter_config::tls::certificates_pem("documents.s3", "ca_file", &self.s3.ca_file)?;
        }
        if self.s3.access_key_id.is_empty() == self.s3.secret_access_key.is_set() {
            return invalid(
                "documents.s3.access_key_id",
                "and documents.s3.secret_access_key must be set together (or both empty for the AWS credential chain)",
            );
        }
        Ok(())
    }
}

impl DocumentsConfig {
    /// Whether this configuration lets a document be fetched at all, decided from the URI alone
    /// (the server checks pushes with it): `file://` needs a configured root and a path lexically
    /// inside it; `s3://` needs an allowed bucket. The worker checks again when it opens the
    /// document, where symbolic links are resolved too.
    pub fn admit(&self, uri: &DocumentUri) -> Result<(), DocumentError> {
        match uri.location() {
            Location::File(path) => {
                if self.file_root.as_os_str().is_empty() {
                    return Err(DocumentError::FileSourceDisabled { uri: uri.to_string() });
                }
                let inside = path.strip_prefix(&self.file_root).is_ok_and(|relative| {
                    !relative.as_os_str().is_empty()
                        && relative.components().all(|c| matches!(c, std::path::Component::Normal(_)))
                });
                if inside { Ok(()) } else { Err(DocumentError::OutsideRoot { uri: uri.to_string() }) }
            }
            Location::S3 { bucket, .. } => {
                let allowed = &self.s3.allowed_buckets;
                if allowed.is_empty() || allowed.iter().any(|b| b == bucket) {
                    Ok(())
                } else {
                    Err(DocumentError::BucketNotAllowed { uri: uri.to_string(), bucket: bucket.clone() })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_every_key_is_documented() -> anyhow::Result<()> {
        DocumentsConfig::default().validate()?;
        let value = serde_json::to_value(DocumentsConfig::default())?;
        let mut leaves = Vec::new();
        for (k, v) in value.as_object().into_iter().flatten() {
            match v.as_object() {
                Some(section) => leaves.extend(section.keys().map(|s| format!("documents.{k}.{s}"))),
                None => leaves.push(format!("documents.{k}")),
            }
        }
        leaves.sort();
        let mut documented: Vec<String> = etter_config::documented_keys::<DocumentsConfig>()
            .into_iter()
            .map(|k| format!("documents.{}", k.key))
            .collect();
        documented.sort();
        assert_eq!(leaves, documented);
        Ok(())
    }

    #[test]
    fn admission_checks_the_root_and_the_buckets() -> anyhow::Result<()> {
        let mut config = DocumentsConfig::default();
        let inside = DocumentUri::parse("file:///srv/docs/acme/jd.pdf")?;
        assert_eq!(config.admit(&inside).err().map(|e| e.code()), Some("DOCUMENT_FILE_SOURCE_DISABLED"));
        config.file_root = PathBuf::from("/srv/docs");
        config.admit(&inside)?;
        for outside in ["file:///srv/docs-other/jd.pdf", "file:///etc/passwd", "file:///srv/jd.pdf"] {
            let err = config.admit(&DocumentUri::parse(outside)?).err().map(|e| e.code());
            assert_eq!(err, Some("DOCUMENT_OUTSIDE_ROOT"), "{outside}");
        }
        let s3 = DocumentUri::parse("s3://etter-docs/jd.pdf")?;
        config.admit(&s3)?;
        config.s3.allowed_buckets = vec!["other".to_owned()];
        assert!(config.admit(&s3).is_err());
        Ok(())
    }

    #[test]
    fn unusable_values_name_the_key() {
        let mut config = DocumentsConfig::default();
        config.s3.endpoint = "http://127.0.0.1:9000".to_owned();
        let err = config.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("documents.s3.endpoint") && err.contains("allow_http"), "{err}");
        config.s3.allow_http = true;
        config.s3.access_key_id = "key".to_owned();
        let err = config.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("documents.s3.access_key_id"), "{err}");
        config.file_root = PathBuf::from("relative/docs");
        config.s3.secret_access_key = Secret::from("secret");
        let err = config.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("documents.file_root"), "{err}");
    }
}
