//! Risk rules (issue 6): the shipped pack in `risk-rules/` fires on every rule's `fire`
//! examples and stays quiet on its `quiet` ones; scoring follows the documented arithmetic
//! (weights summed and capped, hard actions, shadow rules, fail-closed evaluation errors);
//! broken files are rejected naming file, line and reason; hot reload keeps the last good set;
//! and `backtest` re-scores evidence stored in a real SQLite database.

#[path = "common/store.rs"]
mod store_support;

use std::path::{Path, PathBuf};

use gatehouse::risk::context::{RiskContext, SessionFacts, TraceEvent, TraceFacts};
use gatehouse::risk::engine::ReloadOutcome;
use gatehouse::risk::rules::{example_base, merge_example};
use gatehouse::risk::{
    Decision, RiskConfig, RiskLevel, RuleEngine, RuleError, RuleMode, RuleSet, Thresholds,
};
use gatehouse::store::EvidenceDraft;
use serde_json::{Value, json};
use store_support::TestDb;

// ---------------------------------------------------------------------------------------------
// helpers

fn pack_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("risk-rules")
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write rule file");
}

/// A directory holding the given files.
fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    dir
}

fn load(files: &[(&str, &str)]) -> Result<RuleSet, RuleError> {
    let dir = rules_dir(files);
    RuleSet::load_dir(dir.path())
}

#[track_caller]
fn problems(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => panic!("expected the set to be rejected"),
        Err(error) => error
            .problems()
            .iter()
            .map(|p| {
                let name = p.file.file_name().map(|n| n.to_string_lossy().into_owned());
                match p.line {
                    Some(line) => format!("{}:{line}: {}", name.unwrap_or_default(), p.reason),
                    None => format!("{}: {}", name.unwrap_or_default(), p.reason),
                }
            })
            .collect(),
    }
}

fn ctx(partial: Value) -> Value {
    merge_example(&partial).expect("example context")
}

const T: Thresholds = Thresholds {
    review_at: 40,
    deny_at: 70,
};

const SCORING: &str = r#"
- id: w30
  description: thirty
  weight: 30
  condition: "history.payer_payments_1h >= 1"
- id: w50
  description: fifty
  weight: 50
  condition: "history.payer_payments_1h >= 2"
- id: w60
  description: sixty
  weight: 60
  condition: "history.payer_payments_1h >= 3"
- id: hard-review
  description: review
  action: review
  condition: "history.payer_disputes_upheld == 1"
- id: hard-deny
  description: deny
  action: deny
  condition: "history.payer_disputes_upheld == 2"
- id: shadow-deny
  description: shadow deny
  action: deny
  mode: shadow
  condition: "history.payer_same_resource_5m >= 1"
- id: shadow-weight
  description: shadow weight
  weight: 80
  mode: shadow
  condition: "history.payer_same_resource_5m >= 2"
- id: breaks-on-bad-amount
  description: needs a numeric amount
  weight: 5
  condition: "double(payment.amount) > 1e12"
- id: shadow-breaks
  description: shadow needing a numeric amount
  weight: 5
  mode: shadow
  condition: "double(payment.amount) < 0.0"
"#;

fn history(h: Value) -> Value {
    ctx(json!({ "history": h }))
}

// ---------------------------------------------------------------------------------------------
// the shipped pack

#[test]
fn shipped_pack_fires_on_every_fire_example_and_stays_quiet_on_every_quiet_one() {
    // Method: the `rules test` logic over risk-rules/; every rule needs both kinds of example.
    let set = RuleSet::load_dir(&pack_dir()).expect("the shipped pack loads");
    let results = set.run_examples();
    let failures: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failures.is_empty(), "failing examples: {failures:#?}");
    for rule in set.rules() {
        assert!(
            !rule.examples.fire.is_empty(),
            "{} has no fire example",
            rule.id
        );
        assert!(
            !rule.examples.quiet.is_empty(),
            "{} has no quiet example",
            rule.id
        );
    }
    let (table, failed) = gatehouse::risk::cli::test_report(&set);
    assert_eq!(failed, 0);
    assert!(table.contains("ok     pay-to-not-brand-wallet"), "{table}");
}

