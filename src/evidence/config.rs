//! The `[evidence]` configuration section.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

/// The `[evidence]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceConfig {
    /// The ed25519 signing key (64 hex digits), generated there when missing. Unset: next to
    /// the SQLite database file (`<db>.evidence.key`); with PostgreSQL or an in-memory
    /// database an unset key is ephemeral (a warning says so), so replicas sharing a database
    /// should point this at one shared key.
    pub signing_key_file: Option<PathBuf>,
    /// Largest file attached to a dispute statement, bytes (the request body limit,
    /// `max_body_bytes`, also applies).
    pub max_file_bytes: usize,
    /// Most files per statement.
    pub max_files_per_statement: usize,
    /// Longest dispute reason or statement text, bytes.
    pub max_text_bytes: usize,
    /// How often the retention job runs, seconds (0: never; `gatehouse evidence prune` still
    /// works).
    pub prune_interval_secs: u64,
    /// Retention windows in days, by record kind (`verify = 30`, `"dispute.opened" = 3650`);
    /// the key `default` applies to every kind not listed. A kind with no window (and no
    /// `default`) is kept forever.
    pub retention: BTreeMap<String, u32>,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            signing_key_file: None,
            max_file_bytes: 131_072,
            max_files_per_statement: 8,
            max_text_bytes: 16_384,
            prune_interval_secs: 3_600,
            retention: BTreeMap::new(),
        }
    }
}

impl EvidenceConfig {
    /// Every problem with the section, naming the key.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |key: String, message: &str| {
            out.push(ConfigProblem {
                key,
                message: message.to_owned(),
            })
        };
        if self.max_file_bytes == 0 || self.max_file_bytes > 16 * 1024 * 1024 {
            problem(
                "evidence.max_file_bytes".into(),
                "must be between 1 and 16777216",
            );
        }
        if self.max_files_per_statement > 64 {
            problem(
                "evidence.max_files_per_statement".into(),
                "must be at most 64",
            );
        }
        if self.max_text_bytes == 0 || self.max_text_bytes > 1024 * 1024 {
            problem(
                "evidence.max_text_bytes".into(),
                "must be between 1 and 1048576",
            );
        }
        for (kind, days) in &self.retention {
            if *days == 0 {
                problem(
                    format!("evidence.retention.{kind}"),
                    "must be at least 1 day (omit the kind to keep it forever)",
                );
            }
        }
        out
    }

    /// The window for `kind` in days, if it is pruned at all.
    pub fn retention_days(&self, kind: &str) -> Option<u32> {
        self.retention
            .get(kind)
            .or_else(|| self.retention.get("default"))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_fall_back_to_default_and_zero_is_named() {
        let mut c = EvidenceConfig::default();
        assert_eq!(c.retention_days("verify"), None);
        c.retention.insert("default".into(), 90);
        c.retention.insert("verify".into(), 0);
        assert_eq!(c.retention_days("settle"), Some(90));
        let keys: Vec<_> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["evidence.retention.verify"]);
    }
}
