//! Fetching documents (`file://` confined to the documents root, `s3://` through `object_store`)
//! and running extraction off the async runtime.

use std::{
    collections::HashMap,
    fs::File,
    io::Read,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, RetryConfig,
    aws::AmazonS3Builder,
    client::{HttpError, HttpErrorKind},
    path::Path as ObjectPath,
};
use rustix::{
    fd::OwnedFd,
    fs::{Mode, OFlags},
    io::Errno,
};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{
    DocumentError, DocumentFormat, DocumentUri, DocumentsConfig, Location,
    extract::{ExtractLimits, SNIFF_BYTES, detect, extract_blocking},
};
use etter_core::outputs::ContentHash;

/// The content hash of a document: hex SHA-256 of its raw bytes.
pub fn content_hash(bytes: &[u8]) -> ContentHash {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
    ContentHash(hex)
}

/// A document's raw bytes, as fetched.
#[derive(Debug, Clone)]
pub struct FetchedDocument {
    /// Where it came from.
    pub uri: DocumentUri,
    /// Its bytes (at most `documents.max_bytes`).
    pub bytes: Bytes,
    /// SHA-256 of `bytes`: what staleness scans compare.
    pub content_hash: ContentHash,
}

/// A document's text, ready for the AI steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedDocument {
    /// Where it came from.
    pub uri: DocumentUri,
    /// SHA-256 of the raw bytes (not of the text): the document's identity.
    pub content_hash: ContentHash,
    /// Size of the raw bytes.
    pub byte_len: u64,
    /// The detected format.
    pub format: DocumentFormat,
    /// Normalised UTF-8 text; outputs cite byte ranges of it.
    pub text: String,
    /// Pages (PDF only).
    pub pages: Option<u32>,
    /// PDF pages that could not be read and are missing from `text` (worth a human review).
    pub skipped_pages: u32,
    /// Non-empty lines of `text`.
    pub lines: u32,
}

/// What a check of a document found ([`Documents::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedDocument {
    /// Its size.
    pub byte_len: u64,
    /// The format its first bytes show, which agrees with its extension.
    pub format: DocumentFormat,
}

/// Fetches documents and extracts their text, within the limits of a [`DocumentsConfig`].
/// One per worker process; cheap to share behind an `Arc`.
pub struct Documents {
    config: DocumentsConfig,
    limits: ExtractLimits,
    root: Option<Arc<Root>>,
    s3: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    slots: Arc<Semaphore>,
}

