//! A listener's TLS against a real rustls client: ALPN, client certificates, files that change.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use etter_config::tls::ServerTls;
use etter_test_certs::{self as certs, Ca, Issued, LOOPBACK_NAMES, Validity, write_atomically};
use etter_tls::{Acceptor, Incoming, TlsError};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A listener that answers every connection by echoing one message back.
async fn echo_listener(settings: &ServerTls) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let acceptor = Acceptor::new(settings, "server.tls")?;
    let mut incoming = Incoming::new(listener, acceptor, "grpc")?;
    let addr = incoming.local_addr();
    tokio::spawn(async move {
        while let Some(Ok(mut connection)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                if connection.read_exact(&mut buf).await.is_ok() {
                    let _ = connection.write_all(&buf).await;
                    let _ = connection.flush().await;
                }
            });
        }
    });
    Ok(addr)
}

/// Connects trusting `ca_pem`, showing `identity` when given, and sends `ping`: the echo, and the
/// protocol ALPN agreed on.
async fn ping(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
    let config = certs::client_config(ca_pem, identity, &["h2"])?;
    let mut tls = certs::connect(&addr.to_string(), "localhost", config).await?;
    tls.write_all(b"ping").await?;
    tls.flush().await?;
    let mut echo = vec![0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut echo)).await.context("no echo in 5 s")??;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    Ok((echo, alpn))
}

fn settings(server: &Issued, client_ca: Option<&Path>) -> ServerTls {
    ServerTls {
        cert_file: server.cert_file.clone(),
        key_file: server.key_file.clone(),
        client_ca_file: client_ca.map(Path::to_path_buf).unwrap_or_default(),
        reload_interval: Duration::from_millis(50),
        terminated_in_front: false,
    }
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_is_served_over_h2() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("etter test CA")?;
    let server = ca.server(dir.path(), "server", LOOPBACK_NAMES, Validity::Current)?;
    let addr = echo_listener(&settings(&server, None)).await?;

    let (echo, alpn) = ping(addr, &ca.pem(), None).await?;
    assert_eq!((echo.as_slice(), alpn.as_deref()), (&b"ping"[..], Some(&b"h2"[..])));

    let stranger = Ca::new("another CA")?;
    let refused = ping(addr, &stranger.pem(), None).await;
    let message = format!("{:#}", refused.err().context("a client trusting another CA connected")?);
    assert!(message.contains("UnknownIssuer"), "{message}");
    Ok(())
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("etter test CA")?;
    let server = ca.server(dir.path(), "server", LOOPBACK_NAMES, Validity::Current)?;
    let client_ca = Ca::new("etter clients")?;
    let client_ca_file = client_ca.write(dir.path(), "clients.pem")?;
    let addr = echo_listener(&settings(&server, Some(&client_ca_file))).await?;

    let client = client_ca.client(dir.path(), "client", "csm-console", Validity::Current)?;
    assert_eq!(ping(addr, &ca.pem(), Some(&client)).await?.0, b"ping");

    let message = format!("{:#}", ping(addr, &ca.pem(), None).await.err().context("no certificate, yet served")?);
    assert!(message.contains("CertificateRequired"), "{message}");

    let expired = client_ca.client(dir.path(), "expired", "csm-console", Validity::Expired)?;
    let message = format!("{:#}", ping(addr, &ca.pem(), Some(&expired)).await.err().context("expired, yet served")?);
    assert!(message.contains("CertificateExpired") || message.contains("BadCertificate"), "{message}");

    let outsider = ca.client(dir.path(), "outsider", "csm-console", Validity::Current)?;
    let message =
        format!("{:#}", ping(addr, &ca.pem(), Some(&outsider)).await.err().context("untrusted issuer, yet served")?);
    assert!(message.contains("UnknownCA") || message.contains("BadCertificate"), "{message}");
    Ok(())
}

#[tokio::test]
async fn renewed_files_are_served_without_a_restart_and_a_bad_change_keeps_the_last_good_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let old_ca = Ca::new("old CA")?;
    let server = old_ca.server(dir.path(), "server", LOOPBACK_NAMES, Validity::Current)?;
    let addr = echo_listener(&settings(&server, None)).await?;
    assert_eq!(ping(addr, &old_ca.pem(), None).await?.0, b"ping");

    // A key that is not a key: the old certificate stays.
    write_atomically(&server.key_file, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ping(addr, &old_ca.pem(), None).await?.0, b"ping");

    // The renewal: same file names, a new issuer.
    let new_ca = Ca::new("new CA")?;
    new_ca.server(dir.path(), "server", LOOPBACK_NAMES, Validity::Current)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ping(addr, &new_ca.pem(), None).await.is_err() {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the renewed certificate was not served within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ping(addr, &old_ca.pem(), None).await.is_err(), "the old certificate is still served");
    Ok(())
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_is_refused_at_start_naming_both_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("etter test CA")?;
    let server = ca.server(dir.path(), "server", LOOPBACK_NAMES, Validity::Current)?;
    let other = ca.server(dir.path(), "other", LOOPBACK_NAMES, Validity::Current)?;
    let mismatched = ServerTls { key_file: other.key_file, ..settings(&server, None) };
    let error = Acceptor::new(&mismatched, "server.tls").err().context("a mismatched key was accepted")?;
    assert!(matches!(error, TlsError::Identity { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("`server.tls.cert_file` and `server.tls.key_file`"), "{message}");
    Ok(())
}
