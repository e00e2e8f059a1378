//! `gatehouse evidence ...`: show, search, export, verify and prune from the command line, with
//! a table for people and `--json` for scripts. Reads `--db URL` or the configured database.
//!
//! Exit codes: 0 success, 1 a verification failed (or nothing found), 2 bad usage or
//! configuration, 3 the database or a file could not be used.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use serde_json::{Value, json};

use super::query::{SearchFilters, index_fields, next_cursor};
use super::{EvidenceService, VerifyError, bundle, retention, signer_for};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::store::Store;

/// `gatehouse evidence` subcommands.
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Show one record by its seq.
    Show {
        /// The record's seq.
        seq: i64,
        /// Database URL (default: the configured one).
        #[arg(long)]
        db: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Search records (the same filters as `GET /admin/evidence`).
    Search {
        /// Filters.
        #[command(flatten)]
        filters: Box<SearchFilters>,
        /// Database URL (default: the configured one).
        #[arg(long)]
        db: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export one payment's signed evidence bundle.
    Export {
        /// The payment's fingerprint.
        fingerprint: String,
        /// Write the bundle here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Database URL (default: the configured one).
        #[arg(long)]
        db: Option<String>,
    },
    /// Verify a bundle offline (`verify BUNDLE`) or the whole chain (`verify --db URL`).
    Verify {
        /// A bundle file to check offline.
        bundle: Option<PathBuf>,
        /// Check the whole chain in this database (default with no BUNDLE: the configured one).
        #[arg(long)]
        db: Option<String>,
        /// Only accept bundles signed by this key (hex public key or key id).
        #[arg(long)]
        key: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one retention pass now (checkpoint, then prune old bodies).
    Prune {
        /// Database URL (default: the configured one).
        #[arg(long)]
        db: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a subcommand; `config_path` as given to `--config`.
pub fn main(command: EvidenceCommand, config_path: Option<&Path>) -> ExitCode {
    // Checking a bundle is offline: no configuration, no database.
    if let EvidenceCommand::Verify {
        bundle: Some(path),
        key,
        json,
        ..
    } = &command
    {
        return verify_bundle_file(path, key.as_deref(), *json);
    }
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("gatehouse: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("gatehouse: cannot start the runtime: {error}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(run(command, config))
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("gatehouse: {message}");
    ExitCode::from(code)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

async fn open(db: Option<&str>, config: &Config) -> Result<(String, Arc<dyn Store>), ExitCode> {
    let url = db.unwrap_or(config.database_url.expose()).to_owned();
    match crate::store::connect(&url).await {
        Ok(store) => Ok((url, store)),
        Err(error) => Err(fail(3, format!("cannot open the database: {error}"))),
    }
}

async fn service(db: Option<&str>, config: &Config) -> Result<EvidenceService, ExitCode> {
    let (url, store) = open(db, config).await?;
    let signer = signer_for(&config.evidence, &url).map_err(|e| fail(3, e))?;
    Ok(EvidenceService {
        store,
        clock: Arc::new(SystemClock),
        signer: Arc::new(signer),
        config: config.evidence.clone(),
    })
}

async fn run(command: EvidenceCommand, config: Config) -> ExitCode {
    match command {
        EvidenceCommand::Show { seq, db, json } => {
            let (_, store) = match open(db.as_deref(), &config).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            match store.evidence_record(seq).await {
                Ok(Some(record)) => {
                    let value = super::admin::record_json(&record);
                    if json {
                        print_json(&value);
                    } else {
                        for key in [
                            "seq",
                            "created_at_ms",
                            "kind",
                            "gate",
                            "fingerprint",
                            "decision",
                            "request_id",
                            "prev_hash",
                            "hash",
                        ] {
                            println!("{key:<14} {}", plain(&value[key]));
                        }
                        println!(
                            "body\n{}",
                            serde_json::to_string_pretty(&value["body"]).unwrap_or_default()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Ok(None) => fail(1, format!("no evidence record with seq {seq}")),
                Err(error) => fail(3, error),
            }
        }
        EvidenceCommand::Search { filters, db, json } => {
            let query = match filters.to_query(None) {
                Ok(q) => q,
                Err(e) => return fail(2, format!("--{}: {}", e.field, e.message)),
            };
            let (_, store) = match open(db.as_deref(), &config).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let found = match store.index_evidence().await {
                Ok(_) => store.search_evidence(&query).await,
                Err(e) => Err(e),
            };
            let records = match found {
                Ok(r) => r,
                Err(error) => return fail(3, error),
            };
            let next = next_cursor(records.last().map(|r| r.seq), records.len(), query.limit);
            if json {
                print_json(&json!({
                    "records": records.iter().map(super::admin::record_json).collect::<Vec<_>>(),
                    "next": next,
                }));
            } else {
                println!(
                    "{:>6}  {:>13}  {:<18}  {:<12}  {:<24}  {:<14}  {:<14}",
                    "SEQ", "CREATED_MS", "KIND", "DECISION", "FINGERPRINT", "PAYER", "PAYEE"
                );
                for r in &records {
                    let f = index_fields(r);
                    println!(
                        "{:>6}  {:>13}  {:<18}  {:<12}  {:<24}  {:<14}  {:<14}",
                        r.seq,
                        r.created_at_ms,
                        cut(&r.kind, 18),
                        cut(&r.decision, 12),
                        cut(r.fingerprint.as_deref().unwrap_or("-"), 24),
                        cut(f.payer.as_deref().unwrap_or("-"), 14),
                        cut(f.payee.as_deref().unwrap_or("-"), 14),
                    );
                }
                if let Some(next) = next {
                    println!("(more: --after {next})");
                }
            }
            ExitCode::SUCCESS
        }
        EvidenceCommand::Export {
            fingerprint,
            out,
            db,
        } => {
            let service = match service(db.as_deref(), &config).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let bundle = match bundle::export(
                service.store.as_ref(),
                &service.signer,
                &fingerprint,
                service.clock.now_ms(),
            )
            .await
            {
                Ok(b) => b,
                Err(bundle::ExportError::NotFound) => {
                    return fail(1, "no evidence for this payment");
                }
                Err(error) => return fail(3, error),
            };
            let text = match serde_json::to_string_pretty(&bundle) {
                Ok(t) => t,
                Err(error) => return fail(3, error),
            };
            match out {
                Some(path) => {
                    if let Err(error) = std::fs::write(&path, text + "\n") {
                        return fail(3, format!("cannot write {}: {error}", path.display()));
                    }
                    eprintln!(
                        "Wrote {} ({} records, signed by {}).",
                        path.display(),
                        bundle.records.len(),
                        service.signer.key_id()
                    );
                }
                None => println!("{text}"),
            }
            ExitCode::SUCCESS
        }
        EvidenceCommand::Verify { db, json, .. } => {
            let (_, store) = match open(db.as_deref(), &config).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            verify_db(store.as_ref(), json).await
        }
        EvidenceCommand::Prune { db, json } => {
            let service = match service(db.as_deref(), &config).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            match retention::prune(&service).await {
                Ok(report) => {
                    if json {
                        print_json(&json!(report));
                    } else if report.checkpoint_seq.is_none() {
                        println!("Nothing to prune.");
                    } else {
                        println!(
                            "Checkpoint at seq {} ({}).",
                            report.checkpoint_seq.unwrap_or_default(),
                            if report.new_checkpoint {
                                "new"
                            } else {
                                "existing"
                            }
                        );
                        for (kind, n) in &report.pruned {
                            println!("{kind:<24} {n:>8} pruned");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(VerifyError::Break(b)) => fail(1, format!("not pruning: {b}")),
                Err(VerifyError::Store(e)) => fail(3, e),
            }
        }
    }
}

async fn verify_db(store: &dyn Store, json: bool) -> ExitCode {
    match super::verify_store(store).await {
        Ok(report) => {
            if json {
                print_json(&json!({
                    "ok": true,
                    "records": report.records,
                    "head": report.head,
                    "pruned": report.pruned,
                    "checkpoint": report.checkpoint,
                }));
            } else {
                println!(
                    "Evidence chain OK: {} records, head {}{}.",
                    report.records,
                    report.head,
                    match report.checkpoint {
                        Some(seq) => format!(
                            " ({} pruned, vouched for by the checkpoint at seq {seq})",
                            report.pruned
                        ),
                        None => String::new(),
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(VerifyError::Break(b)) => {
            if json {
                print_json(&json!({
                    "ok": false,
                    "broken": {"seq": b.seq, "reason": format!("{:?}", b.reason), "what": b.reason.describe()},
                }));
            } else {
                println!(
                    "Evidence chain BROKEN at seq {}: {}.",
                    b.seq,
                    b.reason.describe()
                );
                if let Ok(Some(record)) = store.evidence_record(b.seq).await {
                    println!(
                        "  record: kind {}, fingerprint {}, stored hash {}, recomputed {}",
                        record.kind,
                        record.fingerprint.as_deref().unwrap_or("-"),
                        record.hash,
                        super::expected_hash(&record)
                    );
                }
            }
            ExitCode::from(1)
        }
        Err(VerifyError::Store(e)) => fail(3, e),
    }
}

fn verify_bundle_file(path: &Path, key: Option<&str>, json: bool) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(error) => return fail(3, format!("cannot read {}: {error}", path.display())),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(error) => return fail(1, format!("{} is not JSON: {error}", path.display())),
    };
    match bundle::verify(&value, key) {
        Ok(report) => {
            if json {
                print_json(&json!({"ok": true, "report": report}));
            } else {
                println!(
                    "Bundle OK: payment {}, {} records verified, {} pruned, {} links, signed by {}.",
                    report.fingerprint,
                    report.records_verified,
                    report.records_pruned,
                    report.links,
                    report.kid
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            if json {
                print_json(&json!({"ok": false, "error": error.to_string()}));
            } else {
                println!("Bundle INVALID: {error}.");
            }
            ExitCode::from(1)
        }
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let head: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{head}…")
    }
}
