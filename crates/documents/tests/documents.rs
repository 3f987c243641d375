//! Documents: fetching (`file://` confined to the documents root, `s3://` against a real
//! S3-compatible server, PyPI `moto[server]`) and text extraction of every fixture in
//! `testdata/documents` (see its README), plus every way a document can be refused.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use etter_config::Secret;
use etter_documents::{
    DocumentError, DocumentFormat, DocumentUri, Documents, DocumentsConfig, ExtractLimits, extract_blocking,
    normalize_text,
};
use object_store::{ObjectStoreExt, PutPayload, aws::AmazonS3Builder, path::Path as ObjectPath};
use proptest::{prelude::*, test_runner::TestCaseError};
use sha2::{Digest, Sha256};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

fn fixtures_dir() -> PathBuf {
    // The repository's testdata/, named without `..` (document URIs refuse it).
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new("/"));
    crates.parent().unwrap_or(crates).join("testdata/documents")
}

fn file_uri(path: &Path) -> Result<DocumentUri> {
    let url = url::Url::from_file_path(path).map_err(|()| anyhow::anyhow!("not absolute: {}", path.display()))?;
    Ok(DocumentUri::parse(url.as_str())?)
}

fn config_with_root(root: &Path) -> DocumentsConfig {
    DocumentsConfig { file_root: root.to_path_buf(), ..DocumentsConfig::default() }
}

fn fixtures() -> Result<Documents> {
    Ok(Documents::new(config_with_root(&fixtures_dir()))?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A fresh directory with a random name, removed on drop; `path` is canonical (the documents
/// root compares canonical paths).
struct Sandbox {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("etter-documents-{name}-")).tempdir()?;
        Ok(Self { path: std::fs::canonicalize(dir.path())?, _dir: dir })
    }
}

/// The tasks and skills the README lists for each fixture (the LLM tests rely on them).
fn readme_items() -> Result<BTreeMap<String, Vec<String>>> {
    let readme = std::fs::read_to_string(fixtures_dir().join("README.md"))?;
    let mut items: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in readme.lines() {
        if let Some(rest) = line.strip_prefix("### `") {
            current = rest.split('`').next().map(str::to_owned);
        } else if line.starts_with("## ") {
            current = None;
        } else if let (Some(file), Some(item)) = (&current, line.trim_start().strip_prefix("- ")) {
            items.entry(file.clone()).or_default().push(item.to_owned());
        }
    }
    Ok(items)
}

struct Expected {
    file: &'static str,
    format: DocumentFormat,
    pages: Option<u32>,
    phrases: &'static [&'static str],
}

const GOOD: &[Expected] = &[
    Expected {
        file: "claims_adjuster_jd.pdf",
        format: DocumentFormat::Pdf,
        pages: Some(2),
        phrases: &[
            "Claims Adjuster",
            "Northfield Mutual Insurance",
            "Key Responsibilities",
            "Investigate claims by interviewing claimants, witnesses and police officers",
            "Estimate repair and replacement costs using Xactimate and CCC One",
            "Required Skills",
            "Fraud detection",
        ],
    },
    Expected {
        file: "registered_nurse_jd.docx",
        format: DocumentFormat::Docx,
        pages: None,
        phrases: &[
            "Registered Nurse, Medical-Surgical Unit",
            "Department | Medical-Surgical Unit, 4 West",
            "- Administer medications and intravenous therapies according to physician orders",
            "- Perform wound care and dressing changes",
            "- Infection prevention and control",
        ],
    },
    Expected {
        file: "customer_success_manager_jd.md",
        format: DocumentFormat::Markdown,
        pages: None,
        phrases: &[
            "# Customer Success Manager",
            "## What you will do",
            "- Run quarterly business reviews with customer executives",
            "- Relationship management with senior stakeholders",
        ],
    },
    Expected {
        file: "software_engineer_jd.txt",
        format: DocumentFormat::Txt,
        pages: None,
        phrases: &[
            "SOFTWARE ENGINEER, PAYMENTS PLATFORM",
            "- Design, build and maintain backend services in Rust and Go",
            "- Investigate incidents and write blameless postmortems",
            "- Distributed systems design",
        ],
    },
    Expected {
        file: "claims_handling_process_map.pdf",
        format: DocumentFormat::Pdf,
        pages: Some(2),
        phrases: &[
            "Claims Handling Process Map",
            "Create the claim file in Guidewire ClaimCenter",
            "Refer red-flag claims to the Special Investigations Unit",
            "Audit a sample of closed claims against this process map",
        ],
    },
];

