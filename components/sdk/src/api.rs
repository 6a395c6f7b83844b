//! JSON API plumbing shared by the services: an error type that already knows its status
//! and body, the handler result type, and the one function that writes either to the
//! response.
//!
//! Every error body is an object with at least `"error"`; extra members (a `product_id`,
//! the `fields` of a validation failure) are added with [`ApiError::with`].

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use wasi::http::types::ResponseOutparam;

use crate::bindings::wasi::keyvalue::store;

/// What a handler answers on success: status and JSON body.
pub type ApiResult = Result<(u16, Value), ApiError>;

/// An error response: status plus a JSON object body with an `"error"` member.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub body: Map<String, Value>,
}

impl ApiError {
    /// `status` with body `{"error": message}`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(message.into()));
        Self { status, body }
    }

    /// Adds (or replaces) a member of the body.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.into(), value.into());
        self
    }

    /// 400 `{"error":"validation failed","fields":{field: problem, ...}}`.
    pub fn validation(fields: BTreeMap<String, String>) -> Self {
        let fields: Map<String, Value> = fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        Self::new(400, "validation failed").with("fields", Value::Object(fields))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// 401, for a request without the gateway's verified user id.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// 404 for a path this service does not serve.
    pub fn no_route() -> Self {
        Self::new(404, "not found")
    }

    /// 405 for a known path with a method it does not accept.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "method not allowed")
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    /// 502: a service this one depends on failed or answered nonsense.
    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(502, message)
    }

    /// The whole body as a JSON value.
    pub fn to_value(&self) -> Value {
        Value::Object(self.body.clone())
    }

    /// The `"error"` text.
    pub fn message(&self) -> &str {
        self.body.get("error").and_then(Value::as_str).unwrap_or("")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, Value::Object(self.body.clone()))
    }
}

/// What the host's text of a storage failure starts with when the database or NATS
/// failed or could not be reached (a restart, a partition).
const UNAVAILABLE: &str = "storage unavailable: ";

/// Storage failures are never the client's fault. The backend failing or out of reach
/// is 503 with `Retry-After: 1` (nothing is wrong with the request; it may well work in
/// a second); anything else is the service's own error, 500. An access-denied bucket
/// means the manifest does not grant it, which the detail names.
impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        let detail = match e {
            store::Error::NoSuchStore => "no such store".to_string(),
            store::Error::AccessDenied => "access denied (bucket not granted?)".to_string(),
            store::Error::Other(s) if s.starts_with(UNAVAILABLE) => {
                return Self::new(503, "storage unavailable")
                    .with("detail", &s[UNAVAILABLE.len()..])
                    .with("retry_after_secs", 1);
            }
            store::Error::Other(s) => s,
        };
        Self::internal("storage error").with("detail", detail)
    }
}

/// Writes `result` to `out`: the success body with its status, or the error's (a 429 or
/// 503 with a `retry_after_secs` member also says it in `Retry-After`).
pub fn reply(out: ResponseOutparam, result: ApiResult) {
    match result {
        Ok((status, body)) => crate::response::json(out, status, &body),
        Err(e) => {
            let body = serde_json::to_vec(&e.to_value()).unwrap_or_default();
            let wait = e.body.get("retry_after_secs").and_then(Value::as_u64);
            match wait
                .filter(|_| matches!(e.status, 429 | 503))
                .map(|s| s.to_string())
            {
                Some(secs) => crate::response::respond(
                    out,
                    e.status,
                    &[("content-type", "application/json"), ("retry-after", &secs)],
                    &body,
                ),
                None => crate::response::respond(
                    out,
                    e.status,
                    &[("content-type", "application/json")],
                    &body,
                ),
            }
        }
    }
}

/// `Ok((status, value))`, to keep handler tails short.
pub fn ok(status: u16, value: Value) -> ApiResult {
    Ok((status, value))
}

/// The 400 body for a request body that is not JSON at all.
pub(crate) fn invalid_json(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid JSON body").with("detail", json!(detail.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies() {
        let e = ApiError::conflict("insufficient stock").with("product_id", "p1");
        assert_eq!(e.status, 409);
        assert_eq!(
            e.to_value(),
            json!({"error": "insufficient stock", "product_id": "p1"})
        );
        let mut fields = BTreeMap::new();
        fields.insert(
            "email".to_string(),
            "must be a valid email address".to_string(),
        );
        let v = ApiError::validation(fields);
        assert_eq!(v.status, 400);
        assert_eq!(
            v.to_value(),
            json!({"error": "validation failed", "fields": {"email": "must be a valid email address"}})
        );
        let s: ApiError = store::Error::Other("disk full".into()).into();
        assert_eq!(s.status, 500);
        assert_eq!(s.message(), "storage error");
        let down: ApiError =
            store::Error::Other("storage unavailable: pool timed out".into()).into();
        assert_eq!(down.status, 503);
        assert_eq!(
            down.to_value(),
            json!({"error": "storage unavailable", "detail": "pool timed out", "retry_after_secs": 1})
        );
    }
}
