//! The evidence chain (DESIGN invariant 4): every decision is an append-only record whose hash
//! covers the previous record's hash, so any edit, deletion or reordering is detectable.
//!
//! This module owns the pure part: the canonical body encoding, the record hash, and chain
//! verification ([`verify_store`] only reads through [`Store`]). Writing records (and
//! serialising writers) is the store's job. Its submodules turn the log into something people
//! use: search ([`query`]), signed bundles ([`bundle`], [`signing`]), disputes ([`dispute`]),
//! retention with signed checkpoints ([`retention`]), the admin routes ([`admin`]) and the
//! `gatehouse evidence` CLI ([`cli`]).

pub mod admin;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod dispute;
pub mod query;
pub mod retention;
pub mod signing;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::clock::SharedClock;
use crate::store::evidence::Checkpoint;
use crate::store::{EvidenceRecord, Store, StoreError};

/// The signing key for `config` on the database `database_url`: `signing_key_file`, or a
/// file next to a SQLite database (`<db file>.evidence.key`), generated when missing; with
/// neither (PostgreSQL, in-memory SQLite) an ephemeral key, with a warning.
pub fn signer_for(
    config: &config::EvidenceConfig,
    database_url: &str,
) -> Result<signing::EvidenceSigner, signing::SigningError> {
    match config
        .signing_key_file
        .clone()
        .or_else(|| default_key_path(database_url))
    {
        Some(path) => signing::EvidenceSigner::load_or_create(&path),
        None => {
            tracing::warn!(
                "No [evidence] signing_key_file: bundles and checkpoints are signed by an \
                 ephemeral key that changes on restart."
            );
            signing::EvidenceSigner::generate()
        }
    }
}

/// `<db file>.evidence.key` for a SQLite file URL.
pub fn default_key_path(database_url: &str) -> Option<std::path::PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") || database_url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(format!("{path}.evidence.key")))
}

/// The body of a pruned record (retention). Its hash is kept; only a signed checkpoint at or
/// after it vouches for it, and the database refuses any other update.
pub const TOMBSTONE_BODY: &str = r#"{"$pruned":true}"#;

/// What the admin routes, the retention job and the CLI share.
#[derive(Debug, Clone)]
pub struct EvidenceService {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: SharedClock,
    /// The signing key.
    pub signer: Arc<signing::EvidenceSigner>,
    /// The `[evidence]` section.
    pub config: config::EvidenceConfig,
}

/// The `prev_hash` of the first record: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain-separation tag so a record hash can never collide with another SHA-256 use.
const HASH_DOMAIN: &[u8] = b"gatehouse/evidence/v1";

/// How many records [`verify_store`] reads per page.
const VERIFY_PAGE_SIZE: u32 = 500;

/// Canonical JSON text of `body`: object keys sorted, no insignificant whitespace.
///
/// The store hashes and stores exactly this text, so a verifier never re-serialises.
pub fn canonical_json(body: &serde_json::Value) -> String {
    // Serialised through a borrowing view: a sorted copy of the tree cost an allocation per
    // key and value, once per decision.
    serde_json::to_string(&Sorted(body)).unwrap_or_else(|_| body.to_string())
}

/// A JSON value serialised with every object's keys in sorted order.
struct Sorted<'a>(&'a serde_json::Value);

impl serde::Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    out.serialize_entry(key, &Sorted(value))?;
                }
                out.end()
            }
            serde_json::Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Sorted(item))?;
                }
                out.end()
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

/// SHA-256 (lower-case hex) of one record.
///
/// Every field is length-prefixed (u64 big-endian) and optional fields carry a presence byte,
/// so no two different records share an encoding.
#[allow(clippy::too_many_arguments)] // one argument per hashed column, in column order
pub fn record_hash(
    prev_hash: &str,
    seq: i64,
    created_at_ms: u64,
    kind: &str,
    gate: Option<&str>,
    fingerprint: Option<&str>,
    decision: &str,
    request_id: &str,
    body: &str,
) -> String {
    let mut hasher = Sha256::new();
    put_bytes(&mut hasher, HASH_DOMAIN);
    put_bytes(&mut hasher, prev_hash.as_bytes());
    hasher.update(seq.to_be_bytes());
    hasher.update(created_at_ms.to_be_bytes());
    put_bytes(&mut hasher, kind.as_bytes());
    put_optional(&mut hasher, gate);
    put_optional(&mut hasher, fingerprint);
    put_bytes(&mut hasher, decision.as_bytes());
    put_bytes(&mut hasher, request_id.as_bytes());
    put_bytes(&mut hasher, body.as_bytes());
    hex::encode(hasher.finalize())
}

fn put_bytes(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

fn put_optional(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        None => hasher.update([0u8]),
        Some(text) => {
            hasher.update([1u8]);
            put_bytes(hasher, text.as_bytes());
        }
    }
}

/// The hash a stored record should carry, recomputed from its fields.
pub fn expected_hash(record: &EvidenceRecord) -> String {
    record_hash(
        &record.prev_hash,
        record.seq,
        record.created_at_ms,
        &record.kind,
        record.gate.as_deref(),
        record.fingerprint.as_deref(),
        &record.decision,
        &record.request_id,
        &record.body,
    )
}

