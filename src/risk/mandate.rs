//! AP2 mandates carried as risk evidence: parsed (IntentMandate, CartMandate, PaymentMandate
//! shapes of the AP2 spec), checked (expiry, payee, amount, rolling budget, agent binding,
//! replay of single-use ids in the store) and, where the signer's key is known, verified
//! (`merchant_authorization` / `user_authorization` as compact JWS, ES256K or EdDSA).
//!
//! Mandates arrive in `paymentPayload.extensions["gatehouse-risk"].ap2` (the mandate JSON, or
//! `{intent_mandate, cart_mandate, payment_mandate}`), or in `X-AP2-EVIDENCE`: x402-secure's
//! reference form `evd.v1;mr=<ref>;ms=<sha256 b64url>;mt=application/json;sz=<n>`, or the
//! mandate itself as base64url JSON. A reference whose mandate is not supplied can only be
//! recorded, never checked (`signature = "unverifiable"`).
//!
//! Gatehouse reads a few optional fields AP2 leaves open, on the mandate object:
//! `agent` (the agent DID it is bound to), `payees` (approved payTo addresses), `max_amount`
//! (atomic units per payment), `budget: {amount, period_secs}` (atomic units per rolling
//! window, intent mandates) and `recurring` (bool).

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Signature, U256, keccak256};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::MandateFacts;
use super::session::{decode_b64, decode_hex, parse_iso8601};

/// Largest accepted mandate JSON, bytes.
pub const MAX_MANDATE_BYTES: usize = 64 * 1024;

/// A known signer key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignerKey {
    /// An ed25519 public key (EdDSA).
    Ed25519([u8; 32]),
    /// A secp256k1 key, known by its Ethereum address (ES256K).
    Secp256k1(Address),
}

impl SignerKey {
    /// Parses `ed25519:<64 hex | base58>`, `es256k:0x<address>` or
    /// `secp256k1:<130 hex uncompressed public key>`.
    pub fn parse(text: &str) -> Option<SignerKey> {
        let (kind, key) = text.split_once(':')?;
        match kind {
            "ed25519" => {
                let bytes = decode_hex(key)
                    .filter(|b| b.len() == 32)
                    .or_else(|| bs58::decode(key).into_vec().ok())?;
                Some(SignerKey::Ed25519(bytes.try_into().ok()?))
            }
            "es256k" => key.parse::<Address>().ok().map(SignerKey::Secp256k1),
            "secp256k1" => {
                let bytes = decode_hex(key)?;
                let xy = match bytes.len() {
                    65 if bytes[0] == 4 => &bytes[1..],
                    64 => &bytes[..],
                    _ => return None,
                };
                Some(SignerKey::Secp256k1(Address::from_slice(
                    &keccak256(xy)[12..],
                )))
            }
            _ => None,
        }
    }

    /// From one JWK (OKP/Ed25519 or EC/secp256k1).
    fn from_jwk(jwk: &Value) -> Option<SignerKey> {
        let field = |k: &str| jwk.get(k).and_then(Value::as_str);
        match (field("kty")?, field("crv")?) {
            ("OKP", "Ed25519") => {
                let x = decode_b64(field("x")?)?;
                Some(SignerKey::Ed25519(x.try_into().ok()?))
            }
            ("EC", "secp256k1") => {
                let mut xy = decode_b64(field("x")?)?;
                xy.extend(decode_b64(field("y")?)?);
                (xy.len() == 64)
                    .then(|| SignerKey::Secp256k1(Address::from_slice(&keccak256(&xy)[12..])))
            }
            _ => None,
        }
    }
}

/// Signer keys by key id.
#[derive(Debug, Clone, Default)]
pub struct MandateKeys(BTreeMap<String, SignerKey>);

