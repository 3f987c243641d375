//! A local S3-compatible store: moto's S3 server (PyPI `moto[server]`, in the project's venv)
//! started by `scripts/lib/moto_s3.py` on loopback, with a bucket of small text objects
//! `roles/{i}.txt`. It stops when dropped.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use tokio::io::AsyncBufReadExt as _;

/// The access key id moto accepts (any is accepted; this one is what the settings name).
pub const ACCESS_KEY_ID: &str = "etter";
/// The secret access key that goes with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "etter-secret";

/// A running moto S3 server.
pub struct Moto {
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    port: u16,
    _child: tokio::process::Child,
}

impl Moto {
    /// Starts moto on a free port with `bucket` holding `objects` objects.
    pub async fn start(bucket: &str, objects: usize) -> Result<Self> {
        Self::start_on(bucket, objects, 0).await
    }

    /// Starts moto again on the port of `self` (after it was dropped: a store that came back),
    /// with the same bucket and objects.
    pub async fn start_on(bucket: &str, objects: usize, port: u16) -> Result<Self> {
        Self::launch(bucket, objects, port, None).await
    }

    /// Starts moto on a free port serving HTTPS with `cert_file` and `key_file` (PEM), as
    /// `https://localhost:PORT`.
    pub async fn start_tls(bucket: &str, objects: usize, cert_file: &Path, key_file: &Path) -> Result<Self> {
        Self::launch(bucket, objects, 0, Some((cert_file, key_file))).await
    }

    async fn launch(bucket: &str, objects: usize, port: u16, tls: Option<(&Path, &Path)>) -> Result<Self> {
        let python = crate::service_setting("ETTER_TOOLS__PYTHON", "python")?;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/moto_s3.py");
        let mut child = tokio::process::Command::new(python)
            .arg(&script)
            .arg(bucket)
            .arg(objects.to_string())
            .arg(port.to_string())
            .envs(tls.iter().flat_map(|(cert, key)| [("MOTO_TLS_CERT", *cert), ("MOTO_TLS_KEY", *key)]))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting moto")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("moto has no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
            .await
            .map_err(|_| anyhow!("moto did not upload {objects} objects within 10 minutes"))??
            .ok_or_else(|| {
                anyhow!("moto exited before it was ready: is moto[server] in the venv, is the port free?")
            })?;
        let address = ready.strip_prefix("READY ").ok_or_else(|| anyhow!("unexpected moto output: {ready}"))?;
        let port = address.rsplit(':').next().and_then(|p| p.parse().ok()).context("moto's port")?;
        let endpoint = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://{address}"),
        };
        Ok(Self { endpoint, port, _child: child })
    }

    /// The port it serves on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The settings that point the server and the worker at it.
    pub fn settings(&self) -> [(&'static str, String); 4] {
        [
            ("ETTER_DOCUMENTS__S3__ENDPOINT", self.endpoint.clone()),
            ("ETTER_DOCUMENTS__S3__ALLOW_HTTP", "true".to_owned()),
            ("ETTER_DOCUMENTS__S3__ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("ETTER_DOCUMENTS__S3__SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
    }
}
