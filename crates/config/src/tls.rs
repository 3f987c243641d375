//! TLS settings shared by several sections: what a listener presents ([`ServerTls`]) and what a
//! client trusts and shows ([`ClientTls`]), as PEM files.
//!
//! The files are read and parsed when the configuration is checked, so a missing file, a file
//! without a certificate or a key that is not one fails at start with the key that names it.
//! Building the TLS configurations from them is left to the crates that connect (`etter-tls` for
//! listeners, each client library for its hop).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};

use crate::{ConfigError, invalid_in};

/// `[*.tls]` of a listener: the certificate it presents and, optionally, the CA its clients'
/// certificates must chain to.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// PEM certificate chain the listener presents, its own certificate first. Empty = plaintext.
    /// Re-read when it changes (see `reload_interval`), so a renewed certificate is served without
    /// a restart.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1). Re-read with it.
    pub key_file: PathBuf,
    /// PEM CA certificates: when set, every client must present a certificate issued by one of
    /// them (mutual TLS); connections without one are refused during the handshake. Re-read when
    /// it changes. Empty = clients need no certificate.
    pub client_ca_file: PathBuf,
    /// How often the files are looked at for changes. A change that does not load (a key that
    /// does not match its certificate, a half-written file) keeps the previous certificate and is
    /// logged.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub reload_interval: Duration,
    /// The listener serves plaintext on purpose because TLS is terminated in front of it (a load
    /// balancer, an ingress, a service mesh sidecar). The production profile refuses a listener on
    /// a non-loopback address without TLS unless this says so.
    pub terminated_in_front: bool,
}

impl Default for ServerTls {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            reload_interval: Duration::from_secs(10),
            terminated_in_front: false,
        }
    }
}

/// What a listener's files hold, read and parsed.
#[derive(Debug)]
pub struct ServerTlsFiles {
    /// The certificate chain, its own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain's private key.
    pub key: PrivateKeyDer<'static>,
    /// CAs a client certificate must chain to; `None` when clients need no certificate.
    pub client_cas: Option<Vec<CertificateDer<'static>>>,
}

impl ServerTls {
    /// Whether the listener serves TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }

    /// Checks the settings of the section at `section` (`server.tls`) and that the files load.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if self.reload_interval.is_zero() {
            return invalid_in(section, "reload_interval", "must be positive");
        }
        match (self.enabled(), self.key_file.as_os_str().is_empty()) {
            (true, true) => {
                return invalid_in(section, "key_file", "is required with cert_file (the certificate's key)");
            }
            (false, false) => return invalid_in(section, "cert_file", "is required with key_file"),
            (false, true) if !self.client_ca_file.as_os_str().is_empty() => {
                return invalid_in(
                    section,
                    "client_ca_file",
                    "needs cert_file and key_file: client certificates are only asked for over TLS",
                );
            }
            _ => {}
        }
        self.load(section).map(drop)
    }

    /// Reads and parses the files; `None` when TLS is off.
    pub fn load(&self, section: &str) -> Result<Option<ServerTlsFiles>, ConfigError> {
        if !self.enabled() {
            return Ok(None);
        }
        let chain = certificates(section, "cert_file", &self.cert_file)?;
        let key = private_key(section, "key_file", &self.key_file)?;
        let client_cas = if self.client_ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(certificates(section, "client_ca_file", &self.client_ca_file)?)
        };
        Ok(Some(ServerTlsFiles { chain, key, client_cas }))
    }

    /// The files to watch for changes.
    pub fn files(&self) -> Vec<&Path> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .filter(|p| !p.as_os_str().is_empty())
            .map(PathBuf::as_path)
            .collect()
    }

    /// The production profile's rule: a listener on a non-loopback address serves TLS, or says
    /// that TLS is terminated in front of it.
    pub fn validate_production(&self, section: &str, listener: &str, addr: SocketAddr) -> Result<(), ConfigError> {
        if self.enabled() || self.terminated_in_front || addr.ip().is_loopback() {
            return Ok(());
        }
        invalid_in(
            section,
            "cert_file",
            format!(
                "is required by the production profile for `{listener}` = {addr}, which is not a loopback address: \
                 set cert_file and key_file, or set terminated_in_front = true when a load balancer or proxy \
                 in front of it terminates TLS"
            ),
        )
    }
}

