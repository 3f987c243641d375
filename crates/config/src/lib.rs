//! Configuration: how both binaries load their settings, and the pieces every section uses.
//!
//! Settings live beside what they configure: each crate defines its section (`[store]` in
//! `etter-store`, `[graph]` in `etter-graph`, …) with its defaults, its checks and the documentation
//! of its keys, and each binary composes the sections it reads into its own `Config`. Both binaries
//! read the same file and environment: a section only the other binary reads is ignored, an unknown
//! section or an unknown key inside a section is refused.
//!
//! Layers, each over the one before: built-in defaults → TOML file → `ETTER_*` environment variables
//! (sections nested with `__`, e.g. `ETTER_SERVER__LISTEN`) → command-line flags. The result is
//! checked once, after loading, and an error names the key and what to fix.

pub mod tls;

use std::{
    borrow::Cow,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer, de::DeserializeOwned};

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "ETTER_";

/// The top-level sections (and top-level keys) of the configuration file both binaries share.
/// Environment variables with the [`ENV_PREFIX`] that name anything else (for example
/// `ETTER_TOOLS__*`, read by the test harness) are not configuration and are ignored.
pub const SECTIONS: &[&str] = &[
    "profile",
    "data_dir",
    "server",
    "dispatch",
    "limits",
    "models",
    "auth",
    "store",
    "redis",
    "graph",
    "documents",
    "llm",
    "temporal",
    "worker",
    "log",
    "tracing",
];

/// Keys that moved: a file or variable that still sets one is refused with where it went.
const MOVED: &[(&str, &str)] = &[("worker.workflow_execution_timeout", "temporal.workflow_execution_timeout")];

/// How strict the configuration is about its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// An unset store, graph or model falls back to SQLite, the embedded graph, the offline model.
    #[default]
    Embedded,
    /// PostgreSQL, the identity provider's keys (or a configured HS256 secret), and the secrets of
    /// every configured part are required; the console's dev login is refused.
    Production,
}

/// A secret configuration value (a password or a URL with credentials): never printed, masked by
/// `--dump-config`. Empty means "not set".
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(Option<SecretString>);

impl Secret {
    /// The secret's value, or `None` when it is not set (absent or empty).
    pub fn expose(&self) -> Option<&str> {
        self.0.as_ref().map(ExposeSecret::expose_secret).filter(|s| !s.is_empty())
    }

    /// Whether a non-empty value is set.
    pub fn is_set(&self) -> bool {
        self.expose().is_some()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(Some(SecretString::from(value)))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "Secret(***)" } else { "Secret(unset)" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.is_set() { "***" } else { "" })
    }
}

impl schemars::JsonSchema for Secret {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Secret".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named configuration file does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    /// A layer could not be parsed or has an unknown or ill-typed key; the source says which
    /// key, in which layer.
    #[error("invalid configuration")]
    Parse(#[from] Box<figment::Error>),
    /// Loaded, but a value is not acceptable.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// The offending key, dotted (`store.url`).
        key: Cow<'static, str>,
        /// What is wrong with it.
        problem: String,
    },
    /// A top-level section no binary reads.
    #[error("invalid configuration: unknown section `{0}` (the sections are {sections})", sections = SECTIONS.join(", "))]
    UnknownSection(String),
    /// A key that has moved.
    #[error("invalid configuration: `{from}` is now `{to}`")]
    Moved {
        /// The old key.
        from: &'static str,
        /// Where it is now.
        to: &'static str,
    },
}

/// `Err(ConfigError::Invalid)` for `key`.
pub fn invalid<T>(key: &'static str, problem: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid { key: Cow::Borrowed(key), problem: problem.into() })
}

/// `Err(ConfigError::Invalid)` for `field` of the section at `section` (a piece of settings that
/// several sections share, such as [`tls::ClientTls`]).
pub fn invalid_in<T>(section: &str, field: &str, problem: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid { key: Cow::Owned(format!("{section}.{field}")), problem: problem.into() })
}

/// Refuses the first of `durations` that is zero.
pub fn require_positive(durations: &[(&'static str, Duration)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, d)| d.is_zero()) {
        Some((key, _)) => invalid(key, "must be positive"),
        None => Ok(()),
    }
}

/// The layered sources over `defaults` (a binary's whole default configuration): then `file` (when
/// given), then the `ETTER_*` variables of the process environment, then `overrides` (command-line
/// flags as dotted keys). Tests use it with `figment::Jail`.
pub fn layers<D: Serialize>(
    defaults: &D,
    file: Option<&Path>,
    overrides: &[(&str, String)],
) -> Result<Figment, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile(path.to_path_buf()));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
        let section = key.as_str().split('.').next().unwrap_or_default();
        SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(section))
    }));
    for (key, value) in overrides {
        figment = figment.merge((*key, value.as_str()));
    }
    Ok(figment)
}

