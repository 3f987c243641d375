//! Certificates the tests make for themselves: a CA, server certificates for loopback names,
//! client certificates, expired ones, written as PEM files; and rustls clients that use them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// The names a server certificate carries unless a test says otherwise.
pub const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// A certificate authority that issues the tests' certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key_file: PathBuf,
}

/// How long a certificate is valid, from now.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From an hour ago until a year from now.
    Current,
    /// Expired yesterday.
    Expired,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, Validity::Current);
        Ok(Self { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)? })
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `dir/<file>` and returns its path.
    pub fn write(&self, dir: &Path, file: &str) -> anyhow::Result<PathBuf> {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A server certificate for `names` (DNS names or IP addresses), written as `dir/<stem>.pem`
    /// and `dir/<stem>.key`.
    pub fn server(&self, dir: &Path, stem: &str, names: &[&str], validity: Validity) -> anyhow::Result<Issued> {
        self.issue(dir, stem, names, ExtendedKeyUsagePurpose::ServerAuth, validity)
    }

    /// A client certificate named `name`, written as `dir/<stem>.pem` and `dir/<stem>.key`.
    pub fn client(&self, dir: &Path, stem: &str, name: &str, validity: Validity) -> anyhow::Result<Issued> {
        self.issue(dir, stem, &[name], ExtendedKeyUsagePurpose::ClientAuth, validity)
    }

    fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, validity);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued { cert_file: dir.join(format!("{stem}.pem")), key_file: dir.join(format!("{stem}.key")) };
        write_atomically(&issued.cert_file, cert.pem().as_bytes())?;
        write_atomically(&issued.key_file, key.serialize_pem().as_bytes())?;
        Ok(issued)
    }
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let day = std::time::Duration::from_secs(24 * 60 * 60);
    (params.not_before, params.not_after) = match validity {
        Validity::Current => (now - std::time::Duration::from_secs(3600), now + 365 * day),
        Validity::Expired => (now - 30 * day, now - day),
    };
}

/// Writes through a temporary file and a rename, so a process watching `path` never reads half of
/// it.
pub fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// A rustls client configuration that trusts `ca_pem`, shows `identity` when given, and offers
/// `alpn` (e.g. `h2`, `http/1.1`).
pub fn client_config(ca_pem: &str, identity: Option<&Issued>, alpn: &[&str]) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let mut config = match identity {
        Some(issued) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(&issued.cert_file)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(&issued.key_file)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(config)
}

/// Opens a TLS connection to `addr` as `server_name` with `config`.
pub async fn connect(
    addr: &str,
    server_name: &str,
    config: rustls::ClientConfig,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?)
}

/// A token signing key of an identity provider: an EC P-256 key pair with its key id.
pub struct SigningKey {
    /// The key id (`kid`) tokens and the key set name it by.
    pub kid: String,
    key: KeyPair,
}

impl SigningKey {
    /// A new P-256 key named `kid`.
    pub fn new(kid: &str) -> anyhow::Result<Self> {
        Ok(Self { kid: kid.to_owned(), key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)? })
    }

    /// The private key, PKCS#8 PEM (what `jsonwebtoken::EncodingKey::from_ec_pem` reads).
    pub fn private_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256, `use` sig, `alg` ES256).
    pub fn jwk(&self) -> anyhow::Result<serde_json::Value> {
        use base64::Engine as _;
        // The uncompressed point: 0x04, then X and Y of 32 bytes each.
        let raw = self.key.public_key_raw();
        anyhow::ensure!(raw.len() == 65 && raw[0] == 4, "not an uncompressed P-256 point");
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Ok(serde_json::json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }))
    }
}