#[tokio::test]
async fn every_fixture_extracts_with_its_content_and_hash() -> Result<()> {
    let documents = fixtures()?;
    let listed = readme_items()?;
    for expected in GOOD {
        let path = fixtures_dir().join(expected.file);
        let doc = documents.load(&file_uri(&path)?).await.with_context(|| expected.file)?;
        let bytes = std::fs::read(&path)?;
        let file = expected.file;
        let checked = documents.check(&file_uri(&path)?).await.with_context(|| expected.file)?;
        ensure!(checked.byte_len == doc.byte_len && checked.format == doc.format, "{file}: checked as {checked:?}");
        ensure!(doc.content_hash.0 == sha256_hex(&bytes), "{file}: content hash is not the SHA-256 of the file");
        ensure!(doc.byte_len == bytes.len() as u64, "{file}: byte length");
        ensure!(doc.format == expected.format, "{file}: detected {:?}", doc.format);
        ensure!(doc.pages == expected.pages, "{file}: pages {:?}", doc.pages);
        ensure!(doc.skipped_pages == 0, "{file}: skipped pages");
        ensure!(doc.text == normalize_text(&doc.text), "{file}: text is not normalised");
        let words = doc.text.split_whitespace().count();
        ensure!((300..=1200).contains(&words), "{file}: {words} words");
        for phrase in expected.phrases {
            ensure!(doc.text.contains(phrase), "{file}: {phrase:?} missing from:\n{}", doc.text);
        }
        // Every task and skill the README promises is on a line of its own.
        let items = listed.get(file).with_context(|| format!("README lists nothing for {file}"))?;
        ensure!(items.len() >= 10, "{file}: README lists only {} items", items.len());
        for item in items {
            ensure!(
                doc.text.lines().any(|line| line.ends_with(item.as_str())),
                "{file}: README item {item:?} is not a line of the text:\n{}",
                doc.text
            );
        }
        ensure!(doc.lines as usize == doc.text.lines().count(), "{file}: line count");
    }
    Ok(())
}

/// What the check before queueing ([`Documents::check`]) already finds, without fetching the
/// whole document; every other refusal needs the text extracted.
const KNOWN_AT_CHECK: [&str; 10] = [
    "DOCUMENT_NOT_FOUND",
    "DOCUMENT_EMPTY",
    "DOCUMENT_TOO_LARGE",
    "DOCUMENT_OUTSIDE_ROOT",
    "DOCUMENT_SYMLINK_ESCAPE",
    "DOCUMENT_NOT_A_FILE",
    "DOCUMENT_FILE_SOURCE_DISABLED",
    "DOCUMENT_BUCKET_NOT_ALLOWED",
    "DOCUMENT_FORMAT_MISMATCH",
    "DOCUMENT_FORMAT_UNSUPPORTED",
];

/// Asserts a load fails with `code`, not recoverable, and a message that names the URI; and that
/// the check before queueing refuses it the same way when it can know, and passes it otherwise.
async fn refused(documents: &Documents, uri: &DocumentUri, code: &str) -> Result<DocumentError> {
    let checked = documents.check(uri).await;
    if KNOWN_AT_CHECK.contains(&code) {
        let e = checked.err().with_context(|| format!("{uri}: the check passed, expected {code}"))?;
        ensure!(e.code() == code, "{uri}: the check said {}, expected {code}: {e}", e.code());
        ensure!(e.to_string().contains(uri.as_str()), "{uri}: the check's message does not name it: {e}");
    } else {
        ensure!(checked.is_ok(), "{uri}: the check refused what only extraction can know: {checked:?}");
    }
    match documents.load(uri).await {
        Ok(doc) => bail!("{uri}: loaded ({} bytes of text), expected {code}", doc.text.len()),
        Err(e) => {
            ensure!(e.code() == code, "{uri}: expected {code}, got {}: {e}", e.code());
            ensure!(!e.recoverable(), "{uri}: {code} must not be recoverable");
            ensure!(e.to_string().contains(uri.as_str()), "{uri}: message does not name the document: {e}");
            Ok(e)
        }
    }
}

