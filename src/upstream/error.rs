//! What can go wrong talking to the upstream, classified by what it means for a payment.

use bytes::Bytes;
use http::StatusCode;

/// Longest string accepted as a transaction hash hint (a Solana signature is 88 base58
/// characters, an EVM hash 66).
const MAX_TX_HINT_LEN: usize = 128;

/// An upstream endpoint, named in errors and timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /verify`
    Verify,
    /// `POST /settle`
    Settle,
    /// `GET /supported`
    Supported,
    /// `GET /discovery/resources`
    Discovery,
}

impl Endpoint {
    /// The path appended to the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::Verify => "/verify",
            Self::Settle => "/settle",
            Self::Supported => "/supported",
            Self::Discovery => "/discovery/resources",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.path())
    }
}

/// A call to the upstream that did not produce a usable answer. Cloneable so one cached
/// failure can be handed to every caller that waited on it. Messages never carry the
/// configured credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The `[upstream]` section is unusable; every problem is listed.
    #[error("invalid upstream config: {}", .0.join("; "))]
    Config(Vec<String>),
    /// No connection could be opened (refused, DNS, TLS handshake, connect timeout): the
    /// request was definitely not sent.
    #[error("could not connect to the upstream for {endpoint}: {reason}")]
    Connect {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The cause chain.
        reason: String,
    },
    /// No complete answer within the timeout; the request may have been acted upon.
    #[error("upstream {endpoint} timed out after {timeout_ms} ms")]
    Timeout {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The connection failed after the request was (possibly) sent, e.g. reset by the peer
    /// or closed mid-response; the request may have been acted upon.
    #[error("upstream {endpoint} connection failed after the request was sent: {reason}")]
    Transport {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The cause chain.
        reason: String,
    },
    /// The upstream answered 5xx. CDP says a 5xx does not guarantee failure (spec §1.7), so
    /// on `/settle` this is an unknown outcome.
    #[error("upstream {endpoint} answered {status}")]
    ServerError {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The 5xx status.
        status: StatusCode,
        /// The body if it was JSON within the size cap, else `Null`.
        body: serde_json::Value,
        /// The body bytes as received (empty if unreadable or over the cap).
        raw: Bytes,
    },
    /// The upstream answered, but the body is not JSON, is over the size cap, or lacks what
    /// the endpoint requires.
    #[error("upstream {endpoint} answered {status} with an unusable body: {reason}")]
    InvalidBody {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The status the upstream answered with.
        status: StatusCode,
        /// What was wrong with the body.
        reason: String,
    },
    /// The upstream answered with a redirect, which is never followed so the credential
    /// cannot leak to another host.
    #[error("upstream {endpoint} answered redirect {status} (not followed)")]
    Redirect {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The 3xx status.
        status: StatusCode,
        /// The `Location` header, if it was readable.
        location: Option<String>,
    },
    /// The upstream answered with a status the endpoint cannot use (e.g. `/supported`
    /// answering 4xx, or 429 after every retry).
    #[error("upstream {endpoint} answered unexpected status {status}")]
    UnexpectedStatus {
        /// The endpoint called.
        endpoint: Endpoint,
        /// The status.
        status: StatusCode,
        /// The body if it was JSON within the size cap, else `Null`.
        body: serde_json::Value,
    },
}

impl UpstreamError {
    /// True when the upstream may have acted on the request even though no usable answer
    /// came back: a timeout, a 5xx, a connection lost after sending, or a 2xx whose body is
    /// unreadable. For `/settle` this means the payment may have landed: record
    /// `settlement_pending` and reconcile from the chain, never a plain failure (spec §6.2).
    /// False when the request was definitely not acted upon (connect failure, bad config,
    /// redirect, a 4xx).
    pub fn is_unknown_outcome(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Transport { .. } | Self::ServerError { .. } => true,
            // A 2xx means the upstream did the work; only its report of it is unreadable.
            Self::InvalidBody { status, .. } => status.is_success(),
            Self::Config(_)
            | Self::Connect { .. }
            | Self::Redirect { .. }
            | Self::UnexpectedStatus { .. } => false,
        }
    }

    /// A transaction hash (EVM) or signature (Solana) found in the `transaction` field of a
    /// 5xx body, kept so a pending settlement can be reconciled from the chain. Only short
    /// alphanumeric strings are taken; anything else is not a hash.
    pub fn transaction_hint(&self) -> Option<String> {
        let Self::ServerError { body, .. } = self else {
            return None;
        };
        let tx = body.get("transaction")?.as_str()?.trim();
        let plausible = !tx.is_empty()
            && tx.len() <= MAX_TX_HINT_LEN
            && tx.bytes().all(|b| b.is_ascii_alphanumeric());
        plausible.then(|| tx.to_owned())
    }

    /// The endpoint the failed call was for, if it got as far as a call.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Self::Config(_) => None,
            Self::Connect { endpoint, .. }
            | Self::Timeout { endpoint, .. }
            | Self::Transport { endpoint, .. }
            | Self::ServerError { endpoint, .. }
            | Self::InvalidBody { endpoint, .. }
            | Self::Redirect { endpoint, .. }
            | Self::UnexpectedStatus { endpoint, .. } => Some(*endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server_error(body: serde_json::Value) -> UpstreamError {
        UpstreamError::ServerError {
            endpoint: Endpoint::Settle,
            status: StatusCode::BAD_GATEWAY,
            body,
            raw: Bytes::new(),
        }
    }

    #[test]
    fn transaction_hint_takes_only_plausible_hashes() {
        let evm = "0x".to_owned() + &"ab".repeat(32);
        assert_eq!(
            server_error(json!({ "transaction": evm })).transaction_hint(),
            Some(evm)
        );
        let sol = "5".repeat(88);
        assert_eq!(
            server_error(json!({ "transaction": sol })).transaction_hint(),
            Some(sol)
        );
        for body in [
            json!({ "transaction": "" }),
            json!({ "transaction": 12 }),
            json!({ "transaction": "0xab cd" }),
            json!({ "transaction": "a".repeat(MAX_TX_HINT_LEN + 1) }),
            json!({ "error": "boom" }),
            json!("transaction"),
            serde_json::Value::Null,
        ] {
            assert_eq!(
                server_error(body.clone()).transaction_hint(),
                None,
                "{body}"
            );
        }
        let at_cap = "a".repeat(MAX_TX_HINT_LEN);
        assert_eq!(
            server_error(json!({ "transaction": at_cap })).transaction_hint(),
            Some(at_cap)
        );
        let timeout = UpstreamError::Timeout {
            endpoint: Endpoint::Settle,
            timeout_ms: 1,
        };
        assert_eq!(timeout.transaction_hint(), None);
    }

    // Invariant 2: only failures where the upstream may have acted count as unknown.
    #[test]
    fn unknown_outcome_classification() {
        let invalid = |status| UpstreamError::InvalidBody {
            endpoint: Endpoint::Settle,
            status,
            reason: String::new(),
        };
        assert!(invalid(StatusCode::OK).is_unknown_outcome());
        assert!(!invalid(StatusCode::BAD_REQUEST).is_unknown_outcome());
        assert!(server_error(serde_json::Value::Null).is_unknown_outcome());
        let connect = UpstreamError::Connect {
            endpoint: Endpoint::Settle,
            reason: String::new(),
        };
        assert!(!connect.is_unknown_outcome());
        assert!(!UpstreamError::Config(vec![]).is_unknown_outcome());
    }
}
