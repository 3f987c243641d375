//! Client-held tokens: every opaque token this server hands out (`WatchStatus` resume tokens,
//! `History` and `ListAuditEntries` page tokens) is sealed here, and opened here when it comes
//! back.
//!
//! A client holds such a token and sends it back, so it is input like any other: its contents
//! are trusted only once the server has checked that it issued the token itself, for this
//! company and this kind of request. A sealed token is
//!
//! ```text
//! t1. base64url( key_id[4] ‖ payload ‖ tag[16] )
//! tag = HMAC-SHA256(key, "etter-token/1" ‖ kind ‖ len(binding) ‖ binding ‖ key_id ‖ payload)[..16]
//! ```
//!
//! The binding (the company and the scope or filters a token was issued for) is not in the token;
//! it is what the server is asked for now, so a token replayed for another company, scope or kind
//! fails its tag exactly as a forged one does. The key id names the key a token was sealed with:
//! a server holds its current key and the keys it used before (`server.previous_token_secrets`),
//! so rotating the key does not break tokens issued minutes earlier. Replicas share the keys.
//!
//! The payload is not encrypted: it holds nothing the caller may not see (its own marks and page
//! positions). Sealing makes it unforgeable, not secret.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::ServerConfig;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::error::Violation;

/// The prefix of sealed tokens.
const PREFIX: &str = "t1.";
/// Bytes of a key id.
const KEY_ID: usize = 4;
/// Bytes of the tag (128 bits).
const TAG: usize = 16;
/// Domain separation of the tag from every other use of the keys.
const DOMAIN: &[u8] = b"etter-token/1";
/// Shortest accepted secret, in bytes.
pub const MIN_SECRET: usize = 32;

/// What a token is for; a token of one kind is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A batch or company `WatchStatus` resume token.
    Watch = 1,
    /// A `History` page token.
    HistoryPage = 2,
    /// A `ListAuditEntries` page token.
    AuditPage = 3,
}

/// Why a token is refused. Every variant yields nothing: the request is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not sealed by this deployment's keys, or sealed for another company, scope, filters or
    /// kind of request (these cannot be told apart, on purpose).
    #[error("is not a token this server issued for this request")]
    NotIssued,
    /// Issued by a server before tokens were sealed; such tokens are refused (see
    /// `docs/security.md`).
    #[error("was issued by an earlier version of the server and is no longer accepted")]
    Earlier,
}

/// One key: its id (from the secret, so replicas given the same secret agree) and secret.
#[derive(Clone)]
struct Key {
    id: [u8; KEY_ID],
    secret: Vec<u8>,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        let digest = Sha256::new().chain_update(b"etter-token-key-id/1").chain_update(secret).finalize();
        let mut id = [0u8; KEY_ID];
        id.copy_from_slice(&digest[..KEY_ID]);
        Self { id, secret: secret.to_vec() }
    }

    fn tag(&self, kind: Kind, binding: &[u8], payload: &[u8]) -> [u8; TAG] {
        // HMAC takes keys of any length, so this cannot fail; a key it refused would seal
        // nothing openable rather than panic.
        let mut tag = [0u8; TAG];
        if let Ok(mac) = Hmac::<Sha256>::new_from_slice(&self.secret) {
            let full = mac
                .chain_update(DOMAIN)
                .chain_update([kind as u8])
                .chain_update((binding.len() as u64).to_be_bytes())
                .chain_update(binding)
                .chain_update(self.id)
                .chain_update(payload)
                .finalize()
                .into_bytes();
            tag.copy_from_slice(&full[..TAG]);
        }
        tag
    }
}

/// The keys tokens are sealed and opened with: the current one seals, any opens.
#[derive(Clone)]
pub struct TokenKeys {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("keys", &(1 + self.previous.len())).finish()
    }
}

/// Why the token keys could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TokenKeyError {
    /// A configured secret is too short.
    #[error("`{key}` must be at least {MIN_SECRET} bytes (for example 64 hex characters from `openssl rand -hex 32`)")]
    Short {
        /// The configuration key.
        key: &'static str,
    },
    /// The generated secret file could not be kept.
    #[error(transparent)]
    Kept(#[from] KeptSecretError),
}

impl TokenKeys {
    /// Keys from `current` and `previous` secrets.
    pub fn new(current: &[u8], previous: &[&[u8]]) -> Self {
        Self { current: Key::new(current), previous: previous.iter().map(|secret| Key::new(secret)).collect() }
    }

    /// The keys `server.token_secret` and `server.previous_token_secrets` configure; without a
    /// configured secret (the embedded default), one generated once and kept in
    /// `{data_dir}/auth/token.secret`, which every process on the data directory shares.
    pub fn from_config(server: &ServerConfig, data_dir: &Path) -> Result<Self, TokenKeyError> {
        let current = match server.token_secret.expose() {
            Some(secret) if secret.len() < MIN_SECRET => {
                return Err(TokenKeyError::Short { key: "server.token_secret" });
            }
            Some(secret) => secret.as_bytes().to_vec(),
            None => kept_secret(&data_dir.join("auth").join("token.secret"))?,
        };
        let mut previous = Vec::new();
        for secret in &server.previous_token_secrets {
            match secret.expose() {
                Some(secret) if secret.len() < MIN_SECRET => {
                    return Err(TokenKeyError::Short { key: "server.previous_token_secrets" });
                }
                Some(secret) => previous.push(secret.as_bytes()),
                None => {}
            }
        }
        Ok(Self::new(&current, &previous))
    }

