//! The `[upstream]` config section and the credential it may carry.

use serde::{Deserialize, Serialize};

/// Largest accepted request timeout. Larger values are almost certainly a unit mistake, and a
/// request that hangs longer holds a seller's buyer hostage.
const MAX_TIMEOUT_MS: u64 = 600_000;
/// Largest accepted connect timeout.
const MAX_CONNECT_TIMEOUT_MS: u64 = 60_000;
/// Longest accepted `/supported` cache lifetime (one day).
const MAX_CACHE_TTL_SECS: u64 = 86_400;
/// Longest accepted first backoff step for `/supported` retries.
const MAX_RETRY_BASE_DELAY_MS: u64 = 10_000;

/// The `[upstream]` config section: where the upstream facilitator lives and how long to wait
/// for it. Every field has a default that works on a laptop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL of the upstream facilitator; `/verify`, `/settle`, `/supported` and
    /// `/discovery/resources` are appended after trailing slashes are stripped (spec §1.1).
    /// Must be http(s), without credentials, query or fragment.
    /// Default: `https://x402.org/facilitator` (testnets only).
    pub url: String,
    /// Timeout for one `/verify` call, connect included. Default: 10 000.
    pub verify_timeout_ms: u64,
    /// Timeout for one `/settle` call. It must cover the upstream's own receipt wait (viem
    /// waits 180 s, spec §6.2), or a settlement that lands is reported as pending. Default: 180 000.
    pub settle_timeout_ms: u64,
    /// Timeout for one `/supported` or `/discovery/resources` attempt. Default: 10 000.
    pub supported_timeout_ms: u64,
    /// Timeout for opening a connection. A connect failure means the request was not sent.
    /// Default: 3 000.
    pub connect_timeout_ms: u64,
    /// How long a successful `/supported` answer is served from memory. Default: 300.
    pub supported_cache_ttl_secs: u64,
    /// First backoff step between `/supported` attempts answered 429; the second step is
    /// twice this (spec §1.5: 1 s, then 2 s). Default: 1 000.
    pub supported_retry_base_delay_ms: u64,
    /// `Authorization` header value sent to the upstream, or `$ENV_VAR` naming an environment
    /// variable that holds it. When set it replaces any incoming `Authorization`; when unset
    /// the incoming one is passed through on `/verify` and `/settle`. Never printed.
    /// Default: none.
    pub authorization: Option<Credential>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "https://x402.org/facilitator".to_owned(),
            verify_timeout_ms: 10_000,
            settle_timeout_ms: 180_000,
            supported_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            supported_cache_ttl_secs: 300,
            supported_retry_base_delay_ms: 1_000,
            authorization: None,
        }
    }
}

impl UpstreamConfig {
    /// Every problem with this section, reading `$ENV_VAR` credentials from the process
    /// environment; empty when the section is usable.
    pub fn validate(&self) -> Vec<String> {
        self.validate_with_env(&|name| std::env::var(name).ok())
    }

    /// Every problem with this section, resolving `$ENV_VAR` credentials through `env` (tests
    /// pass a map instead of mutating the process environment).
    pub fn validate_with_env(&self, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(problem) = parse_base_url(&self.url) {
            problems.push(problem);
        }
        for (name, value, max) in [
            ("verify_timeout_ms", self.verify_timeout_ms, MAX_TIMEOUT_MS),
            ("settle_timeout_ms", self.settle_timeout_ms, MAX_TIMEOUT_MS),
            (
                "supported_timeout_ms",
                self.supported_timeout_ms,
                MAX_TIMEOUT_MS,
            ),
            (
                "connect_timeout_ms",
                self.connect_timeout_ms,
                MAX_CONNECT_TIMEOUT_MS,
            ),
            (
                "supported_cache_ttl_secs",
                self.supported_cache_ttl_secs,
                MAX_CACHE_TTL_SECS,
            ),
        ] {
            if value == 0 || value > max {
                problems.push(format!(
                    "upstream.{name} must be between 1 and {max}, got {value}"
                ));
            }
        }
        if self.supported_retry_base_delay_ms > MAX_RETRY_BASE_DELAY_MS {
            problems.push(format!(
                "upstream.supported_retry_base_delay_ms must be at most {MAX_RETRY_BASE_DELAY_MS}, got {}",
                self.supported_retry_base_delay_ms
            ));
        }
        if let Some(credential) = &self.authorization
            && let Err(problem) = credential.header_value(env)
        {
            problems.push(problem);
        }
        problems
    }