/// Why a chain failed to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakReason {
    /// A sequence number is missing or out of order (a record was deleted or reordered).
    SeqGap {
        /// The sequence number the chain needed here.
        expected: i64,
    },
    /// `prev_hash` does not name the previous record's hash.
    PrevHashMismatch,
    /// The stored hash does not match the record's fields (a field was edited).
    HashMismatch,
    /// The body is the pruning tombstone, but no checkpoint covers the record.
    PrunedWithoutCheckpoint,
    /// The record's hash differs from the signed checkpoint at its seq.
    CheckpointMismatch,
    /// The latest checkpoint's signature does not verify.
    CheckpointSignature,
    /// The chain ends before the head row or the latest checkpoint (records were removed
    /// from the end).
    Truncated {
        /// The seq the chain should reach.
        expected_last: i64,
    },
}

impl BreakReason {
    /// What differs, for people.
    pub fn describe(&self) -> String {
        match self {
            Self::SeqGap { expected } => {
                format!("sequence gap: expected seq {expected} (a record was deleted or moved)")
            }
            Self::PrevHashMismatch => {
                "prev_hash does not name the previous record's hash (a record was replaced)".into()
            }
            Self::HashMismatch => {
                "content does not match its hash (a field or the body was edited)".into()
            }
            Self::PrunedWithoutCheckpoint => {
                "body is a pruning tombstone but no signed checkpoint covers it".into()
            }
            Self::CheckpointMismatch => "hash differs from the signed checkpoint".into(),
            Self::CheckpointSignature => "the checkpoint's signature does not verify".into(),
            Self::Truncated { expected_last } => {
                format!("the chain ends before seq {expected_last} (records removed at the end)")
            }
        }
    }
}

/// The first record at which a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evidence chain broken at seq {seq}: {}", reason.describe())]
pub struct ChainBreak {
    /// Sequence number of the offending record.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: BreakReason,
}

/// Verifies a run of consecutive records that should follow a record whose hash is
/// `expected_prev`; returns the hash of the last record (or `expected_prev` if empty).
///
/// When `expected_prev` is [`GENESIS_HASH`] the run must start at seq 1. Pruned records
/// (tombstones) are refused here: only [`verify_store`], which knows the checkpoints, accepts
/// them.
pub fn verify_chain(records: &[EvidenceRecord], expected_prev: &str) -> Result<String, ChainBreak> {
    let first_seq = (expected_prev == GENESIS_HASH).then_some(1);
    let mut state = RunState {
        prev: expected_prev.to_owned(),
        expected_seq: first_seq,
        pruned: 0,
    };
    verify_run(records, &mut state, None)?;
    Ok(state.prev)
}

/// Where a verification pass stands between pages.
struct RunState {
    prev: String,
    expected_seq: Option<i64>,
    pruned: u64,
}

fn verify_run(
    records: &[EvidenceRecord],
    state: &mut RunState,
    checkpoint: Option<&Checkpoint>,
) -> Result<(), ChainBreak> {
    for record in records {
        let fail = |reason| ChainBreak {
            seq: record.seq,
            reason,
        };
        if let Some(expected) = state.expected_seq
            && record.seq != expected
        {
            return Err(fail(BreakReason::SeqGap { expected }));
        }
        if record.prev_hash != state.prev {
            return Err(fail(BreakReason::PrevHashMismatch));
        }
        if record.body == TOMBSTONE_BODY {
            // The content is gone; the hash is pinned by the links up to a signed checkpoint.
            match checkpoint {
                Some(c) if record.seq <= c.seq => state.pruned += 1,
                _ => return Err(fail(BreakReason::PrunedWithoutCheckpoint)),
            }
        } else if expected_hash(record) != record.hash {
            return Err(fail(BreakReason::HashMismatch));
        }
        if let Some(c) = checkpoint
            && c.seq == record.seq
            && c.hash != record.hash
        {
            return Err(fail(BreakReason::CheckpointMismatch));
        }
        state.prev.clone_from(&record.hash);
        state.expected_seq = record.seq.checked_add(1);
    }
    Ok(())
}

/// Summary of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// How many records were verified.
    pub records: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty chain).
    pub head: String,
    /// How many of them are pruned (vouched for by the checkpoint).
    pub pruned: u64,
    /// The latest checkpoint's seq, when there is one.
    pub checkpoint: Option<i64>,
}

/// Why [`verify_store`] could not vouch for the chain.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain is broken.
    #[error(transparent)]
    Break(#[from] ChainBreak),
}

/// Reads the whole chain from `store`, page by page, and verifies every link and hash, the
/// latest checkpoint's signature and hash, and that the chain reaches its head row.
pub async fn verify_store(store: &dyn Store) -> Result<ChainReport, VerifyError> {
    verify_store_paged(store, VERIFY_PAGE_SIZE).await
}

