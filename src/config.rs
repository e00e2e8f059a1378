//! Configuration: built-in defaults < `gatehouse.toml` (or `--config PATH`) < `GATEHOUSE_*`
//! environment. Every option has a default that works on a laptop; `validate()` reports every
//! problem at once, naming the key, and a bad section stops startup instead of falling back.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::chain::{ChainConfig, SettlementMode};
use crate::policy::PolicyConfig;
use crate::protocol::Caip2;
use crate::upstream::UpstreamConfig;

/// Flat environment variables that name nested keys (the documented public interface).
const FLAT_ENV_KEYS: &[(&str, &str)] = &[
    ("upstream_url", "upstream.url"),
    ("upstream_authorization", "upstream.authorization"),
    ("rules_dir", "risk.rules_dir"),
];

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// `sqlite://PATH` (embedded, created on start) or `postgres://...` (shared by replicas).
    pub database_url: Secret,
    /// The admin API's bearer tokens (`[[admin.tokens]]`, stored as SHA-256 hashes).
    pub admin: crate::admin::AdminConfig,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Largest accepted request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Upper bound on any one request's handling, in milliseconds (must exceed the upstream
    /// settle timeout, or settles would be cut off).
    pub request_timeout_ms: u64,
    /// The upstream facilitator.
    pub upstream: UpstreamConfig,
    /// Chains keyed by CAIP-2 id, e.g. `[chains."eip155:84532"]`.
    pub chains: BTreeMap<String, ChainConfig>,
    /// How often unknown settlement outcomes are resolved from the chain, in seconds.
    pub reconcile_interval_secs: u64,
    /// Spending policy (`[policy]`); empty checks nothing.
    pub policy: PolicyConfig,
    /// Risk scoring (`[risk]`): rule directory, thresholds, reloading.
    pub risk: crate::risk::RiskConfig,
    /// Operations (`[ops]`): metrics listener, shutdown drain, readiness probes.
    #[serde(default)]
    pub ops: crate::metrics::OpsConfig,
    /// Evidence signing key, dispute limits and retention (`[evidence]`).
    pub evidence: crate::evidence::config::EvidenceConfig,
    /// A file holding the policy instead of `[policy]` (TOML, or YAML by extension),
    /// hot-reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_file: Option<PathBuf>,
    /// How often `policy_file` is checked for changes, in seconds.
    pub policy_reload_secs: u64,
    /// Webhooks (`[[webhooks]]`) for policy and review events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<crate::webhook::WebhookConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:4020".to_owned(),
            database_url: Secret("sqlite://gatehouse.db".to_owned()),
            admin: crate::admin::AdminConfig::default(),
            log_format: LogFormat::Text,
            max_body_bytes: 256 * 1024,
            request_timeout_ms: 240_000,
            upstream: UpstreamConfig::default(),
            chains: BTreeMap::new(),
            reconcile_interval_secs: 15,
            policy: PolicyConfig::default(),
            risk: crate::risk::RiskConfig::default(),
            ops: crate::metrics::OpsConfig::default(),
            evidence: crate::evidence::config::EvidenceConfig::default(),
            policy_file: None,
            policy_reload_secs: 2,
            webhooks: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A string that must not be printed (tokens, database URLs with passwords).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret value; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// A printable form: URLs keep scheme and host, everything else is masked.
    pub fn masked(&self) -> String {
        match self.0.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
                if rest.contains('@') {
                    format!("{scheme}://***@{host}")
                } else {
                    self.0.clone()
                }
            }
            None => "***".to_owned(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

/// One problem with the configuration, naming the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `upstream.url`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

/// Loading or validating failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The sources could not be read or did not fit the schema (figment names the key).
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// The values are invalid.
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl Config {
    /// Loads defaults < the TOML file (if given, or `gatehouse.toml` if present) < environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::figment(path, Env::prefixed("GATEHOUSE_"))
    }

    /// Loads from explicit sources; tests pass their own environment provider.
    pub fn figment(path: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        // The default's masked database URL must not leak into the effective config.
        figment = figment.merge(Serialized::default(
            "database_url",
            Config::default().database_url.expose(),
        ));
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError::Invalid(vec![ConfigProblem {
                        key: "--config".into(),
                        message: format!("file {} does not exist", p.display()),
                    }]));
                }
                figment = figment.merge(Toml::file_exact(p));
            }
            None if Path::new("gatehouse.toml").exists() => {
                figment = figment.merge(Toml::file_exact("gatehouse.toml"));
            }
            None => {}
        }
        // Only variables naming a real key are configuration: others sharing the prefix
        // (GATEHOUSE_CONFIG for the CLI, GATEHOUSE_TEST_* for tests, and the
        // GATEHOUSE_SERVICE_HOST / GATEHOUSE_PORT_* that Kubernetes injects for a Service named
        // gatehouse) must not stop startup as unknown keys.
        let sections = top_level_keys();
        let env = env.filter_map(move |k| {
            let lower = k.as_str().to_ascii_lowercase();
            let mapped = FLAT_ENV_KEYS
                .iter()
                .find(|(flat, _)| *flat == lower)
                .map(|(_, nested)| (*nested).to_owned())
                .unwrap_or_else(|| lower.replace("__", "."));
            let section = mapped.split('.').next().unwrap_or_default();
            sections.contains(section).then(|| mapped.into())
        });
        figment = figment.merge(env);
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// Every problem with the values, or none.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                message,
            })
        };
        if self.listen.parse::<SocketAddr>().is_err() {
            problem(
                "listen",
                format!("`{}` is not an IP:port address", self.listen),
            );
        }
        let db = self.database_url.expose();
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            problem(
                "database_url",
                "must start with sqlite:, postgres:// or postgresql://".into(),
            );
        }
        if !is_http_url(&self.upstream.url) {
            problem(
                "upstream.url",
                format!("`{}` is not an http(s) URL", self.upstream.url),
            );
        }
        for (key, message) in self.ops.problems() {
            problem(&key, message);
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 16 * 1024 * 1024 {
            problem("max_body_bytes", "must be between 1024 and 16777216".into());
        }
        if self.request_timeout_ms <= self.upstream.settle_timeout_ms {
            problem(
                "request_timeout_ms",
                format!(
                    "must exceed upstream.settle_timeout_ms ({}), or settles would be cut off",
                    self.upstream.settle_timeout_ms
                ),
            );
        }
        for (name, value) in [
            (
                "upstream.verify_timeout_ms",
                self.upstream.verify_timeout_ms,
            ),
            (
                "upstream.settle_timeout_ms",
                self.upstream.settle_timeout_ms,
            ),
            (
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            ),
        ] {
            if value == 0 {
                problem(name, "must be greater than 0".into());
            }
        }
        for (id, chain) in &self.chains {
            if id.parse::<Caip2>().is_err() {
                problem(
                    &format!("chains.\"{id}\""),
                    "is not a CAIP-2 chain id such as eip155:8453".into(),
                );
            }
            if chain.settlement == SettlementMode::Local {
                let key = format!("chains.\"{id}\"");
                if !id.starts_with("eip155:") && !id.starts_with("solana:") {
                    problem(
                        &format!("{key}.settlement"),
                        "local settlement is only available on eip155 and solana chains".into(),
                    );
                }
                if id.starts_with("solana:") && !chain.fee_payers.is_empty() {
                    problem(
                        &format!("{key}.fee_payers"),
                        "not used with local settlement: the only fee payer is the signer key"
                            .into(),
                    );
                }
                if !chain.onchain_checks || chain.rpc_urls.is_empty() {
                    problem(
                        &format!("{key}.settlement"),
                        "local settlement needs onchain_checks = true and rpc_urls".into(),
                    );
                }
                match (&chain.signer_key_env, &chain.signer_key_file) {
                    (Some(_), Some(_)) => problem(
                        &format!("{key}.signer_key_env"),
                        "set signer_key_env or signer_key_file, not both".into(),
                    ),
                    (None, None) => problem(
                        &format!("{key}.signer_key_env"),
                        "local settlement needs signer_key_env or signer_key_file".into(),
                    ),
                    _ => {}
                }
                let receipt_ms = chain
                    .settle_receipt_timeout_secs
                    .unwrap_or(crate::chain::DEFAULT_RECEIPT_TIMEOUT_SECS)
                    .saturating_mul(1_000);
                if self.request_timeout_ms <= receipt_ms {
                    problem(
                        &format!("{key}.settle_receipt_timeout_secs"),
                        format!(
                            "must be below request_timeout_ms ({} ms), or local settles would be cut off",
                            self.request_timeout_ms
                        ),
                    );
                }
            }
            for (i, url) in chain.rpc_urls.iter().enumerate() {
                if !is_http_url(url) {
                    problem(
                        &format!("chains.\"{id}\".rpc_urls[{i}]"),
                        format!("`{url}` is not an http(s) URL"),
                    );
                }
            }
        }
        if self.reconcile_interval_secs == 0 {
            problem("reconcile_interval_secs", "must be greater than 0".into());
        }
        if self.policy_file.is_some() && !self.policy.is_empty() {
            problem(
                "policy_file",
                "set [policy] or policy_file, not both".into(),
            );
        }
        if self.policy_reload_secs == 0 {
            problem("policy_reload_secs", "must be greater than 0".into());
        }
        problems.extend(self.policy.problems());
        problems.extend(crate::webhook::problems(&self.webhooks));
        problems.extend(self.admin.problems());
        problems.extend(self.risk.problems());
        problems.extend(self.evidence.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The listen address (valid after `validate`).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::Invalid(vec![ConfigProblem {
                key: "listen".into(),
                message: format!("`{}` is not an IP:port address", self.listen),
            }])
        })
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not render: {e}"))
    }
}