/// Buckets whose clients are kept; past this the cache starts over (clients name buckets).
const MAX_CACHED_BUCKETS: usize = 64;

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Documents {
    /// Validates the configuration and opens the documents root (when configured); the root must
    /// exist.
    pub fn new(config: DocumentsConfig) -> Result<Self, DocumentError> {
        config.validate()?;
        let root =
            if config.file_root.as_os_str().is_empty() { None } else { Some(Arc::new(Root::new(&config.file_root)?)) };
        Ok(Self {
            limits: ExtractLimits::from(&config),
            slots: Arc::new(Semaphore::new(config.max_concurrent_extractions)),
            root,
            s3: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The configuration it works within.
    pub fn config(&self) -> &DocumentsConfig {
        &self.config
    }

    /// Extractions holding a slot now, those that ran past their timeout included.
    pub fn extractions_running(&self) -> usize {
        self.config.max_concurrent_extractions.saturating_sub(self.slots.available_permits())
    }

    /// Fetches and extracts a document.
    pub async fn load(&self, uri: &DocumentUri) -> Result<ExtractedDocument, DocumentError> {
        let fetched = self.fetch(uri).await?;
        self.extract(fetched).await
    }

    /// Fetches a document's bytes (at most `documents.max_bytes`, checked before the download
    /// where the store tells the size, and enforced while reading) and hashes them.
    #[tracing::instrument(name = "document.fetch", skip_all, fields(uri = %uri))]
    pub async fn fetch(&self, uri: &DocumentUri) -> Result<FetchedDocument, DocumentError> {
        let timeout = self.config.fetch_timeout;
        let fetching = async {
            match uri.location() {
                Location::File(path) => self.fetch_file(uri, path).await,
                Location::S3 { bucket, key } => self.fetch_s3(uri, bucket, key).await,
            }
        };
        let bytes = tokio::time::timeout(timeout, fetching)
            .await
            .map_err(|_| DocumentError::FetchTimeout { uri: uri.to_string(), timeout })??;
        if bytes.is_empty() {
            return Err(DocumentError::Empty { uri: uri.to_string() });
        }
        let content_hash = content_hash(&bytes);
        Ok(FetchedDocument { uri: uri.clone(), bytes, content_hash })
    }

    /// Checks, without fetching it whole, that a document can be fetched and is what its
    /// extension says: it exists and is readable (`file://`: under the root; `s3://`: a HEAD with
    /// the configured credentials), is not empty and within `documents.max_bytes`, and its first
    /// bytes show the format its extension names. Within `documents.check_timeout`.
    ///
    /// The server runs this before it queues a run, so a run never waits in the queue only to
    /// fail on a document that was missing from the start. Whether the text can be extracted is
    /// known only once the worker parses the whole document.
    #[tracing::instrument(name = "document.check", skip_all, fields(uri = %uri))]
    pub async fn check(&self, uri: &DocumentUri) -> Result<CheckedDocument, DocumentError> {
        let timeout = self.config.check_timeout;
        let checking = async {
            match uri.location() {
                Location::File(path) => self.head_file(uri, path).await,
                Location::S3 { bucket, key } => self.head_s3(uri, bucket, key).await,
            }
        };
        let (byte_len, head) = tokio::time::timeout(timeout, checking)
            .await
            .map_err(|_| DocumentError::CheckTimeout { uri: uri.to_string(), timeout })??;
        if byte_len == 0 {
            return Err(DocumentError::Empty { uri: uri.to_string() });
        }
        let format = detect(uri, &head)?;
        Ok(CheckedDocument { byte_len, format })
    }

    /// A file's size and its first bytes.
    async fn head_file(&self, uri: &DocumentUri, path: &Path) -> Result<(u64, Vec<u8>), DocumentError> {
        self.read_file(uri, path, SNIFF_BYTES).await
    }

    /// An object's size and its first bytes, in one request: a GET of the first bytes answers the
    /// whole object's size too (its Content-Range). The store refuses a range of an empty object
    /// (416): any failure but a missing object falls back to a HEAD, which says what is wrong (or
    /// that the object is empty).
    async fn head_s3(&self, uri: &DocumentUri, bucket: &str, key: &str) -> Result<(u64, Vec<u8>), DocumentError> {
        let (store, location) = self.s3_object(uri, bucket, key)?;
        let max = self.config.max_bytes;
        let options = GetOptions { range: Some((0..SNIFF_BYTES).into()), ..GetOptions::default() };
        let (size, head) = match store.get_opts(&location, options).await {
            Ok(got) => {
                let size = got.meta.size;
                if size > max {
                    return Err(DocumentError::TooLarge { uri: uri.to_string(), max });
                }
                (size, got.bytes().await.map_err(|e| s3_error(uri, &e))?)
            }
            Err(e @ object_store::Error::NotFound { .. }) => return Err(s3_error(uri, &e)),
            Err(_) => {
                let meta = store.head(&location).await.map_err(|e| s3_error(uri, &e))?;
                if meta.size > max {
                    return Err(DocumentError::TooLarge { uri: uri.to_string(), max });
                }
                if meta.size == 0 {
                    return Ok((0, Vec::new()));
                }
                let head =
                    store.get_range(&location, 0..meta.size.min(SNIFF_BYTES)).await.map_err(|e| s3_error(uri, &e))?;
                (meta.size, head)
            }
        };
        Ok((size, head.to_vec()))
    }

    /// Extracts the text of fetched bytes on a blocking thread, with panics caught and within
    /// `documents.extract_timeout`.
    ///
    /// A blocking thread cannot be killed: an extraction that runs past the timeout is reported as
    /// [`DocumentError::ExtractTimeout`] but keeps its thread, and its extraction slot, until it
    /// ends. The input size, decompression caps and text cap bound how long that can be, and the
    /// slots bound how many such threads exist: when all are taken, extractions wait (then report
    /// [`DocumentError::Busy`], which is retried) instead of piling up threads.
    #[tracing::instrument(name = "document.extract", skip_all, fields(uri = %doc.uri, bytes = doc.bytes.len()))]
    pub async fn extract(&self, doc: FetchedDocument) -> Result<ExtractedDocument, DocumentError> {
        let timeout = self.config.extract_timeout;
        let uri = doc.uri.to_string();
        let busy = || DocumentError::Busy { uri: uri.clone(), waited: timeout };
        let permit = tokio::time::timeout(timeout, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let limits = self.limits;
        let (task_uri, bytes) = (doc.uri.clone(), doc.bytes.clone());
        let task = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            extract_blocking(&task_uri, &bytes, &limits)
        });
        let extracted = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join)) if join.is_panic() => {
                // extract_blocking catches parser panics; this is a panic outside of them, before
                // the format was known for sure: name the one the extension claims.
                tracing::error!(uri = %doc.uri, "document extraction task panicked");
                let format = match doc.uri.extension().as_deref() {
                    Some("pdf") => DocumentFormat::Pdf,
                    Some("docx") => DocumentFormat::Docx,
                    Some("md" | "markdown") => DocumentFormat::Markdown,
                    _ => DocumentFormat::Txt,
                };
                return Err(DocumentError::ExtractorFailed { uri, format });
            }
            // Cancelled: the runtime is shutting down.
            Ok(Err(_)) => return Err(busy()),
            Err(_) => {
                tracing::error!(uri = %doc.uri, ?timeout, "document extraction timed out; its thread runs on until it ends");
                return Err(DocumentError::ExtractTimeout { uri, timeout });
            }
        };
        Ok(ExtractedDocument {
            uri: doc.uri,
            content_hash: doc.content_hash,
            byte_len: doc.bytes.len() as u64,
            format: extracted.format,
            text: extracted.text,
            pages: extracted.pages,
            skipped_pages: extracted.skipped_pages,
            lines: extracted.lines,
        })
    }

    async fn fetch_file(&self, uri: &DocumentUri, path: &Path) -> Result<Bytes, DocumentError> {
        let (_, bytes) = self.read_file(uri, path, self.config.max_bytes).await?;
        Ok(Bytes::from(bytes))
    }

    /// Opens a regular file under the root, refuses it past `documents.max_bytes` (before
    /// reading when its size says so, and while reading in case it grows), and reads at most its
    /// first `first` bytes; answers its size and those bytes. On a blocking thread.
    async fn read_file(&self, uri: &DocumentUri, path: &Path, first: u64) -> Result<(u64, Vec<u8>), DocumentError> {
        let root = self.root.clone().ok_or_else(|| DocumentError::FileSourceDisabled { uri: uri.to_string() })?;
        let relative = root.relative(path).ok_or_else(|| DocumentError::OutsideRoot { uri: uri.to_string() })?;
        let (max, task_uri) = (self.config.max_bytes, uri.to_string());
        tokio::task::spawn_blocking(move || {
            let file = root.open(&relative).map_err(|failure| failure.into_error(&task_uri))?;
            read_capped(file, max, first, &task_uri)
        })
        .await
        .map_err(|e| DocumentError::Io { uri: uri.to_string(), detail: e.to_string() })?
    }

    /// The store of an allowed bucket and the object's path in it.
    fn s3_object(
        &self,
        uri: &DocumentUri,
        bucket: &str,
        key: &str,
    ) -> Result<(Arc<dyn ObjectStore>, ObjectPath), DocumentError> {
        let allowed = &self.config.s3.allowed_buckets;
        if !allowed.is_empty() && !allowed.iter().any(|b| b == bucket) {
            return Err(DocumentError::BucketNotAllowed { uri: uri.to_string(), bucket: bucket.to_owned() });
        }
        let store = self.s3_store(bucket)?;
        let location = ObjectPath::parse(key).map_err(|e| DocumentError::InvalidUri {
            uri: uri.to_string(),
            problem: format!("the object key is not supported: {e}"),
        })?;
        Ok((store, location))
    }

    async fn fetch_s3(&self, uri: &DocumentUri, bucket: &str, key: &str) -> Result<Bytes, DocumentError> {
        let (store, location) = self.s3_object(uri, bucket, key)?;
        let result = store.get(&location).await.map_err(|e| s3_error(uri, &e))?;
        let max = self.config.max_bytes;
        if result.meta.size > max {
            return Err(DocumentError::TooLarge { uri: uri.to_string(), max });
        }
        let mut body = Vec::with_capacity(usize::try_from(result.meta.size).unwrap_or(0));
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3_error(uri, &e))?;
            // The declared size can be wrong: the cap holds for what actually arrives.
            if (body.len() + chunk.len()) as u64 > max {
                return Err(DocumentError::TooLarge { uri: uri.to_string(), max });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    fn s3_store(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, DocumentError> {
        let mut stores = self.s3.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = stores.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let s3 = &self.config.s3;
        let timeout = self.config.fetch_timeout;
        let mut builder = match s3.secret_access_key.expose() {
            // Static credentials: nothing is read from the environment or instance metadata.
            Some(secret) => AmazonS3Builder::new().with_access_key_id(&s3.access_key_id).with_secret_access_key(secret),
            None => AmazonS3Builder::from_env(),
        };
        if let Some(token) = s3.session_token.expose() {
            builder = builder.with_token(token);
        }
        if !s3.endpoint.is_empty() {
            builder = builder.with_endpoint(&s3.endpoint);
        }
        let mut client = ClientOptions::new()
            .with_allow_http(s3.allow_http)
            .with_timeout(timeout)
            .with_connect_timeout(timeout.min(Duration::from_secs(10)));
        if !s3.ca_file.as_os_str().is_empty() {
            let pem = etter_config::tls::certificates_pem("documents.s3", "ca_file", &s3.ca_file)?;
            let cas = object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| DocumentError::Config { key: "documents.s3.ca_file".into(), problem: e.to_string() })?;
            for ca in cas {
                client = client.with_root_certificate(ca);
            }
        }
        let store = builder
            .with_bucket_name(bucket)
            .with_region(&s3.region)
            .with_allow_http(s3.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: s3.max_retries,
                retry_timeout: timeout,
            })
            .with_client_options(client)
            .build()
            .map_err(|e| DocumentError::Config { key: "documents.s3".into(), problem: e.to_string() })?;
        if stores.len() >= MAX_CACHED_BUCKETS {
            stores.clear();
        }
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        stores.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }
}