#[tokio::test]
async fn bad_documents_are_refused_with_a_clear_error() -> Result<()> {
    let documents = fixtures()?;
    let dir = fixtures_dir();
    let cases = [
        ("missing.pdf", "DOCUMENT_NOT_FOUND", "check the URI"),
        ("empty.txt", "DOCUMENT_EMPTY", "upload it again"),
        ("corrupt.pdf", "DOCUMENT_CORRUPT", "export it again as PDF"),
        ("latin1.txt", "DOCUMENT_NOT_UTF8", "save it as UTF-8"),
        ("no_document_xml.docx", "DOCUMENT_CORRUPT", "no word/document.xml"),
        ("scanned.pdf", "DOCUMENT_NO_TEXT", "upload a version that holds the text itself"),
    ];
    for (file, code, advice) in cases {
        let e = refused(&documents, &file_uri(&dir.join(file))?, code).await?;
        ensure!(e.to_string().contains(advice), "{file}: message lacks {advice:?}: {e}");
    }

    // Content that is not what the extension says, and formats that are not supported.
    let sandbox = Sandbox::new("mismatch")?;
    std::fs::write(sandbox.path.join("jd.pdf"), "a job description in plain text")?;
    std::fs::copy(dir.join("claims_adjuster_jd.pdf"), sandbox.path.join("jd.txt"))?;
    std::fs::write(sandbox.path.join("jd.doc"), [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1, 0, 0])?;
    let documents = Documents::new(config_with_root(&sandbox.path))?;
    for (file, code) in [
        ("jd.pdf", "DOCUMENT_FORMAT_MISMATCH"),
        ("jd.txt", "DOCUMENT_FORMAT_MISMATCH"),
        ("jd.doc", "DOCUMENT_FORMAT_UNSUPPORTED"),
    ] {
        refused(&documents, &file_uri(&sandbox.path.join(file))?, code).await?;
    }
    Ok(())
}

#[tokio::test]
async fn oversize_documents_are_refused_before_reading() -> Result<()> {
    let config = DocumentsConfig { max_bytes: 1000, ..config_with_root(&fixtures_dir()) };
    let documents = Documents::new(config)?;
    let uri = file_uri(&fixtures_dir().join("claims_adjuster_jd.pdf"))?;
    let e = refused(&documents, &uri, "DOCUMENT_TOO_LARGE").await?;
    ensure!(e.to_string().contains("1000 bytes"), "{e}");
    // The extractor holds the same limit on bytes that did not come through a fetch.
    let limits = ExtractLimits { max_input_bytes: 1000, max_text_chars: 1_000_000 };
    let e = extract_blocking(&uri, &[b'a'; 1001], &limits).err().map(|e| e.code());
    ensure!(e == Some("DOCUMENT_TOO_LARGE"), "{e:?}");
    Ok(())
}