impl MandateKeys {
    /// From `[risk.mandate_keys]` and an optional JWK set (`{"keys": [...]}` with `kid`s).
    pub fn load(
        configured: &BTreeMap<String, String>,
        jwks_file: Option<&std::path::Path>,
    ) -> Result<MandateKeys, String> {
        let mut keys = BTreeMap::new();
        for (kid, text) in configured {
            let key = SignerKey::parse(text)
                .ok_or_else(|| format!("risk.mandate_keys.{kid}: unreadable key"))?;
            keys.insert(kid.clone(), key);
        }
        if let Some(path) = jwks_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("risk.mandate_jwks_file: {}: {e}", path.display()))?;
            let set: Value =
                serde_json::from_str(&text).map_err(|e| format!("risk.mandate_jwks_file: {e}"))?;
            for jwk in set
                .get("keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(kid), Some(key)) = (
                    jwk.get("kid").and_then(Value::as_str),
                    SignerKey::from_jwk(jwk),
                ) {
                    keys.insert(kid.to_owned(), key);
                }
            }
        }
        Ok(MandateKeys(keys))
    }

    /// Adds one key (tests, programmatic setups).
    pub fn with(mut self, kid: &str, key: SignerKey) -> Self {
        self.0.insert(kid.to_owned(), key);
        self
    }
}

/// How a compact JWS checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verified against a known key.
    Verified,
    /// No signature, or the signer's key is unknown.
    Unverifiable,
    /// Malformed, or does not verify against the named key.
    Invalid,
}

impl SignatureCheck {
    fn label(&self) -> &'static str {
        match self {
            SignatureCheck::Verified => "verified",
            SignatureCheck::Unverifiable => "unverifiable",
            SignatureCheck::Invalid => "invalid",
        }
    }
}

/// Verifies a compact JWS (`header.payload.signature`; an SD-JWT's `~` disclosures are
/// ignored); returns the check and the JWT payload when readable.
pub fn verify_jws(token: &str, keys: &MandateKeys) -> (SignatureCheck, Option<Value>) {
    let jws = token.split('~').next().unwrap_or(token);
    let parts: Vec<&str> = jws.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return (SignatureCheck::Invalid, None);
    };
    let header: Option<Value> = decode_b64(h).and_then(|b| serde_json::from_slice(&b).ok());
    let payload: Option<Value> = decode_b64(p).and_then(|b| serde_json::from_slice(&b).ok());
    let (Some(header), Some(sig)) = (header, decode_b64(s)) else {
        return (SignatureCheck::Invalid, payload);
    };
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let Some(key) = header
        .get("kid")
        .and_then(Value::as_str)
        .and_then(|kid| keys.0.get(kid))
    else {
        return (SignatureCheck::Unverifiable, payload);
    };
    let input = format!("{h}.{p}");
    let ok = match (alg, key) {
        ("EdDSA", SignerKey::Ed25519(pk)) => {
            let (Ok(vk), Ok(sig)) = (
                ed25519_dalek::VerifyingKey::from_bytes(pk),
                <[u8; 64]>::try_from(sig.as_slice()),
            ) else {
                return (SignatureCheck::Invalid, payload);
            };
            vk.verify_strict(
                input.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&sig),
            )
            .is_ok()
        }
        ("ES256K", SignerKey::Secp256k1(address)) => {
            if sig.len() != 64 {
                return (SignatureCheck::Invalid, payload);
            }
            let digest = B256::from_slice(&Sha256::digest(input.as_bytes()));
            let r = U256::from_be_slice(&sig[..32]);
            let s = U256::from_be_slice(&sig[32..]);
            // JWS carries no recovery id: either parity recovering to the key's address verifies.
            [false, true].into_iter().any(|parity| {
                Signature::new(r, s, parity)
                    .recover_address_from_prehash(&digest)
                    .is_ok_and(|a| a == *address)
            })
        }
        _ => false,
    };
    let check = if ok {
        SignatureCheck::Verified
    } else {
        SignatureCheck::Invalid
    };
    (check, payload)
}

/// The mandate evidence a payment carried.
#[derive(Debug, Clone, PartialEq)]
pub enum MandateInput {
    /// A mandate (or a set of them), as JSON.
    Mandate(Value),
    /// Only x402-secure's reference (`mr`, `ms`).
    Reference {
        /// `mr`.
        reference: String,
        /// `ms`.
        sha256_b64url: String,
    },
}

