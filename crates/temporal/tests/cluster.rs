//! Connections to the real Temporal cluster (`scripts/services up temporal-cluster`), whose
//! frontend requires client certificates from the project CA and authorizes calls by API key (a
//! bearer JWT, as Temporal Cloud does): what connects, and what each misconfiguration is told.

use std::path::PathBuf;

use anyhow::Context as _;
use etter_config::tls::ClientTls;
use etter_temporal::{Endpoint, TemporalConfig};
use etter_test_certs::{Ca, Validity};
use temporalio_client::{grpc::WorkflowService as _, tonic};
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    DescribeNamespaceRequest, DescribeNamespaceResponse,
};

fn setting(key: &str) -> anyhow::Result<String> {
    std::env::var(key).with_context(|| {
        format!("{key} is not set: run `scripts/services up temporal-cluster` and `source .etter/services.env`")
    })
}

/// The cluster's address, its API key and the project CA's files.
struct Cluster {
    address: String,
    api_key: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Cluster {
    fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            address: setting("ETTER_TEST__TEMPORAL_CLUSTER_ADDRESS")?,
            api_key: setting("ETTER_TEST__TEMPORAL_CLUSTER_API_KEY")?,
            ca: setting("ETTER_TEST__TLS_CA")?.into(),
            cert: setting("ETTER_TEST__TLS_CLIENT_CERT")?.into(),
            key: setting("ETTER_TEST__TLS_CLIENT_KEY")?.into(),
        })
    }

    fn config(&self, tls: ClientTls) -> TemporalConfig {
        TemporalConfig {
            address: self.address.clone(),
            tls,
            api_key: self.api_key.as_str().into(),
            ..TemporalConfig::default()
        }
    }

    fn mutual(&self) -> ClientTls {
        ClientTls {
            ca_file: self.ca.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            server_name: String::new(),
        }
    }

    /// The message a connection with `tls` fails with, and whether it counts as a refusal.
    async fn refusal(&self, tls: ClientTls) -> anyhow::Result<(String, bool)> {
        let endpoint = Endpoint::from_config(&self.config(tls))?;
        match endpoint.connect("etter-temporal-test".to_owned(), None).await {
            Ok(_) => anyhow::bail!("connected"),
            Err(e) => Ok((e.to_string(), e.is_refusal())),
        }
    }
}

#[tokio::test]
async fn mutual_tls_with_the_clusters_ca_connects() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    let answer = describe(&cluster.config(cluster.mutual())).await?.map_err(|status| anyhow::anyhow!("{status}"))?;
    let name = answer.namespace_info.map(|info| info.name);
    assert_eq!(name.as_deref(), Some("etter-dev"), "the namespace registered by scripts/services");
    Ok(())
}

/// Describes the namespace with `config`: the answer, or the status the cluster refused it with.
async fn describe(config: &TemporalConfig) -> anyhow::Result<Result<DescribeNamespaceResponse, tonic::Status>> {
    let endpoint = Endpoint::from_config(config)?;
    let connection = endpoint.connect("etter-temporal-test".to_owned(), None).await?;
    let mut client =
        temporalio_client::Client::new(connection, temporalio_client::ClientOptions::new("etter-dev").build())?;
    let request = DescribeNamespaceRequest { namespace: "etter-dev".to_owned(), ..Default::default() };
    Ok(client.describe_namespace(tonic::Request::new(request)).await.map(tonic::Response::into_inner))
}

#[tokio::test]
async fn without_the_api_key_or_with_a_forged_one_calls_are_refused_and_the_setting_named() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    let without = TemporalConfig { api_key: Default::default(), ..cluster.config(cluster.mutual()) };
    let refused = describe(&without).await?.err().context("the cluster answered without an API key")?;
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    let advice = Endpoint::from_config(&without)?.refusal_advice(refused.code()).unwrap_or_default();
    assert!(advice.contains("set temporal.api_key"), "{advice}");

    // The same claims with a signature of someone else's: it does not verify, and the cluster
    // refuses the connection's first call.
    let (header_claims, _) = cluster.api_key.rsplit_once('.').context("a JWT")?;
    let forged = format!("{header_claims}.c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ");
    let forged = TemporalConfig { api_key: forged.as_str().into(), ..cluster.config(cluster.mutual()) };
    let refused = Endpoint::from_config(&forged)?.connect("etter-temporal-test".to_owned(), None).await;
    let refused = refused.err().context("the cluster answered a forged API key")?;
    let message = refused.to_string();
    assert!(message.contains("does not accept temporal.api_key"), "{message}");
    assert!(refused.is_refusal(), "waiting does not make a forged key valid: {message}");
    Ok(())
}