/// Maps a store error to what it means for the document. The store's own message (which names
/// the endpoint) goes to the log, not to the client.
fn s3_error(uri: &DocumentUri, error: &object_store::Error) -> DocumentError {
    let uri_string = uri.to_string();
    match error {
        object_store::Error::NotFound { .. } => DocumentError::NotFound { uri: uri_string },
        object_store::Error::PermissionDenied { .. } => {
            DocumentError::AccessDenied { uri: uri_string, detail: "permission denied".to_owned() }
        }
        object_store::Error::Unauthenticated { .. } => {
            DocumentError::AccessDenied { uri: uri_string, detail: "the credentials were not accepted".to_owned() }
        }
        object_store::Error::InvalidPath { .. } => {
            DocumentError::InvalidUri { uri: uri_string, problem: "the object key is not supported".to_owned() }
        }
        other => {
            tracing::warn!(uri = %uri, error = %other, "document store request failed");
            DocumentError::Unavailable { uri: uri_string, detail: transport_failure(other).to_owned() }
        }
    }
}

/// What went wrong on the wire, in words that name no host.
fn transport_failure(error: &object_store::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(http) = current.downcast_ref::<HttpError>() {
            return match http.kind() {
                HttpErrorKind::Connect => "cannot connect",
                HttpErrorKind::Timeout => "the request timed out",
                HttpErrorKind::Interrupted => "the connection was interrupted",
                HttpErrorKind::Decode => "the response could not be read",
                _ => "the request failed",
            };
        }
        source = current.source();
    }
    "the store answered with an error"
}

