//! Rule sets: YAML files of CEL rules, compiled once at load and evaluated over the JSON form
//! of a [`RiskContext`]. This module owns the rule format, loading (with file/line errors),
//! scoring and the rules' own examples; it does no I/O beyond reading the rule directory and
//! knows nothing of sessions, traces or the store (the payment path builds the context).
//!
//! Scoring: the score is the sum of the weights of the enforce rules that fired, capped at 100;
//! the [`Thresholds`] turn it into allow / review / deny, and a fired hard action (`review`,
//! `deny`) raises the decision to at least that action. **A condition that cannot be evaluated
//! (a missing field, a type error, a non-boolean result) fails closed**: it counts as fired with
//! an error, adds no points and forces at least `review`. Writing null-safe conditions
//! (`session != null && …`, `'ref' in payment.query`) is the rule author's job; loading probes
//! each condition on a context with and without the optional parts and rejects one that fails.
//! Shadow rules are evaluated the same way but only feed `shadow_decision`: the decision the set
//! would have made with the shadow rules enforced.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use cel::common::value::Val;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::{
    EndpointFacts, HistoryFacts, MandateFacts, PaymentFacts, RiskContext, SessionFacts, TraceEvent,
    TraceFacts,
};
use super::{Assessment, Contribution, Decision, RiskLevel, RuleMode};

/// At most this many rule files in a directory.
pub const MAX_RULE_FILES: usize = 256;
/// At most this many bytes in one rule file.
pub const MAX_RULE_FILE_BYTES: u64 = 1024 * 1024;
/// At most this many rules in a set.
pub const MAX_RULES: usize = 2_000;
/// At most this many bytes in one condition.
pub const MAX_CONDITION_BYTES: usize = 8 * 1024;
/// JSON nested deeper than this is seen by rules as `null` (trace data is buyer-supplied).
pub const MAX_VALUE_DEPTH: usize = 32;

/// The CEL variables rules see: the top-level fields of [`RiskContext`].
pub const VARIABLES: [&str; 6] = [
    "payment", "session", "trace", "mandate", "history", "endpoint",
];

/// Score thresholds (`[risk] review_at / deny_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// A score at or above this is held for review.
    pub review_at: u32,
    /// A score at or above this is denied.
    pub deny_at: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            review_at: 40,
            deny_at: 70,
        }
    }
}

impl Thresholds {
    /// Checks `review_at <= deny_at <= 100`.
    pub fn validate(&self) -> Result<(), String> {
        if self.deny_at > 100 || self.review_at > self.deny_at {
            return Err(format!(
                "thresholds must satisfy review_at <= deny_at <= 100 (got review_at = {}, deny_at = {})",
                self.review_at, self.deny_at
            ));
        }
        Ok(())
    }

    /// The decision a score alone leads to.
    pub fn decide(&self, score: u32) -> Decision {
        if score >= self.deny_at {
            Decision::Deny
        } else if score >= self.review_at {
            Decision::Review
        } else {
            Decision::Allow
        }
    }
}

/// A hard action a rule imposes when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// Hold for an operator.
    Review,
    /// Refuse.
    Deny,
}

impl From<RuleAction> for Decision {
    fn from(action: RuleAction) -> Self {
        match action {
            RuleAction::Review => Decision::Review,
            RuleAction::Deny => Decision::Deny,
        }
    }
}

/// What a fired rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Adds points to the score.
    Weight(u32),
    /// Imposes at least this decision.
    Action(RuleAction),
}

/// A rule's own examples: partial contexts (merged over [`example_base`]) on which it must fire
/// and must stay quiet. Stored normalised (round-tripped through [`RiskContext`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Examples {
    /// Contexts on which the rule must fire.
    pub fire: Vec<Value>,
    /// Contexts on which the rule must not fire.
    pub quiet: Vec<Value>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Unique id within the set.
    pub id: String,
    /// The human explanation (becomes the reason).
    pub description: String,
    /// The CEL source.
    pub condition: String,
    /// Weight or hard action.
    pub effect: Effect,
    /// Enforce or shadow.
    pub mode: RuleMode,
    /// The file it came from.
    pub file: PathBuf,
    /// The line of its `id` (1-based).
    pub line: usize,
    /// Its examples.
    pub examples: Examples,
    program: cel::Program,
}

