//! Evidence bundles: one payment's records, the chain links that prove them, and Gatehouse's
//! ed25519 signature, in one self-contained JSON document anyone can check offline.
//!
//! Format (`gatehouse-evidence-bundle/v1`):
//! - `records`: every record about the payment, with every hashed column (`body` is the exact
//!   canonical text that was hashed), so each `hash` can be recomputed with
//!   [`crate::evidence::record_hash`];
//! - `links`: `{seq, prev_hash, hash}` of every record from the payment's first record to its
//!   last, so the records' places in the one chain can be checked without the other records'
//!   content;
//! - `head`: the chain head at export; `checkpoint`: the latest signed checkpoint, if any;
//! - `settlement`, `disputes`: context (not hashed into the chain; covered by the signature);
//! - `signature`: `{alg: "EdDSA", kid, public_key, value}`, the hex signature over
//!   [`crate::evidence::canonical_json`] of the bundle without its `signature` member.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::signing::{self, EvidenceSigner};
use super::{BreakReason, TOMBSTONE_BODY, canonical_json, expected_hash};
use crate::protocol::payment::Fingerprint;
use crate::store::evidence::{ChainLink, Checkpoint};
use crate::store::{EvidenceRecord, Store, StoreError};

/// The format tag.
pub const BUNDLE_FORMAT: &str = "gatehouse-evidence-bundle/v1";
/// Most links a bundle carries (a payment whose records span more is refused).
const MAX_LINKS: i64 = 200_000;

/// One record as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// Position.
    pub seq: i64,
    /// When (ms).
    pub created_at_ms: u64,
    /// Kind.
    pub kind: String,
    /// Gate.
    pub gate: Option<String>,
    /// Fingerprint.
    pub fingerprint: Option<String>,
    /// Decision.
    pub decision: String,
    /// Request id.
    pub request_id: String,
    /// The canonical body text, exactly as hashed.
    pub body: String,
    /// Previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

impl From<EvidenceRecord> for BundleRecord {
    fn from(r: EvidenceRecord) -> Self {
        Self {
            seq: r.seq,
            created_at_ms: r.created_at_ms,
            kind: r.kind,
            gate: r.gate,
            fingerprint: r.fingerprint,
            decision: r.decision,
            request_id: r.request_id,
            body: r.body,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

impl From<BundleRecord> for EvidenceRecord {
    fn from(r: BundleRecord) -> Self {
        Self {
            seq: r.seq,
            created_at_ms: r.created_at_ms,
            kind: r.kind,
            gate: r.gate,
            fingerprint: r.fingerprint,
            decision: r.decision,
            request_id: r.request_id,
            body: r.body,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The chain head at export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHead {
    /// Seq of the last record.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// The signature block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSignature {
    /// `EdDSA` (ed25519).
    pub alg: String,
    /// Key id (as at `/.well-known/gatehouse-keys`).
    pub kid: String,
    /// Public key, hex.
    pub public_key: String,
    /// Signature, hex.
    pub value: String,
}

/// A bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The payment.
    pub fingerprint: String,
    /// When exported (ms).
    pub exported_at_ms: u64,
    /// The chain head at export.
    pub head: BundleHead,
    /// The payment's records.
    pub records: Vec<BundleRecord>,
    /// Links from the first record to the last.
    pub links: Vec<ChainLink>,
    /// The latest signed checkpoint, if any (vouches for pruned records at or below it).
    pub checkpoint: Option<Checkpoint>,
    /// The settlement journal row, as JSON.
    pub settlement: Option<Value>,
    /// The payment's disputes with their statements.
    pub disputes: Vec<Value>,
    /// Gatehouse's signature.
    pub signature: Option<BundleSignature>,
}

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No record names this payment.
    #[error("no evidence for this payment")]
    NotFound,
    /// The payment's records span too much of the chain to export its links.
    #[error("the payment's records span more than {MAX_LINKS} chain links")]
    TooLarge,
}

/// Builds and signs the bundle for `fingerprint`.
pub async fn export(
    store: &dyn Store,
    signer: &EvidenceSigner,
    fingerprint: &str,
    now_ms: u64,
) -> Result<Bundle, ExportError> {
    let records = store
        .evidence_for(&Fingerprint(fingerprint.to_owned()))
        .await?;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return Err(ExportError::NotFound);
    };
    let (first, last) = (first.seq, last.seq);
    if last - first >= MAX_LINKS {
        return Err(ExportError::TooLarge);
    }
    let links = store.chain_links(first, last, MAX_LINKS).await?;
    let (head_seq, head_hash) = store.chain_head().await?;
    let checkpoint = store.latest_checkpoint().await?;
    let settlement = store
        .settlement(&Fingerprint(fingerprint.to_owned()))
        .await?
        .map(|s| super::dispute::settlement_json(&s));
    let mut disputes = Vec::new();
    for d in store
        .list_disputes(None, None, Some(fingerprint), 500)
        .await?
    {
        let statements = store.statements(&d.id).await?;
        disputes.push(serde_json::json!({"dispute": d, "statements": statements}));
    }
    let mut bundle = Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        fingerprint: fingerprint.to_owned(),
        exported_at_ms: now_ms,
        head: BundleHead {
            seq: head_seq,
            hash: head_hash,
        },
        records: records.into_iter().map(BundleRecord::from).collect(),
        links,
        checkpoint,
        settlement,
        disputes,
        signature: None,
    };
    let message = signed_text(&bundle);
    bundle.signature = Some(BundleSignature {
        alg: "EdDSA".into(),
        kid: signer.key_id().to_owned(),
        public_key: signer.public_key_hex(),
        value: signer.sign_hex(message.as_bytes()),
    });
    Ok(bundle)
}

/// The text the signature covers: the canonical JSON of the bundle without `signature`.
fn signed_text(bundle: &Bundle) -> String {
    let mut value = serde_json::to_value(bundle).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("signature");
    }
    canonical_json(&value)
}

/// What an offline check established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// The payment.
    pub fingerprint: String,
    /// Records whose hash was recomputed and matched.
    pub records_verified: usize,
    /// Pruned records (content gone; vouched for by the signed checkpoint).
    pub records_pruned: usize,
    /// Links checked for continuity.
    pub links: usize,
    /// The signing key's id.
    pub kid: String,
}