/// Parses `X-AP2-EVIDENCE`: `evd.v1;mr=..;ms=..;mt=application/json;sz=..`, or a mandate as
/// base64url JSON.
pub fn parse_evidence_header(value: &str) -> Result<MandateInput, String> {
    if value.len() > MAX_MANDATE_BYTES {
        return Err(format!("is over {MAX_MANDATE_BYTES} bytes"));
    }
    let parts: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.first() == Some(&"evd.v1") {
        let mut kv = BTreeMap::new();
        for p in &parts[1..] {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("segment `{p}` is not key=value"))?;
            kv.insert(k, v);
        }
        let (Some(mr), Some(ms)) = (kv.get("mr"), kv.get("ms")) else {
            return Err("evd.v1 needs mr and ms".into());
        };
        if kv.get("mt").is_some_and(|mt| *mt != "application/json") {
            return Err("mt must be application/json".into());
        }
        if kv.get("sz").is_some_and(|sz| sz.parse::<u64>().is_err()) {
            return Err("sz must be a decimal size".into());
        }
        return Ok(MandateInput::Reference {
            reference: (*mr).to_owned(),
            sha256_b64url: (*ms).to_owned(),
        });
    }
    let bytes = decode_b64(value).ok_or("is neither evd.v1 nor base64url JSON")?;
    let json: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("does not decode to JSON: {e}"))?;
    if !json.is_object() {
        return Err("must decode to a JSON object".into());
    }
    Ok(MandateInput::Mandate(json))
}

/// What the payment looks like to the mandate checks.
#[derive(Debug, Clone)]
pub struct PaymentView<'a> {
    /// payTo (lowercase for EVM).
    pub pay_to: &'a str,
    /// Atomic amount.
    pub amount: U256,
    /// Token decimals, when known.
    pub decimals: Option<u8>,
    /// The session's agent, when a session was named.
    pub agent: Option<&'a str>,
    /// What the seller says the resource is (requirements' description), when given.
    pub description: Option<&'a str>,
    /// Now, unix ms.
    pub now_ms: u64,
}

/// Words too common to say what a product is.
const SPEC_STOPWORDS: [&str; 16] = [
    "the", "and", "for", "with", "from", "this", "that", "one", "per", "your", "our", "any", "all",
    "its", "are", "was",
];

/// The words that say what a spec or description is about: lowercase alphanumeric runs of
/// three or more characters, stopwords dropped.
fn spec_words(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !SPEC_STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// Whether what the seller describes is what the mandate approved: at least half of the
/// spec's words appear in the description. Deliberately a plain word match, so an operator can
/// predict it; a spec with no telling words matches anything.
pub fn spec_matches(spec: &str, described: &str) -> bool {
    let wanted = spec_words(spec);
    if wanted.is_empty() {
        return true;
    }
    let offered = spec_words(described);
    let found = wanted.iter().filter(|w| offered.contains(*w)).count();
    found * 2 >= wanted.len()
}

/// A parsed mandate, before the store checks (replay, budget).
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The facts known without the store (`replayed` false, `budget_within` true for now).
    pub facts: MandateFacts,
    /// Whether the id is single-use (cart and payment mandates).
    pub single_use: bool,
    /// A rolling budget: (atomic amount, window ms).
    pub budget: Option<(U256, u64)>,
    /// Problems that refuse the payment whatever the rules say.
    pub problems: Vec<String>,
}

fn lower_if_evm(a: &str) -> String {
    crate::admin::normalise_pay_to(a)
}

