//! Hot reload of `policy_file` (TOML, or YAML for `.yaml`/`.yml`): the file holds what the
//! `[policy]` section would (top-level `global`, `endpoints`, `breaker`, ...). It is polled
//! every `policy_reload_secs`; a change (modification time, then content hash) is parsed and
//! validated, and only a valid policy replaces the one in force. A broken file is logged with
//! its reason, once per content, and the last good policy stays. Each applied reload appends a
//! `policy.reload` evidence record with the policy before and after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Policy, PolicyConfig, PolicyHandle};
use crate::clock::SharedClock;
use crate::store::{EvidenceDraft, Store};

/// Bound on the policy file's size (10,000 endpoints fit in well under this).
const POLICY_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Reads, parses and validates a policy file. The error says what is wrong, naming the key.
pub fn load_file(path: &Path) -> Result<PolicyConfig, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?
        .len();
    if size > POLICY_FILE_MAX_BYTES {
        return Err(format!(
            "{} is {size} bytes; the limit is {POLICY_FILE_MAX_BYTES}",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<PolicyConfig, String> {
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let config: PolicyConfig = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        toml::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect::<Vec<_>>()
            .join("; "));
    }
    Ok(config)
}

/// Polls the policy file and swaps the policy in force when it changes.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    handle: PolicyHandle,
    store: Arc<dyn Store>,
    clock: SharedClock,
    /// (modification time, size) last seen, to skip reading an unchanged file.
    stamp: Option<(Option<Duration>, u64)>,
    /// SHA-256 of the content last handled (applied or rejected).
    hash: Option<[u8; 32]>,
}

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file did not change.
    Unchanged,
    /// A new policy is in force.
    Applied,
    /// The file changed but is broken; the last good policy stays.
    Rejected(String),
}

impl Reloader {
    /// A reloader for `path`, whose current content is already in force in `handle`.
    pub fn new(
        path: PathBuf,
        handle: PolicyHandle,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Self {
        let mut reloader = Self {
            path,
            handle,
            store,
            clock,
            stamp: None,
            hash: None,
        };
        reloader.stamp = reloader.stamp_now();
        reloader.hash = std::fs::read(&reloader.path)
            .ok()
            .map(|bytes| Sha256::digest(&bytes).into());
        reloader
    }

    fn stamp_now(&self) -> Option<(Option<Duration>, u64)> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok());
        Some((modified, meta.len()))
    }

    /// Polls forever, every `every`.
    pub fn spawn(mut self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                self.poll().await;
            }
        })
    }

    /// One poll: reload if the file changed.
    pub async fn poll(&mut self) -> ReloadOutcome {
        let stamp = self.stamp_now();
        if stamp.is_some() && stamp == self.stamp {
            return ReloadOutcome::Unchanged;
        }
        self.stamp = stamp;
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) => {
                let reason = format!("cannot read {}: {}", self.path.display(), error.kind());
                return self.reject(None, reason);
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if self.hash == Some(hash) {
            return ReloadOutcome::Unchanged;
        }
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{} is not UTF-8", self.path.display()))
            .and_then(|text| parse(&self.path, text));
        let config = match parsed {
            Ok(config) => config,
            Err(reason) => return self.reject(Some(hash), reason),
        };
        self.hash = Some(hash);
        let before = self.handle.current();
        if *before.config() == config {
            return ReloadOutcome::Unchanged;
        }
        let now_ms = self.clock.now_ms();
        // Evidence first: a change that cannot be recorded is not applied (fail closed).
        let recorded = self
            .store
            .append_evidence(EvidenceDraft {
                kind: "policy.reload".into(),
                gate: None,
                fingerprint: None,
                decision: "applied".into(),
                request_id: format!("policy-reload-{now_ms}"),
                created_at_ms: now_ms,
                body: json!({
                    "file": self.path.display().to_string(),
                    "sha256": hex::encode(hash),
                    "before": before.config(),
                    "after": &config,
                }),
            })
            .await;
        if let Err(error) = recorded {
            // Forget the hash so the next poll tries again.
            self.hash = None;
            self.stamp = None;
            let reason = format!("the reload could not be recorded as evidence: {error}");
            tracing::error!(file = %self.path.display(), %error, "Policy reload not applied.");
            return ReloadOutcome::Rejected(reason);
        }
        self.handle.replace(Policy::new(config));
        tracing::info!(file = %self.path.display(), sha256 = %hex::encode(hash), "Policy reloaded.");
        ReloadOutcome::Applied
    }

    fn reject(&mut self, hash: Option<[u8; 32]>, reason: String) -> ReloadOutcome {
        // Remember the broken content, so it is logged once, not on every poll.
        if hash.is_some() {
            self.hash = hash;
        }
        tracing::error!(file = %self.path.display(), error = %reason, "Policy file rejected; the last good policy stays.");
        ReloadOutcome::Rejected(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_and_yaml_parse_to_the_same_policy() {
        let toml = "[global]\ndaily_cap = \"100\"\n\n[[endpoints]]\nhost = \"a.example\"\nmax_per_request = \"5\"\n";
        let yaml = "global:\n  daily_cap: \"100\"\nendpoints:\n  - host: a.example\n    max_per_request: \"5\"\n";
        let a = parse(Path::new("p.toml"), toml).unwrap();
        let b = parse(Path::new("p.yaml"), yaml).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.global.daily_cap, Some(super::super::Atomic(100)));
    }

    #[test]
    fn broken_files_name_the_problem() {
        let err = parse(Path::new("p.toml"), "[global]\nnope = 1\n").unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let err = parse(
            Path::new("p.toml"),
            "[[endpoints]]\nmax_per_request = \"5\"\n",
        )
        .unwrap_err();
        assert!(err.contains("policy.endpoints[0].host"), "{err}");
    }
}
