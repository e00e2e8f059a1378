//! The `[risk]` configuration section: where the rules live, the score thresholds that turn a
//! score into a decision, and how often the rule directory is polled for changes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

use super::rules::Thresholds;

/// `[risk]`: rule directory, thresholds and hot reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Directory of risk rules (`*.yaml` / `*.yml`, CEL conditions). Also `GATEHOUSE_RULES_DIR`.
    pub rules_dir: PathBuf,
    /// A score at or above this is held for review (0–100).
    pub review_at: u32,
    /// A score at or above this is denied (0–100, at least `review_at`).
    pub deny_at: u32,
    /// How often the rule directory is checked for changes, in seconds (0: never reload).
    pub reload_secs: u64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        let thresholds = Thresholds::default();
        Self {
            rules_dir: PathBuf::from("risk-rules"),
            review_at: thresholds.review_at,
            deny_at: thresholds.deny_at,
            reload_secs: 2,
        }
    }
}

impl RiskConfig {
    /// The score thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            review_at: self.review_at,
            deny_at: self.deny_at,
        }
    }

    /// Every problem with the section, naming keys (`risk.*`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(message) = self.thresholds().validate() {
            problems.push(ConfigProblem {
                key: "risk.review_at".into(),
                message,
            });
        }
        if self.rules_dir.as_os_str().is_empty() {
            problems.push(ConfigProblem {
                key: "risk.rules_dir".into(),
                message: "must name a directory".into(),
            });
        }
        if self.reload_secs > 86_400 {
            problems.push(ConfigProblem {
                key: "risk.reload_secs".into(),
                message: "must be at most 86400 (0 disables reloading)".into(),
            });
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_thresholds_must_be_ordered() {
        assert!(RiskConfig::default().problems().is_empty());
        let bad = RiskConfig {
            review_at: 80,
            deny_at: 70,
            ..RiskConfig::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "risk.review_at");
        let over = RiskConfig {
            deny_at: 101,
            ..RiskConfig::default()
        };
        assert_eq!(over.problems().len(), 1);
    }
}