#[tokio::test]
async fn file_uris_cannot_leave_the_documents_root() -> Result<()> {
    let sandbox = Sandbox::new("confinement")?;
    let root = sandbox.path.join("root");
    let outside = sandbox.path.join("outside");
    std::fs::create_dir_all(root.join("sub"))?;
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("secret.txt"), "outside the root")?;
    std::fs::write(root.join("inside.md"), "# Inside\n\n- a task")?;
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs_escape.txt"))?;
    std::os::unix::fs::symlink("../outside/secret.txt", root.join("rel_escape.txt"))?;
    std::os::unix::fs::symlink(&outside, root.join("dir_link"))?;
    std::os::unix::fs::symlink(root.join("inside.md"), root.join("sub/abs_alias.md"))?;
    std::os::unix::fs::symlink("../inside.md", root.join("sub/rel_alias.md"))?;
    let documents = Documents::new(config_with_root(&root))?;
    let root_str = root.display().to_string();

    // Traversal is refused when the URI is parsed, before anything touches the file system.
    for raw in [
        format!("file://{root_str}/../outside/secret.txt"),
        format!("file://{root_str}/../../../../../../etc/passwd"),
        format!("file://{root_str}/sub/%2e%2e/%2E%2E/outside/secret.txt"),
    ] {
        let e = DocumentUri::parse(&raw).err().context("traversal parsed")?;
        ensure!(e.code() == "DOCUMENT_PATH_TRAVERSAL" && !e.recoverable(), "{raw}: {e}");
        ensure!(e.to_string().contains("`..`"), "{e}");
    }

    // Absolute paths outside the root; the message does not reveal where the root is.
    for path in [Path::new("/etc/passwd"), &outside.join("secret.txt")] {
        let uri = file_uri(path)?;
        let e = refused(&documents, &uri, "DOCUMENT_OUTSIDE_ROOT").await?;
        ensure!(!e.to_string().contains(&format!("{root_str}/")), "message reveals the root: {e}");
    }

    // Symbolic links inside the root that lead out of it, as the last component or a directory.
    for name in ["abs_escape.txt", "rel_escape.txt", "dir_link/secret.txt"] {
        let uri = file_uri(&root.join(name))?;
        let e = refused(&documents, &uri, "DOCUMENT_SYMLINK_ESCAPE").await?;
        ensure!(!e.to_string().contains("/etc/passwd") && !e.to_string().contains("outside/"), "reveals: {e}");
    }

    // Symbolic links that stay inside the root are fine, relative or absolute.
    for name in ["inside.md", "sub/abs_alias.md", "sub/rel_alias.md"] {
        let doc = documents.load(&file_uri(&root.join(name))?).await.with_context(|| name)?;
        ensure!(doc.text == "# Inside\n\n- a task" && doc.format == DocumentFormat::Markdown, "{name}: {doc:?}");
    }

    // Not regular files: a directory, and a FIFO (which must not hang the open).
    refused(&documents, &file_uri(&root.join("sub"))?, "DOCUMENT_NOT_A_FILE").await?;
    let status = std::process::Command::new("mkfifo").arg(root.join("pipe.txt")).status()?;
    ensure!(status.success(), "mkfifo failed");
    refused(&documents, &file_uri(&root.join("pipe.txt"))?, "DOCUMENT_NOT_A_FILE").await?;

    // No root configured: file:// is refused outright.
    let s3_only = Documents::new(DocumentsConfig::default())?;
    refused(&s3_only, &file_uri(&root.join("inside.md"))?, "DOCUMENT_FILE_SOURCE_DISABLED").await?;

    // The root itself must exist.
    let missing = Documents::new(config_with_root(&sandbox.path.join("no-such-root"))).err().map(|e| e.code());
    ensure!(missing == Some("DOCUMENT_CONFIG_INVALID"), "{missing:?}");
    Ok(())
}

#[test]
fn unknown_schemes_are_refused() -> Result<()> {
    for raw in ["ftp://files.example.com/jd.pdf", "http://example.com/jd.pdf", "gs://bucket/jd.pdf"] {
        let e = DocumentUri::parse(raw).err().context("parsed")?;
        ensure!(e.code() == "DOCUMENT_URI_SCHEME_UNSUPPORTED" && !e.recoverable(), "{raw}: {e}");
        ensure!(e.to_string().contains(raw) && e.to_string().contains("s3://bucket/key"), "{e}");
    }
    Ok(())
}