/// Extracts a binary's configuration from its layers. Top-level sections that the binary does not
/// read are ignored when they are one of [`SECTIONS`] and refused otherwise; keys inside the
/// sections it reads are checked by their section (`deny_unknown_fields`).
pub fn extract<T: DeserializeOwned>(figment: &Figment) -> Result<T, ConfigError> {
    let sections: std::collections::BTreeMap<String, figment::value::Value> = figment.extract().map_err(Box::new)?;
    for (name, value) in &sections {
        if !SECTIONS.contains(&name.as_str()) {
            return Err(ConfigError::UnknownSection(name.clone()));
        }
        for (from, to) in MOVED {
            if let Some((section, key)) = from.split_once('.')
                && section == name
                && value.as_dict().is_some_and(|dict| dict.contains_key(key))
            {
                return Err(ConfigError::Moved { from, to });
            }
        }
    }
    figment.extract().map_err(|e| Box::new(e).into())
}

/// Loads a binary's configuration: [`layers`] over its defaults, then [`extract`]. The binary
/// validates the result.
pub fn load<T: Default + Serialize + DeserializeOwned>(
    file: Option<&Path>,
    overrides: &[(&str, String)],
) -> Result<T, ConfigError> {
    extract(&layers(&T::default(), file, overrides)?)
}

/// A configuration as TOML with secrets masked (`--dump-config`).
pub fn to_masked_toml<T: Serialize>(config: &T) -> String {
    toml::to_string_pretty(config).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}

/// One configuration key and what it does: the doc comment of its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted key, as in TOML (`server.listen`).
    pub key: String,
    /// The field's doc comment, on one line.
    pub description: String,
}

/// Every key of the configuration `T` (its leaf settings, sections opened), with the doc comment
/// of its field, read from `T`'s JSON Schema; in key order.
pub fn documented_keys<T: schemars::JsonSchema>() -> Vec<KeyDoc> {
    let generator =
        schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true).into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut keys = Vec::new();
    collect_keys(schema.as_value(), "", &mut keys);
    keys
}

fn collect_keys(schema: &serde_json::Value, prefix: &str, out: &mut Vec<KeyDoc>) {
    let Some(properties) = schema.get("properties").and_then(serde_json::Value::as_object) else { return };
    for (name, property) in properties {
        let key = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        if property.get("properties").is_some() {
            collect_keys(property, &key, out);
        } else {
            let doc = property.get("description").and_then(serde_json::Value::as_str).unwrap_or_default();
            // A `Secret` (or a list of them) is write-only: said in the reference, masked in dumps.
            let secret = [Some(property), property.get("items")]
                .into_iter()
                .flatten()
                .any(|s| s.get("writeOnly") == Some(&serde_json::Value::Bool(true)));
            let mut description = one_line(doc);
            if secret {
                description.push_str(" Secret: masked by `--dump-config`.");
            }
            out.push(KeyDoc { key, description });
        }
    }
}

/// A doc comment as one table cell: lines joined, rustdoc links shown as plain code.
fn one_line(doc: &str) -> String {
    let joined = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.replace("[`", "`").replace("`]", "`").replace('|', "\\|")
}

/// Renders the key table of `docs/configuration.md`: every key either binary reads (`binaries`:
/// each binary's name and documented keys), once, in key order, with its environment variable,
/// its default from `defaults` (the binaries' default configurations as JSON, merged) and which
/// binaries read it.
pub fn render_key_table(binaries: &[(&str, Vec<KeyDoc>)], defaults: &serde_json::Value) -> String {
    let mut rows: std::collections::BTreeMap<&str, (&str, Vec<&str>)> = std::collections::BTreeMap::new();
    for (binary, keys) in binaries {
        for doc in keys {
            rows.entry(doc.key.as_str()).or_insert((doc.description.as_str(), Vec::new())).1.push(binary);
        }
    }
    let mut out =
        String::from("| key | environment variable | default | used by | description |\n|---|---|---|---|---|\n");
    for (key, (description, readers)) in rows {
        let default = key
            .split('.')
            .try_fold(defaults, |v, part| v.get(part))
            .map(|v| match v {
                serde_json::Value::String(s) if s.is_empty() => "(empty)".to_owned(),
                serde_json::Value::String(s) => format!("`{s}`"),
                other => format!("`{other}`"),
            })
            .unwrap_or_default();
        let env = format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase());
        let used_by =
            if readers.len() == binaries.len() && binaries.len() > 1 { "both".to_owned() } else { readers.join(", ") };
        out.push_str(&format!("| `{key}` | `{env}` | {default} | {used_by} | {description} |\n"));
    }
    out
}