/// A client's TLS settings for one hop: the CA it trusts, the certificate it shows (mutual TLS),
/// the name it expects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM CA certificates the server's certificate must chain to, for a private CA. Empty = the
    /// system's trusted roots.
    pub ca_file: PathBuf,
    /// PEM client certificate chain shown to the server (mutual TLS). Empty = none.
    pub cert_file: PathBuf,
    /// PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// Name the server's certificate must carry, when it differs from the address's host (an
    /// address by IP, a tunnel). Empty = the address's host.
    pub server_name: String,
}

/// What a client's files hold: PEM text, parsed once to be sure it is what it claims.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// The CA certificates (PEM), when a private CA is configured.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and key (PEM), when the client shows one.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The server-name override, when set.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Whether anything is set.
    pub fn is_set(&self) -> bool {
        *self != Self::default()
    }

    /// Checks the settings of the section at `section` (`temporal.tls`) and that the files load.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        self.load(section).map(drop)
    }

    /// Reads and parses the files.
    pub fn load(&self, section: &str) -> Result<ClientTlsFiles, ConfigError> {
        let ca_pem = if self.ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(certificates_pem(section, "ca_file", &self.ca_file)?)
        };
        let identity_pem = match (self.cert_file.as_os_str().is_empty(), self.key_file.as_os_str().is_empty()) {
            (true, true) => None,
            (false, true) => {
                return invalid_in(section, "key_file", "is required with cert_file (the certificate's key)");
            }
            (true, false) => return invalid_in(section, "cert_file", "is required with key_file"),
            (false, false) => {
                let chain = certificates_pem(section, "cert_file", &self.cert_file)?;
                private_key(section, "key_file", &self.key_file)?;
                Some((chain, read(section, "key_file", &self.key_file)?))
            }
        };
        if self.server_name.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
            return invalid_in(section, "server_name", "must be a host name, without scheme, port or spaces");
        }
        let server_name = (!self.server_name.is_empty()).then(|| self.server_name.clone());
        Ok(ClientTlsFiles { ca_pem, identity_pem, server_name })
    }
}

/// Where a hop's TLS is configured, for advice that names what to change.
#[derive(Debug, Clone)]
pub struct Fixes {
    /// Where the CA that issued the server's certificate is given (`` `temporal.tls.ca_file` ``).
    pub ca: String,
    /// Where the client certificate and key are given.
    pub identity: String,
    /// Where the name checked against the server's certificate is given.
    pub server_name: String,
}

impl Fixes {
    /// The fixes of a [`ClientTls`] at `section`.
    pub fn section(section: &str) -> Self {
        Self {
            ca: format!("`{section}.ca_file`"),
            identity: format!("`{section}.cert_file` and `{section}.key_file`"),
            server_name: format!("`{section}.server_name`"),
        }
    }
}

