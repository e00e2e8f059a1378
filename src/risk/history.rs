//! The payment, history and endpoint parts of a [`RiskContext`](super::context::RiskContext):
//! the normalised payment as rules see it, counts from the store (payer velocity, same
//! resource, first-seen endpoint, free-then-paid), and what the operator configured about the
//! endpoint (known brand wallets, traces required).
//! Upheld disputes come from the evidence area's dispute records (`refund_owed` outcomes).

use super::config::RiskConfig;
use super::context::{EndpointFacts, HistoryFacts, PaymentFacts};
use crate::protocol::Payment;
use crate::store::risk::HistoryCounts;
use crate::verdict::Gate;

/// `(host, path, query parameters)` of a URL.
pub type UrlParts = (String, String, Vec<(String, String)>);

/// `(host, path, query)` of a resource URL.
pub fn split_url(url: &str) -> Option<UrlParts> {
    let rest = url.split_once("://")?.1;
    let rest = rest.split('#').next().unwrap_or(rest);
    let (authority, path_query) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        },
    };
    let host = authority
        .rsplit('@')
        .next()?
        .split(':')
        .next()?
        .to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let (path, query) = path_query.split_once('?').unwrap_or((path_query, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let path = if path.is_empty() { "/" } else { path };
    Some((host, path.to_owned(), query))
}

/// `host/path` of a resource: the endpoint history and `require_trace` are keyed by.
pub fn endpoint_key(resource: Option<&str>) -> Option<String> {
    let (host, path, _) = split_url(resource?)?;
    Some(format!("{host}{path}"))
}

/// The payment, as rules see it.
pub fn payment_facts(payment: &Payment, gate: Gate) -> PaymentFacts {
    let amount = payment.amount.to_string();
    // Decimals from the payment, else from the known-asset table (EVM).
    let decimals = payment.decimals.or_else(|| {
        let chain_id = payment.evm_chain_id()?;
        let asset = payment.asset.parse().ok()?;
        crate::chain::evm::assets::asset_decimals(chain_id, asset)
    });
    let amount_units = decimals.and_then(|d| {
        let a: f64 = amount.parse().ok()?;
        Some(a / 10f64.powi(i32::from(d)))
    });
    let parts = payment.resource.as_deref().and_then(split_url);
    PaymentFacts {
        network: payment.network.caip2.to_string(),
        scheme: payment.scheme.clone(),
        asset: payment.asset.clone(),
        amount,
        amount_units,
        decimals,
        payer: payment.payer.as_deref().map(crate::admin::normalise_pay_to),
        pay_to: payment.pay_to.clone(),
        resource: payment.resource.clone(),
        description: payment.description.clone(),
        host: parts.as_ref().map(|p| p.0.clone()),
        path: parts.as_ref().map(|p| p.1.clone()),
        query: parts.map(|p| p.2.into_iter().collect()).unwrap_or_default(),
        x402_version: payment.version.number(),
        gate: match gate {
            Gate::Verify => "verify".into(),
            Gate::Settle => "settle".into(),
        },
    }
}

/// History facts from the store's counts.
pub fn history_facts(counts: &HistoryCounts, endpoint_known: bool) -> HistoryFacts {
    HistoryFacts {
        payer_payments_1h: counts.payer_1h,
        payer_payments_24h: counts.payer_24h,
        payer_same_resource_5m: counts.same_resource_5m,
        payer_to_payee_before: counts.to_payee,
        endpoint_first_seen: endpoint_known && counts.endpoint_seen == 0,
        payer_disputes_upheld: counts.disputes_upheld,
        payer_free_payments_to_endpoint: counts.free_to_endpoint,
    }
}

/// Approved payments to an endpoint (in one token) before its amounts count as "usual": one
/// or two payments say little about what the endpoint normally costs.
pub const USUAL_RANGE_MIN_PAYMENTS: u64 = 3;

/// What the operator configured, and what approved payments taught, about the endpoint.
pub fn endpoint_facts(
    config: &RiskConfig,
    payment: &PaymentFacts,
    counts: &HistoryCounts,
) -> EndpointFacts {
    let endpoint = match (&payment.host, &payment.path) {
        (Some(h), Some(p)) => Some(format!("{h}{p}")),
        _ => None,
    };
    let requires_trace = endpoint.as_deref().is_some_and(|e| {
        config
            .require_trace
            .iter()
            .any(|prefix| e.starts_with(prefix.trim_start_matches("https://")))
    });
    let known_wallets: Vec<String> = payment
        .host
        .as_ref()
        .and_then(|h| config.known_wallets.get(h))
        .map(|w| {
            w.iter()
                .map(|a| crate::admin::normalise_pay_to(a))
                .collect()
        })
        .unwrap_or_default();
    let pay_to_known = known_wallets.is_empty() || known_wallets.contains(&payment.pay_to);
    let usual = counts
        .endpoint_asset_range
        .as_ref()
        .filter(|_| counts.endpoint_asset_payments >= USUAL_RANGE_MIN_PAYMENTS);
    EndpointFacts {
        requires_trace,
        known_wallets,
        pay_to_known,
        usual_min: usual.map(|(min, _)| min.clone()),
        usual_max: usual.map(|(_, max)| max.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_path_and_query() {
        let (h, p, q) = split_url("https://Shop.Example:443/buy/item?aff=x&ref").unwrap();
        assert_eq!((h.as_str(), p.as_str()), ("shop.example", "/buy/item"));
        assert_eq!(
            q,
            [("aff".into(), "x".into()), ("ref".into(), String::new())]
        );
        assert_eq!(endpoint_key(Some("https://a.b")).as_deref(), Some("a.b/"));
        assert_eq!(endpoint_key(Some("not a url")), None);
    }
}