#[test]
fn shipped_pack_covers_every_threat_in_the_issue() {
    let set = RuleSet::load_dir(&pack_dir()).unwrap();
    let ids: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
    for id in [
        "purchase-url-from-tool-output",
        "purchase-host-not-in-trace",
        "affiliate-parameter-not-in-plan",
        "pay-to-not-brand-wallet",
        "free-trial-turned-paid",
        "tool-call-beneficiary-differs",
        "mandate-spec-mismatch",
        "single-source-justification",
        "amount-far-above-usual",
        "amount-power-of-ten-of-usual",
        "retry-storm",
        "payment-loop",
        "session-payer-mismatch",
        "session-payer-mismatch-proven",
        "trace-required-missing",
        "mandate-expired",
        "mandate-replayed",
        "mandate-payee-not-approved",
        "mandate-amount-over",
        "mandate-signature-invalid",
        "mandate-signature-unverifiable",
        "new-payer-with-upheld-disputes",
    ] {
        assert!(ids.contains(&id), "missing rule {id}");
    }
}

#[test]
fn shipped_pack_allows_a_benign_payment_and_explains_a_risky_one() {
    // A benign payment with a clean session and trace scores 0; a decimal-place error from a
    // proven-session mismatch is denied, each point explained by a contribution.
    let set = RuleSet::load_dir(&pack_dir()).unwrap();
    let thresholds = Thresholds::default();
    let benign = set.evaluate_value(
        &ctx(json!({"session": {}, "trace": {"event_count": 1, "events": [{"type": "user_input", "text": "buy"}]}})),
        &thresholds,
    );
    assert_eq!(
        (benign.decision, benign.level, benign.score),
        (Decision::Allow, RiskLevel::Low, 0),
        "{:?}",
        benign.reasons
    );
    assert!(benign.reasons.is_empty());
    assert_eq!(benign.rule_set, set.id());
    assert_eq!(benign.contributions.len(), set.rules().len());

    let risky = set.evaluate_value(
        &ctx(json!({
            "payment": {"amount": "1000000", "amount_units": 1.0},
            "endpoint": {"usual_min": "10000", "usual_max": "10000"},
        })),
        &thresholds,
    );
    assert_eq!(risky.score, 70, "{:?}", risky.reasons);
    assert_eq!(risky.decision, Decision::Deny);
    assert_eq!(risky.level, RiskLevel::High);
    let fired: Vec<_> = risky
        .contributions
        .iter()
        .filter(|c| c.fired)
        .map(|c| (c.rule.as_str(), c.weight))
        .collect();
    assert_eq!(
        fired,
        [
            ("amount-far-above-usual", 35),
            ("amount-power-of-ten-of-usual", 35)
        ]
    );
    assert!(risky.reasons[0].starts_with("amount-far-above-usual: "));
}

#[test]
fn typed_context_and_its_json_form_score_the_same() {
    // evaluate(&RiskContext) and evaluate_value(&json) are one computation; a 200-event trace
    // with a tampered beneficiary is denied by the hard action.
    let set = RuleSet::load_dir(&pack_dir()).unwrap();
    let mut context: RiskContext = serde_json::from_value(example_base()).unwrap();
    let mut events: Vec<TraceEvent> = (0..199)
        .map(|i| TraceEvent {
            kind: "tool_result".into(),
            text: format!("result {i}"),
            tool: Some("search".into()),
            data: json!({"url": format!("https://s{i}.example.org/")}),
            ..TraceEvent::default()
        })
        .collect();
    events.push(TraceEvent {
        kind: "tool_call".into(),
        tool: Some("x402_pay".into()),
        data: json!({"payTo": "0x9999999999999999999999999999999999999999"}),
        ..TraceEvent::default()
    });
    context.trace = Some(TraceFacts {
        event_count: 200,
        events,
        urls: vec!["https://api.example.com/report?q=weather".into()],
        hosts: vec!["api.example.com".into()],
        distinct_sources: 5,
        ..TraceFacts::default()
    });
    // As the payment path does when it flattens a trace.
    if let Some(trace) = &mut context.trace {
        trace.derive_event_facts();
    }
    context.session = Some(SessionFacts {
        payer_matches: true,
        ..SessionFacts::default()
    });
    let typed = set.evaluate(&context, &T);
    let json = set.evaluate_value(&serde_json::to_value(&context).unwrap(), &T);
    assert_eq!(typed, json);
    assert_eq!(typed.decision, Decision::Deny);
    assert_eq!(typed.score, 0);
    let tamper = typed
        .contributions
        .iter()
        .find(|c| c.rule == "tool-call-beneficiary-differs")
        .unwrap();
    assert!(tamper.fired && tamper.action == Some(Decision::Deny));
}