/// What a failed TLS connection means and what to change, read from the error's text (its chain
/// and its debug form, where the TLS library's error kinds appear), or `None` when it is not about
/// TLS. The wording is the same for every hop; `fixes` names where that hop is configured.
pub fn advice(error: &str, fixes: &Fixes) -> Option<String> {
    let has = |needles: &[&str]| needles.iter().any(|n| error.contains(n));
    // Alerts first: they are the server's verdict on this client.
    if has(&["CertificateRequired", "certificate required"]) {
        return Some(format!(
            "the server requires a client certificate and none was sent: set {} (a certificate issued by a CA the server trusts)",
            fixes.identity
        ));
    }
    if has(&["AlertReceived(CertificateExpired)", "alert: CertificateExpired"]) {
        return Some(format!(
            "the server refused this client's certificate as expired: renew the one in {}",
            fixes.identity
        ));
    }
    if has(&["AlertReceived(UnknownCA)", "AlertReceived(BadCertificate)", "alert: UnknownCA", "alert: BadCertificate"])
    {
        return Some(format!(
            "the server refused this client's certificate: {} must hold a current certificate issued by a CA the server trusts",
            fixes.identity
        ));
    }
    if has(&[
        "UnknownIssuer",
        "unknown issuer",
        "self-signed certificate",
        "self signed certificate",
        "unable to get local issuer",
    ]) {
        return Some(format!(
            "the server's certificate is not issued by a CA this client trusts: set {} to the CA that issued it",
            fixes.ca
        ));
    }
    if has(&["NotValidForName", "not valid for name", "hostname mismatch"]) {
        return Some(format!(
            "the server's certificate does not carry the name this client connects to: connect by a name it carries, or set {}",
            fixes.server_name
        ));
    }
    if has(&["Expired", "certificate expired", "certificate has expired"]) {
        return Some(
            "the server's certificate has expired (or this machine's clock is wrong): renew the server's certificate"
                .to_owned(),
        );
    }
    if has(&["NotValidYet", "not valid yet"]) {
        return Some("the server's certificate is not valid yet: check this machine's clock".to_owned());
    }
    if has(&["InvalidContentType", "corrupt message", "wrong version number", "InvalidMessage"]) {
        return Some(
            "the server does not speak TLS on this address: use its TLS port, or a plaintext address".to_owned(),
        );
    }
    None
}

/// The PEM certificates of `path` (`section.field`), parsed; at least one.
pub fn certificates(section: &str, field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    parse_certificates(section, field, path, &read(section, field, path)?)
}

/// The PEM text of `path` (`section.field`) after checking it holds at least one certificate.
pub fn certificates_pem(section: &str, field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = read(section, field, path)?;
    parse_certificates(section, field, path, &pem)?;
    Ok(pem)
}

fn parse_certificates(
    section: &str,
    field: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<_> = match CertificateDer::pem_slice_iter(pem).collect() {
        Ok(certs) => certs,
        Err(e) => return invalid_in(section, field, format!("= {}: not valid PEM ({e})", path.display())),
    };
    if certs.is_empty() {
        return invalid_in(
            section,
            field,
            format!("= {}: holds no certificate (want PEM blocks `-----BEGIN CERTIFICATE-----`)", path.display()),
        );
    }
    Ok(certs)
}

/// The PEM private key of `path` (`section.field`).
pub fn private_key(section: &str, field: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read(section, field, path)?;
    PrivateKeyDer::from_pem_slice(&pem).or_else(|e| {
        invalid_in(
            section,
            field,
            format!(
                "= {}: holds no private key ({e}; want a PEM block `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
                path.display()
            ),
        )
    })
}