/// Why a bundle does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a bundle of a known format.
    #[error("not a {BUNDLE_FORMAT} bundle: {0}")]
    Format(String),
    /// No signature.
    #[error("the bundle is not signed")]
    Unsigned,
    /// The signature does not verify (the bundle was changed after export).
    #[error("the signature does not verify: {0}")]
    Signature(String),
    /// The signature is by another key than the trusted one.
    #[error("signed by key {found}, not the trusted key {trusted}")]
    UntrustedKey {
        /// The bundle's key id.
        found: String,
        /// The trusted key id.
        trusted: String,
    },
    /// A record or link is wrong.
    #[error("record seq {seq}: {what}")]
    Record {
        /// The record.
        seq: i64,
        /// What differs.
        what: String,
    },
}

/// Checks a bundle offline: the signature (by `trusted_public_key` when given), every record's
/// hash, and the continuity of the links and the records' places in them.
pub fn verify(
    bundle: &Value,
    trusted_public_key: Option<&str>,
) -> Result<BundleReport, BundleError> {
    let parsed: Bundle =
        serde_json::from_value(bundle.clone()).map_err(|e| BundleError::Format(e.to_string()))?;
    if parsed.format != BUNDLE_FORMAT {
        return Err(BundleError::Format(format!(
            "format is `{}`",
            parsed.format
        )));
    }
    let signature = parsed.signature.as_ref().ok_or(BundleError::Unsigned)?;
    // The signature covers the document as received, re-canonicalised, not as re-serialised
    // from the typed form, so unknown members cannot be slipped in unsigned.
    let mut unsigned = bundle.clone();
    if let Value::Object(map) = &mut unsigned {
        map.remove("signature");
    }
    let message = canonical_json(&unsigned);
    signing::verify_hex(&signature.public_key, message.as_bytes(), &signature.value)
        .map_err(|e| BundleError::Signature(e.to_string()))?;
    let kid = signing::key_id_of_hex(&signature.public_key)
        .ok_or_else(|| BundleError::Signature("bad public key".into()))?;
    if let Some(trusted) = trusted_public_key {
        let trusted = trusted.trim().to_ascii_lowercase();
        if trusted != signature.public_key.to_ascii_lowercase() && trusted != kid {
            return Err(BundleError::UntrustedKey {
                found: kid,
                trusted,
            });
        }
    }

    let record_error = |seq, reason: BreakReason| BundleError::Record {
        seq,
        what: reason.describe(),
    };
    // Links: consecutive and chained.
    for pair in parsed.links.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.seq != a.seq + 1 {
            return Err(record_error(
                b.seq,
                BreakReason::SeqGap {
                    expected: a.seq + 1,
                },
            ));
        }
        if b.prev_hash != a.hash {
            return Err(record_error(b.seq, BreakReason::PrevHashMismatch));
        }
    }
    let (mut verified, mut pruned) = (0, 0);
    for record in &parsed.records {
        if record.fingerprint.as_deref() != Some(parsed.fingerprint.as_str()) {
            return Err(BundleError::Record {
                seq: record.seq,
                what: "the record is about another payment".into(),
            });
        }
        let link = parsed
            .links
            .first()
            .and_then(|first| usize::try_from(record.seq - first.seq).ok())
            .and_then(|i| parsed.links.get(i))
            .filter(|l| l.seq == record.seq)
            .ok_or_else(|| BundleError::Record {
                seq: record.seq,
                what: "the record has no link in the bundle".into(),
            })?;
        if link.prev_hash != record.prev_hash || link.hash != record.hash {
            return Err(record_error(record.seq, BreakReason::PrevHashMismatch));
        }
        if record.body == TOMBSTONE_BODY {
            match &parsed.checkpoint {
                Some(c) if c.seq >= record.seq => {
                    let m = signing::checkpoint_message(c.seq, &c.hash);
                    signing::verify_hex(&c.public_key, &m, &c.signature)
                        .map_err(|_| record_error(c.seq, BreakReason::CheckpointSignature))?;
                    pruned += 1;
                }
                _ => {
                    return Err(record_error(
                        record.seq,
                        BreakReason::PrunedWithoutCheckpoint,
                    ));
                }
            }
        } else if expected_hash(&EvidenceRecord::from(record.clone())) != record.hash {
            return Err(record_error(record.seq, BreakReason::HashMismatch));
        } else {
            verified += 1;
        }
    }
    if let Some(last) = parsed.links.last()
        && last.seq > parsed.head.seq
    {
        return Err(BundleError::Record {
            seq: last.seq,
            what: "the link is beyond the exported chain head".into(),
        });
    }
    Ok(BundleReport {
        fingerprint: parsed.fingerprint,
        records_verified: verified,
        records_pruned: pruned,
        links: parsed.links.len(),
        kid,
    })
}
