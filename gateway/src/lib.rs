//! Panal's HTTP front door.
//!
//! # Layout
//! - [`routes`]: the route table (method + path prefix → component), longest prefix wins.
//! - [`request_id`]: takes `x-request-id` from the client or makes one.
//! - [`auth`]: HS256 bearer tokens for protected routes; the verified user id travels
//!   in a header no client can set.
//! - [`ratelimit`]: token buckets per route, by client IP and by verified user.
//! - [`aggregate`]: composite routes answered by fanning out to several components.
//! - [`conn`]: connection caps (total, per IP) and header, idle and body timeouts.
//! - [`access`]: the access log, one record per answered request.
//! - [`server`]: the gateway's request handling; `accept`: the accept loop of the
//!   public and the admin listener, with graceful shutdown.
//! - [`tls`]: HTTPS (rustls, ALPN h2 and http/1.1), a certificate reloaded when renewed.
//!
//! The gateway knows nothing of wasm: it hands each routed request to a [`Backend`]
//! ("handle this request with component X"), which the host implements. That keeps this
//! crate testable on its own.

mod accept;
pub mod access;
pub mod aggregate;
pub mod auth;
pub mod conn;
mod hop;
pub mod ratelimit;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod tls;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

pub use conn::ConnLimits;
pub use routes::{Route, RouteError, RouteMatch, RouteTable};
pub use server::serve;

/// Errors a streamed body can carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed response body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The request a backend receives: the client's body, still streaming, or a body the
/// gateway made (aggregation).
pub type Request = http::Request<Body>;

/// The handlers a request passes on to, in order, after the one it was handed to: set
/// (as a request extension) when a route has middleware, so a middleware's "next" is
/// the rest of its route's chain; the last is the route's component. Only the gateway
/// and the host set it; no client or guest can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next(pub std::sync::Arc<[String]>);

/// Watches each client request from the gateway's side (the host's traces): `start`
/// sees the request once its id is set and before it is routed, and may rewrite its
/// trace headers; what it returns is told how the request ended.
pub trait Observer: Send + Sync + 'static {
    /// A request arrives; `None` when there is nothing to tell at the end.
    fn start(&self, req: &mut Request) -> Option<Box<dyn Observed>>;
}

/// One observed request.
pub trait Observed: Send {
    /// It was answered with `status` by `component` on `route` (empty when unrouted).
    fn finish(self: Box<Self>, status: http::StatusCode, component: &str, route: &str);
}

/// What handles a routed request: the host, in production.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Handle `req` with `component`. Failures are answered as responses (e.g. 500, 503),
    /// so the gateway only streams what it gets.
    async fn handle(&self, component: &str, req: Request) -> http::Response<Body>;
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A full in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON error response: `{"error": message, ...extra}`. The one builder of error
/// bodies, for the gateway's own answers and the host's (generic over the body's error
/// type, which differs between the two).
pub fn json_error<E>(
    status: http::StatusCode,
    message: &str,
    extra: serde_json::Value,
) -> http::Response<UnsyncBoxBody<Bytes, E>> {
    let mut doc = serde_json::json!({ "error": message });
    if let (Some(doc), serde_json::Value::Object(extra)) = (doc.as_object_mut(), extra) {
        doc.extend(extra);
    }
    json_response(status, &doc)
}

/// A JSON response.
pub fn json_response<E>(
    status: http::StatusCode,
    doc: &serde_json::Value,
) -> http::Response<UnsyncBoxBody<Bytes, E>> {
    let body = Full::new(Bytes::from(doc.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
