//! Per-company settings from `server.companies_file` (docs/admission.md), re-read when the file changes
//! so an operator edits them without a restart:
//!
//! ```toml
//! [tiers.enterprise]            # limits shared by several companies
//! calls_per_minute = 6000
//! burst = 600
//! max_queued = 20000
//! token_budget = 50000000      # LLM tokens per calendar month; 0 = none
//!
//! [companies.acme]
//! tier = "enterprise"
//! calls_per_minute = 3000       # a company's own value wins over its tier's
//! webhook_url = "https://hooks.acme.example/etter"
//! webhook_secret = "a long random string shared with the receiver"
//! ```
//!
//! A limit neither the company nor its tier sets is `[limits]`'s (the default tier).
//!
//! A file that does not parse, or names an invalid company id or URL, is refused at startup with
//! the reason; after startup it is logged and the previous settings stay in force.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use crate::config::LimitsConfig;
use etter_core::error::chain;
use etter_core::ids::CompanyId;
use serde::Deserialize;

/// Shortest webhook secret accepted: an HMAC key guessable by brute force protects nothing.
const MIN_SECRET_LEN: usize = 16;
/// How often the file's modification time is checked.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Why the companies file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CompaniesError {
    /// It cannot be read.
    #[error("cannot read the companies file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It is not TOML of the expected shape (an unknown or ill-typed key); the source says where.
    #[error("the companies file {path} is invalid")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: toml::de::Error,
    },
    /// It is not valid.
    #[error("the companies file {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where a company's run-finished events go.
#[derive(Clone)]
pub struct Webhook {
    /// The receiver (http or https).
    pub url: reqwest::Url,
    /// The HMAC-SHA256 key of the `Etter-Signature` header.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url.as_str()).field("secret", &"***").finish()
    }
}

/// What one company may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompanyLimits {
    /// Calls per minute, on average.
    pub calls_per_minute: u32,
    /// Calls at once above the average.
    pub burst: u32,
    /// Runs it may have QUEUED.
    pub max_queued: u64,
    /// LLM tokens it may use per calendar month; 0 = no budget.
    pub token_budget: u64,
}

impl CompanyLimits {
    /// The default tier, `[limits]`.
    pub fn defaults(config: &LimitsConfig) -> Self {
        Self {
            calls_per_minute: config.calls_per_minute,
            burst: config.burst,
            max_queued: config.max_queued_per_company,
            token_budget: config.token_budget_per_month,
        }
    }
}

/// One company's settings.
#[derive(Debug, Clone, Default)]
pub struct CompanySettings {
    /// Its webhook, if it has one.
    pub webhook: Option<Webhook>,
    /// Its limits where it or its tier sets them (else the defaults).
    limits: FileLimits,
}

/// Limits as the file gives them: each may be left to the tier or the defaults.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    calls_per_minute: Option<u32>,
    burst: Option<u32>,
    max_queued: Option<u64>,
    token_budget: Option<u64>,
}

impl FileLimits {
    /// These limits, each unset one taken from `under`.
    fn over(self, under: Self) -> Self {
        Self {
            calls_per_minute: self.calls_per_minute.or(under.calls_per_minute),
            burst: self.burst.or(under.burst),
            max_queued: self.max_queued.or(under.max_queued),
            token_budget: self.token_budget.or(under.token_budget),
        }
    }