// ---------------------------------------------------------------------------------------------
// scoring arithmetic

#[test]
fn scores_sum_enforced_weights_capped_at_100_and_thresholds_decide() {
    // Boundaries: 0 allow, 30 allow (< review_at 40), 80 (30+50) deny (>= 70), 140 capped 100.
    let set = load(&[("s.yaml", SCORING)]).unwrap();
    let cases = [
        (0, 0, Decision::Allow, RiskLevel::Low),
        (1, 30, Decision::Allow, RiskLevel::Low),
        (2, 80, Decision::Deny, RiskLevel::High),
        (3, 100, Decision::Deny, RiskLevel::High),
    ];
    for (payments, score, decision, level) in cases {
        let a = set.evaluate_value(&history(json!({"payer_payments_1h": payments})), &T);
        assert_eq!(
            (a.score, a.decision, a.level),
            (score, decision, level),
            "{payments}"
        );
    }
    // Exactly at the thresholds.
    let at = Thresholds {
        review_at: 30,
        deny_at: 80,
    };
    let a = set.evaluate_value(&history(json!({"payer_payments_1h": 1})), &at);
    assert_eq!(a.decision, Decision::Review);
    let a = set.evaluate_value(&history(json!({"payer_payments_1h": 2})), &at);
    assert_eq!(a.decision, Decision::Deny);
    let below = Thresholds {
        review_at: 31,
        deny_at: 81,
    };
    let a = set.evaluate_value(&history(json!({"payer_payments_1h": 2})), &below);
    assert_eq!(a.decision, Decision::Review);
}

#[test]
fn hard_actions_raise_the_decision_whatever_the_score() {
    let set = load(&[("s.yaml", SCORING)]).unwrap();
    let review = set.evaluate_value(&history(json!({"payer_disputes_upheld": 1})), &T);
    assert_eq!(
        (review.score, review.decision, review.level),
        (0, Decision::Review, RiskLevel::Medium)
    );
    assert_eq!(review.reasons, ["hard-review: review"]);
    let deny = set.evaluate_value(&history(json!({"payer_disputes_upheld": 2})), &T);
    assert_eq!((deny.score, deny.decision), (0, Decision::Deny));
    // A hard review does not lower a score-based deny.
    let both = set.evaluate_value(
        &history(json!({"payer_disputes_upheld": 1, "payer_payments_1h": 3})),
        &T,
    );
    assert_eq!(both.decision, Decision::Deny);
}

#[test]
fn shadow_rules_change_only_the_shadow_decision() {
    let set = load(&[("s.yaml", SCORING)]).unwrap();
    let a = set.evaluate_value(&history(json!({"payer_same_resource_5m": 1})), &T);
    assert_eq!((a.decision, a.score), (Decision::Allow, 0));
    assert_eq!(a.shadow_decision, Decision::Deny);
    assert!(a.reasons.is_empty(), "{:?}", a.reasons);
    let c = a
        .contributions
        .iter()
        .find(|c| c.rule == "shadow-deny")
        .unwrap();
    assert!(c.fired && c.mode == RuleMode::Shadow);
    // Shadow weights count towards the shadow decision with the enforced ones: 30 + 80.
    let b = set.evaluate_value(
        &history(json!({"payer_same_resource_5m": 2, "payer_payments_1h": 1})),
        &T,
    );
    assert_eq!((b.decision, b.score), (Decision::Allow, 30));
    assert_eq!(b.shadow_decision, Decision::Deny);
    // Nothing shadow fired: the shadow decision is the decision.
    let c = set.evaluate_value(&history(json!({"payer_payments_1h": 2})), &T);
    assert_eq!(c.shadow_decision, c.decision);
}