/// One problem with a rule file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleProblem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong (naming the rule when there is one).
    pub reason: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

/// Loading a rule set failed.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The directory could not be listed.
    #[error("{}: cannot read the rule directory: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One or more files are broken; nothing from the directory was loaded.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<RuleProblem>),
}

impl RuleError {
    /// The located problems (one for a directory error).
    pub fn problems(&self) -> Vec<RuleProblem> {
        match self {
            RuleError::Dir { dir, source } => vec![RuleProblem {
                file: dir.clone(),
                line: None,
                reason: format!("cannot read the rule directory: {source}"),
            }],
            RuleError::Invalid(problems) => problems.clone(),
        }
    }
}

/// A rule as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    description: String,
    condition: String,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    action: Option<RuleAction>,
    #[serde(default)]
    mode: RuleMode,
    #[serde(default)]
    examples: ExamplesSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExamplesSpec {
    #[serde(default)]
    fire: Vec<Value>,
    #[serde(default)]
    quiet: Vec<Value>,
}

/// The result of running one rule's condition.
type Outcome = Result<bool, String>;

/// A compiled, immutable set of rules.
pub struct RuleSet {
    id: String,
    rules: Vec<Rule>,
    env: Arc<cel::Env>,
    /// Whether any condition mentions `events`: when none does, the trace's event list is
    /// left out of the CEL values (converting 200 events costs more than the rules).
    uses_events: bool,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("id", &self.id)
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// The rule files of a directory (`*.yaml`, `*.yml`, sorted by name) and their contents.
pub(crate) fn read_rule_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, RuleError> {
    let dir_error = |source| RuleError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        let is_rule_file = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_rule_file && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut problems = Vec::new();
    if paths.is_empty() {
        problems.push(RuleProblem {
            file: dir.to_path_buf(),
            line: None,
            reason: "no rule files (*.yaml, *.yml) in the directory".into(),
        });
    }
    if paths.len() > MAX_RULE_FILES {
        problems.push(RuleProblem {
            file: dir.to_path_buf(),
            line: None,
            reason: format!("more than {MAX_RULE_FILES} rule files"),
        });
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let read = std::fs::metadata(&path).and_then(|m| {
            if m.len() > MAX_RULE_FILE_BYTES {
                Err(std::io::Error::other(format!(
                    "larger than {MAX_RULE_FILE_BYTES} bytes"
                )))
            } else {
                std::fs::read_to_string(&path)
            }
        });
        match read {
            Ok(text) => files.push((path, text)),
            Err(error) => problems.push(RuleProblem {
                file: path,
                line: None,
                reason: format!("cannot read: {error}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(files)
    } else {
        Err(RuleError::Invalid(problems))
    }
}

/// The content hash naming a set of rule files (names and contents).
pub(crate) fn content_hash(files: &[(PathBuf, String)]) -> String {
    let mut hasher = Sha256::new();
    for (path, text) in files {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        hasher.update(name.unwrap_or_default().as_bytes());
        hasher.update([0]);
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    let digest = hasher.finalize();
    format!("rules-{}", hex::encode(&digest[..8]))
}

/// The CEL environment rules compile and run in: the standard library plus the `strings`
/// (`lowerAscii`, `split`, …), `lists` and `math` extensions.
fn cel_env() -> Result<cel::Env, String> {
    let mut env = cel::Env::stdlib();
    env.add_extension(cel::extensions::strings)
        .and_then(|()| env.add_extension(cel::extensions::lists))
        .and_then(|()| env.add_extension(cel::extensions::math))
        .and_then(|()| cel::add_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>, id = "matches"))
        .and_then(|()| cel::add_member_overload!(env, fn matches: (CelString, CelString) -> Result<CelBool>))
        .map_err(|e| e.to_string())?;
    Ok(env)
}

/// Most distinct patterns [`matches`] keeps compiled; past that the cache starts over.
const REGEX_CACHE_MAX: usize = 256;

/// CEL's `matches`, with each pattern compiled once. The cel crate's own (its `regex`
/// feature, off here) compiles the pattern on every call, which was a fifth of the cost of
/// scoring a payment with the shipped rules.
fn matches(text: &CelString<'_>, pattern: &CelString<'_>) -> Result<CelBool, cel::ExecutionError> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Arc<regex::Regex>>>> =
        std::sync::LazyLock::new(Default::default);
    let pattern = pattern.inner();
    let cached = {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(pattern).cloned()
    };
    let compiled = match cached {
        Some(compiled) => compiled,
        None => {
            let compiled = regex::Regex::new(pattern).map(Arc::new).map_err(|error| {
                cel::ExecutionError::FunctionError {
                    function: "matches".to_owned(),
                    message: format!("'{pattern}' not a valid regex:\n{error}"),
                }
            })?;
            let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= REGEX_CACHE_MAX {
                cache.clear();
            }
            cache.insert(pattern.to_owned(), Arc::clone(&compiled));
            compiled
        }
    };
    Ok(CelBool::from(compiled.is_match(text.inner())))
}

impl RuleSet {
    /// Loads and compiles every rule file in `dir`; any problem in any file rejects the whole
    /// set, with every problem located (file, line, reason).
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RuleError> {
        let files = read_rule_files(dir)?;
        Self::from_files(&files)
    }

    /// Compiles rule files already read (name, contents).
    pub(crate) fn from_files(files: &[(PathBuf, String)]) -> Result<RuleSet, RuleError> {
        let env = match cel_env() {
            Ok(env) => Arc::new(env),
            Err(reason) => {
                return Err(RuleError::Invalid(vec![RuleProblem {
                    file: PathBuf::from("<cel>"),
                    line: None,
                    reason,
                }]));
            }
        };
        let mut problems = Vec::new();
        let mut rules: Vec<Rule> = Vec::new();
        for (path, text) in files {
            parse_file(&env, path, text, &mut rules, &mut problems);
        }
        let mut seen: HashMap<&str, (&Path, usize)> = HashMap::new();
        for rule in &rules {
            if let Some((file, line)) = seen.insert(&rule.id, (&rule.file, rule.line)) {
                problems.push(RuleProblem {
                    file: rule.file.clone(),
                    line: Some(rule.line),
                    reason: format!(
                        "rule `{}`: duplicate id (first defined at {}:{line})",
                        rule.id,
                        file.display()
                    ),
                });
            }
        }
        if rules.len() > MAX_RULES {
            problems.push(RuleProblem {
                file: files
                    .first()
                    .map(|(p, _)| p.clone())
                    .unwrap_or_else(|| PathBuf::from(".")),
                line: None,
                reason: format!("more than {MAX_RULES} rules in the set"),
            });
        }
        if !problems.is_empty() {
            return Err(RuleError::Invalid(problems));
        }
        let uses_events = rules.iter().any(|r| r.condition.contains("events"));
        let set = RuleSet {
            id: content_hash(files),
            rules,
            env,
            uses_events,
        };
        set.probe()?;
        Ok(set)
    }

    /// Rejects conditions that fail on ordinary contexts (a misspelt field, a missing null
    /// check): at run time such a rule would hold every payment for review.
    fn probe(&self) -> Result<(), RuleError> {
        let bare = example_base();
        let full =
            match merge_example(&serde_json::json!({"session": {}, "trace": {}, "mandate": {}})) {
                Ok(value) => value,
                Err(reason) => {
                    return Err(RuleError::Invalid(vec![RuleProblem {
                        file: PathBuf::from("<probe>"),
                        line: None,
                        reason,
                    }]));
                }
            };
        let mut problems = Vec::new();
        for (probe, what) in [
            (&bare, "a context without session, trace and mandate"),
            (&full, "a context with default session, trace and mandate"),
        ] {
            let outcomes = self.run_conditions(probe);
            for (rule, outcome) in self.rules.iter().zip(outcomes) {
                if let Err(error) = outcome {
                    problems.push(RuleProblem {
                        file: rule.file.clone(),
                        line: Some(rule.line),
                        reason: format!(
                            "rule `{}`: condition fails on {what} ({error}); guard optional parts with `!= null` / `has()` / `in`",
                            rule.id
                        ),
                    });
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RuleError::Invalid(problems))
        }
    }

    /// The set's content hash (changes whenever a file name or content changes).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Scores a context.
    pub fn evaluate(&self, ctx: &RiskContext, thresholds: &Thresholds) -> Assessment {
        // Serialising 200 events costs more than every rule together; skip them when no
        // condition reads them (the derived event facts stay).
        let slim;
        let ctx = match &ctx.trace {
            Some(trace) if !self.uses_events && !trace.events.is_empty() => {
                slim = RiskContext {
                    trace: Some(trace.without_events()),
                    payment: ctx.payment.clone(),
                    session: ctx.session.clone(),
                    mandate: ctx.mandate.clone(),
                    history: ctx.history.clone(),
                    endpoint: ctx.endpoint.clone(),
                };
                &slim
            }
            _ => ctx,
        };
        match serde_json::to_value(ctx) {
            Ok(value) => self.evaluate_value(&value, thresholds),
            // Unreachable for the derived Serialize, but an unscorable context must not allow.
            Err(error) => {
                let outcomes =
                    vec![Err(format!("context not serialisable: {error}")); self.rules.len()];
                self.assess(outcomes, thresholds)
            }
        }
    }

    /// Scores the JSON form of a context (as stored in evidence).
    pub fn evaluate_value(&self, ctx: &Value, thresholds: &Thresholds) -> Assessment {
        let outcomes = self.run_conditions(ctx);
        self.assess(outcomes, thresholds)
    }

    /// Runs every condition over one context, converted to CEL values once.
    fn run_conditions(&self, ctx: &Value) -> Vec<Outcome> {
        let cel_ctx = self.cel_context(ctx);
        self.rules
            .iter()
            .map(|rule| run(&rule.program, &cel_ctx))
            .collect()
    }

    /// The CEL variables for one context, converted once.
    fn cel_context<'v>(&self, ctx: &'v Value) -> cel::Context<'_, 'v> {
        let mut cel_ctx = cel::Context::with_env(Arc::clone(&self.env));
        for name in VARIABLES {
            let value = ctx.get(name).unwrap_or(&Value::Null);
            let converted = match value {
                Value::Object(trace) if name == "trace" && !self.uses_events => {
                    Box::new(CelMap::from(
                        trace
                            .iter()
                            .filter(|(k, _)| k.as_str() != "events")
                            .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v, 1)))
                            .collect::<HashMap<_, _>>(),
                    ))
                }
                _ => to_val(value, 0),
            };
            cel_ctx.add_variable_as_val(name, converted);
        }
        cel_ctx
    }

    /// Whether one rule fires on a context (for examples and tools).
    pub fn rule_fires(&self, index: usize, ctx: &Value) -> Result<bool, String> {
        let Some(rule) = self.rules.get(index) else {
            return Err(format!("no rule #{index}"));
        };
        run(&rule.program, &self.cel_context(ctx))
    }

    /// Turns condition outcomes into an assessment.
    fn assess(&self, outcomes: Vec<Outcome>, thresholds: &Thresholds) -> Assessment {
        debug_assert_eq!(outcomes.len(), self.rules.len());
        let mut contributions = Vec::with_capacity(self.rules.len());
        let mut reasons = Vec::new();
        let mut enforced = Tally::default();
        let mut all = Tally::default();
        for (rule, outcome) in self.rules.iter().zip(outcomes) {
            let contribution = match outcome {
                Ok(fired) => {
                    let (weight, action) = match rule.effect {
                        Effect::Weight(w) => (if fired { w } else { 0 }, None),
                        Effect::Action(a) => (0, fired.then(|| Decision::from(a))),
                    };
                    Contribution {
                        rule: rule.id.clone(),
                        fired,
                        weight,
                        action,
                        mode: rule.mode,
                        description: if fired {
                            rule.description.clone()
                        } else {
                            String::new()
                        },
                        error: None,
                    }
                }
                // Fail closed: an unevaluable condition holds the payment for review.
                Err(error) => Contribution {
                    rule: rule.id.clone(),
                    fired: true,
                    weight: 0,
                    action: Some(Decision::Review),
                    mode: rule.mode,
                    description: rule.description.clone(),
                    error: Some(error),
                },
            };
            all.add(&contribution);
            if rule.mode == RuleMode::Enforce {
                enforced.add(&contribution);
                if contribution.fired {
                    reasons.push(match &contribution.error {
                        None => format!("{}: {}", rule.id, rule.description),
                        Some(error) => format!(
                            "{}: rule could not be evaluated ({error}); held for review",
                            rule.id
                        ),
                    });
                }
            }
            contributions.push(contribution);
        }
        let score = enforced.score();
        let decision = enforced.decision(thresholds);
        Assessment {
            decision,
            level: level_of(decision),
            score,
            shadow_decision: all.decision(thresholds),
            reasons,
            contributions,
            rule_set: self.id.clone(),
        }
    }
}

/// Points and the strongest action of a group of contributions.
#[derive(Default)]
struct Tally {
    points: u64,
    action: Option<Decision>,
}

impl Tally {
    fn add(&mut self, c: &Contribution) {
        if c.fired {
            self.points += u64::from(c.weight);
            self.action = self.action.max(c.action);
        }
    }
    fn score(&self) -> u32 {
        // Capped at 100, so the cast cannot truncate.
        self.points.min(100) as u32
    }
    fn decision(&self, thresholds: &Thresholds) -> Decision {
        let by_score = thresholds.decide(self.score());
        self.action.map_or(by_score, |a| a.max(by_score))
    }
}

/// The level reported with a decision.
pub fn level_of(decision: Decision) -> RiskLevel {
    match decision {
        Decision::Allow => RiskLevel::Low,
        Decision::Review => RiskLevel::Medium,
        Decision::Deny => RiskLevel::High,
    }
}

fn run(program: &cel::Program, ctx: &cel::Context) -> Outcome {
    match program.execute(ctx) {
        Ok(cel::Value::Bool(fired)) => Ok(fired),
        Ok(other) => Err(format!(
            "condition returned {}, not a bool",
            other.type_of()
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// Borrows JSON as CEL values (strings are not copied). Integers that fit are `int`, larger
/// ones `uint`, the rest `double`, so rules can mix counters with literals freely.
fn to_val(value: &Value, depth: usize) -> Box<dyn Val + '_> {
    if depth > MAX_VALUE_DEPTH {
        return Box::new(CelNull);
    }
    match value {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
            }
        }
        Value::String(s) => Box::new(CelString::from(s.as_str())),
        Value::Array(items) => Box::new(CelList::from(
            items
                .iter()
                .map(|item| to_val(item, depth + 1))
                .collect::<Vec<_>>(),
        )),
        Value::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), to_val(v, depth + 1)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// Parses one file, appending its rules or its problems.
fn parse_file(
    env: &cel::Env,
    path: &Path,
    text: &str,
    rules: &mut Vec<Rule>,
    problems: &mut Vec<RuleProblem>,
) {
    let problem = |line: Option<usize>, reason: String| RuleProblem {
        file: path.to_path_buf(),
        line,
        reason,
    };
    let specs: Vec<RuleSpec> = match serde_yaml_ng::from_str::<Option<Vec<RuleSpec>>>(text) {
        Ok(Some(specs)) => specs,
        Ok(None) => Vec::new(),
        Err(error) => {
            let line = error.location().map(|l| l.line());
            problems.push(problem(line, error.to_string()));
            return;
        }
    };
    if specs.is_empty() {
        problems.push(problem(
            Some(1),
            "the file holds no rules (expected a list of rules)".into(),
        ));
        return;
    }
    let items = item_lines(text);
    for (index, spec) in specs.into_iter().enumerate() {
        let line = items.get(index).copied().unwrap_or(1);
        let end = items.get(index + 1).copied().unwrap_or(usize::MAX);
        let condition_line = key_line(text, line, end, "condition").unwrap_or(line);
        let id = spec.id.clone();
        let mut rule_problem = |at: usize, reason: String| {
            problems.push(problem(Some(at), format!("rule `{id}`: {reason}")))
        };
        if spec.id.is_empty()
            || !spec.id.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            })
        {
            rule_problem(
                line,
                "id must be non-empty lowercase letters, digits, `-`, `_` or `.`".into(),
            );
            continue;
        }
        if spec.description.trim().is_empty() {
            rule_problem(line, "description must not be empty".into());
        }
        let effect = match (spec.weight, spec.action) {
            (Some(_), Some(_)) => {
                rule_problem(line, "set `weight` or `action`, not both".into());
                continue;
            }
            (None, None) => {
                rule_problem(
                    line,
                    "needs a `weight` (points) or an `action` (deny | review)".into(),
                );
                continue;
            }
            (Some(w), None) if w == 0 || w > 100 => {
                rule_problem(line, format!("weight must be between 1 and 100 (got {w})"));
                continue;
            }
            (Some(w), None) => Effect::Weight(w),
            (None, Some(a)) => Effect::Action(a),
        };
        if spec.condition.len() > MAX_CONDITION_BYTES {
            rule_problem(
                condition_line,
                format!("condition longer than {MAX_CONDITION_BYTES} bytes"),
            );
            continue;
        }
        let program = match env.compile(&spec.condition) {
            Ok(program) => program,
            Err(error) => {
                rule_problem(
                    condition_line,
                    format!(
                        "condition does not compile: {}",
                        error.to_string().replace('\n', "; ")
                    ),
                );
                continue;
            }
        };
        let mut examples = Examples::default();
        for (kind, list, out) in [
            ("fire", &spec.examples.fire, &mut examples.fire),
            ("quiet", &spec.examples.quiet, &mut examples.quiet),
        ] {
            for (i, example) in list.iter().enumerate() {
                match merge_example(example) {
                    Ok(value) => out.push(value),
                    Err(reason) => {
                        let at = key_line(text, line, end, kind).unwrap_or(line);
                        rule_problem(at, format!("examples.{kind}[{i}]: {reason}"));
                    }
                }
            }
        }
        rules.push(Rule {
            id: spec.id,
            description: spec.description.trim().to_owned(),
            condition: spec.condition,
            effect,
            mode: spec.mode,
            file: path.to_path_buf(),
            line,
            examples,
            program,
        });
    }
}

/// 1-based lines where the top-level list's items start (`- ` at the list's indentation).
fn item_lines(text: &str) -> Vec<usize> {
    let mut indent = None;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let this_indent = raw.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ");
        match indent {
            None if is_item => {
                indent = Some(this_indent);
                lines.push(i + 1);
            }
            None => return lines,
            Some(n) if is_item && this_indent == n => lines.push(i + 1),
            Some(_) => {}
        }
    }
    lines
}