    fn check(&self, table: &str) -> Result<(), String> {
        if self.calls_per_minute == Some(0) || self.burst == Some(0) || self.max_queued == Some(0) {
            return Err(format!("[{table}]: calls_per_minute, burst and max_queued must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoot {
    #[serde(default)]
    tiers: BTreeMap<String, FileLimits>,
    #[serde(default)]
    companies: BTreeMap<String, FileCompany>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCompany {
    tier: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    #[serde(flatten)]
    limits: FileLimits,
}

/// Parses the companies file's text.
fn parse(path: &Path, text: &str) -> Result<BTreeMap<CompanyId, CompanySettings>, CompaniesError> {
    let invalid = |reason: String| CompaniesError::Invalid { path: path.to_owned(), reason };
    let root: FileRoot =
        toml::from_str(text).map_err(|source| CompaniesError::Syntax { path: path.to_owned(), source })?;
    for (name, tier) in &root.tiers {
        tier.check(&format!("tiers.{name}")).map_err(invalid)?;
    }
    let mut companies = BTreeMap::new();
    for (id, company) in root.companies {
        let company_id = CompanyId::parse(&id).map_err(|e| invalid(format!("[companies.{id}]: {e}")))?;
        company.limits.check(&format!("companies.{id}")).map_err(invalid)?;
        let tier = match &company.tier {
            None => FileLimits::default(),
            Some(name) => *root.tiers.get(name).ok_or_else(|| {
                invalid(format!("[companies.{id}] names tier {name:?}, which has no [tiers.{name}] table"))
            })?,
        };
        let limits = company.limits.over(tier);
        let webhook = match (company.webhook_url, company.webhook_secret) {
            (None, None) => None,
            (Some(url), Some(secret)) => {
                let url =
                    reqwest::Url::parse(&url).map_err(|e| invalid(format!("[companies.{id}] webhook_url: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                    return Err(invalid(format!("[companies.{id}] webhook_url must be an http(s) URL with a host")));
                }
                if secret.len() < MIN_SECRET_LEN {
                    return Err(invalid(format!(
                        "[companies.{id}] webhook_secret must be at least {MIN_SECRET_LEN} characters"
                    )));
                }
                Some(Webhook { url, secret: secret.into_bytes() })
            }
            (Some(_), None) => return Err(invalid(format!("[companies.{id}] has webhook_url without webhook_secret"))),
            (None, Some(_)) => return Err(invalid(format!("[companies.{id}] has webhook_secret without webhook_url"))),
        };
        companies.insert(company_id, CompanySettings { webhook, limits });
    }
    Ok(companies)
}

struct Loaded {
    modified: Option<SystemTime>,
    companies: Arc<BTreeMap<CompanyId, CompanySettings>>,
}

/// The current company settings, shared by the server's tasks.
pub struct Companies {
    path: PathBuf,
    defaults: CompanyLimits,
    loaded: RwLock<Loaded>,
}

impl Companies {
    /// Loads `path` (an empty path: no settings); limits it does not set are `defaults`. An
    /// unreadable or invalid file is an error.
    pub fn load(path: &Path, defaults: CompanyLimits) -> Result<Self, CompaniesError> {
        let (modified, companies) = if path.as_os_str().is_empty() { (None, BTreeMap::new()) } else { read(path)? };
        let loaded = RwLock::new(Loaded { modified, companies: Arc::new(companies) });
        Ok(Self { path: path.to_owned(), defaults, loaded })
    }

    /// What `company` may use now.
    pub fn limits(&self, company: &CompanyId) -> CompanyLimits {
        let set = self.get(company).limits;
        CompanyLimits {
            calls_per_minute: set.calls_per_minute.unwrap_or(self.defaults.calls_per_minute),
            burst: set.burst.unwrap_or(self.defaults.burst),
            max_queued: set.max_queued.unwrap_or(self.defaults.max_queued),
            token_budget: set.token_budget.unwrap_or(self.defaults.token_budget),
        }
    }

    /// A company's settings (defaults when the file does not name it).
    pub fn get(&self, company: &CompanyId) -> CompanySettings {
        let loaded = match self.loaded.read() {
            Ok(guard) => guard.companies.clone(),
            Err(poisoned) => poisoned.into_inner().companies.clone(),
        };
        loaded.get(company).cloned().unwrap_or_default()
    }

    /// Re-reads the file if it changed since it was last read; keeps the settings in force when
    /// the new content is invalid.
    pub fn reload_if_changed(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        let known = match self.loaded.read() {
            Ok(guard) => guard.modified,
            Err(poisoned) => poisoned.into_inner().modified,
        };
        if modified == known {
            return;
        }
        match read(&self.path) {
            Ok((modified, companies)) => {
                tracing::info!(path = %self.path.display(), companies = companies.len(), "companies file reloaded");
                let fresh = Loaded { modified, companies: Arc::new(companies) };
                match self.loaded.write() {
                    Ok(mut guard) => *guard = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
            }
            Err(e) => {
                tracing::error!("{}; the previous company settings stay in force", chain(&e));
                // Not again until the file changes once more.
                match self.loaded.write() {
                    Ok(mut guard) => guard.modified = modified,
                    Err(poisoned) => poisoned.into_inner().modified = modified,
                }
            }
        }
    }

    /// Re-reads the file whenever it changes, until `drain` turns true.
    pub async fn watch(self: Arc<Self>, mut drain: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RELOAD_CHECK) => self.reload_if_changed(),
                _ = drain.changed() => return,
            }
        }
    }
}

type Read = (Option<SystemTime>, BTreeMap<CompanyId, CompanySettings>);

fn read(path: &Path) -> Result<Read, CompaniesError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text =
        std::fs::read_to_string(path).map_err(|source| CompaniesError::Read { path: path.to_owned(), source })?;
    Ok((modified, parse(path, &text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<BTreeMap<CompanyId, CompanySettings>, CompaniesError> {
        parse(Path::new("companies.toml"), text)
    }

    #[test]
    fn a_company_with_a_webhook() -> anyhow::Result<()> {
        let companies = parsed(
            "[companies.acme]\nwebhook_url = \"https://hooks.acme.example/etter\"\nwebhook_secret = \"0123456789abcdef0123\"\n\n[companies.globex]\n",
        )?;
        let acme = companies.get(&CompanyId::parse("acme")?).and_then(|c| c.webhook.clone());
        let hook = acme.ok_or_else(|| anyhow::anyhow!("acme has a webhook"))?;
        assert_eq!(hook.url.as_str(), "https://hooks.acme.example/etter");
        assert!(!format!("{hook:?}").contains("0123456789"), "the secret is never printed");
        assert!(companies.get(&CompanyId::parse("globex")?).is_some_and(|c| c.webhook.is_none()));
        Ok(())
    }

    #[test]
    fn limits_come_from_the_company_then_its_tier_then_the_defaults() -> anyhow::Result<()> {
        let scratch = tempfile::Builder::new().prefix("etter-companies-tiers-").tempdir()?;
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("companies.toml");
        std::fs::write(
            &path,
            "[tiers.enterprise]\ncalls_per_minute = 6000\nburst = 600\n\n\
             [companies.acme]\ntier = \"enterprise\"\ncalls_per_minute = 3000\n\n[companies.globex]\nmax_queued = 7\n",
        )?;
        let defaults = CompanyLimits::defaults(&LimitsConfig::default());
        let companies = Companies::load(&path, defaults)?;
        let acme = companies.limits(&CompanyId::parse("acme")?);
        assert_eq!((acme.calls_per_minute, acme.burst, acme.max_queued), (3000, 600, defaults.max_queued));
        let globex = companies.limits(&CompanyId::parse("globex")?);
        assert_eq!(globex, CompanyLimits { max_queued: 7, ..defaults });
        assert_eq!(companies.limits(&CompanyId::parse("initech")?), defaults, "unnamed: the defaults");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn invalid_files_say_what_is_wrong() {
        let cases = [
            ("[companies.Acme]\n", "company_id"),
            ("[companies.acme]\nwebhook_url = \"ftp://x/y\"\nwebhook_secret = \"0123456789abcdef\"\n", "http(s)"),
            ("[companies.acme]\nwebhook_url = \"https://x.example/y\"\n", "without webhook_secret"),
            ("[companies.acme]\nwebhook_url = \"https://x.example/y\"\nwebhook_secret = \"short\"\n", "at least 16"),
            ("[companies.acme]\nwebhook = 1\n", "unknown field"),
            ("[companies.acme]\ntier = \"gold\"\n", "no [tiers.gold] table"),
            ("[tiers.gold]\nburst = 0\n", "at least 1"),
            ("[companies.acme]\ncalls_per_minute = 0\n", "at least 1"),
            ("[tiers.gold]\nspeed = 1\n", "unknown field"),
            ("not toml", "invalid"),
        ];
        for (text, expected) in cases {
            let err = parsed(text).err().map(|e| chain(&e).to_string()).unwrap_or_default();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_settings() -> anyhow::Result<()> {
        let scratch = tempfile::Builder::new().prefix("etter-companies-").tempdir()?;
        let dir = scratch.path().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("companies.toml");
        std::fs::write(&path, "[companies.acme]\n")?;
        let companies = Companies::load(&path, CompanyLimits::defaults(&LimitsConfig::default()))?;
        let acme = CompanyId::parse("acme")?;
        assert!(companies.get(&acme).webhook.is_none());
        let hook =
            "[companies.acme]\nwebhook_url = \"http://127.0.0.1:9/hook\"\nwebhook_secret = \"0123456789abcdef\"\n";
        std::fs::write(&path, hook)?;
        // Make the change visible even on file systems with coarse modification times.
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path)?.set_modified(later)?;
        companies.reload_if_changed();
        assert!(companies.get(&acme).webhook.is_some(), "reloaded");
        std::fs::write(&path, "garbage [")?;
        std::fs::File::options().write(true).open(&path)?.set_modified(later + Duration::from_secs(5))?;
        companies.reload_if_changed();
        assert!(companies.get(&acme).webhook.is_some(), "the broken file is ignored");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
