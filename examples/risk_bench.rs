//! Cost of scoring one payment with a 200-event agent trace over the shipped rule pack
//! (`risk-rules/`): the typed context is serialised and converted to CEL values once per
//! payment, then every rule runs over it. Prints median, p99 and max per evaluation.
//! Usage: `cargo run --release --example risk_bench -- [ITERATIONS] [RULES_DIR]`.

use std::path::PathBuf;

use gatehouse::risk::context::{
    EndpointFacts, HistoryFacts, MandateFacts, PaymentFacts, RiskContext, SessionFacts, TraceEvent,
    TraceFacts,
};
use gatehouse::risk::{RuleSet, Thresholds};
use serde_json::json;

fn context(events: usize) -> RiskContext {
    let kinds = [
        "user_input",
        "reasoning_summary",
        "tool_call",
        "tool_result",
        "agent_output",
    ];
    let events: Vec<TraceEvent> = (0..events)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            TraceEvent {
                kind: kind.into(),
                text: format!(
                    "step {i}: looked at https://src{}.example.org/page?id={i}",
                    i % 7
                ),
                text_sha256: Some(format!("{i:064x}")),
                tool: (kind.starts_with("tool")).then(|| "web_fetch".to_owned()),
                data: json!({"url": format!("https://src{}.example.org/page?id={i}", i % 7),
                             "beneficiary": "0x2222222222222222222222222222222222222222",
                             "items": [1, 2, 3]}),
            }
        })
        .collect();
    let urls: Vec<String> = (0..60)
        .map(|i| format!("https://src{}.example.org/page?id={i}", i % 7))
        .chain(["https://api.example.com/report?q=weather".to_owned()])
        .collect();
    RiskContext {
        payment: PaymentFacts {
            network: "eip155:8453".into(),
            scheme: "exact".into(),
            asset: "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913".into(),
            amount: "10000".into(),
            amount_units: Some(0.01),
            decimals: Some(6),
            payer: Some("0x1111111111111111111111111111111111111111".into()),
            pay_to: "0x2222222222222222222222222222222222222222".into(),
            resource: Some("https://api.example.com/report?q=weather&ref=abc".into()),
            description: Some("Today's weather report for one city".into()),
            host: Some("api.example.com".into()),
            path: Some("/report".into()),
            query: [("q".into(), "weather".into()), ("ref".into(), "abc".into())].into(),
            x402_version: 2,
            gate: "verify".into(),
        },
        session: Some(SessionFacts {
            sid: "s1".into(),
            agent_id: "did:example:agent".into(),
            wallet: "0x1111111111111111111111111111111111111111".into(),
            wallet_proven: true,
            payer_matches: true,
            age_secs: 120,
            ..SessionFacts::default()
        }),
        trace: Some(TraceFacts {
            tid: "t1".into(),
            task: Some("Buy today's weather report".into()),
            parameters: json!({"city": "Paris", "budget_usd": 1}),
            event_count: events.len() as u64,
            events,
            hosts: (0..7)
                .map(|i| format!("src{i}.example.org"))
                .chain(["api.example.com".to_owned()])
                .collect(),
            urls_from_tool_output_only: urls[..30].to_vec(),
            urls,
            distinct_sources: 7,
            ..TraceFacts::default()
        }),
        mandate: Some(MandateFacts {
            id: "m1".into(),
            kind: "intent".into(),
            payees: vec!["0x2222222222222222222222222222222222222222".into()],
            payee_approved: true,
            max_amount: Some("1000000".into()),
            amount_within: true,
            budget_within: true,
            agent_matches: true,
            signature: "verified".into(),
            ..MandateFacts::default()
        }),
        history: HistoryFacts {
            payer_payments_1h: 12,
            payer_payments_24h: 80,
            payer_same_resource_5m: 1,
            payer_to_payee_before: 4,
            ..HistoryFacts::default()
        },
        endpoint: EndpointFacts {
            requires_trace: true,
            known_wallets: vec!["0x2222222222222222222222222222222222222222".into()],
            pay_to_known: true,
            usual_min: Some("5000".into()),
            usual_max: Some("20000".into()),
        },
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let dir = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("risk-rules"));
    let set = match RuleSet::load_dir(&dir) {
        Ok(set) => set,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(1);
        }
    };
    let mut ctx = context(200);
    let thresholds = Thresholds::default();
    if let Some(trace) = &mut ctx.trace {
        trace.derive_event_facts();
    }
    let first = set.evaluate(&ctx, &thresholds);
    assert!(
        first.contributions.iter().all(|c| c.error.is_none()),
        "benchmark context must evaluate cleanly: {:?}",
        first.reasons
    );
    for _ in 0..200 {
        std::hint::black_box(set.evaluate(&ctx, &thresholds));
    }
    let mut micros: Vec<f64> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = tokio::time::Instant::now();
        // Per payment: derive the event facts (as flattening a trace does), then score.
        if let Some(trace) = &mut ctx.trace {
            trace.derive_event_facts();
        }
        let assessment = set.evaluate(std::hint::black_box(&ctx), &thresholds);
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(assessment);
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "rule set {} ({} rules), 200-event trace (event facts derived each time), {} evaluations: decision {:?} score {}",
        set.id(),
        set.rules().len(),
        iterations,
        first.decision,
        first.score
    );
    println!(
        "per evaluation: median {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