/// The top-level keys of [`Config`], from its serialised default (so the list cannot drift).
fn top_level_keys() -> std::collections::BTreeSet<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => std::collections::BTreeSet::new(),
    }
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"));
    matches!(rest, Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// An environment provider that sees nothing: tests that don't exercise the environment
    /// must not depend on the process's.
    fn no_env() -> Env {
        Env::prefixed("GATEHOUSE_NOT_SET_IN_ANY_TEST_")
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn flat_and_nested_environment_variables_override_the_file() {
        // figment's Jail serialises environment changes, so this cannot race other tests.
        figment::Jail::expect_with(|jail| {
            jail.create_file("g.toml", "listen = \"127.0.0.1:5000\"\n")?;
            jail.set_env("GATEHOUSE_LISTEN", "127.0.0.1:6000");
            jail.set_env("GATEHOUSE_DATABASE_URL", "postgres://db/g");
            jail.set_env("GATEHOUSE_UPSTREAM_URL", "http://127.0.0.1:7/f");
            jail.set_env("GATEHOUSE_RULES_DIR", "/etc/rules");
            jail.set_env("GATEHOUSE_UPSTREAM__SETTLE_TIMEOUT_MS", "200000");
            jail.set_env("GATEHOUSE_TEST_PG_URL", "ignored");
            jail.set_env("GATEHOUSE_CONFIG", "ignored-by-figment.toml");
            jail.set_env("GATEHOUSE_SERVICE_HOST", "10.0.0.1");
            jail.set_env("GATEHOUSE_PORT", "tcp://10.0.0.1:4020");
            let c = Config::figment(Some(Path::new("g.toml")), Env::prefixed("GATEHOUSE_"))
                .map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:6000");
            assert_eq!(c.database_url.expose(), "postgres://db/g");
            assert_eq!(c.upstream.url, "http://127.0.0.1:7/f");
            assert_eq!(c.risk.rules_dir, PathBuf::from("/etc/rules"));
            assert_eq!(c.upstream.settle_timeout_ms, 200_000);
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid_and_laptop_friendly() {
        let c = Config::figment(None, no_env()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:4020");
        assert_eq!(c.database_url.expose(), "sqlite://gatehouse.db");
        assert_eq!(c.upstream.url, "https://x402.org/facilitator");
    }

    #[test]
    fn documented_file_keys_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            r#"
listen = "127.0.0.1:5000"
database_url = "sqlite://x.db"
[upstream]
url = "http://127.0.0.1:9/facilitator"
[chains."eip155:84532"]
rpc_urls = ["http://127.0.0.1:8545"]
[risk]
rules_dir = "rules"
review_at = 30
deny_at = 60
reload_secs = 5
"#,
        )
        .unwrap();
        let c = Config::figment(Some(&path), no_env()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:5000");
        assert_eq!(c.risk.rules_dir, PathBuf::from("rules"));
        assert_eq!(c.risk.thresholds().review_at, 30);
        assert_eq!(c.risk.reload_secs, 5);
        assert_eq!(c.upstream.url, "http://127.0.0.1:9/facilitator");
        assert_eq!(c.chains["eip155:84532"].rpc_urls, ["http://127.0.0.1:8545"]);
    }

    #[test]
    fn local_settlement_needs_one_key_source_and_a_short_enough_receipt_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            concat!(
                "request_timeout_ms = 10000\n",
                "[upstream]\nsettle_timeout_ms = 5000\n",
                "[chains.\"eip155:8453\"]\nrpc_urls = [\"http://rpc\"]\nsettlement = \"local\"\n",
                "[chains.\"eip155:84532\"]\nrpc_urls = [\"http://rpc\"]\nsettlement = \"local\"\n",
                "signer_key_env = \"K\"\nsigner_key_file = \"/k\"\nsettle_receipt_timeout_secs = 5\n",
                "[chains.\"eip155:1\"]\nrpc_urls = [\"http://rpc\"]\nsettlement = \"local\"\n",
                "signer_key_env = \"K\"\nsettle_receipt_timeout_secs = 5\n",
            ),
        )
        .unwrap();
        let Err(ConfigError::Invalid(problems)) = Config::figment(Some(&path), no_env()) else {
            panic!("expected invalid");
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "chains.\"eip155:8453\".signer_key_env",
                "chains.\"eip155:8453\".settle_receipt_timeout_secs",
                "chains.\"eip155:84532\".signer_key_env",
            ],
            "{problems:?}"
        );
    }

    #[test]
    fn invalid_values_name_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(
            &path,
            "listen = \"nowhere\"\n[upstream]\nurl = \"ftp://x\"\n[chains.\"base\"]\nrpc_urls = [\"localhost\"]\n",
        )
        .unwrap();
        let Err(ConfigError::Invalid(problems)) = Config::figment(Some(&path), no_env()) else {
            panic!("expected invalid");
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"listen"), "{keys:?}");
        assert!(keys.contains(&"upstream.url"), "{keys:?}");
        assert!(keys.contains(&"chains.\"base\""), "{keys:?}");
        assert!(keys.contains(&"chains.\"base\".rpc_urls[0]"), "{keys:?}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        std::fs::write(&path, "[upstream]\nverify_timeout_ms = \"soon\"\n").unwrap();
        let err = Config::figment(Some(&path), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify_timeout_ms"), "{err}");
        std::fs::write(&path, "listne = \"127.0.0.1:1\"\n").unwrap();
        let err = Config::figment(Some(&path), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn secrets_are_masked_when_printed() {
        let c = Config {
            database_url: Secret("postgres://u:hunter2@db:5432/g".into()),
            ..Config::default()
        };
        let shown = c.to_masked_toml() + &format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-123"),
            "{shown}"
        );
        assert!(shown.contains("postgres://***@db:5432/g"), "{shown}");
    }
}
