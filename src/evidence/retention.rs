//! Retention: records older than their kind's window (`[evidence.retention]`) lose their
//! body, never their place in the chain.
//!
//! A pass first verifies the whole chain, then (unless an existing checkpoint already covers
//! every record to prune) stores a checkpoint — the verified head's seq and hash, signed by the
//! evidence key — and only then replaces the old bodies with [`super::TOMBSTONE_BODY`]. Every
//! hash stays, so links still check; a pruned record's own hash can no longer be recomputed,
//! and is vouched for by the signed checkpoint at or after it (the links from the record up to
//! the checkpoint pin it). The database enforces this too (migration 0007): the only UPDATE it
//! accepts on `evidence` sets the tombstone body on a record a checkpoint covers. Payments
//! with an open dispute are not pruned.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{EvidenceService, VerifyError, signing, verify_store};
use crate::store::evidence::{Checkpoint, PruneSelector};

const DAY_MS: u64 = 86_400_000;

/// What a pruning pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct PruneReport {
    /// The checkpoint the pruned records are covered by (new or existing).
    pub checkpoint_seq: Option<i64>,
    /// Whether this pass made that checkpoint.
    pub new_checkpoint: bool,
    /// Records pruned, by kind (`default` for kinds without their own window).
    pub pruned: BTreeMap<String, u64>,
}

/// The selectors the configuration names, each with its label.
fn selectors(service: &EvidenceService, now_ms: u64) -> Vec<(String, PruneSelector)> {
    let retention = &service.config.retention;
    let listed: Vec<String> = retention
        .keys()
        .filter(|k| k.as_str() != "default")
        .cloned()
        .collect();
    retention
        .iter()
        .map(|(kind, days)| {
            let before_ms = now_ms.saturating_sub(u64::from(*days).saturating_mul(DAY_MS));
            let selector = if kind == "default" {
                PruneSelector {
                    kind: None,
                    except_kinds: listed.clone(),
                    before_ms,
                    up_to_seq: 0,
                }
            } else {
                PruneSelector {
                    kind: Some(kind.clone()),
                    except_kinds: Vec::new(),
                    before_ms,
                    up_to_seq: 0,
                }
            };
            (kind.clone(), selector)
        })
        .collect()
}

/// Runs one pruning pass.
pub async fn prune(service: &EvidenceService) -> Result<PruneReport, VerifyError> {
    let store = &service.store;
    let now_ms = service.clock.now_ms();
    let mut selectors = selectors(service, now_ms);
    let mut max_seq = None;
    for (_, selector) in &selectors {
        max_seq = max_seq.max(store.prunable_max_seq(selector).await?);
    }
    let Some(max_seq) = max_seq else {
        return Ok(PruneReport::default());
    };
    let mut report = PruneReport::default();
    let checkpoint = match store.latest_checkpoint().await? {
        Some(c) if c.seq >= max_seq => c,
        _ => {
            // Never sign a chain that does not verify.
            let chain = verify_store(store.as_ref()).await?;
            let seq = i64::try_from(chain.records).unwrap_or(i64::MAX);
            let message = signing::checkpoint_message(seq, &chain.head);
            let checkpoint = Checkpoint {
                seq,
                hash: chain.head,
                created_at_ms: i64::try_from(now_ms).unwrap_or(i64::MAX),
                key_id: service.signer.key_id().to_owned(),
                public_key: service.signer.public_key_hex(),
                signature: service.signer.sign_hex(&message),
            };
            store.insert_checkpoint(&checkpoint).await?;
            report.new_checkpoint = true;
            // A concurrent pass may have stored another at the same seq; either is valid.
            store.latest_checkpoint().await?.unwrap_or(checkpoint)
        }
    };
    report.checkpoint_seq = Some(checkpoint.seq);
    for (label, selector) in &mut selectors {
        selector.up_to_seq = checkpoint.seq;
        let n = store.prune_bodies(selector).await?;
        report.pruned.insert(label.clone(), n);
    }
    tracing::info!(checkpoint = checkpoint.seq, pruned = ?report.pruned, "Evidence retention pass.");
    Ok(report)
}

/// Runs [`prune`] every `every` (none when zero or no windows are configured).
pub fn spawn(
    service: Arc<EvidenceService>,
    every: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    if every.is_zero() || service.config.retention.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = prune(&service).await {
                tracing::error!(%error, "Evidence retention pass failed; nothing pruned past the failure.");
            }
        }
    }))
}