/// The 1-based line in `[from, to)` holding `key:` (first occurrence).
fn key_line(text: &str, from: usize, to: usize, key: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .take_while(|(i, _)| i + 1 < to)
        .find(|(_, raw)| {
            let t = raw.trim_start().trim_start_matches("- ").trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .map(|(i, _)| i + 1)
}

/// The benign context examples are merged over: a 0.01 USDC payment on Base to a known
/// wallet, with no session, trace or mandate and no history. Documented in `risk-rules/README.md`.
pub fn example_base() -> Value {
    let payment = PaymentFacts {
        network: "eip155:8453".into(),
        scheme: "exact".into(),
        asset: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913".into(),
        amount: "10000".into(),
        amount_units: Some(0.01),
        decimals: Some(6),
        payer: Some(EXAMPLE_PAYER.into()),
        pay_to: EXAMPLE_PAY_TO.into(),
        resource: Some("https://api.example.com/report?q=weather".into()),
        description: None,
        host: Some("api.example.com".into()),
        path: Some("/report".into()),
        query: [("q".to_owned(), "weather".to_owned())].into(),
        x402_version: 2,
        gate: "verify".into(),
    };
    let ctx = RiskContext {
        payment,
        session: None,
        trace: None,
        mandate: None,
        history: HistoryFacts::default(),
        endpoint: EndpointFacts {
            requires_trace: false,
            known_wallets: Vec::new(),
            pay_to_known: true,
            usual_min: None,
            usual_max: None,
        },
    };
    serde_json::to_value(ctx).unwrap_or(Value::Null)
}

const EXAMPLE_PAYER: &str = "0x1111111111111111111111111111111111111111";
const EXAMPLE_PAY_TO: &str = "0x2222222222222222222222222222222222222222";

/// The defaults an example's `session`, `trace` or `mandate` object is merged over.
fn part_default(name: &str) -> Option<Value> {
    let value = match name {
        "session" => serde_json::to_value(SessionFacts {
            sid: "s-example".into(),
            agent_id: "did:example:agent".into(),
            wallet: EXAMPLE_PAYER.into(),
            wallet_proven: false,
            payer_matches: true,
            app_id: None,
            device: None,
            agent_endpoint: None,
            age_secs: 60,
            expired: false,
        }),
        "trace" => serde_json::to_value(TraceFacts {
            tid: "t-example".into(),
            task: Some("Buy today's weather report from api.example.com".into()),
            parameters: Value::Object(Default::default()),
            events: Vec::new(),
            urls: vec!["https://api.example.com/report?q=weather".into()],
            hosts: vec!["api.example.com".into()],
            urls_from_tool_output_only: Vec::new(),
            event_count: 0,
            distinct_sources: 2,
            event_types: Vec::new(),
            beneficiaries: Vec::new(),
        }),
        "mandate" => serde_json::to_value(MandateFacts {
            id: "m-example".into(),
            kind: "intent".into(),
            payees: vec![EXAMPLE_PAY_TO.into()],
            payee_approved: true,
            max_amount: Some("1000000".into()),
            amount_within: true,
            budget_within: true,
            agent: None,
            agent_matches: true,
            expired: false,
            replayed: false,
            signature: "verified".into(),
            spec: None,
            spec_matches: None,
            recurring_allowed: false,
        }),
        _ => return None,
    };
    value.ok()
}

/// Merges a partial context over [`example_base`] (objects key by key, everything else
/// replaced; a `session`/`trace`/`mandate` object over that part's defaults), then checks it is
/// a [`RiskContext`] naming only known fields and returns its normalised JSON.
pub fn merge_example(partial: &Value) -> Result<Value, String> {
    let Value::Object(parts) = partial else {
        return Err("an example must be a map of context parts".into());
    };
    let mut merged = example_base();
    for (name, part) in parts {
        let Some(slot) = merged.get_mut(name) else {
            return Err(format!(
                "unknown context part `{name}` (use {})",
                VARIABLES.join(", ")
            ));
        };
        if slot.is_null() && part.is_object() {
            *slot = part_default(name).unwrap_or(Value::Null);
        }
        deep_merge(slot, part);
    }
    // Trace events in examples name only what matters; the rest takes the event defaults.
    if let Some(Value::Array(events)) = merged.pointer_mut("/trace/events") {
        for event in events.iter_mut().filter(|e| e.is_object()) {
            let mut full = serde_json::to_value(TraceEvent::default()).unwrap_or(Value::Null);
            deep_merge(&mut full, event);
            *event = full;
        }
    }
    let mut typed: RiskContext =
        serde_json::from_value(merged.clone()).map_err(|e| format!("not a risk context: {e}"))?;
    // The payment path derives these from the events; examples name only the events.
    if let Some(trace) = &mut typed.trace {
        trace.derive_event_facts();
    }
    let normal = serde_json::to_value(typed).map_err(|e| e.to_string())?;
    let mut unknown = BTreeSet::new();
    unknown_keys(&merged, &normal, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(format!(
            "unknown field(s): {}",
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(normal)
}

fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(key) {
                    Some(slot) if slot.is_object() && value.is_object() => deep_merge(slot, value),
                    _ => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, over) => *base = over.clone(),
    }
}

/// Keys present in `given` but dropped by the round trip through [`RiskContext`] (free-form
/// values such as trace parameters survive the trip, so they are never reported).
fn unknown_keys(given: &Value, normal: &Value, at: &str, out: &mut BTreeSet<String>) {
    match (given, normal) {
        (Value::Object(given), Value::Object(normal)) => {
            for (key, value) in given {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match normal.get(key) {
                    None => {
                        out.insert(path);
                    }
                    Some(n) => unknown_keys(value, n, &path, out),
                }
            }
        }
        (Value::Array(given), Value::Array(normal)) => {
            for (i, (g, n)) in given.iter().zip(normal).enumerate() {
                unknown_keys(g, n, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// How one example turned out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExampleResult {
    /// The rule.
    pub rule: String,
    /// Its file.
    pub file: PathBuf,
    /// `fire` or `quiet`.
    pub kind: &'static str,
    /// Index within its list.
    pub index: usize,
    /// Whether the rule behaved as the example says.
    pub passed: bool,
    /// What happened (`fired`, `quiet`, or the evaluation error).
    pub outcome: String,
}

impl RuleSet {
    /// Runs every rule's examples: a `fire` example must fire its rule and a `quiet` one must
    /// not (an evaluation error fails either). A rule with no `fire` or no `quiet` example
    /// fails with index `0` and outcome `missing`.
    pub fn run_examples(&self) -> Vec<ExampleResult> {
        let mut results = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            for (kind, list, want) in [
                ("fire", &rule.examples.fire, true),
                ("quiet", &rule.examples.quiet, false),
            ] {
                if list.is_empty() {
                    results.push(ExampleResult {
                        rule: rule.id.clone(),
                        file: rule.file.clone(),
                        kind,
                        index: 0,
                        passed: false,
                        outcome: "missing".into(),
                    });
                }
                for (i, ctx) in list.iter().enumerate() {
                    let (passed, outcome) = match self.rule_fires(index, ctx) {
                        Ok(fired) => (
                            fired == want,
                            if fired { "fired" } else { "quiet" }.to_owned(),
                        ),
                        Err(error) => (false, format!("error: {error}")),
                    };
                    results.push(ExampleResult {
                        rule: rule.id.clone(),
                        file: rule.file.clone(),
                        kind,
                        index: i,
                        passed,
                        outcome,
                    });
                }
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(yaml: &str) -> Result<RuleSet, RuleError> {
        RuleSet::from_files(&[(PathBuf::from("t.yaml"), yaml.to_owned())])
    }

    #[test]
    fn item_and_key_lines_are_found() {
        let text = "# c\n- id: a\n  condition: |\n    true\n- id: b\n  examples:\n    fire:\n      - {}\n  condition: x\n";
        assert_eq!(item_lines(text), [2, 5]);
        assert_eq!(key_line(text, 2, 5, "condition"), Some(3));
        assert_eq!(key_line(text, 5, usize::MAX, "condition"), Some(9));
    }

    #[test]
    fn cel_semantics_rules_rely_on() {
        // Guards the CEL behaviours the default pack is written against.
        let s = set(concat!(
            "- id: a\n  description: d\n  weight: 1\n  condition: >-\n",
            "    payment.amount_units > 0 && history.payer_payments_1h + 1 == 1 &&\n",
            "    'q' in payment.query && !('ref' in payment.query) && session == null &&\n",
            "    payment.pay_to.lowerAscii() == payment.pay_to && double(payment.amount) == 10000.0 &&\n",
            "    payment.query.exists(k, k == 'q')\n",
        ))
        .unwrap();
        assert_eq!(s.rule_fires(0, &example_base()), Ok(true));
    }
}
