//! The OpenAPI document for the whole HTTP API, served at `/openapi.json`. Each area of the
//! API owns one fragment file in `openapi/` (embedded at build time); this module merges
//! them and refuses a path or component defined twice, so fragments cannot silently shadow
//! one another.

use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use serde_json::{Map, Value};

use crate::server::AppState;
use crate::server::error::ApiError;

mod fragments {
    include!(concat!(env!("OUT_DIR"), "/openapi_fragments.rs"));
}

/// Merges every fragment into one document, or names the first conflict or parse error.
pub fn build() -> Result<Value, String> {
    let mut doc = Value::Object(Map::new());
    for (name, text) in fragments::FRAGMENTS {
        let fragment: Value =
            serde_json::from_str(text).map_err(|e| format!("openapi/{name}: {e}"))?;
        merge(&mut doc, fragment, name, 0)?;
    }
    Ok(doc)
}

/// Merges `from` into `into`: objects merge key by key down to depth 2 (`paths./x`,
/// `components.schemas.X`), below which a key present in both is a conflict.
fn merge(into: &mut Value, from: Value, name: &str, depth: usize) -> Result<(), String> {
    let (Value::Object(into), Value::Object(from)) = (into, from) else {
        return Err(format!("openapi/{name}: expected an object"));
    };
    for (key, value) in from {
        match into.get_mut(&key) {
            None => {
                into.insert(key, value);
            }
            Some(existing) if depth < 2 && existing.is_object() && value.is_object() => {
                merge(existing, value, name, depth + 1)?
            }
            Some(_) if depth == 0 => {} // info, openapi: the base fragment's stand
            Some(_) => return Err(format!("openapi/{name}: `{key}` is defined twice")),
        }
    }
    Ok(())
}

/// The merged document, built once.
pub fn document() -> &'static Result<Value, String> {
    static DOC: OnceLock<Result<Value, String>> = OnceLock::new();
    DOC.get_or_init(build)
}

async fn serve() -> Result<axum::Json<Value>, ApiError> {
    match document() {
        Ok(doc) => Ok(axum::Json(doc.clone())),
        Err(e) => Err(ApiError::Internal(e.clone())),
    }
}

/// `GET /openapi.json`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(serve))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_merge_into_one_document() {
        let doc = build().unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/verify"]["post"].is_object());
        assert!(doc["components"]["securitySchemes"]["adminToken"].is_object());
    }

    #[test]
    fn a_path_defined_twice_is_refused() {
        let mut doc = serde_json::json!({"paths": {"/a": {"get": {}}}});
        let again = serde_json::json!({"paths": {"/a": {"get": {}}}});
        let err = merge(&mut doc, again, "x.json", 0).unwrap_err();
        assert!(
            err.contains("`get` is defined twice") || err.contains("/a"),
            "{err}"
        );
    }
}