/// `"1.50"` in whole units → atomic units at `decimals` (no floats).
pub fn units_to_atomic(value: &Value, decimals: u8) -> Option<U256> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let d = usize::from(decimals);
    if frac.len() > d && frac[d..].bytes().any(|b| b != b'0') {
        // More precision than the token has: round up, so the limit is never widened.
        let digits = format!("{int}{}", &frac[..d]);
        return U256::from_str_radix(if digits.is_empty() { "0" } else { &digits }, 10)
            .ok()
            .map(|v| v + U256::from(1));
    }
    let frac = format!("{:0<d$}", &frac[..frac.len().min(d)]);
    let digits = format!("{int}{frac}");
    U256::from_str_radix(if digits.is_empty() { "0" } else { &digits }, 10).ok()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

/// Parses and checks a mandate against a payment (everything but the store).
pub fn evaluate(input: &MandateInput, pay: &PaymentView<'_>, keys: &MandateKeys) -> Parsed {
    let mandate = match input {
        MandateInput::Reference { reference, .. } => {
            return Parsed {
                facts: MandateFacts {
                    id: reference.clone(),
                    kind: "reference".into(),
                    payee_approved: true,
                    amount_within: true,
                    budget_within: true,
                    agent_matches: true,
                    signature: "unverifiable".into(),
                    ..MandateFacts::default()
                },
                single_use: false,
                budget: None,
                problems: Vec::new(),
            };
        }
        MandateInput::Mandate(m) => m,
    };
    let mut problems = Vec::new();
    // One mandate or a set: the most specific one names the payment.
    let pick = |k: &str| mandate.get(k).filter(|v| v.is_object());
    let (intent, cart, payment) = if mandate.get("payment_mandate_contents").is_some() {
        (None, None, Some(mandate))
    } else if mandate.get("contents").is_some() {
        (None, Some(mandate), None)
    } else if mandate.get("natural_language_description").is_some()
        || mandate.get("intent_expiry").is_some()
    {
        (Some(mandate), None, None)
    } else {
        (
            pick("intent_mandate"),
            pick("cart_mandate"),
            pick("payment_mandate"),
        )
    };
    if intent.is_none() && cart.is_none() && payment.is_none() {
        problems
            .push("the AP2 mandate is none of IntentMandate, CartMandate or PaymentMandate".into());
    }
    let mut facts = MandateFacts {
        payee_approved: true,
        amount_within: true,
        budget_within: true,
        agent_matches: true,
        signature: "unverifiable".into(),
        ..MandateFacts::default()
    };
    let mut expiries: Vec<(String, u64)> = Vec::new();
    let mut maxima: Vec<U256> = Vec::new();
    let mut payees: Vec<String> = Vec::new();
    let mut checks: Vec<SignatureCheck> = Vec::new();
    let mut spec = Vec::new();
    let mut budget = None;
    let mut single_use = false;
    let decimals = pay.decimals;
    let mut amount_of = |item: Option<&Value>, what: &str, problems: &mut Vec<String>| {
        let Some(amount) = item.and_then(|i| i.get("amount")) else {
            return;
        };
        // Without the token's decimals a currency amount cannot be compared: not a limit.
        if let (Some(d), Some(v)) = (decimals, amount.get("value")) {
            match units_to_atomic(v, d) {
                Some(max) => maxima.push(max),
                None => problems.push(format!("{what}.amount.value is not a decimal amount")),
            }
        }
    };

    if let Some(m) = intent {
        facts.kind = "intent".into();
        match m
            .get("natural_language_description")
            .and_then(Value::as_str)
        {
            Some(d) => spec.push(d.to_owned()),
            None => problems.push("intent_mandate.natural_language_description is required".into()),
        }
        match m.get("intent_expiry").and_then(Value::as_str) {
            Some(e) => match parse_iso8601(e) {
                Some(ms) => expiries.push(("intent_mandate.intent_expiry".into(), ms)),
                None => problems.push("intent_mandate.intent_expiry is not ISO 8601".into()),
            },
            None => problems.push("intent_mandate.intent_expiry is required".into()),
        }
        for merchant in m
            .get("merchants")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = merchant.as_str() {
                payees.push(s.to_owned());
            }
        }
        facts.recurring_allowed = m.get("recurring").and_then(Value::as_bool).unwrap_or(false);
        if let Some(b) = m.get("budget") {
            let amount = b
                .get("amount")
                .and_then(Value::as_str)
                .and_then(|a| U256::from_str_radix(a, 10).ok());
            let period = b.get("period_secs").and_then(Value::as_u64);
            match (amount, period) {
                (Some(a), Some(p)) if p > 0 => budget = Some((a, p.saturating_mul(1000))),
                _ => problems.push(
                    "intent_mandate.budget must be {amount: atomic units, period_secs > 0}".into(),
                ),
            }
        }
        facts.id = m
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("intent:{}", hex::encode(Sha256::digest(m.to_string()))));
        if let Some(auth) = m.get("user_authorization").and_then(Value::as_str) {
            checks.push(verify_jws(auth, keys).0);
        }
    }
    if let Some(m) = cart {
        facts.kind = "cart".into();
        single_use = true;
        let contents = m.get("contents");
        match contents.and_then(|c| c.get("id")).and_then(Value::as_str) {
            Some(id) => facts.id = format!("cart:{id}"),
            None => problems.push("cart_mandate.contents.id is required".into()),
        }
        match contents
            .and_then(|c| c.get("cart_expiry"))
            .and_then(Value::as_str)
        {
            Some(e) => match parse_iso8601(e) {
                Some(ms) => expiries.push(("cart_mandate.contents.cart_expiry".into(), ms)),
                None => problems.push("cart_mandate.contents.cart_expiry is not ISO 8601".into()),
            },
            None => problems.push("cart_mandate.contents.cart_expiry is required".into()),
        }
        if let Some(name) = contents
            .and_then(|c| c.get("merchant_name"))
            .and_then(Value::as_str)
        {
            payees.push(name.to_owned());
        }
        let details = contents
            .and_then(|c| c.get("payment_request"))
            .and_then(|r| r.get("details"));
        amount_of(
            details.and_then(|d| d.get("total")),
            "cart_mandate.contents.payment_request.details.total",
            &mut problems,
        );
        for item in details
            .and_then(|d| d.get("display_items"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(label) = item.get("label").and_then(Value::as_str) {
                spec.push(label.to_owned());
            }
        }
        // x402 carts name their payee in the accepted method's data.
        for method in contents
            .and_then(|c| c.get("payment_request"))
            .and_then(|r| r.get("method_data"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for key in ["payTo", "pay_to"] {
                if let Some(p) = str_at(method, &["data", key]) {
                    payees.push(p.to_owned());
                }
            }
        }
        if let Some(auth) = m.get("merchant_authorization").and_then(Value::as_str) {
            let (check, claims) = verify_jws(auth, keys);
            if let Some(exp) = claims
                .as_ref()
                .and_then(|c| c.get("exp"))
                .and_then(Value::as_u64)
            {
                expiries.push(("cart_mandate.merchant_authorization.exp".into(), exp * 1000));
            }
            checks.push(check);
        }
    }
    if let Some(m) = payment {
        facts.kind = "payment".into();
        single_use = true;
        let c = m.get("payment_mandate_contents");
        match c
            .and_then(|c| c.get("payment_mandate_id"))
            .and_then(Value::as_str)
        {
            Some(id) => facts.id = format!("payment:{id}"),
            None => problems.push(
                "payment_mandate.payment_mandate_contents.payment_mandate_id is required".into(),
            ),
        }
        amount_of(
            c.and_then(|c| c.get("payment_details_total")),
            "payment_mandate.payment_mandate_contents.payment_details_total",
            &mut problems,
        );
        if let Some(agent) = c
            .and_then(|c| c.get("merchant_agent"))
            .and_then(Value::as_str)
        {
            payees.push(agent.to_owned());
        }
        if let Some(auth) = m.get("user_authorization").and_then(Value::as_str) {
            let (check, claims) = verify_jws(auth, keys);
            if let Some(exp) = claims
                .as_ref()
                .and_then(|c| c.get("exp"))
                .and_then(Value::as_u64)
            {
                expiries.push(("payment_mandate.user_authorization.exp".into(), exp * 1000));
            }
            checks.push(check);
        }
    }
    // Gatehouse's optional fields, on the top-level object.
    for p in mandate
        .get("payees")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = p.as_str() {
            payees.push(s.to_owned());
        }
    }
    if let Some(max) = mandate.get("max_amount") {
        match max.as_str().and_then(|a| U256::from_str_radix(a, 10).ok()) {
            Some(a) => maxima.push(a),
            None => problems.push("max_amount must be atomic units as a decimal string".into()),
        }
    }
    facts.agent = mandate
        .get("agent")
        .or_else(|| mandate.get("agent_did"))
        .and_then(Value::as_str)
        .map(str::to_owned);

    // Payees: only addresses can be compared with payTo; merchant names are recorded.
    facts.payees = payees.iter().map(|p| lower_if_evm(p)).collect();
    let addresses: Vec<&String> = facts
        .payees
        .iter()
        .filter(|p| super::session::Wallet::parse(p).is_some())
        .collect();
    facts.payee_approved = addresses.is_empty() || addresses.iter().any(|p| *p == pay.pay_to);
    if !facts.payee_approved {
        problems.push(format!(
            "payTo {} is not among the mandate's payees",
            pay.pay_to
        ));
    }
    if let Some(max) = maxima.iter().min() {
        facts.max_amount = Some(max.to_string());
        facts.amount_within = pay.amount <= *max;
        if !facts.amount_within {
            problems.push(format!(
                "the amount {} exceeds the mandate's {}",
                pay.amount, max
            ));
        }
    }
    facts.agent_matches = match (&facts.agent, pay.agent) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => true,
    };
    if !facts.agent_matches {
        problems.push("the mandate is bound to another agent than the session's".into());
    }
    if let Some((field, _)) = expiries.iter().find(|(_, ms)| pay.now_ms > *ms) {
        facts.expired = true;
        problems.push(format!("the mandate has expired ({field})"));
    }
    let signature = if checks.contains(&SignatureCheck::Invalid) {
        problems.push("the mandate's signature does not verify".into());
        SignatureCheck::Invalid
    } else if !checks.is_empty() && checks.iter().all(|c| *c == SignatureCheck::Verified) {
        SignatureCheck::Verified
    } else {
        SignatureCheck::Unverifiable
    };
    facts.signature = signature.label().into();
    facts.spec = (!spec.is_empty()).then(|| spec.join("; "));
    facts.spec_matches = facts
        .spec
        .as_deref()
        .zip(pay.description)
        .map(|(spec, described)| spec_matches(spec, described));
    if facts.id.is_empty() && problems.is_empty() {
        problems.push("the mandate has no id".into());
    }
    Parsed {
        facts,
        single_use,
        budget,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    use serde_json::json;

    const PAY_TO: &str = "0x209693bc6afc0c5328ba36faf03c514ef312287c";

    fn view(amount: u64) -> PaymentView<'static> {
        PaymentView {
            pay_to: PAY_TO,
            amount: U256::from(amount),
            decimals: Some(6),
            agent: Some("did:example:agent"),
            description: None,
            now_ms: 1_795_296_860_000,
        }
    }

    #[test]
    fn spec_matches_by_the_words_of_the_spec() {
        let spec = "weather report, Paris, today";
        assert!(spec_matches(spec, "Today's weather report for one city"));
        assert!(spec_matches(spec, "Paris weather"));
        assert!(!spec_matches(spec, "Premium annual weather subscription"));
        assert!(!spec_matches(spec, "Stock quotes"));
        assert!(spec_matches("the one", "anything at all"));
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn cart(total: &str, expiry: &str) -> Value {
        json!({"contents": {
            "id": "cart-1", "user_cart_confirmation_required": false, "merchant_name": "Shop",
            "cart_expiry": expiry,
            "payment_request": {
                "method_data": [{"supported_methods": "x402", "data": {"payTo": PAY_TO}}],
                "details": {"id": "d1", "display_items": [{"label": "report", "amount": {"currency": "USD", "value": total}}],
                            "total": {"label": "total", "amount": {"currency": "USD", "value": total}}}}}})
    }

    #[test]
    fn cart_mandates_bound_amount_payee_and_expiry() {
        let keys = MandateKeys::default();
        let ok = evaluate(
            &MandateInput::Mandate(cart("0.01", "2030-01-01T00:00:00Z")),
            &view(10_000),
            &keys,
        );
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        assert_eq!(ok.facts.id, "cart:cart-1");
        assert_eq!(ok.facts.max_amount.as_deref(), Some("10000"));
        assert!(ok.single_use);
        assert_eq!(ok.facts.signature, "unverifiable");

        let over = evaluate(
            &MandateInput::Mandate(cart("0.009999", "2030-01-01T00:00:00Z")),
            &view(10_000),
            &keys,
        );
        assert!(!over.facts.amount_within);
        let expired = evaluate(
            &MandateInput::Mandate(cart("0.01", "2020-01-01T00:00:00Z")),
            &view(10_000),
            &keys,
        );
        assert!(expired.facts.expired && !expired.problems.is_empty());
        let mut other = cart("0.01", "2030-01-01T00:00:00Z");
        other["contents"]["payment_request"]["method_data"][0]["data"]["payTo"] =
            json!("0x2222222222222222222222222222222222222222");
        let other = evaluate(&MandateInput::Mandate(other), &view(10_000), &keys);
        assert!(!other.facts.payee_approved);
    }

    #[test]
    fn eddsa_mandate_signatures_verify_and_tampering_is_invalid() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let keys = MandateKeys::default().with(
            "merchant-1",
            SignerKey::Ed25519(sk.verifying_key().to_bytes()),
        );
        let header = b64(br#"{"alg":"EdDSA","kid":"merchant-1"}"#);
        let payload = b64(br#"{"iss":"shop","exp":1900000000}"#);
        let sig = sk.sign(format!("{header}.{payload}").as_bytes());
        let jws = format!("{header}.{payload}.{}", b64(&sig.to_bytes()));
        assert_eq!(verify_jws(&jws, &keys).0, SignatureCheck::Verified);
        let forged = format!(
            "{header}.{}.{}",
            b64(br#"{"iss":"evil"}"#),
            b64(&sig.to_bytes())
        );
        assert_eq!(verify_jws(&forged, &keys).0, SignatureCheck::Invalid);
        let unknown = jws.replace(&header, &b64(br#"{"alg":"EdDSA","kid":"nobody"}"#));
        assert_eq!(verify_jws(&unknown, &keys).0, SignatureCheck::Unverifiable);
    }

    #[test]
    fn evidence_headers_parse_both_forms() {
        assert_eq!(
            parse_evidence_header("evd.v1;mr=urn:m:1;ms=abc;mt=application/json;sz=10"),
            Ok(MandateInput::Reference {
                reference: "urn:m:1".into(),
                sha256_b64url: "abc".into()
            })
        );
        let inline =
            b64(br#"{"natural_language_description":"x","intent_expiry":"2030-01-01T00:00:00Z"}"#);
        assert!(matches!(
            parse_evidence_header(&inline),
            Ok(MandateInput::Mandate(_))
        ));
        assert!(parse_evidence_header("evd.v1;mr=x").is_err());
        assert!(parse_evidence_header("%%%").is_err());
    }

    #[test]
    fn units_convert_without_floats() {
        assert_eq!(
            units_to_atomic(&json!("1.5"), 6),
            Some(U256::from(1_500_000))
        );
        assert_eq!(units_to_atomic(&json!(0.01), 6), Some(U256::from(10_000)));
        assert_eq!(
            units_to_atomic(&json!("0.0000011"), 6),
            Some(U256::from(2)),
            "rounds up"
        );
        assert_eq!(units_to_atomic(&json!("-1"), 6), None);
    }
}
