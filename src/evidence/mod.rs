//! The evidence chain (DESIGN invariant 4): every decision is an append-only record whose hash
//! covers the previous record's hash, so any edit, deletion or reordering is detectable.
//!
//! This module owns the pure part: the canonical body encoding, the record hash, and chain
//! verification. It does no I/O except [`verify_store`], which only reads through [`Store`].
//! Writing records (and serialising writers) is the store's job.

use sha2::{Digest, Sha256};

use crate::store::{EvidenceRecord, Store, StoreError};

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
    sorted(body).to_string()
}

fn sorted(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(sorted).collect())
        }
        other => other.clone(),
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
}

/// The first record at which a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("evidence chain broken at seq {seq}: {reason:?}")]
pub struct ChainBreak {
    /// Sequence number of the offending record.
    pub seq: i64,
    /// What is wrong with it.
    pub reason: BreakReason,
}

/// Verifies a run of consecutive records that should follow a record whose hash is
/// `expected_prev`; returns the hash of the last record (or `expected_prev` if empty).
///
/// When `expected_prev` is [`GENESIS_HASH`] the run must start at seq 1.
pub fn verify_chain(records: &[EvidenceRecord], expected_prev: &str) -> Result<String, ChainBreak> {
    let first_seq = (expected_prev == GENESIS_HASH).then_some(1);
    verify_run(records, expected_prev, first_seq)
}

fn verify_run(
    records: &[EvidenceRecord],
    expected_prev: &str,
    mut expected_seq: Option<i64>,
) -> Result<String, ChainBreak> {
    let mut prev = expected_prev.to_owned();
    for record in records {
        if let Some(expected) = expected_seq
            && record.seq != expected
        {
            return Err(ChainBreak {
                seq: record.seq,
                reason: BreakReason::SeqGap { expected },
            });
        }
        if record.prev_hash != prev {
            return Err(ChainBreak {
                seq: record.seq,
                reason: BreakReason::PrevHashMismatch,
            });
        }
        if expected_hash(record) != record.hash {
            return Err(ChainBreak {
                seq: record.seq,
                reason: BreakReason::HashMismatch,
            });
        }
        prev.clone_from(&record.hash);
        expected_seq = record.seq.checked_add(1);
    }
    Ok(prev)
}

/// Summary of a verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// How many records were verified.
    pub records: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty chain).
    pub head: String,
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

/// Reads the whole chain from `store`, page by page, and verifies every link and hash.
pub async fn verify_store(store: &dyn Store) -> Result<ChainReport, VerifyError> {
    verify_store_paged(store, VERIFY_PAGE_SIZE).await
}

/// [`verify_store`] reading `page_size` records at a time (at least 1).
pub async fn verify_store_paged(
    store: &dyn Store,
    page_size: u32,
) -> Result<ChainReport, VerifyError> {
    let page_size = page_size.max(1);
    let mut head = GENESIS_HASH.to_owned();
    let mut last_seq = 0i64;
    let mut records = 0u64;
    loop {
        let page = store.evidence_after(last_seq, page_size).await?;
        let Some(last) = page.last() else { break };
        head = verify_run(&page, &head, last_seq.checked_add(1))?;
        last_seq = last.seq;
        records += page.len() as u64;
    }
    Ok(ChainReport { records, head })
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