#[tokio::test]
async fn each_misconfiguration_is_named_with_its_fix() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    let dir = tempfile::tempdir()?;

    let no_identity = ClientTls { cert_file: PathBuf::new(), key_file: PathBuf::new(), ..cluster.mutual() };
    // TLS 1.3 refuses the certificate after the client's side of the handshake: whether the
    // frontend's alert reaches the client before the connection closes is a race. With it, the
    // message gives the frontend's verdict; without it, what the closing probably means. Either
    // names the setting to fix, and the worker keeps waiting rather than exit, as it would for a
    // frontend that restarts.
    let (message, _) = cluster.refusal(no_identity).await?;
    assert!(
        message.contains("requires a client certificate and none was sent: set `temporal.tls.cert_file`")
            || message.contains(
                "if it requires client certificates, set `temporal.tls.cert_file` and `temporal.tls.key_file`"
            ),
        "{message}"
    );

    let stranger = Ca::new("a CA the cluster does not use")?;
    let wrong_ca = ClientTls { ca_file: stranger.write(dir.path(), "stranger.pem")?, ..cluster.mutual() };
    let (message, refused) = cluster.refusal(wrong_ca).await?;
    assert!(refused, "an untrusted server certificate is a TLS refusal: {message}");
    assert!(
        message.contains("not issued by a CA this client trusts") && message.contains("temporal.tls.ca_file"),
        "{message}"
    );

    let wrong_name = ClientTls { server_name: "temporal.example.invalid".to_owned(), ..cluster.mutual() };
    let (message, refused) = cluster.refusal(wrong_name).await?;
    assert!(refused, "a name the certificate does not carry is a TLS refusal: {message}");
    assert!(message.contains("does not carry the name") && message.contains("temporal.tls.server_name"), "{message}");

    // A client certificate the cluster's CA did not issue.
    let outsider = stranger.client(dir.path(), "outsider", "etter-worker", Validity::Current)?;
    let foreign = ClientTls { cert_file: outsider.cert_file, key_file: outsider.key_file, ..cluster.mutual() };
    let (message, _) = cluster.refusal(foreign).await?;
    // The frontend's verdict when its alert arrives, what the closing probably means otherwise.
    assert!(
        message.contains("the server refused this client's certificate: `temporal.tls.cert_file`")
            || message.contains("it may not accept this client's certificate"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn plaintext_to_the_tls_frontend_says_to_use_https() -> anyhow::Result<()> {
    let cluster = Cluster::from_env()?;
    let plain = cluster.address.replacen("https://", "http://", 1);
    let endpoint = Endpoint::from_config(&TemporalConfig { address: plain, ..TemporalConfig::default() })?;
    let message = match endpoint.connect("etter-temporal-test".to_owned(), None).await {
        Ok(_) => anyhow::bail!("a plaintext client connected to the mTLS frontend"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("cannot connect to Temporal at http://") && message.contains("https://"), "{message}");
    Ok(())
}

#[test]
fn tls_settings_or_an_api_key_need_an_https_address() {
    let tls = TemporalConfig {
        tls: ClientTls { server_name: "temporal.internal".into(), ..ClientTls::default() },
        ..TemporalConfig::default()
    };
    let message = tls.validate().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("`temporal.address` must be https:// when temporal.tls is set"), "{message}");
    let key = TemporalConfig { api_key: "cloud-key".into(), ..TemporalConfig::default() };
    let message = key.validate().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("when temporal.api_key is set"), "{message}");
    let cloud = TemporalConfig {
        address: "https://etter.a1b2c.tmprl.cloud:7233".into(),
        api_key: "cloud-key".into(),
        ..TemporalConfig::default()
    };
    assert!(cloud.validate().is_ok());
    assert!(!format!("{:?}", Endpoint::from_config(&cloud)).contains("cloud-key"), "the key is never printed");
}