#[test]
fn an_evaluation_error_fails_closed_to_review() {
    // DESIGN invariant 1: a rule that cannot be evaluated (here a non-numeric amount) counts
    // as fired with an error, adds no points and holds the payment for review; in shadow mode
    // it only affects the shadow decision.
    let set = load(&[("s.yaml", SCORING)]).unwrap();
    let a = set.evaluate_value(&ctx(json!({"payment": {"amount": "lots"}})), &T);
    assert_eq!(
        (a.decision, a.level, a.score),
        (Decision::Review, RiskLevel::Medium, 0)
    );
    let broken = a
        .contributions
        .iter()
        .find(|c| c.rule == "breaks-on-bad-amount")
        .unwrap();
    assert!(broken.fired);
    assert_eq!(broken.action, Some(Decision::Review));
    assert!(broken.error.is_some());
    assert!(
        a.reasons
            .iter()
            .any(|r| r.starts_with("breaks-on-bad-amount: rule could not be evaluated")),
        "{:?}",
        a.reasons
    );
    let shadow = a
        .contributions
        .iter()
        .find(|c| c.rule == "shadow-breaks")
        .unwrap();
    assert!(shadow.fired && shadow.error.is_some());
    assert_eq!(a.shadow_decision, Decision::Review);
    // A missing part of the context (no `payment` at all) also fails closed.
    let empty = set.evaluate_value(&json!({}), &T);
    assert_eq!(empty.decision, Decision::Review);
    // A non-boolean result is an error too.
    let set = load(&[(
        "n.yaml",
        "- id: number\n  description: d\n  weight: 1\n  condition: \"history.payer_payments_1h + (payment.amount == 'x' ? 1 : 0)\"\n",
    )]);
    let Err(error) = set else {
        panic!("a non-boolean condition must be rejected by the load-time probe")
    };
    assert!(error.to_string().contains("not a bool"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// broken files

#[test]
fn yaml_errors_name_the_file_and_line() {
    let got = problems(&[
        (
            "a-good.yaml",
            "- id: ok\n  description: d\n  weight: 1\n  condition: \"true\"\n",
        ),
        (
            "b-bad.yaml",
            "- id: x\n  description: d\n  weight: 1\n  condition: \"true\"\n  extra: [\n",
        ),
    ]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("b-bad.yaml:"), "{got:?}");
    let got = problems(&[(
        "u.yaml",
        "- id: a\n  description: d\n  weight: 1\n  condition: \"true\"\n- id: b\n  description: d\n  wieght: 1\n  condition: \"true\"\n",
    )]);
    assert!(got[0].starts_with("u.yaml:7:"), "{got:?}");
    assert!(got[0].contains("wieght"), "{got:?}");
}

#[test]
fn cel_errors_name_the_line_of_the_rules_condition() {
    let text = "# header\n\n- id: fine\n  description: d\n  weight: 1\n  condition: \"true\"\n\n- id: broken\n  description: d\n  weight: 10\n  examples:\n    fire: [{}]\n  condition: >-\n    payment.amount ==\n";
    let got = problems(&[("cel.yaml", text)]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("cel.yaml:13: rule `broken`: condition does not compile"),
        "{got:?}"
    );
}

#[test]
fn semantic_errors_name_file_line_and_rule() {
    let text = concat!(
        "- id: both\n  description: d\n  weight: 1\n  action: deny\n  condition: \"true\"\n",
        "- id: neither\n  description: d\n  condition: \"true\"\n",
        "- id: heavy\n  description: d\n  weight: 101\n  condition: \"true\"\n",
        "- id: Bad Id\n  description: d\n  weight: 1\n  condition: \"true\"\n",
        "- id: typo\n  description: d\n  weight: 1\n  condition: \"payment.amout == '1'\"\n",
        "- id: unguarded\n  description: d\n  weight: 1\n  condition: \"session.expired\"\n",
        "- id: bad-example\n  description: d\n  weight: 1\n  condition: \"true\"\n  examples:\n    fire:\n      - session: { payer_match: false }\n",
    );
    let got = problems(&[("s.yaml", text)]);
    let want = [
        "s.yaml:1: rule `both`: set `weight` or `action`, not both",
        "s.yaml:6: rule `neither`: needs a `weight`",
        "s.yaml:9: rule `heavy`: weight must be between 1 and 100",
        "s.yaml:13: rule `Bad Id`: id must be",
        "s.yaml:30: rule `bad-example`: examples.fire[0]: unknown field(s): session.payer_match",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
    // The two null-unsafe conditions pass compilation but fail the load-time probe; the
    // probe runs only once every file compiles.
    let got = problems(&[(
        "p.yaml",
        concat!(
            "- id: typo\n  description: d\n  weight: 1\n  condition: \"payment.amout == '1'\"\n",
            "- id: unguarded\n  description: d\n  weight: 1\n  condition: \"session.expired\"\n",
        ),
    )]);
    assert!(
        got.iter()
            .any(|g| g.starts_with("p.yaml:1: rule `typo`: condition fails on")),
        "{got:#?}"
    );
    assert!(
        got.iter().any(|g| g.starts_with(
            "p.yaml:5: rule `unguarded`: condition fails on a context without session"
        )),
        "{got:#?}"
    );
}

#[test]
fn duplicate_ids_across_files_and_empty_directories_are_rejected() {
    let rule = "- id: same\n  description: d\n  weight: 1\n  condition: \"true\"\n";
    let got = problems(&[("a.yaml", rule), ("b.yml", &format!("# x\n{rule}"))]);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("b.yml:2: rule `same`: duplicate id (first defined at"),
        "{got:?}"
    );
    assert!(got[0].contains("a.yaml:1)"), "{got:?}");
    let empty = tempfile::tempdir().unwrap();
    write(empty.path(), "README.md", "not a rule file");
    let error = RuleSet::load_dir(empty.path()).unwrap_err();
    assert!(error.to_string().contains("no rule files"), "{error}");
    let error = RuleSet::load_dir(&empty.path().join("missing")).unwrap_err();
    assert!(matches!(error, RuleError::Dir { .. }), "{error}");
}

#[test]
fn the_set_id_is_a_content_hash() {
    let rule = "- id: r\n  description: d\n  weight: 1\n  condition: \"true\"\n";
    let a = load(&[("a.yaml", rule)]).unwrap();
    let b = load(&[("a.yaml", rule)]).unwrap();
    let c = load(&[("a.yaml", &rule.replace("weight: 1", "weight: 2"))]).unwrap();
    let d = load(&[("b.yaml", rule)]).unwrap();
    assert_eq!(a.id(), b.id());
    assert_ne!(a.id(), c.id());
    assert_ne!(a.id(), d.id());
    assert!(a.id().starts_with("rules-"));
}

// ---------------------------------------------------------------------------------------------
// hot reload

const V1: &str =
    "- id: r\n  description: one\n  weight: 50\n  condition: \"history.payer_payments_1h >= 1\"\n";
const V2: &str = "- id: r\n  description: two\n  action: deny\n  condition: \"history.payer_payments_1h >= 1\"\n";
const BROKEN: &str = "- id: r\n  description: three\n  action: deny\n  condition: \"history.payer_payments_1h >=\"\n";

fn engine_for(dir: &Path) -> std::sync::Arc<RuleEngine> {
    RuleEngine::load(&RiskConfig {
        rules_dir: dir.to_path_buf(),
        ..RiskConfig::default()
    })
    .expect("engine loads")
}

#[test]
fn reload_swaps_in_a_good_set_and_keeps_the_last_good_one_on_errors() {
    let dir = rules_dir(&[("r.yaml", V1)]);
    let engine = engine_for(dir.path());
    let busy = history(json!({"payer_payments_1h": 1}));
    let score = |engine: &RuleEngine| engine.current().evaluate_value(&busy, &engine.thresholds());
    let v1 = engine.current().id().to_owned();
    assert_eq!(score(&engine).decision, Decision::Review);
    assert!(matches!(engine.reload_now(1), ReloadOutcome::Unchanged));

    write(dir.path(), "r.yaml", V2);
    let ReloadOutcome::Reloaded { id: v2 } = engine.reload_now(2) else {
        panic!("expected a reload")
    };
    assert_ne!(v1, v2);
    assert_eq!(engine.current().id(), v2);
    assert_eq!(engine.loaded_at_ms(), 2);
    assert_eq!(score(&engine).decision, Decision::Deny);

    // A snapshot taken before a reload keeps scoring with its own set.
    let held = engine.current();
    write(dir.path(), "r.yaml", BROKEN);
    let ReloadOutcome::Rejected(error) = engine.reload_now(3) else {
        panic!("expected a rejection")
    };
    let problem = &error.problems()[0];
    assert!(problem.file.ends_with("r.yaml"));
    assert_eq!(problem.line, Some(4));
    assert!(problem.reason.contains("does not compile"), "{problem}");
    assert_eq!(
        engine.current().id(),
        v2,
        "the last good set stays in force"
    );
    assert_eq!(score(&engine).decision, Decision::Deny);
    // The same broken content is not re-reported on every poll.
    assert!(matches!(engine.reload_now(4), ReloadOutcome::Unchanged));

    // A new file that breaks the set (duplicate id) is rejected the same way.
    write(dir.path(), "r.yaml", V1);
    write(dir.path(), "s.yaml", V1);
    assert!(matches!(engine.reload_now(5), ReloadOutcome::Rejected(_)));
    assert_eq!(engine.current().id(), v2);
    std::fs::remove_file(dir.path().join("s.yaml")).unwrap();
    let ReloadOutcome::Reloaded { id } = engine.reload_now(6) else {
        panic!("expected the fixed set")
    };
    assert_eq!(id, v1, "same files, same id");
    assert_eq!(held.id(), v2);
    assert_eq!(score(&engine).decision, Decision::Review);
}

#[test]
fn poll_notices_changed_names_sizes_and_times_only() {
    let dir = rules_dir(&[("r.yaml", V1)]);
    let engine = engine_for(dir.path());
    assert!(matches!(engine.poll(1), ReloadOutcome::Unchanged));
    write(dir.path(), "r.yaml", V2);
    assert!(matches!(engine.poll(2), ReloadOutcome::Reloaded { .. }));
    assert!(matches!(engine.poll(3), ReloadOutcome::Unchanged));
    // A new non-rule file changes the stamp but not the content hash.
    write(dir.path(), "notes.txt", "hello");
    assert!(matches!(engine.poll(4), ReloadOutcome::Unchanged));
    // The directory vanishing keeps the set in force.
    let id = engine.current().id().to_owned();
    std::fs::remove_file(dir.path().join("r.yaml")).unwrap();
    assert!(matches!(engine.poll(5), ReloadOutcome::Rejected(_)));
    assert_eq!(engine.current().id(), id);
}

#[tokio::test]
async fn the_reload_task_polls_on_its_interval() {
    // The task polls every second (the smallest interval); the test checks every 50 ms for
    // at most 5 s, so it waits about one interval.
    let dir = rules_dir(&[("r.yaml", V1)]);
    let engine = RuleEngine::load(&RiskConfig {
        rules_dir: dir.path().to_path_buf(),
        reload_secs: 1,
        ..RiskConfig::default()
    })
    .unwrap();
    let clock: gatehouse::clock::SharedClock =
        std::sync::Arc::new(gatehouse::clock::ManualClock::at_ms(42_000));
    let v1 = engine.current().id().to_owned();
    let task = std::sync::Arc::clone(&engine).spawn_reload(clock);
    write(dir.path(), "r.yaml", V2);
    let mut reloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if engine.current().id() != v1 {
            reloaded = true;
            break;
        }
    }
    task.abort();
    assert!(reloaded, "the reload task never picked up the change");
    assert_eq!(engine.loaded_at_ms(), 42_000);

    // reload_secs = 0: no polling at all.
    let still = RuleEngine::load(&RiskConfig {
        rules_dir: dir.path().to_path_buf(),
        reload_secs: 0,
        ..RiskConfig::default()
    })
    .unwrap();
    let done = still.spawn_reload(std::sync::Arc::new(gatehouse::clock::SystemClock));
    done.await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// backtest

fn risk_draft(seq: u64, context: Value, set: &RuleSet) -> EvidenceDraft {
    let assessment = set.evaluate_value(&context, &T);
    EvidenceDraft {
        kind: "verify".into(),
        gate: Some("verify".into()),
        fingerprint: None,
        decision: serde_json::to_value(assessment.decision)
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
        request_id: format!("req-{seq}"),
        created_at_ms: 1_000_000 + seq * 1000,
        body: json!({"risk": {"context": context, "assessment": assessment}}),
    }
}

#[tokio::test]
async fn backtest_reports_the_decisions_a_new_set_would_change() {
    // Evidence scored by an old set (velocity weight 30) is replayed with a stricter one
    // (weight 40 and a new hard deny): records before --since, records without a risk part
    // and unreadable ones are not counted as changes.
    let db = TestDb::sqlite();
    let store = gatehouse::store::connect(&db.url).await.unwrap();
    let old = load(&[(
        "old.yaml",
        "- id: velocity\n  description: v\n  weight: 30\n  condition: \"history.payer_payments_1h >= 5\"\n",
    )])
    .unwrap();
    let new = load(&[(
        "new.yaml",
        concat!(
            "- id: velocity\n  description: v\n  weight: 40\n  condition: \"history.payer_payments_1h >= 5\"\n",
            "- id: counterfeit\n  description: c\n  action: deny\n  condition: \"!endpoint.pay_to_known\"\n",
        ),
    )])
    .unwrap();
    let contexts = [
        history(json!({"payer_payments_1h": 9})), // seq 1: before since
        history(json!({"payer_payments_1h": 9})), // seq 2: allow -> review
        history(json!({"payer_payments_1h": 0})), // seq 3: allow -> allow
        ctx(json!({"endpoint": {"pay_to_known": false}})), // seq 4: allow -> deny
    ];
    for (i, context) in contexts.into_iter().enumerate() {
        store
            .append_evidence(risk_draft(i as u64 + 1, context, &old))
            .await
            .unwrap();
    }
    let mut plain = risk_draft(5, history(json!({})), &old);
    plain.body = json!({"no_risk": true});
    store.append_evidence(plain).await.unwrap();
    let mut unreadable = risk_draft(6, history(json!({})), &old);
    unreadable.body = json!({"risk": {"context": "not an object"}});
    store.append_evidence(unreadable).await.unwrap();

    let since = 1_000_000 + 2 * 1000;
    let report = gatehouse::risk::cli::backtest(store.as_ref(), &new, &T, since)
        .await
        .unwrap();
    assert_eq!(report.scanned, 5);
    assert_eq!(report.scored, 3);
    assert_eq!(report.unreadable, 1);
    let changes: Vec<_> = report
        .changed
        .iter()
        .map(|c| {
            (
                c.seq,
                c.old_decision,
                c.new_decision,
                c.old_score,
                c.new_score,
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            (2, Decision::Allow, Decision::Review, Some(30), 40),
            (4, Decision::Allow, Decision::Deny, Some(0), 0),
        ]
    );
    assert_eq!(report.changed[1].newly_fired, ["counterfeit"]);
    assert_eq!(report.changed[0].old_rule_set.as_deref(), Some(old.id()));
    let table = report.table();
    assert!(table.contains("2 would change"), "{table}");
    assert!(table.contains("+counterfeit"), "{table}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["changed"][0]["new_decision"], "review");

    // Replaying with the set that decided changes nothing.
    let same = gatehouse::risk::cli::backtest(store.as_ref(), &old, &T, 0)
        .await
        .unwrap();
    assert!(same.changed.is_empty(), "{:?}", same.changed);
    assert_eq!(same.scored, 4);
}