    /// `payload` sealed for `kind` and `binding`.
    pub fn seal(&self, kind: Kind, binding: &[u8], payload: &[u8]) -> String {
        let key = &self.current;
        let mut raw = Vec::with_capacity(KEY_ID + payload.len() + TAG);
        raw.extend_from_slice(&key.id);
        raw.extend_from_slice(payload);
        raw.extend_from_slice(&key.tag(kind, binding, payload));
        let mut token = String::with_capacity(PREFIX.len() + raw.len().div_ceil(3) * 4);
        token.push_str(PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut token);
        token
    }

    /// The payload of a token sealed for `kind` and `binding` by one of these keys.
    pub fn open(&self, kind: Kind, binding: &[u8], token: &str) -> Result<Vec<u8>, TokenError> {
        let Some(encoded) = token.strip_prefix(PREFIX) else {
            return Err(if is_earlier(kind, token) { TokenError::Earlier } else { TokenError::NotIssued });
        };
        let raw =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| TokenError::NotIssued)?;
        if raw.len() < KEY_ID + TAG {
            return Err(TokenError::NotIssued);
        }
        let (id, rest) = raw.split_at(KEY_ID);
        let (payload, tag) = rest.split_at(rest.len() - TAG);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == id)
            .ok_or(TokenError::NotIssued)?;
        let expected = key.tag(kind, binding, payload);
        // Constant time: the comparison does not tell a forger how much of the tag was right.
        let difference = expected.iter().zip(tag).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference != 0 {
            return Err(TokenError::NotIssued);
        }
        Ok(payload.to_vec())
    }
}

/// Page tokens (AIP-158): the position the next page starts from, sealed for the company and
/// kind of listing, with a hash of the request's filters so a token sent with other filters is
/// refused with a message that says so, rather than answered with a silently wrong page.
impl TokenKeys {
    /// The token of the page after `position`, for a request with `filters` (its page fields
    /// cleared by the caller).
    pub fn seal_page(&self, kind: Kind, company: &[u8], filters: &impl prost::Message, position: &str) -> String {
        let mut payload = filters_hash(filters).to_vec();
        payload.extend_from_slice(position.as_bytes());
        self.seal(kind, company, &payload)
    }

    /// The position in `page_token`: `None` for the first page (an empty token); a violation of
    /// `page_token` when the token is not this server's for this company and listing, or was
    /// issued for other filters.
    pub fn open_page(
        &self,
        kind: Kind,
        company: &[u8],
        filters: &impl prost::Message,
        page_token: &str,
    ) -> Result<Option<String>, Violation> {
        if page_token.is_empty() {
            return Ok(None);
        }
        let payload = self.open(kind, company, page_token).map_err(|e| {
            Violation::new("page_token", format!("{e}; start again from the first page with an empty page_token"))
        })?;
        let (hash, position) = payload.split_at_checked(FILTERS_HASH).unwrap_or((&[], &[]));
        if hash != filters_hash(filters) {
            return Err(Violation::new(
                "page_token",
                "was issued for other filters; send the same filters as on the first page, or start again without a page_token",
            ));
        }
        String::from_utf8(position.to_vec()).map(Some).map_err(|_| {
            Violation::new(
                "page_token",
                "is not a token this server issued for this request; start again from the first page",
            )
        })
    }
}

/// Bytes of the filters' hash in a page token.
const FILTERS_HASH: usize = 8;

/// A short hash of a request's filters (its page fields cleared).
fn filters_hash(filters: &impl prost::Message) -> [u8; FILTERS_HASH] {
    let digest = Sha256::digest(filters.encode_to_vec());
    let mut hash = [0u8; FILTERS_HASH];
    hash.copy_from_slice(&digest[..FILTERS_HASH]);
    hash
}

/// Whether `token` has the shape of what servers issued before tokens were sealed: watch tokens
/// `w1.`/`w2.` + base64, page tokens 16 hex characters, a dot, the position.
fn is_earlier(kind: Kind, token: &str) -> bool {
    match kind {
        Kind::Watch => token.starts_with("w1.") || token.starts_with("w2."),
        Kind::HistoryPage | Kind::AuditPage => token
            .split_once('.')
            .is_some_and(|(binding, _)| binding.len() == 16 && binding.bytes().all(|b| b.is_ascii_hexdigit())),
    }
}

