//! The admin API under `/admin`: bearer-token authentication with scopes, an audit log line
//! for every call, and the routes each area contributes (evidence, disputes, policy, review).
//!
//! Each admin operation declares its scope in the OpenAPI document (`x-gatehouse-scope`:
//! `operator`, `reader` or `payee`), and this layer enforces `operator` and `reader` before the
//! handler runs (an undeclared route needs the operator: fail closed); `payee` routes let
//! any token in and their handlers call [`Principal::require_payee`] or filter by
//! [`Principal::visible_payees`].
//!
//! Tokens are configured as SHA-256 hashes (`[[admin.tokens]]`), so a leaked configuration
//! does not leak a usable token; `gatehouse admin token` mints one. Without a valid token
//! every admin route answers 401, whatever the path, before any handler runs.

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ConfigProblem;
use crate::server::AppState;
use crate::server::error::ApiError;

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The accepted bearer tokens.
    pub tokens: Vec<TokenConfig>,
}

/// One accepted bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (appears in the audit log and in evidence of admin actions).
    pub name: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// What it may do: `operator`, `auditor`, or `seller:<payTo>`.
    pub scopes: Vec<Scope>,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Everything: read, change policy, approve reviews, resolve disputes.
    Operator,
    /// Read everything, change nothing.
    Auditor,
    /// Read (and dispute) only payments to this `payTo` (compared case-insensitively for EVM).
    Seller(String),
}

impl Scope {
    /// Parses `operator`, `auditor` or `seller:<payTo>`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "operator" => Some(Scope::Operator),
            "auditor" => Some(Scope::Auditor),
            _ => text
                .strip_prefix("seller:")
                .filter(|pay_to| !pay_to.is_empty())
                .map(|pay_to| Scope::Seller(normalise_pay_to(pay_to))),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Operator => f.write_str("operator"),
            Scope::Auditor => f.write_str("auditor"),
            Scope::Seller(pay_to) => write!(f, "seller:{pay_to}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Scope::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown scope `{text}` (use operator, auditor or seller:<payTo>)"
            ))
        })
    }
}

/// EVM addresses compare case-insensitively; Solana addresses are case-sensitive base58.
pub fn normalise_pay_to(pay_to: &str) -> String {
    if pay_to.starts_with("0x") || pay_to.starts_with("0X") {
        pay_to.to_ascii_lowercase()
    } else {
        pay_to.to_owned()
    }
}

impl AdminConfig {
    /// Every problem with the section, naming the key.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let key = |field: &str| format!("admin.tokens[{i}].{field}");
            if token.name.trim().is_empty() {
                out.push(ConfigProblem {
                    key: key("name"),
                    message: "must not be empty".into(),
                });
            }
            let valid_hash = token.sha256.len() == 64
                && token
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !valid_hash {
                out.push(ConfigProblem {
                    key: key("sha256"),
                    message: "must be 64 lowercase hex digits (see `gatehouse admin token`)".into(),
                });
            }
            if token.scopes.is_empty() {
                out.push(ConfigProblem {
                    key: key("scopes"),
                    message: "must name at least one scope".into(),
                });
            }
        }
        out
    }
}

/// The lowercase hex SHA-256 of a token, as configured.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (32 bytes, hex), for `gatehouse admin token`.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("gh_{}", hex::encode(bytes)))
}