/// Reads at most the first `first` bytes of a regular file, refusing it past `max` bytes (before
/// reading when its size says so, and while reading in case it grows); answers its size and the
/// bytes read.
fn read_capped(file: File, max: u64, first: u64, uri: &str) -> Result<(u64, Vec<u8>), DocumentError> {
    let io = |e: std::io::Error| DocumentError::Io { uri: uri.to_owned(), detail: e.to_string() };
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(DocumentError::NotAFile { uri: uri.to_owned() });
    }
    if metadata.len() > max {
        return Err(DocumentError::TooLarge { uri: uri.to_owned(), max });
    }
    // Reading the whole file: one byte past the cap shows a file that grew past it.
    let limit = if first >= max { max + 1 } else { first };
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len().min(limit)).unwrap_or(0));
    file.take(limit).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(DocumentError::TooLarge { uri: uri.to_owned(), max });
    }
    Ok((metadata.len(), bytes))
}

/// The documents root: the only directory `file://` URIs may reach.
///
/// Confinement does not rest on string prefixes alone. On Linux the file is opened with
/// `openat2(RESOLVE_BENEATH)` relative to the root's directory descriptor, so the kernel refuses
/// any resolution — `..`, absolute or relative symbolic links, at any component — that leaves the
/// root, and nothing can be swapped between a check and the open. Where `openat2` is missing
/// (other systems, kernels before 5.6, sandboxes that filter it), the path is canonicalised, its
/// prefix checked, and the final component opened with `O_NOFOLLOW`; that fallback cannot stop a
/// directory on the path being replaced by a symbolic link between the check and the open.
#[derive(Debug)]
struct Root {
    /// As configured, made absolute (URIs may use it even when it contains symbolic links).
    configured: PathBuf,
    /// Canonical (symbolic links resolved).
    canonical: PathBuf,
    /// An open descriptor of the directory, the anchor of `openat2`.
    dir: OwnedFd,
}