#[cfg(test)]
// `figment::Jail` closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    /// A section in miniature, shaped like `[temporal]`.
    #[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields, default)]
    struct TemporalConfig {
        /// Frontend address.
        address: String,
        /// Namespace (`etter-{env}`).
        namespace: String,
        /// Task queue.
        task_queue: String,
    }

    impl Default for TemporalConfig {
        fn default() -> Self {
            Self {
                address: "http://127.0.0.1:7233".to_owned(),
                namespace: "etter-dev".to_owned(),
                task_queue: "etter-workflows".to_owned(),
            }
        }
    }

    /// A binary's configuration in miniature: one section it reads.
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Reads {
        profile: Profile,
        temporal: TemporalConfig,
    }

    /// A configuration to document: a section of this crate and one with secrets.
    #[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(default)]
    struct Documented {
        /// How strict the configuration is.
        profile: Profile,
        /// The Temporal cluster.
        temporal: TemporalConfig,
        /// A section with a secret and a list of them.
        vault: Vault,
    }

    #[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(default)]
    struct Vault {
        /// The key,
        /// on two lines, with a [`Secret`] link.
        key: Secret,
        /// Keys | kept.
        previous: Vec<Secret>,
    }

    #[test]
    fn every_leaf_is_documented_from_its_doc_comment_and_secrets_are_marked() {
        let keys = documented_keys::<Documented>();
        let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            names,
            ["profile", "temporal.address", "temporal.namespace", "temporal.task_queue", "vault.key", "vault.previous"]
        );
        let doc = |key: &str| keys.iter().find(|k| k.key == key).map(|k| k.description.clone()).unwrap_or_default();
        assert_eq!(doc("profile"), "How strict the configuration is.");
        assert_eq!(doc("temporal.namespace"), "Namespace (`etter-{env}`).");
        assert_eq!(doc("vault.key"), "The key, on two lines, with a `Secret` link. Secret: masked by `--dump-config`.");
        assert_eq!(doc("vault.previous"), "Keys \\| kept. Secret: masked by `--dump-config`.");
        let table = render_key_table(&[("one", keys.clone()), ("other", keys[..1].to_vec())], &serde_json::json!({}));
        assert!(table.contains("| `profile` | `ETTER_PROFILE` |  | both |"), "{table}");
        assert!(table.contains("| `vault.key` | `ETTER_VAULT__KEY` |  | one |"), "{table}");
    }

    #[test]
    fn layers_apply_in_order_and_env_ignores_foreign_variables() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("etter.toml", "[temporal]\nnamespace = \"from-file\"\ntask_queue = \"q-file\"\n")?;
            jail.set_env("ETTER_TEMPORAL__NAMESPACE", "from-env");
            jail.set_env("ETTER_TOOLS__GRPCURL", "/not/config");
            let layers = layers(
                &Reads::default(),
                Some(Path::new("etter.toml")),
                &[("temporal.task_queue", "q-flag".to_owned())],
            )
            .map_err(|e| e.to_string())?;
            let config: Reads = extract(&layers).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
            assert_eq!(config.temporal.namespace, "from-env");
            assert_eq!(config.temporal.task_queue, "q-flag");
            assert_eq!(config.temporal.address, "http://127.0.0.1:7233");
            Ok(())
        });
    }

    #[test]
    fn other_binaries_sections_are_ignored_and_unknown_ones_refused() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("etter.toml", "[llm]\nmodel = \"read by the worker only\"\n")?;
            let config: Result<Reads, _> =
                extract(&layers(&Reads::default(), Some(Path::new("etter.toml")), &[]).map_err(|e| e.to_string())?);
            assert!(config.is_ok(), "{config:?}");
            jail.create_file("typo.toml", "[temporall]\nnamespace = \"x\"\n")?;
            let err = extract::<Reads>(
                &layers(&Reads::default(), Some(Path::new("typo.toml")), &[]).map_err(|e| e.to_string())?,
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(err.contains("unknown section `temporall`"), "{err}");
            jail.set_env("ETTER_TEMPORAL__NAMESPAEC", "x");
            let err = extract::<Reads>(&layers(&Reads::default(), None, &[]).map_err(|e| e.to_string())?).err();
            // The key is named by the source (figment's error), once, under the context.
            let source = err.as_ref().and_then(std::error::Error::source).map(ToString::to_string).unwrap_or_default();
            assert!(source.contains("namespaec"), "{source}");
            let chain = err.map(|e| format!("{:#}", anyhow::Error::from(e))).unwrap_or_default();
            assert!(chain.starts_with("invalid configuration: ") && chain.matches("namespaec").count() == 1, "{chain}");
            Ok(())
        });
        let missing = layers(&Reads::default(), Some(Path::new("/nonexistent/etter.toml")), &[]);
        assert!(matches!(missing, Err(ConfigError::MissingFile(_))));
    }

    #[test]
    fn a_moved_key_is_refused_with_its_new_name() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ETTER_WORKER__WORKFLOW_EXECUTION_TIMEOUT", "1h");
            let err = extract::<Reads>(&layers(&Reads::default(), None, &[]).map_err(|e| e.to_string())?)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("`worker.workflow_execution_timeout` is now `temporal.workflow_execution_timeout`"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_are_masked() {
        #[derive(Serialize, Debug)]
        struct WithSecret {
            url: Secret,
        }
        let config = WithSecret { url: Secret::from("postgres://etter:hunter2@db/etter") };
        let dump = to_masked_toml(&config);
        assert!(!dump.contains("hunter2") && dump.contains("url = \"***\""), "{dump}");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!Secret::from("").is_set() && Secret::default().expose().is_none());
    }
}