#[tokio::test]
async fn extraction_past_its_time_limit_is_reported_and_its_slot_stays_taken() -> Result<()> {
    // ~33 MB of text: far more than the 1 ms limit needs, in any build, and enough that the first
    // extraction still holds its slot when the second asks, even on a loaded 2-core machine.
    let text = "Review first notice of loss reports and contact claimants.\n".repeat(560_000);
    let config = DocumentsConfig {
        extract_timeout: Duration::from_millis(1),
        max_concurrent_extractions: 1,
        max_text_chars: 40_000_000,
        max_bytes: 64 * 1024 * 1024,
        ..DocumentsConfig::default()
    };
    let documents = Documents::new(config)?;
    let fetched = |name: &str| -> Result<_> {
        Ok(etter_documents::FetchedDocument {
            uri: DocumentUri::parse(&format!("s3://etter-docs/{name}"))?,
            content_hash: etter_documents::content_hash(text.as_bytes()),
            bytes: bytes::Bytes::from(text.clone().into_bytes()),
        })
    };
    // Both documents are ready before the first extraction starts: hashing and copying 33 MB
    // between the two calls (a second or so in a debug build) let the first one finish and free
    // its slot before the second asked for it.
    let (slow, next) = (fetched("slow.txt")?, fetched("next.txt")?);
    let e = documents.extract(slow).await.err().context("extracted within 1 ms")?;
    ensure!(e.code() == "DOCUMENT_EXTRACT_TIMEOUT" && !e.recoverable(), "{e}");
    // The timed-out extraction still runs (about a second, against the 1 ms just waited) and
    // holds the only slot.
    ensure!(documents.extractions_running() == 1, "the timed-out extraction gave its slot back");
    // So the next one waits, then reports a busy worker, which is worth retrying.
    let e = documents.extract(next).await.err().context("extracted while busy")?;
    ensure!(e.code() == "DOCUMENT_EXTRACTOR_BUSY" && e.recoverable(), "{e}");
    // Once the slow one ends, its slot is free again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while documents.extractions_running() > 0 {
        ensure!(tokio::time::Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// S3, against a real S3-compatible server (PyPI moto[server]).

/// The Python of the project's venv (`ETTER_TOOLS__PYTHON`, written to `.etter/services.env` by
/// `scripts/services up`).
fn venv_python() -> Result<PathBuf> {
    let from_env = std::env::var_os("ETTER_TOOLS__PYTHON").map(PathBuf::from);
    let from_file = || -> Option<PathBuf> {
        let env_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.etter/services.env");
        let text = std::fs::read_to_string(env_file).ok()?;
        text.lines().find_map(|l| l.strip_prefix("export ETTER_TOOLS__PYTHON=")).map(PathBuf::from)
    };
    match from_env.or_else(from_file) {
        Some(python) if python.is_file() => Ok(python),
        _ => bail!(
            "the S3 tests need the project's Python venv with moto[server]: run `scripts/services up` \
             and `. .etter/services.env` (ETTER_TOOLS__PYTHON is not set or does not exist)"
        ),
    }
}

/// Starts moto's S3 server on a free loopback port (port 0: the server tells which), creates the
/// buckets, and stops when dropped (stdin closes, and the child is killed on drop anyway).
const MOTO: &str = r#"
import sys
from moto.server import ThreadedMotoServer
import boto3
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                  aws_access_key_id="etter", aws_secret_access_key="etter-secret")
for bucket in sys.argv[1:]:
    s3.create_bucket(Bucket=bucket)
print(f"READY {host}:{port}", flush=True)
sys.stdin.read()
server.stop()
"#;

struct Moto {
    endpoint: String,
    _child: Child,
}

impl Moto {
    async fn start(buckets: &[&str]) -> Result<Self> {
        let python = venv_python()?;
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(MOTO)
            .args(buckets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start moto with {}", python.display()))?;
        let stdout = child.stdout.take().context("moto stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("moto did not start within 60 s")??
            .context("moto exited before it was ready: is moto[server] installed in the venv?")?;
        let address = ready.strip_prefix("READY ").with_context(|| format!("unexpected moto output: {ready}"))?;
        Ok(Self { endpoint: format!("http://{address}"), _child: child })
    }
}

fn s3_config(endpoint: &str) -> DocumentsConfig {
    let mut config =
        DocumentsConfig { fetch_timeout: Duration::from_secs(10), max_bytes: 100_000, ..DocumentsConfig::default() };
    config.s3.endpoint = endpoint.to_owned();
    config.s3.allow_http = true;
    config.s3.access_key_id = "etter".to_owned();
    config.s3.secret_access_key = Secret::from("etter-secret");
    config.s3.max_retries = 0;
    config
}

#[tokio::test]
async fn s3_documents_round_trip_through_moto() -> Result<()> {
    let moto = Moto::start(&["etter-docs", "other-bucket"]).await?;
    // Upload through object_store, as a client of the same store would.
    let bucket = Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(&moto.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name("etter-docs")
            .with_access_key_id("etter")
            .with_secret_access_key("etter-secret")
            .build()?,
    );
    let local = fixtures()?;
    for expected in GOOD {
        let path = fixtures_dir().join(expected.file);
        let bytes = std::fs::read(&path)?;
        let key = format!("liberty/{}", expected.file);
        bucket.put(&ObjectPath::parse(&key)?, PutPayload::from(bytes.clone())).await?;

        let documents = Documents::new(s3_config(&moto.endpoint))?;
        let uri = DocumentUri::parse(&format!("s3://etter-docs/{key}"))?;
        let from_s3 = documents.load(&uri).await.with_context(|| key.clone())?;
        let checked = documents.check(&uri).await.with_context(|| key.clone())?;
        ensure!(checked.byte_len == bytes.len() as u64 && checked.format == expected.format, "{key}: {checked:?}");
        let from_file = local.load(&file_uri(&path)?).await?;
        ensure!(from_s3.content_hash.0 == sha256_hex(&bytes), "{key}: hash");
        ensure!(from_s3.content_hash == from_file.content_hash, "{key}: hash differs from the file's");
        ensure!(from_s3.text == from_file.text && from_s3.format == expected.format, "{key}: text differs");
    }

    let documents = Documents::new(s3_config(&moto.endpoint))?;
    refused(&documents, &DocumentUri::parse("s3://etter-docs/liberty/missing.pdf")?, "DOCUMENT_NOT_FOUND").await?;
    refused(&documents, &DocumentUri::parse("s3://no-such-bucket/jd.pdf")?, "DOCUMENT_NOT_FOUND").await?;

    // Empty: a range of it is refused by the store; the check still says it is empty.
    bucket.put(&ObjectPath::parse("liberty/empty.txt")?, PutPayload::from(Vec::<u8>::new())).await?;
    refused(&documents, &DocumentUri::parse("s3://etter-docs/liberty/empty.txt")?, "DOCUMENT_EMPTY").await?;

    // Oversize: refused on the size the store reports, before the body is read.
    let big = vec![b'a'; 100_001];
    bucket.put(&ObjectPath::parse("liberty/big.txt")?, PutPayload::from(big)).await?;
    refused(&documents, &DocumentUri::parse("s3://etter-docs/liberty/big.txt")?, "DOCUMENT_TOO_LARGE").await?;

    // Only the allowed buckets, when a list is configured.
    let mut config = s3_config(&moto.endpoint);
    config.s3.allowed_buckets = vec!["other-bucket".to_owned()];
    let restricted = Documents::new(config)?;
    let uri = DocumentUri::parse("s3://etter-docs/liberty/claims_adjuster_jd.pdf")?;
    refused(&restricted, &uri, "DOCUMENT_BUCKET_NOT_ALLOWED").await?;

    Ok(())
}

#[tokio::test]
async fn s3_unavailable_is_recoverable() -> Result<()> {
    // A port nobody listens on: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let documents = Documents::new(s3_config(&format!("http://127.0.0.1:{port}")))?;
    let uri = DocumentUri::parse("s3://etter-docs/liberty/claims_adjuster_jd.pdf")?;
    let e = documents.load(&uri).await.err().context("fetched from a closed port")?;
    ensure!(e.code() == "DOCUMENT_STORE_UNAVAILABLE" && e.recoverable(), "{e}");
    ensure!(e.to_string().contains(uri.as_str()) && !e.to_string().contains(&port.to_string()), "{e}");
    let e = documents.check(&uri).await.err().context("checked against a closed port")?;
    ensure!(e.code() == "DOCUMENT_STORE_UNAVAILABLE" && e.recoverable(), "{e}");

    // A server that accepts connections and never answers: the fetch, and the check, time out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let mut config = s3_config(&format!("http://{}", silent.local_addr()?));
    config.fetch_timeout = Duration::from_millis(500);
    config.check_timeout = Duration::from_millis(300);
    let documents = Documents::new(config)?;
    let e = documents.load(&uri).await.err().context("fetched from a silent server")?;
    ensure!(e.recoverable() && matches!(e.code(), "DOCUMENT_FETCH_TIMEOUT" | "DOCUMENT_STORE_UNAVAILABLE"), "{e}");
    let e = documents.check(&uri).await.err().context("checked against a silent server")?;
    ensure!(e.recoverable() && e.code() == "DOCUMENT_CHECK_TIMEOUT", "{e}");
    ensure!(e.to_string().contains("push again"), "{e}");
    drop(silent);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Mutation harness: every extractor over mutated fixtures. `crates/documents/fuzz` has the
// coverage-guided targets; this runs a bounded number of cases in every test run
// (PROPTEST_CASES raises it).

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Duplicate { from: usize, len: usize, to: usize },
    Zero { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>();
    prop_oneof![
        (index.clone(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at: at.index(usize::MAX), mask }),
        index.clone().prop_map(|at| Mutation::Truncate { at: at.index(usize::MAX) }),
        (index.clone(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Mutation::Insert { at: at.index(usize::MAX), bytes }),
        (index.clone(), 1..4096usize, index.clone()).prop_map(|(from, len, to)| Mutation::Duplicate {
            from: from.index(usize::MAX),
            len,
            to: to.index(usize::MAX)
        }),
        (index, 1..512usize).prop_map(|(at, len)| Mutation::Zero { at: at.index(usize::MAX), len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len().max(1);
    match mutation {
        Mutation::Flip { at, mask } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= mask;
            }
        }
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::Insert { at, bytes: inserted } => {
            let at = (at % n).min(bytes.len());
            bytes.splice(at..at, inserted.iter().copied());
        }
        Mutation::Duplicate { from, len, to } => {
            let from = from % n;
            let end = (from + len).min(bytes.len());
            let chunk: Vec<u8> = bytes.get(from..end).map(<[u8]>::to_vec).unwrap_or_default();
            let to = (to % n).min(bytes.len());
            bytes.splice(to..to, chunk);
        }
        Mutation::Zero { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if let Some(range) = bytes.get_mut(at..end) {
                range.fill(0);
            }
        }
    }
}

fn corpus() -> Result<Vec<(String, Vec<u8>)>> {
    let mut corpus = Vec::new();
    for entry in std::fs::read_dir(fixtures_dir())? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.ends_with(".py") || name == "README.md" {
            continue;
        }
        corpus.push((name, std::fs::read(&path)?));
    }
    corpus.sort();
    Ok(corpus)
}

#[test]
fn extractors_never_panic_on_mutated_inputs() -> Result<()> {
    let corpus = corpus()?;
    ensure!(corpus.len() >= 10, "fixture corpus has {} files", corpus.len());
    let limits = ExtractLimits { max_input_bytes: 1 << 20, max_text_chars: 200_000 };
    let config = ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (0..corpus.len(), prop::collection::vec(mutation(), 1..6), any::<bool>());
    runner
        .run(&strategy, |(pick, mutations, keep_name)| {
            let (name, original) = &corpus[pick];
            let mut bytes = original.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            // With its name the extension is checked against the content; without, the bytes decide.
            let key = if keep_name { name.as_str() } else { "mutated" };
            let uri = DocumentUri::parse(&format!("s3://etter-docs/{key}"))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            match extract_blocking(&uri, &bytes, &limits) {
                Ok(doc) => {
                    prop_assert!(!doc.text.is_empty());
                    prop_assert_eq!(normalize_text(&doc.text), doc.text.clone());
                    prop_assert!(doc.text.chars().count() <= limits.max_text_chars);
                }
                Err(e) => {
                    prop_assert!(!e.recoverable(), "{}: extraction errors are about the document: {}", name, e);
                    // Our own parsers (DOCX, text) must not panic; pdf-extract may, and is contained.
                    let ours_panicked =
                        matches!(&e, DocumentError::ExtractorFailed { format, .. } if *format != DocumentFormat::Pdf);
                    prop_assert!(!ours_panicked, "{}: {}", name, e);
                }
            }
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
}