/// Why a file under the root could not be opened.
#[derive(Debug)]
enum OpenFailure {
    NotFound,
    Escapes,
    NotAFile,
    Denied,
    BadName,
    Io(Errno),
}

impl OpenFailure {
    fn into_error(self, uri: &str) -> DocumentError {
        let uri = uri.to_owned();
        match self {
            Self::NotFound => DocumentError::NotFound { uri },
            Self::Escapes => DocumentError::SymlinkEscape { uri },
            Self::NotAFile => DocumentError::NotAFile { uri },
            Self::Denied => {
                DocumentError::AccessDenied { uri, detail: "permission to read the file is denied".to_owned() }
            }
            Self::BadName => {
                DocumentError::InvalidUri { uri, problem: "the path is not valid on this system".to_owned() }
            }
            Self::Io(errno) => DocumentError::Io { uri, detail: std::io::Error::from(errno).to_string() },
        }
    }

    fn from_errno(errno: Errno) -> Self {
        match errno {
            Errno::NOENT | Errno::NOTDIR => Self::NotFound,
            Errno::XDEV => Self::Escapes,
            Errno::ACCESS | Errno::PERM => Self::Denied,
            Errno::LOOP | Errno::ISDIR | Errno::NXIO => Self::NotAFile,
            Errno::INVAL | Errno::NAMETOOLONG | Errno::ILSEQ => Self::BadName,
            other => Self::Io(other),
        }
    }
}

/// Flags of every open under the root: read-only; `NONBLOCK` so a FIFO planted under the root
/// cannot hang the open (regular files ignore it); `NOCTTY` so a terminal device is never
/// adopted.
fn open_flags() -> OFlags {
    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK
}

impl Root {
    fn new(configured: &Path) -> Result<Self, DocumentError> {
        let config_error = |e: std::io::Error| DocumentError::Config {
            key: "documents.file_root".into(),
            problem: format!("cannot be opened: {e}"),
        };
        let canonical = std::fs::canonicalize(configured).map_err(config_error)?;
        let dir = rustix::fs::open(&canonical, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| config_error(e.into()))?;
        Ok(Self { configured: configured.to_path_buf(), canonical, dir })
    }

    /// The path relative to the root, if it is lexically inside it (with or without the root's
    /// own symbolic links resolved); only plain names remain.
    fn relative(&self, path: &Path) -> Option<PathBuf> {
        let relative = path.strip_prefix(&self.canonical).or_else(|_| path.strip_prefix(&self.configured)).ok()?;
        let plain = relative.components().all(|c| matches!(c, Component::Normal(_)));
        (plain && !relative.as_os_str().is_empty()).then(|| relative.to_path_buf())
    }

    fn open(&self, relative: &Path) -> Result<File, OpenFailure> {
        #[cfg(target_os = "linux")]
        match self.open_beneath(relative) {
            // An absolute symbolic link that stays inside the root also makes RESOLVE_BENEATH
            // refuse; the canonical check below tells the two apart.
            Err(OpenFailure::Escapes) => {}
            Err(OpenFailure::Io(Errno::NOSYS)) => {}
            other => return other,
        }
        self.open_canonical(relative)
    }

    #[cfg(target_os = "linux")]
    fn open_beneath(&self, relative: &Path) -> Result<File, OpenFailure> {
        use rustix::fs::ResolveFlags;
        rustix::fs::openat2(
            &self.dir,
            relative,
            open_flags(),
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map(File::from)
        .map_err(OpenFailure::from_errno)
    }

    fn open_canonical(&self, relative: &Path) -> Result<File, OpenFailure> {
        let canonical = std::fs::canonicalize(self.canonical.join(relative)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OpenFailure::NotFound,
            _ => {
                e.raw_os_error().map_or(OpenFailure::NotFound, |n| OpenFailure::from_errno(Errno::from_raw_os_error(n)))
            }
        })?;
        let inside = canonical.strip_prefix(&self.canonical).map_err(|_| OpenFailure::Escapes)?;
        #[cfg(target_os = "linux")]
        {
            // The canonical path has no symbolic links left: RESOLVE_BENEATH now only refuses if
            // one was planted since, which is an escape attempt.
            match self.open_beneath(inside) {
                Err(OpenFailure::Io(Errno::NOSYS)) => {}
                other => return other,
            }
        }
        rustix::fs::open(self.canonical.join(inside), open_flags() | OFlags::NOFOLLOW, Mode::empty())
            .map(File::from)
            .map_err(OpenFailure::from_errno)
    }
}
