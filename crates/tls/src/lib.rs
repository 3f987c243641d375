//! TLS on the listeners.
//!
//! An [`Acceptor`] holds the rustls configuration built from a [`ServerTls`]'s files, and builds
//! it again when one of them changes: a renewed certificate (or client CA) is served to the next
//! connection without a restart, and a change that does not load keeps the previous one.
//!
//! [`Incoming`] accepts TCP connections and completes each TLS handshake on a task of its own, so a
//! slow or silent client holds up no one else; what it hands on is a [`Connection`] whose handshake
//! finished (or a plaintext one, when the listener serves plaintext). The gRPC server takes it as
//! its stream of connections, the `/metrics` endpoint as its listener. Both protocols a listener
//! speaks are offered over ALPN: HTTP/2 for gRPC, HTTP/1.1 for grpc-web, the console and `/metrics`.

use std::{
    io,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use etter_config::{
    ConfigError,
    tls::{ServerTls, ServerTlsFiles},
};
use etter_telemetry::metrics::{TLS_HANDSHAKE_FAILURES, TLS_RELOADS};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake finished, waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 256;

/// Why a listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or does not hold what its key says.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The files load but do not make a configuration (a key that is not the certificate's).
    #[error(
        "invalid configuration: `{section}.cert_file` and `{section}.key_file` do not make a TLS identity: {source}"
    )]
    Identity {
        /// The settings' section (`server.tls`).
        section: &'static str,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The client CAs cannot verify certificates (none is a usable CA).
    #[error(
        "invalid configuration: `{section}.client_ca_file` cannot be used to verify client certificates: {problem}"
    )]
    ClientCas {
        /// The settings' section (`server.tls`).
        section: &'static str,
        /// What rustls said.
        problem: String,
    },
}

/// The TLS configuration of a listener, rebuilt when its files change. Cheap to clone: clones
/// share the configuration.
#[derive(Clone)]
pub struct Acceptor {
    current: Arc<ArcSwap<ServerConfig>>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").field("alpn", &self.current.load().alpn_protocols.len()).finish()
    }
}

impl Acceptor {
    /// Loads the files of `settings` (the section at `section`), or `None` when TLS is off. Must be
    /// called inside a tokio runtime: a task looks at the files every `reload_interval` for as long
    /// as a clone of the acceptor lives.
    pub fn new(settings: &ServerTls, section: &'static str) -> Result<Option<Self>, TlsError> {
        let Some(files) = settings.load(section)? else { return Ok(None) };
        let stamps = stamps(settings);
        let current = Arc::new(ArcSwap::from_pointee(build(files, section)?));
        tokio::spawn(watch(Arc::downgrade(&current), settings.clone(), section, stamps));
        Ok(Some(Self { current }))
    }

    /// The configuration the next handshake uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }
}

/// Builds a rustls server configuration from loaded files: TLS 1.2 and 1.3 with ring's algorithms,
/// client certificates verified against the client CAs when there are some, HTTP/2 and HTTP/1.1
/// offered over ALPN.
fn build(files: ServerTlsFiles, section: &'static str) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Identity { section, source })?;
    let builder = match files.client_cas {
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            let (_, unusable) = roots.add_parsable_certificates(cas);
            if roots.is_empty() {
                return Err(TlsError::ClientCas {
                    section,
                    problem: format!("none of its {unusable} certificates can be parsed"),
                });
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCas { section, problem: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(files.chain, files.key).map_err(|source| TlsError::Identity { section, source })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// What a listener's files looked like: modification time and length of each.
type Stamps = Vec<Option<(SystemTime, u64)>>;

fn stamps(settings: &ServerTls) -> Stamps {
    settings
        .files()
        .into_iter()
        .map(|path| std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// Looks at the files every `reload_interval` while the configuration is in use, and swaps in a
/// configuration built from them when they changed. A change that does not load is logged once and
/// the previous configuration stays.
async fn watch(current: Weak<ArcSwap<ServerConfig>>, settings: ServerTls, section: &'static str, mut seen: Stamps) {
    let files: Vec<PathBuf> = settings.files().into_iter().map(PathBuf::from).collect();
    let mut tick = tokio::time::interval(settings.reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(current) = current.upgrade() else { return };
        let now = stamps(&settings);
        if now == seen {
            continue;
        }
        seen = now;
        let built = settings
            .load(section)
            .map_err(TlsError::from)
            .and_then(|files| files.map(|files| build(files, section)).transpose());
        match built {
            Ok(Some(config)) => {
                current.store(Arc::new(config));
                metrics::counter!(TLS_RELOADS, "outcome" => "loaded").increment(1);
                tracing::info!(files = ?files, "TLS certificate files changed; new connections use them");
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!(TLS_RELOADS, "outcome" => "failed").increment(1);
                tracing::warn!(
                    error = %e,
                    "TLS certificate files changed but do not load; the previous certificate is still served"
                );
            }
        }
    }
}

/// An accepted connection, its TLS handshake (if any) finished.
#[derive(Debug)]
pub enum Connection {
    /// A plaintext connection.
    Plain(TcpStream),
    /// A TLS connection.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of one listener, their handshakes finished: a stream for the gRPC server and
/// an [`axum::serve::Listener`] for `/metrics`. Dropping it stops accepting.
#[derive(Debug)]
pub struct Incoming {
    accepted: mpsc::Receiver<Connection>,
    local: SocketAddr,
}

impl Incoming {
    /// Accepts on `listener` (named `name` in logs and metrics: `grpc`, `metrics`), with TLS when
    /// `acceptor` is given. Nagle is off on every connection. Must be called inside a tokio runtime.
    pub fn new(listener: TcpListener, acceptor: Option<Acceptor>, name: &'static str) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE);
        tokio::spawn(accept_loop(listener, acceptor, name, tx));
        Ok(Self { accepted, local })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<Acceptor>,
    name: &'static str,
    tx: mpsc::Sender<Connection>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the connection is gone, the listener
                    // is not. Wait a little rather than spin.
                    tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(listener = name, %peer, error = %e, "cannot turn Nagle off");
        }
        let Some(acceptor) = &acceptor else {
            if tx.send(Connection::Plain(tcp)).await.is_err() {
                return;
            }
            continue;
        };
        let config = acceptor.config();
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Connection::Tls(Box::new(tls))).await;
                }
                Ok(Err(e)) => handshake_failed(name, peer, &e.to_string()),
                Err(_) => handshake_failed(name, peer, "the client did not finish its handshake in time"),
            }
        });
    }
}

fn handshake_failed(listener: &'static str, peer: SocketAddr, why: &str) {
    metrics::counter!(TLS_HANDSHAKE_FAILURES, "listener" => listener).increment(1);
    tracing::debug!(listener, %peer, error = why, "TLS handshake failed");
}

impl futures::Stream for Incoming {
    type Item = io::Result<Connection>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().accepted.poll_recv(cx).map(|next| next.map(Ok))
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.accepted.recv().await {
                Some(connection) => match connection.tcp().peer_addr() {
                    Ok(peer) => return (connection, peer),
                    Err(_) => continue, // gone already
                },
                // The accept loop only ends when this is dropped.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
