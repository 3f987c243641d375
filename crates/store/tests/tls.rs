//! The store's hops over TLS against real servers: PostgreSQL with `sslmode=verify-full`, Redis
//! over `rediss://` (the project's services, and a Redis of the test's own presenting the
//! certificates a deployment gets wrong).

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use etter_config::{Secret, tls::ClientTls};
use etter_store::{RedisConfig, StoreLocation, fanout::Probe};
use etter_test_certs::{Ca, Validity};

fn setting(key: &str, service: &str) -> anyhow::Result<String> {
    std::env::var(key).with_context(|| {
        format!("{key} is not set: run `scripts/services up {service}` and `source .etter/services.env`")
    })
}

async fn store_error(url: &str) -> String {
    match etter_store::connect(&StoreLocation::Postgres(url.to_owned())).await {
        Ok(_) => "connected".to_owned(),
        Err(e) => etter_core::error::chain(&e).to_string(),
    }
}

#[tokio::test]
async fn postgresql_verify_full_connects_with_the_ca_and_names_sslrootcert_without_it() -> anyhow::Result<()> {
    let url = setting("ETTER_TEST__POSTGRES_TLS_URL", "postgres")?;
    let store = etter_store::connect(&StoreLocation::Postgres(url.clone())).await?;
    store.ping().await?;
    store.close().await;

    let dir = tempfile::tempdir()?;
    let stranger = Ca::new("a CA PostgreSQL does not use")?.write(dir.path(), "stranger.pem")?;
    let (base, _) = url.split_once("sslrootcert=").context("the TLS URL names its CA")?;
    let message = store_error(&format!("{base}sslrootcert={}", stranger.display())).await;
    assert!(
        message.starts_with(
            "cannot connect to PostgreSQL: the server's certificate is not issued by a CA this client trusts"
        ) && message.contains("`sslrootcert=<the CA file>` in `store.url`"),
        "{message}"
    );
    Ok(())
}

fn redis(url: &str, ca: &Path) -> RedisConfig {
    RedisConfig { url: Secret::from(url), tls: ClientTls { ca_file: ca.to_path_buf(), ..ClientTls::default() } }
}

async fn ping(config: &RedisConfig) -> anyhow::Result<Result<(), String>> {
    config.validate()?;
    let probe = Probe::new(config.client()?.context("no client for a configured URL")?);
    Ok(probe.ping(Duration::from_secs(5)).await.map_err(|e| e.to_string()))
}

#[tokio::test]
async fn redis_over_tls_answers_with_the_ca_and_names_redis_tls_ca_file_without_it() -> anyhow::Result<()> {
    let url = setting("ETTER_TEST__REDIS_TLS_URL", "redis")?;
    let ca = setting("ETTER_TEST__TLS_CA", "redis")?;
    assert_eq!(ping(&redis(&url, Path::new(&ca))).await?, Ok(()));

    let dir = tempfile::tempdir()?;
    let stranger = Ca::new("a CA Redis does not use")?.write(dir.path(), "stranger.pem")?;
    let message = ping(&redis(&url, &stranger)).await?.err().context("a stranger CA was trusted")?;
    assert!(
        message.contains("not issued by a CA this client trusts") && message.contains("`redis.tls.ca_file`"),
        "{message}"
    );

    let plaintext = RedisConfig {
        url: Secret::from(url.replacen("rediss://", "redis://", 1).as_str()),
        ..redis(&url, Path::new(&ca))
    };
    let message = plaintext.validate().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("`redis.url` must be rediss:// when redis.tls is set"), "{message}");
    Ok(())
}

/// A redis-server of the test's own, serving TLS only, with the given certificate.
struct PrivateRedis {
    child: tokio::process::Child,
    port: u16,
}

impl PrivateRedis {
    async fn start(dir: &Path, server: &etter_test_certs::Issued, ca: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&server.cert_file)
            .arg("--tls-key-file")
            .arg(&server.key_file)
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args(["--tls-auth-clients", "no", "--dir"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (scripts/services up redis installs it)")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the private redis did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { child, port })
    }
}

#[tokio::test]
async fn an_expired_certificate_and_a_name_the_certificate_lacks_are_each_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = Ca::new("private redis CA")?;
    let ca_file = ca.write(dir.path(), "ca.pem")?;

    let expired = ca.server(dir.path(), "expired", &["localhost"], Validity::Expired)?;
    let mut redis_expired = PrivateRedis::start(dir.path(), &expired, &ca_file).await?;
    let url = format!("rediss://localhost:{}/", redis_expired.port);
    let message = ping(&redis(&url, &ca_file)).await?.err().context("an expired certificate was accepted")?;
    assert!(message.contains("the server's certificate has expired"), "{message}");
    redis_expired.child.kill().await?;

    let elsewhere = ca.server(dir.path(), "elsewhere", &["redis.internal.example"], Validity::Current)?;
    let mut redis_elsewhere = PrivateRedis::start(dir.path(), &elsewhere, &ca_file).await?;
    let url = format!("rediss://localhost:{}/", redis_elsewhere.port);
    let message = ping(&redis(&url, &ca_file)).await?.err().context("a certificate for another name was accepted")?;
    assert!(message.contains("does not carry the name") && message.contains("`redis.url`"), "{message}");
    redis_elsewhere.child.kill().await?;
    Ok(())
}
