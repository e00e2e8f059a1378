//! The one mapping from errors to HTTP responses. Bodies are `{"error":{"code","message"}}`
//! (plus `field` when one field is to blame); internals never reach the client.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::pipeline::PipelineError;
use crate::upstream::UpstreamError;

/// An error answered with a non-200 status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: 400.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// The field to blame, as a dotted path.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Body over the configured limit: 413.
    #[error("request body exceeds {limit_bytes} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit_bytes: usize,
    },
    /// A conflicting retry: 409.
    #[error("{message}")]
    Conflict {
        /// Machine-readable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The upstream facilitator failed: 502, or 504 on a timeout.
    #[error("upstream facilitator: {0}")]
    Upstream(#[from] UpstreamError),
    /// The upstream answered something unusable: 502.
    #[error("upstream facilitator answered an unusable body: {0}")]
    UpstreamBody(String),
    /// No or an invalid admin token: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token without the scope this needs: 403.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource: 404.
    #[error("{0}")]
    NotFound(String),
    /// A dependency is not ready: 503.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A bug or an unexpected failure: 500, logged, never detailed to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Upstream(e) if is_timeout(e) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Upstream(_) | ApiError::UpstreamBody(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Upstream(e) if is_timeout(e) => "upstream_timeout",
            ApiError::Upstream(_) | ApiError::UpstreamBody(_) => "upstream_unavailable",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

fn is_timeout(error: &UpstreamError) -> bool {
    matches!(error, UpstreamError::Timeout { .. })
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Decode(e) => ApiError::BadRequest {
                code: e.code,
                field: e.field,
                message: e.message,
            },
            e @ PipelineError::IdentifierConflict(_) => ApiError::Conflict {
                code: "payment_identifier_conflict",
                message: e.to_string(),
            },
            e @ PipelineError::SettlementInProgress(_) => ApiError::Conflict {
                code: "settlement_in_progress",
                message: e.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "Internal error answered with 500.");
                "an internal error occurred".to_owned()
            }
            other => other.to_string(),
        };
        let mut error = json!({"code": self.code(), "message": message});
        if let ApiError::BadRequest {
            field: Some(field), ..
        } = &self
        {
            error["field"] = json!(field);
        }
        let mut response = (self.status(), Json(json!({ "error": error }))).into_response();
        if let ApiError::Unauthorized(_) = self {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
            );
        }
        response
    }
}