/// Why a generated secret could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum KeptSecretError {
    /// The file could not be read or written.
    #[error("cannot keep the generated secret at {path}")]
    Io {
        /// The secret file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exists but does not hold a secret this server generated.
    #[error("the generated secret at {0} is corrupt: delete it to generate a new one (what it signed stops verifying)")]
    Corrupt(PathBuf),
    /// No randomness for a new secret.
    #[error("cannot generate a secret")]
    Random(#[source] getrandom::Error),
}

/// The secret kept at `path` (64 hex characters), generated on first use with owner-only
/// permissions. Processes racing to create it agree on one: the secret is written to a file of
/// its own first and then linked into place, so nobody ever reads a half-written secret.
pub fn kept_secret(path: &Path) -> Result<Vec<u8>, KeptSecretError> {
    let io = |source| KeptSecretError::Io { path: path.to_path_buf(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            if text.len() < 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeptSecretError::Corrupt(path.to_path_buf()));
            }
            return Ok(text.as_bytes().to_vec());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(KeptSecretError::Random)?;
    let hex = hex::encode(bytes);
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(KeptSecretError::Random)?;
    let staged = dir.join(format!(".secret-{}", u64::from_le_bytes(suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&staged).and_then(|mut file| {
        file.write_all(hex.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&staged, path));
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a secret");
            Ok(hex.into_bytes())
        }
        // Another process linked its secret first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => kept_secret(path),
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"0123456789abcdef0123456789abcdef-a";
    const B: &[u8] = b"0123456789abcdef0123456789abcdef-b";

    #[test]
    fn a_sealed_token_opens_only_for_its_kind_binding_and_keys() {
        let keys = TokenKeys::new(A, &[]);
        let token = keys.seal(Kind::Watch, b"company:acme", b"marks");
        assert_eq!(keys.open(Kind::Watch, b"company:acme", &token), Ok(b"marks".to_vec()));
        assert_eq!(keys.open(Kind::Watch, b"company:acme-x", &token), Err(TokenError::NotIssued));
        assert_eq!(keys.open(Kind::HistoryPage, b"company:acme", &token), Err(TokenError::NotIssued));
        assert_eq!(TokenKeys::new(B, &[]).open(Kind::Watch, b"company:acme", &token), Err(TokenError::NotIssued));
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let keys = TokenKeys::new(A, &[]);
        let token = keys.seal(Kind::HistoryPage, b"acme", b"page position 42");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token[PREFIX.len()..]).unwrap_or_default();
        for i in 0..raw.len() {
            let mut changed = raw.clone();
            changed[i] ^= 0x01;
            let forged = format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&changed));
            assert_eq!(keys.open(Kind::HistoryPage, b"acme", &forged), Err(TokenError::NotIssued), "byte {i}");
        }
        for bad in ["", "t1.", "t1.!!!", "t1.AAAA", &token[..token.len() - 2]] {
            assert_eq!(keys.open(Kind::HistoryPage, b"acme", bad), Err(TokenError::NotIssued), "{bad:?}");
        }
    }

    #[test]
    fn tokens_of_a_previous_key_open_after_a_rotation_and_not_after_its_removal() {
        let before = TokenKeys::new(A, &[]).seal(Kind::AuditPage, b"", b"7");
        let rotated = TokenKeys::new(B, &[A]);
        assert_eq!(rotated.open(Kind::AuditPage, b"", &before), Ok(b"7".to_vec()));
        let after = rotated.seal(Kind::AuditPage, b"", b"8");
        assert_eq!(TokenKeys::new(B, &[]).open(Kind::AuditPage, b"", &after), Ok(b"8".to_vec()));
        assert_eq!(TokenKeys::new(B, &[]).open(Kind::AuditPage, b"", &before), Err(TokenError::NotIssued));
    }

    #[test]
    fn tokens_of_servers_before_sealing_are_named_as_such() {
        let keys = TokenKeys::new(A, &[]);
        assert_eq!(keys.open(Kind::Watch, b"x", "w2.AQRhY21lAA"), Err(TokenError::Earlier));
        assert_eq!(keys.open(Kind::HistoryPage, b"x", "0123456789abcdef.abc"), Err(TokenError::Earlier));
        assert_eq!(keys.open(Kind::AuditPage, b"x", "0123456789abcdef.12"), Err(TokenError::Earlier));
        assert_eq!(keys.open(Kind::Watch, b"x", "0123456789abcdef.12"), Err(TokenError::NotIssued));
    }

    #[test]
    fn a_kept_secret_is_generated_once_and_shared() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("etter-kept-secret-{}", crate::random_u128()));
        let path = dir.join("auth/token.secret");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn({
                    let path = path.clone();
                    move || kept_secret(&path).map_err(|e| etter_core::error::chain(&e).to_string())
                })
            })
            .collect();
        let secrets: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("panicked")))
            .collect::<Result<Result<Vec<_>, _>, _>>()?
            .map_err(anyhow::Error::msg)?;
        assert!(secrets.windows(2).all(|w| w[0] == w[1]), "racing processes got different secrets");
        assert_eq!(kept_secret(&path)?, secrets[0]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::read_dir(path.parent().unwrap_or(&dir))?.count(), 1, "a staged file was left behind");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