/// The authenticated caller of an admin route. Handlers take it as an extractor; the
/// authentication layer has already refused requests without a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's configured name.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Operators may change things.
    pub fn is_operator(&self) -> bool {
        self.scopes.contains(&Scope::Operator)
    }

    /// Operators and auditors read everything.
    pub fn reads_everything(&self) -> bool {
        self.is_operator() || self.scopes.contains(&Scope::Auditor)
    }

    /// The payees this principal may see, or `None` for all of them.
    pub fn visible_payees(&self) -> Option<Vec<String>> {
        if self.reads_everything() {
            return None;
        }
        Some(
            self.scopes
                .iter()
                .filter_map(|s| match s {
                    Scope::Seller(pay_to) => Some(pay_to.clone()),
                    _ => None,
                })
                .collect(),
        )
    }

    /// 403 unless this principal is an operator.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this action needs the operator scope".into(),
            ))
        }
    }

    /// 403 unless this principal may read everything (operator or auditor).
    pub fn require_reader(&self) -> Result<(), ApiError> {
        if self.reads_everything() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this view needs the operator or auditor scope".into(),
            ))
        }
    }

    /// 403 unless this principal may see payments to `pay_to`.
    pub fn require_payee(&self, pay_to: &str) -> Result<(), ApiError> {
        match self.visible_payees() {
            None => Ok(()),
            Some(payees) if payees.contains(&normalise_pay_to(pay_to)) => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "this payment is not to a payee of this token".into(),
            )),
        }
    }
}

/// Resolves bearer tokens to principals (hashes compared, never tokens).
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Arc<Vec<TokenConfig>>,
}

impl Authenticator {
    /// From the configured tokens.
    pub fn new(config: &AdminConfig) -> Self {
        Self {
            tokens: Arc::new(config.tokens.clone()),
        }
    }

    /// The principal holding `token`, if it is configured.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = token_hash(token);
        // Hashes of secrets: comparing them in variable time reveals nothing about the token.
        self.tokens
            .iter()
            .find(|t| t.sha256 == hash)
            .map(|t| Principal {
                name: t.name.clone(),
                scopes: t.scopes.clone(),
            })
    }

    /// The principal for a request's `Authorization: Bearer` header (or, for browsers'
    /// `EventSource`, which cannot set headers, an `access_token` query parameter).
    pub fn from_parts(&self, parts: &Parts) -> Result<Principal, ApiError> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .map(str::to_owned);
        let token = header.or_else(|| query_token(parts.uri.query()));
        let Some(token) = token else {
            return Err(ApiError::Unauthorized(
                "an admin bearer token is required".into(),
            ));
        };
        self.authenticate(&token)
            .ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        state.admin.from_parts(parts)
    }
}

/// What an admin operation requires, from its `x-gatehouse-scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteScope {
    /// Operators only (mutations).
    Operator,
    /// Operators and auditors.
    Reader,
    /// Any token; the handler restricts sellers to their own payees.
    Payee,
}

impl RouteScope {
    /// Parses the extension's value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "operator" => Some(Self::Operator),
            "reader" => Some(Self::Reader),
            "payee" => Some(Self::Payee),
            _ => None,
        }
    }
}

/// The declared scope of `method path` (an OpenAPI path template under `/admin`); an
/// undeclared or unknown one is [`RouteScope::Operator`] (fail closed).
pub fn route_scope(path: &str, method: &http::Method) -> RouteScope {
    let declared = crate::server::openapi::document()
        .as_ref()
        .ok()
        .and_then(|doc| {
            doc["paths"][path][method.as_str().to_ascii_lowercase()].get("x-gatehouse-scope")
        })
        .and_then(|v| v.as_str())
        .and_then(RouteScope::parse);
    declared.unwrap_or_else(|| {
        tracing::warn!(%method, path, "Admin route without x-gatehouse-scope; operators only.");
        RouteScope::Operator
    })
}

fn enforce_scope(parts: &Parts, principal: &Principal) -> Result<(), ApiError> {
    // The fallback (no such route) has no matched path; it answers 404 itself.
    let Some(matched) = parts.extensions.get::<MatchedPath>() else {
        return Ok(());
    };
    let path = if matched.as_str().starts_with("/admin") {
        matched.as_str().to_owned()
    } else {
        format!("/admin{}", matched.as_str())
    };
    match route_scope(&path, &parts.method) {
        RouteScope::Operator => principal.require_operator(),
        RouteScope::Reader => principal.require_reader(),
        RouteScope::Payee => Ok(()),
    }
}