fn read(section: &str, field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).or_else(|e| invalid_in(section, field, format!("= {}: cannot be read ({e})", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate and its key, PEM.
    fn self_signed() -> anyhow::Result<(String, String)> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        Ok((made.cert.pem(), made.signing_key.serialize_pem()))
    }

    fn key_of(error: ConfigError) -> String {
        match error {
            ConfigError::Invalid { key, problem } => format!("{key}: {problem}"),
            other => format!("unexpected {other:?}"),
        }
    }

    #[test]
    fn advice_names_where_each_fix_goes() {
        let fixes = Fixes::section("temporal.tls");
        let advice = |e: &str| advice(e, &fixes).unwrap_or_default();
        assert!(advice("InvalidCertificate(UnknownIssuer)").contains("set `temporal.tls.ca_file` to the CA"));
        assert!(
            advice("AlertReceived(CertificateRequired)")
                .contains("`temporal.tls.cert_file` and `temporal.tls.key_file`")
        );
        assert!(advice("NotValidForNameContext { expected: .. }").contains("`temporal.tls.server_name`"));
        assert!(advice("ExpiredContext { time: .. }").contains("renew the server's certificate"));
        assert!(advice("AlertReceived(CertificateExpired)").contains("client's certificate as expired"));
        assert!(advice("connection refused").is_empty());
    }

    #[test]
    fn a_listener_needs_both_files_and_client_cas_only_over_tls() {
        let only_cert = ServerTls { cert_file: "c.pem".into(), ..ServerTls::default() };
        assert!(
            key_of(only_cert.validate("server.tls").err().unwrap_or_else(|| panic!()))
                .starts_with("server.tls.key_file")
        );
        let only_ca = ServerTls { client_ca_file: "ca.pem".into(), ..ServerTls::default() };
        let message = key_of(only_ca.validate("server.tls").err().unwrap_or_else(|| panic!()));
        assert!(message.starts_with("server.tls.client_ca_file: needs cert_file"), "{message}");
        assert!(ServerTls::default().validate("server.tls").is_ok());
    }

    #[test]
    fn production_refuses_plaintext_off_loopback_unless_terminated_in_front() -> anyhow::Result<()> {
        let plain = ServerTls::default();
        assert!(plain.validate_production("server.tls", "server.listen", "127.0.0.1:50051".parse()?).is_ok());
        let message = key_of(
            plain
                .validate_production("server.tls", "server.listen", "0.0.0.0:50051".parse()?)
                .err()
                .unwrap_or_else(|| panic!()),
        );
        assert!(message.contains("server.tls.cert_file") && message.contains("terminated_in_front"), "{message}");
        let fronted = ServerTls { terminated_in_front: true, ..ServerTls::default() };
        assert!(fronted.validate_production("server.tls", "server.listen", "0.0.0.0:50051".parse()?).is_ok());
        Ok(())
    }

    #[test]
    fn client_files_are_read_and_named_when_they_are_not_what_they_claim() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello")?;
        let missing = dir.path().join("missing.pem");
        let (cert_pem, key_pem) = self_signed()?;
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, &cert_pem)?;
        let key = dir.path().join("key.pem");
        std::fs::write(&key, &key_pem)?;

        let tls = ClientTls { ca_file: not_pem.clone(), ..ClientTls::default() };
        let message = key_of(tls.validate("temporal.tls").err().unwrap_or_else(|| panic!()));
        assert!(message.starts_with("temporal.tls.ca_file") && message.contains("holds no certificate"), "{message}");

        let tls = ClientTls { ca_file: missing, ..ClientTls::default() };
        let message = key_of(tls.validate("redis.tls").err().unwrap_or_else(|| panic!()));
        assert!(message.starts_with("redis.tls.ca_file") && message.contains("cannot be read"), "{message}");

        let tls = ClientTls { ca_file: cert.clone(), ..ClientTls::default() };
        let files = tls.load("temporal.tls")?;
        assert_eq!(files.ca_pem.as_deref(), Some(cert_pem.as_bytes()));

        let tls = ClientTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
            server_name: "etter".into(),
            ..ClientTls::default()
        };
        let files = tls.load("temporal.tls")?;
        assert_eq!(files.identity_pem, Some((cert_pem.clone().into_bytes(), key_pem.into_bytes())));
        assert_eq!(files.server_name.as_deref(), Some("etter"));

        let tls = ClientTls { cert_file: cert.clone(), key_file: not_pem, ..ClientTls::default() };
        let message = key_of(tls.validate("temporal.tls").err().unwrap_or_else(|| panic!()));
        assert!(message.starts_with("temporal.tls.key_file") && message.contains("no private key"), "{message}");

        let tls = ClientTls { cert_file: cert, ..ClientTls::default() };
        let message = key_of(tls.validate("temporal.tls").err().unwrap_or_else(|| panic!()));
        assert!(message.starts_with("temporal.tls.key_file: is required"), "{message}");

        let tls = ClientTls { server_name: "https://x:1".into(), ..ClientTls::default() };
        assert!(
            key_of(tls.validate("temporal.tls").err().unwrap_or_else(|| panic!()))
                .starts_with("temporal.tls.server_name")
        );
        Ok(())
    }
}