/// [`verify_store`] reading `page_size` records at a time (at least 1).
pub async fn verify_store_paged(
    store: &dyn Store,
    page_size: u32,
) -> Result<ChainReport, VerifyError> {
    let page_size = page_size.max(1);
    let checkpoint = store.latest_checkpoint().await?;
    if let Some(c) = &checkpoint {
        let message = signing::checkpoint_message(c.seq, &c.hash);
        if signing::verify_hex(&c.public_key, &message, &c.signature).is_err() {
            return Err(ChainBreak {
                seq: c.seq,
                reason: BreakReason::CheckpointSignature,
            }
            .into());
        }
    }
    let mut state = RunState {
        prev: GENESIS_HASH.to_owned(),
        expected_seq: Some(1),
        pruned: 0,
    };
    let mut last_seq = 0i64;
    let mut records = 0u64;
    loop {
        let page = store.evidence_after(last_seq, page_size).await?;
        let Some(last) = page.last() else { break };
        verify_run(&page, &mut state, checkpoint.as_ref())?;
        last_seq = last.seq;
        records += page.len() as u64;
    }
    let (head_seq, _) = store.chain_head().await?;
    let expected_last = head_seq.max(checkpoint.as_ref().map_or(0, |c| c.seq));
    if last_seq < expected_last {
        return Err(ChainBreak {
            seq: last_seq + 1,
            reason: BreakReason::Truncated { expected_last },
        }
        .into());
    }
    Ok(ChainReport {
        records,
        head: state.prev,
        pruned: state.pruned,
        checkpoint: checkpoint.map(|c| c.seq),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<EvidenceRecord> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let body =
                    canonical_json(&serde_json::json!({"b": seq, "a": [1, {"z": 0, "y": 1}]}));
                let hash = record_hash(
                    &prev,
                    seq,
                    1_000,
                    "verify",
                    Some("verify"),
                    None,
                    "allow",
                    "r",
                    &body,
                );
                let record = EvidenceRecord {
                    seq,
                    created_at_ms: 1_000,
                    kind: "verify".into(),
                    gate: Some("verify".into()),
                    fingerprint: None,
                    decision: "allow".into(),
                    request_id: "r".into(),
                    body,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                record
            })
            .collect()
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let body = serde_json::json!({"b": 1, "a": {"d": [ {"f": 1, "e": 2} ], "c": null}});
        assert_eq!(
            canonical_json(&body),
            r#"{"a":{"c":null,"d":[{"e":2,"f":1}]},"b":1}"#
        );
    }

    /// The text chains were hashed over before: a sorted copy of the tree, then serialised.
    fn sorted_copy(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted_copy(v)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted_copy).collect())
            }
            other => other.clone(),
        }
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e300f64..1e300).prop_map(serde_json::Value::from),
            ".*".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                proptest::collection::vec((".*", inner), 0..8)
                    .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Stored records keep verifying: the canonical text is byte for byte what it was.
        #[test]
        fn canonical_json_is_the_text_chains_were_hashed_over(value in any_json()) {
            proptest::prop_assert_eq!(canonical_json(&value), sorted_copy(&value).to_string());
        }
    }

    #[test]
    fn optional_fields_are_unambiguous() {
        // Invariant 4: moving a value between gate and fingerprint must change the hash.
        let a = record_hash(GENESIS_HASH, 1, 0, "k", Some("x"), None, "d", "r", "{}");
        let b = record_hash(GENESIS_HASH, 1, 0, "k", None, Some("x"), "d", "r", "{}");
        let c = record_hash(GENESIS_HASH, 1, 0, "k", Some(""), None, "d", "r", "{}");
        let d = record_hash(GENESIS_HASH, 1, 0, "k", None, None, "d", "r", "{}");
        assert_ne!(a, b);
        assert_ne!(c, d);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn intact_chain_verifies_and_edits_are_named() {
        let records = chain(5);
        let head = verify_chain(&records, GENESIS_HASH);
        assert_eq!(
            head.as_deref().ok(),
            records.last().map(|r| r.hash.as_str())
        );
        assert_eq!(verify_chain(&[], GENESIS_HASH).as_deref(), Ok(GENESIS_HASH));

        let mut edited = records.clone();
        edited[2].body = r#"{"b":99}"#.into();
        assert_eq!(
            verify_chain(&edited, GENESIS_HASH),
            Err(ChainBreak {
                seq: 3,
                reason: BreakReason::HashMismatch
            })
        );

        let mut deleted = records.clone();
        deleted.remove(1);
        assert_eq!(
            verify_chain(&deleted, GENESIS_HASH),
            Err(ChainBreak {
                seq: 3,
                reason: BreakReason::SeqGap { expected: 2 }
            })
        );

        // A run verified from the middle needs the right predecessor hash.
        assert!(verify_chain(&records[2..], &records[1].hash).is_ok());
        assert_eq!(
            verify_chain(&records[2..], GENESIS_HASH),
            Err(ChainBreak {
                seq: 3,
                reason: BreakReason::SeqGap { expected: 1 }
            })
        );
        assert_eq!(
            verify_chain(&records[2..], &records[0].hash),
            Err(ChainBreak {
                seq: 3,
                reason: BreakReason::PrevHashMismatch
            })
        );
    }
}