/// Runs after routing (a route layer, so the matched path is known) and after
/// [`authenticate`] (which put the principal in the extensions): refuses a principal the
/// route's declared scope does not admit.
async fn authorise(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Some(principal) = parts.extensions.get::<Principal>() else {
        return ApiError::Unauthorized("an admin bearer token is required".into()).into_response();
    };
    if let Err(error) = enforce_scope(&parts, principal) {
        return error.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// Authenticates every admin request and writes the audit line (who, what, outcome).
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let principal = match state.admin.from_parts(&parts) {
        Ok(principal) => principal,
        Err(error) => {
            tracing::warn!(
                target: "gatehouse::audit",
                method = %parts.method,
                path = %parts.uri.path(),
                status = 401,
                "Admin call refused: {error}."
            );
            return error.into_response();
        }
    };
    let (method, path, who) = (
        parts.method.clone(),
        parts.uri.path().to_owned(),
        principal.name.clone(),
    );
    parts.extensions.insert(principal);
    let response = next.run(Request::from_parts(parts, body)).await;
    tracing::info!(
        target: "gatehouse::audit",
        principal = %who,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        "Admin call."
    );
    response
}

/// `GET /admin/whoami`: the caller's name and scopes.
async fn whoami(principal: Principal) -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "name": principal.name,
        "scopes": principal.scopes,
    }))
}

/// Every admin route, behind the authentication layer. Each area adds its router here.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/whoami", axum::routing::get(whoami))
        .merge(crate::dashboard::admin_routes())
        .merge(crate::risk::routes::admin_routes())
        .merge(crate::evidence::admin::routes())
        .merge(crate::policy::admin::routes())
        // Every area's routes are merged above this line, so the scope check covers them.
        .route_layer(middleware::from_fn(authorise))
        .fallback(|| async { ApiError::NotFound("no such admin route".into()) })
        .layer(middleware::from_fn_with_state(state, authenticate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AdminConfig {
        AdminConfig {
            tokens: vec![TokenConfig {
                name: "shop".into(),
                sha256: token_hash("s3cret"),
                scopes: vec![Scope::parse("seller:0xABCdef").unwrap()],
            }],
        }
    }

    #[test]
    fn scopes_parse_and_print() {
        for text in ["operator", "auditor", "seller:0xabc", "seller:So1ana"] {
            assert_eq!(Scope::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Scope::parse("seller:"), None);
        assert_eq!(Scope::parse("root"), None);
    }

    #[test]
    fn tokens_authenticate_by_hash_and_sellers_see_only_their_payee() {
        let auth = Authenticator::new(&config());
        assert!(auth.authenticate("wrong").is_none());
        let p = auth.authenticate("s3cret").unwrap();
        assert!(!p.is_operator() && !p.reads_everything());
        assert!(p.require_payee("0xabcDEF").is_ok());
        assert!(p.require_payee("0x0000").is_err());
        assert!(p.require_operator().is_err());
    }

    #[test]
    fn route_scopes_come_from_the_openapi_document() {
        let post = http::Method::POST;
        let get = http::Method::GET;
        assert_eq!(
            route_scope("/admin/evidence/prune", &post),
            RouteScope::Operator
        );
        assert_eq!(
            route_scope("/admin/evidence/verify", &get),
            RouteScope::Reader
        );
        assert_eq!(route_scope("/admin/whoami", &get), RouteScope::Payee);
        // Undeclared: operators only.
        assert_eq!(route_scope("/admin/whoami", &post), RouteScope::Operator);
        assert_eq!(
            route_scope("/admin/undocumented", &get),
            RouteScope::Operator
        );
    }

    #[test]
    fn bad_token_entries_are_named() {
        let mut c = config();
        c.tokens[0].sha256 = "ABC".into();
        c.tokens[0].scopes.clear();
        let keys: Vec<_> = c.problems().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, ["admin.tokens[0].sha256", "admin.tokens[0].scopes"]);
    }
}