    /// The base URL with trailing slashes stripped (spec §1.1).
    pub fn base_url(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

/// Parses and checks the base URL; the error names the problem (never a secret: URLs with
/// credentials are refused without echoing them).
pub(crate) fn parse_base_url(raw: &str) -> Result<reqwest::Url, String> {
    let trimmed = raw.trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed)
        .map_err(|e| format!("upstream.url is not a valid URL ({e})"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "upstream.url must be http or https, got scheme {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("upstream.url has no host".to_owned());
    }
    // Credentials in the URL would be logged with it; `authorization` is the place for them.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "upstream.url must not carry credentials; use upstream.authorization".to_owned(),
        );
    }
    // Endpoint paths are appended to the URL, so a query or fragment would swallow them.
    if url.query().is_some() || url.fragment().is_some() {
        return Err("upstream.url must not have a query or fragment".to_owned());
    }
    Ok(url)
}

/// An `Authorization` value for the upstream: either the value itself or `$ENV_VAR` naming an
/// environment variable that holds it. `Debug`, `Display` and `Serialize` never show a literal
/// value (they show `<redacted>`); an env reference is shown by name, which is not secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    /// Wraps a literal value or a `$ENV_VAR` reference.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The environment variable this credential names, if it is a `$ENV_VAR` reference.
    pub fn env_var(&self) -> Option<&str> {
        self.0.strip_prefix('$')
    }

    /// Resolves the credential to a header value marked sensitive (so HTTP tracing never
    /// prints it). The error names the problem, never the value.
    pub fn header_value(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<http::HeaderValue, String> {
        let value = match self.env_var() {
            Some(name) => {
                let valid_name = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid_name {
                    return Err(format!(
                        "upstream.authorization: {name:?} is not a valid environment variable name"
                    ));
                }
                env(name).ok_or_else(|| {
                    format!("upstream.authorization: environment variable {name} is not set")
                })?
            }
            None => self.0.clone(),
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("upstream.authorization: {self} is empty"));
        }
        let mut header = http::HeaderValue::from_str(value).map_err(|_| {
            format!(
                "upstream.authorization: {self} is not a valid header value (visible ASCII only)"
            )
        })?;
        header.set_sensitive(true);
        Ok(header)
    }

    fn masked(&self) -> &str {
        match self.env_var() {
            Some(_) => &self.0,
            None => "<redacted>",
        }
    }
}

impl From<&str> for Credential {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Credential {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Credential").field(&self.masked()).finish()
    }
}

impl std::fmt::Display for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.masked())
    }
}

impl Serialize for Credential {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Bearer s3cr3t-token";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    // Invariant: a literal credential never appears in Debug, Display or Serialize output.
    #[test]
    fn literal_credential_is_never_printed() {
        let cfg = UpstreamConfig {
            authorization: Some(Credential::from(SECRET)),
            ..UpstreamConfig::default()
        };
        let debug = format!("{cfg:?}");
        let display = format!("{}", Credential::from(SECRET));
        let json = serde_json::to_string(&cfg).unwrap_or_default();
        let toml = toml::to_string(&cfg).unwrap_or_default();
        for shown in [&debug, &display, &json, &toml] {
            assert!(!shown.contains("s3cr3t"), "secret leaked in {shown}");
        }
        assert!(debug.contains("<redacted>"));
        assert!(json.contains("<redacted>"));
    }

