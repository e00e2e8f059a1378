//! `gatehouse rules check | test | backtest`: tools for rule authors and operators. `check`
//! and `test` need no configuration; `backtest` reads stored evidence (read-only: it runs no
//! migrations and writes nothing).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use serde_json::Value;

use super::Decision;
use super::rules::{RuleSet, Thresholds};
use crate::clock::{Clock, SystemClock};
use crate::store::{Store, StoreError};

/// `gatehouse rules …`.
#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Load and compile every rule file in DIR; print `file:line: reason` for each problem
    /// and exit 1 if there is any.
    Check {
        /// The rule directory.
        dir: PathBuf,
    },
    /// Run every rule's own examples (a `fire` example must fire the rule, a `quiet` one must
    /// not); print a table and exit 1 on any failure.
    Test {
        /// The rule directory.
        dir: PathBuf,
    },
    /// Re-score stored evidence since T with the rule set in DIR and report the decisions
    /// that would change.
    Backtest {
        /// The rule directory.
        dir: PathBuf,
        /// Start: RFC 3339 (`2026-11-20T08:00:00Z`), a date (`2026-11-20`, UTC), Unix seconds
        /// or milliseconds, or an age (`30m`, `24h`, `7d`).
        #[arg(long)]
        since: String,
        /// Database URL (default: the configuration's `database_url`).
        #[arg(long)]
        db: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Review threshold (default: the configuration's `[risk] review_at`).
        #[arg(long)]
        review_at: Option<u32>,
        /// Deny threshold (default: the configuration's `[risk] deny_at`).
        #[arg(long)]
        deny_at: Option<u32>,
    },
}

