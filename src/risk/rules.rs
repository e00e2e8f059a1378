//! STAND-IN (riskapi branch only, replaced by the rules helper's engine on merge): the smallest
//! rule set that can score: YAML files of `{id, description, condition, weight | action, mode}`.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::context::RiskContext;
use super::{Assessment, Contribution, Decision, RiskLevel, RuleMode};

/// Score thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Review at or above.
    pub review_at: u32,
    /// Deny at or above.
    pub deny_at: u32,
}

/// A rule file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct RuleError {
    /// The file.
    pub file: String,
    /// Why.
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct RuleFile {
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
struct RuleSpec {
    id: String,
    #[serde(default)]
    description: String,
    condition: String,
    #[serde(default)]
    weight: u32,
    #[serde(default)]
    action: Option<Decision>,
    #[serde(default)]
    mode: RuleMode,
}

struct Rule {
    spec: RuleSpec,
    program: cel::Program,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec.id)
    }
}

/// A compiled rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    id: String,
}

impl RuleSet {
    /// Loads every `*.yaml` file of `dir`; a missing directory is an empty set.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
        let mut rules = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(RuleSet::default());
        };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                continue;
            }
            let err = |message: String| RuleError {
                file: path.display().to_string(),
                message,
            };
            let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
            let file: RuleFile = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
            for spec in file.rules {
                let program = cel::Program::compile(&spec.condition)
                    .map_err(|e| err(format!("{}: {e}", spec.id)))?;
                rules.push(Rule { spec, program });
            }
        }
        let id = format!("standin:{}", rules.len());
        Ok(RuleSet { rules, id })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rules are loaded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Scores `ctx`.
    pub fn evaluate(&self, ctx: &RiskContext, t: &Thresholds) -> Assessment {
        let mut cel_ctx = cel::Context::default();
        if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(ctx) {
            for (k, v) in map {
                if let Ok(v) = cel::to_value(v) {
                    cel_ctx.add_variable_from_value(k, v);
                }
            }
        }
        let mut score = 0u32;
        let mut hard = Decision::Allow;
        let mut reasons = Vec::new();
        let mut contributions = Vec::new();
        for rule in &self.rules {
            let (fired, error) = match rule.program.execute(&cel_ctx) {
                Ok(cel::Value::Bool(b)) => (b, None),
                Ok(other) => (false, Some(format!("not a boolean: {other:?}"))),
                Err(e) => (false, Some(e.to_string())),
            };
            let enforce = rule.spec.mode == RuleMode::Enforce;
            if enforce && fired {
                score = score.saturating_add(rule.spec.weight);
                if let Some(a) = rule.spec.action {
                    hard = hard.max(a);
                }
                reasons.push(format!("{}: {}", rule.spec.id, rule.spec.description));
            }
            if enforce && error.is_some() {
                hard = hard.max(Decision::Review);
                reasons.push(format!("{}: rule_error", rule.spec.id));
            }
            contributions.push(Contribution {
                rule: rule.spec.id.clone(),
                fired,
                weight: rule.spec.weight,
                action: rule.spec.action,
                mode: rule.spec.mode,
                description: rule.spec.description.clone(),
                error,
            });
        }
        let score = score.min(100);
        let by_score = if score >= t.deny_at {
            Decision::Deny
        } else if score >= t.review_at {
            Decision::Review
        } else {
            Decision::Allow
        };
        let decision = by_score.max(hard);
        let level = match decision {
            Decision::Deny => RiskLevel::High,
            Decision::Review => RiskLevel::Medium,
            Decision::Allow => RiskLevel::Low,
        };
        Assessment {
            decision,
            level,
            score,
            shadow_decision: decision,
            reasons,
            contributions,
            rule_set: self.id.clone(),
        }
    }
}

/// Holds the current rule set.
#[derive(Debug)]
pub struct RuleEngine {
    current: Arc<RuleSet>,
}

impl RuleEngine {
    /// Loads `dir` once (the stand-in does not reload).
    pub fn load(dir: &Path) -> Result<RuleEngine, RuleError> {
        Ok(RuleEngine {
            current: Arc::new(RuleSet::load_dir(dir)?),
        })
    }

    /// The rule set in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.clone()
    }
}