    #[test]
    fn env_reference_is_shown_by_name_and_resolved_through_env() {
        let cred = Credential::from("$UPSTREAM_TOKEN");
        assert_eq!(cred.to_string(), "$UPSTREAM_TOKEN");
        let env = |name: &str| (name == "UPSTREAM_TOKEN").then(|| SECRET.to_owned());
        let header = cred.header_value(&env);
        assert_eq!(header.as_ref().map(|h| h.as_bytes()), Ok(SECRET.as_bytes()));
        assert!(header.is_ok_and(|h| h.is_sensitive()));
    }

    #[test]
    fn bad_credentials_are_reported_without_their_value() {
        let missing = Credential::from("$NOT_SET").header_value(&no_env);
        assert!(missing.is_err_and(|e| e.contains("NOT_SET") && e.contains("not set")));
        let bad_name = Credential::from("$BAD-NAME").header_value(&no_env);
        assert!(bad_name.is_err_and(|e| e.contains("not a valid environment variable")));
        let empty_name = Credential::from("$").header_value(&no_env);
        assert!(empty_name.is_err());
        let blank = Credential::from("   ").header_value(&no_env);
        assert!(blank.is_err_and(|e| e.contains("empty")));
        let control = Credential::from("Bearer s3cr3t\nX-Evil: 1").header_value(&no_env);
        assert!(control.is_err_and(|e| !e.contains("s3cr3t") && e.contains("header value")));
        let env_control = |_: &str| Some("s3cr3t\r\n".to_owned() + "x: y");
        let from_env = Credential::from("$TOKEN").header_value(&env_control);
        assert!(from_env.is_err_and(|e| !e.contains("s3cr3t")));
    }

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let cfg = UpstreamConfig::default();
        assert_eq!(cfg.validate_with_env(&no_env), Vec::<String>::new());
        assert_eq!(cfg.url, "https://x402.org/facilitator");
        assert!(
            cfg.settle_timeout_ms >= 180_000,
            "settle must outwait viem's receipt wait"
        );
        assert_eq!(cfg.supported_retry_base_delay_ms, 1_000);
    }

    #[test]
    fn partial_section_takes_defaults_and_unknown_keys_are_refused() {
        let cfg: Result<UpstreamConfig, _> =
            toml::from_str("url = \"http://127.0.0.1:9000/\"\nsettle_timeout_ms = 200000\n");
        let cfg = cfg.unwrap_or_else(|e| panic!("parse failed: {e}"));
        assert_eq!(cfg.settle_timeout_ms, 200_000);
        assert_eq!(cfg.verify_timeout_ms, 10_000);
        assert_eq!(cfg.base_url(), "http://127.0.0.1:9000");
        let unknown: Result<UpstreamConfig, _> = toml::from_str("timeout = 5\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let cfg = UpstreamConfig {
            url: "ftp://example.com".to_owned(),
            verify_timeout_ms: 0,
            settle_timeout_ms: MAX_TIMEOUT_MS + 1,
            connect_timeout_ms: 0,
            supported_cache_ttl_secs: 0,
            supported_retry_base_delay_ms: MAX_RETRY_BASE_DELAY_MS + 1,
            authorization: Some(Credential::from("$MISSING")),
            ..UpstreamConfig::default()
        };
        let problems = cfg.validate_with_env(&no_env);
        assert_eq!(problems.len(), 7, "{problems:?}");
        // The boundaries themselves are accepted.
        let edge = UpstreamConfig {
            verify_timeout_ms: 1,
            settle_timeout_ms: MAX_TIMEOUT_MS,
            supported_retry_base_delay_ms: 0,
            ..UpstreamConfig::default()
        };
        assert_eq!(edge.validate_with_env(&no_env), Vec::<String>::new());
    }

    #[test]
    fn base_url_checks() {
        assert!(parse_base_url("https://x402.org/facilitator//").is_ok());
        assert!(parse_base_url("not a url").is_err());
        let with_creds = parse_base_url("https://user:hunter2@example.com");
        assert!(with_creds.is_err_and(|e| !e.contains("hunter2")));
        assert!(parse_base_url("https://example.com/f?x=1").is_err());
        assert!(parse_base_url("https://example.com/f#frag").is_err());
        assert!(parse_base_url("unix:/tmp/sock").is_err());
    }
}