/// Runs a `rules` subcommand; `config` is consulted only by `backtest`.
pub fn run(command: RulesCommand, config: Option<&Path>) -> ExitCode {
    match command {
        RulesCommand::Check { dir } => check(&dir),
        RulesCommand::Test { dir } => test(&dir),
        RulesCommand::Backtest {
            dir,
            since,
            db,
            json,
            review_at,
            deny_at,
        } => {
            let options = BacktestArgs {
                dir,
                since,
                db,
                json,
                review_at,
                deny_at,
            };
            match run_backtest(options, config) {
                Ok(output) => {
                    print!("{output}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("gatehouse: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn check(dir: &Path) -> ExitCode {
    match RuleSet::load_dir(dir) {
        Ok(set) => {
            println!(
                "{}: {} rules, rule set {}",
                dir.display(),
                set.rules().len(),
                set.id()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            for problem in error.problems() {
                println!("{problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn test(dir: &Path) -> ExitCode {
    let set = match RuleSet::load_dir(dir) {
        Ok(set) => set,
        Err(error) => {
            for problem in error.problems() {
                println!("{problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let (table, failed) = test_report(&set);
    print!("{table}");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The `rules test` table and the number of failed examples.
pub fn test_report(set: &RuleSet) -> (String, usize) {
    let results = set.run_examples();
    let width = results
        .iter()
        .map(|r| r.rule.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<width$} {:<9} {:<8} FILE",
        "RESULT", "RULE", "EXAMPLE", "OUTCOME"
    );
    for r in &results {
        let _ = writeln!(
            out,
            "{:<6} {:<width$} {:<9} {:<8} {}",
            if r.passed { "ok" } else { "FAIL" },
            r.rule,
            format!("{}[{}]", r.kind, r.index),
            r.outcome,
            r.file.display()
        );
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let _ = writeln!(
        out,
        "{} rules, {} examples, {} failed",
        set.rules().len(),
        results.len(),
        failed
    );
    (out, failed)
}

struct BacktestArgs {
    dir: PathBuf,
    since: String,
    db: Option<String>,
    json: bool,
    review_at: Option<u32>,
    deny_at: Option<u32>,
}

fn run_backtest(args: BacktestArgs, config_path: Option<&Path>) -> anyhow::Result<String> {
    let set = RuleSet::load_dir(&args.dir)?;
    let since_ms = parse_since(&args.since, SystemClock.now_ms())
        .map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    // The configuration is needed only for what the flags leave out.
    let config = if args.db.is_none() || args.review_at.is_none() || args.deny_at.is_none() {
        Some(crate::config::Config::load(config_path)?)
    } else {
        None
    };
    let defaults = config
        .as_ref()
        .map(|c| c.risk.thresholds())
        .unwrap_or_default();
    let thresholds = Thresholds {
        review_at: args.review_at.unwrap_or(defaults.review_at),
        deny_at: args.deny_at.unwrap_or(defaults.deny_at),
    };
    thresholds.validate().map_err(|e| anyhow::anyhow!(e))?;
    let url = match (&args.db, &config) {
        (Some(url), _) => url.clone(),
        (None, Some(config)) => config.database_url.expose().to_owned(),
        (None, None) => anyhow::bail!("no database URL"),
    };
    // Read-only: don't let the SQLite driver create an empty database for a mistyped path.
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or(rest))
        && !path.is_empty()
        && path != ":memory:"
        && !Path::new(path).exists()
    {
        anyhow::bail!("no database at {path}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let store = crate::store::SqlStore::connect(&url).await?;
        backtest(&store, &set, &thresholds, since_ms).await
    })?;
    Ok(if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.table()
    })
}

/// One stored decision the rule set would decide differently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestChange {
    /// Evidence sequence number.
    pub seq: i64,
    /// When it was decided (ms since the epoch).
    pub created_at_ms: u64,
    /// Evidence kind.
    pub kind: String,
    /// The payment's fingerprint, if any.
    pub fingerprint: Option<String>,
    /// The rule set that decided then.
    pub old_rule_set: Option<String>,
    /// The stored decision.
    pub old_decision: Decision,
    /// The decision now.
    pub new_decision: Decision,
    /// The stored score.
    pub old_score: Option<u32>,
    /// The score now.
    pub new_score: u32,
    /// Enforced rules that fire now but did not then.
    pub newly_fired: Vec<String>,
    /// Enforced rules that fired then but do not now.
    pub no_longer_fired: Vec<String>,
}

/// What a backtest found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    /// The rule set replayed.
    pub rule_set: String,
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Start of the window (ms since the epoch).
    pub since_ms: u64,
    /// Evidence records at or after `since_ms`.
    pub scanned: u64,
    /// Records carrying a risk context and decision that were re-scored.
    pub scored: u64,
    /// Records whose `risk` part could not be read (not re-scored).
    pub unreadable: u64,
    /// The decisions that would change, in evidence order.
    pub changed: Vec<BacktestChange>,
}

/// Evidence records read per query.
const BACKTEST_PAGE: u32 = 500;

/// Re-scores every evidence record at or after `since_ms` whose body holds
/// `risk: {context, assessment}` and collects the decisions that differ.
pub async fn backtest(
    store: &dyn Store,
    set: &RuleSet,
    thresholds: &Thresholds,
    since_ms: u64,
) -> Result<BacktestReport, StoreError> {
    let mut report = BacktestReport {
        rule_set: set.id().to_owned(),
        thresholds: *thresholds,
        since_ms,
        scanned: 0,
        scored: 0,
        unreadable: 0,
        changed: Vec::new(),
    };
    let mut after = 0;
    loop {
        let page = store.evidence_after(after, BACKTEST_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for record in page.iter().filter(|r| r.created_at_ms >= since_ms) {
            report.scanned += 1;
            let Some(risk) = serde_json::from_str::<Value>(&record.body)
                .ok()
                .and_then(|mut body| body.get_mut("risk").map(Value::take))
            else {
                continue;
            };
            let Some(stored) = StoredRisk::read(&risk) else {
                report.unreadable += 1;
                continue;
            };
            report.scored += 1;
            let now = set.evaluate_value(stored.context, thresholds);
            if now.decision == stored.decision {
                continue;
            }
            let fired_now: Vec<String> = now
                .contributions
                .iter()
                .filter(|c| c.fired && c.mode == super::RuleMode::Enforce)
                .map(|c| c.rule.clone())
                .collect();
            report.changed.push(BacktestChange {
                seq: record.seq,
                created_at_ms: record.created_at_ms,
                kind: record.kind.clone(),
                fingerprint: record.fingerprint.clone(),
                old_rule_set: stored.rule_set,
                old_decision: stored.decision,
                new_decision: now.decision,
                old_score: stored.score,
                new_score: now.score,
                newly_fired: fired_now
                    .iter()
                    .filter(|r| !stored.fired.contains(r))
                    .cloned()
                    .collect(),
                no_longer_fired: stored
                    .fired
                    .iter()
                    .filter(|r| !fired_now.contains(r))
                    .cloned()
                    .collect(),
            });
        }
        if page.len() < BACKTEST_PAGE as usize {
            break;
        }
    }
    Ok(report)
}

/// The parts of a stored `risk` object a backtest uses.
struct StoredRisk<'a> {
    context: &'a Value,
    decision: Decision,
    score: Option<u32>,
    rule_set: Option<String>,
    fired: Vec<String>,
}

impl<'a> StoredRisk<'a> {
    fn read(risk: &'a Value) -> Option<Self> {
        let context = risk.get("context").filter(|c| c.is_object())?;
        let assessment = risk.get("assessment")?;
        let decision = serde_json::from_value(assessment.get("decision")?.clone()).ok()?;
        let fired = assessment
            .get("contributions")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter(|c| c.get("fired") == Some(&Value::Bool(true)))
                    .filter(|c| c.get("mode").and_then(Value::as_str) != Some("shadow"))
                    .filter_map(|c| c.get("rule").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some(StoredRisk {
            context,
            decision,
            score: assessment
                .get("score")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok()),
            rule_set: assessment
                .get("rule_set")
                .and_then(Value::as_str)
                .map(str::to_owned),
            fired,
        })
    }
}

impl BacktestReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rule set {} since {} (review_at {}, deny_at {}): {} records, {} re-scored, {} unreadable, {} would change",
            self.rule_set,
            format_utc(self.since_ms),
            self.thresholds.review_at,
            self.thresholds.deny_at,
            self.scanned,
            self.scored,
            self.unreadable,
            self.changed.len()
        );
        if self.changed.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "{:>8}  {:<20}  {:<10}  {:<6} -> {:<6}  {:>5} -> {:<5}  RULES",
            "SEQ", "TIME (UTC)", "KIND", "WAS", "NOW", "SCORE", "SCORE"
        );
        for c in &self.changed {
            let mut rules: Vec<String> = c.newly_fired.iter().map(|r| format!("+{r}")).collect();
            rules.extend(c.no_longer_fired.iter().map(|r| format!("-{r}")));
            let _ = writeln!(
                out,
                "{:>8}  {:<20}  {:<10}  {:<6} -> {:<6}  {:>5} -> {:<5}  {}",
                c.seq,
                format_utc(c.created_at_ms),
                c.kind,
                decision_name(c.old_decision),
                decision_name(c.new_decision),
                c.old_score
                    .map_or_else(|| "?".to_owned(), |s| s.to_string()),
                c.new_score,
                rules.join(" ")
            );
        }
        out
    }
}

fn decision_name(decision: Decision) -> &'static str {
    match decision {
        Decision::Allow => "allow",
        Decision::Review => "review",
        Decision::Deny => "deny",
    }
}

/// Parses `--since`: RFC 3339 UTC (`2026-11-20T08:00:00Z`), a date (`2026-11-20`), Unix
/// seconds or milliseconds (13+ digits), or an age before `now_ms` (`90s`, `30m`, `24h`, `7d`).
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(if text.len() >= 13 {
            n
        } else {
            n.saturating_mul(1000)
        });
    }
    if let Some(unit) = text.chars().last().filter(|c| "smhd".contains(*c))
        && let Ok(n) = text[..text.len() - 1].parse::<u64>()
    {
        let secs = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86_400,
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(secs).saturating_mul(1000)));
    }
    parse_utc(text).ok_or_else(|| {
        format!(
            "`{text}` is not a time (2026-11-20T08:00:00Z, 2026-11-20, Unix seconds or ms, 24h, 7d)"
        )
    })
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only) as ms since the epoch.
fn parse_utc(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = 0u64;
    if let Some(time) = time {
        let time = time
            .strip_suffix('Z')
            .or_else(|| time.strip_suffix("+00:00"))?;
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut hms = hms.split(':');
        let h: u64 = hms.next()?.parse().ok()?;
        let m: u64 = hms.next()?.parse().ok()?;
        let s: u64 = hms.next().unwrap_or("0").parse().ok()?;
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        let frac_ms: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<3}")[..3].parse().ok()?
        };
        ms = (h * 3600 + m * 60 + s) * 1000 + frac_ms;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days).ok().map(|d| d * 86_400_000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SSZ` for ms since the epoch.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_epochs_and_ages() {
        let now = 1_763_683_200_000; // 2025-11-21T00:00:00Z
        assert_eq!(parse_since("2025-11-21", now), Ok(now));
        assert_eq!(parse_since("2025-11-21T00:00:00Z", now), Ok(now));
        assert_eq!(parse_since("2025-11-20T23:59:59.5Z", now), Ok(now - 500));
        assert_eq!(parse_since("1763683200", now), Ok(now));
        assert_eq!(parse_since("1763683200000", now), Ok(now));
        assert_eq!(parse_since("24h", now), Ok(now - 86_400_000));
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("2025-13-01", now).is_err());
        assert!(parse_since("2025-11-21T10:00:00+02:00", now).is_err());
        assert_eq!(format_utc(now + 3_723_000), "2025-11-21T01:02:03Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
    }
}
