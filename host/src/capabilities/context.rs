//! What an instance inherits from the request, message or tick that started it: how
//! deep in in-process calls it is, the verified user, the trace headers, and where its
//! own calls to other components go, and, for a middleware, the handlers after it.
//! Every capability that passes context on (calls,
//! messages) reads it from here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use super::http_out::Calls;

/// What an instance inherits from what started it.
#[derive(Clone, Default)]
pub struct CallContext {
    /// In-process hops so far (0 from the gateway, a broker or a timer).
    pub depth: u32,
    /// The verified user, if any.
    pub identity: Option<String>,
    /// The roles the operator granted that user (the gateway's `x-panal-roles`).
    pub roles: Option<Arc<str>>,
    /// Request id and W3C trace context, passed on with every call and message it makes.
    pub trace: Arc<[(String, String)]>,
    /// Where its calls to other components go; weak, so an instance never keeps the
    /// host alive. `None` for instances that make no calls (a deploy's trial).
    pub calls: Option<Weak<dyn Calls>>,
    /// When it serves as middleware on a route: the handlers its `wasi:http/handler`
    /// import passes a request on to, in order (the last is the route's component).
    pub next: Option<Arc<[String]>>,
    /// For a middleware: the request the gateway admitted (see [`Admitted`]).
    pub admitted: Option<Arc<Admitted>>,
    /// Where the run notes that something it needed was out of reach for now.
    pub unavailable: Unavailable,
}

/// Notes, for a run that watches for it (a durable message's), that something the run
/// needed was out of reach for now: its storage failed or could not be reached, or a
/// component it called answered 503. A durable delivery that failed after such a note
/// waits for the outage to pass instead of spending its attempts on it.
#[derive(Clone, Debug, Default)]
pub struct Unavailable(Option<Arc<AtomicBool>>);

impl Unavailable {
    /// One that notes (the default notes nothing: nobody would read it).
    pub fn watched() -> Self {
        Self(Some(Arc::new(AtomicBool::new(false))))
    }

    /// Something was out of reach.
    pub fn note(&self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether anything was noted since the last call, and forget it.
    pub fn take(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|flag| flag.swap(false, Ordering::Relaxed))
    }
}

/// What a middleware may pass on: the method and path the gateway admitted (a route's
/// roles were checked for them), and the client's address, which it passes on too.
#[derive(Debug)]
pub struct Admitted {
    /// The admitted method.
    pub method: http::Method,
    /// The admitted path.
    pub path: String,
    /// The gateway's `x-panal-client-ip`.
    pub client: Option<http::HeaderValue>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("depth", &self.depth)
            .field("identity", &self.identity)
            .field("roles", &self.roles)
            .field("trace", &self.trace)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// `value` as a list of roles (`x-panal-roles`), if every role in it is well formed.
pub fn roles_of(value: Option<&str>) -> Option<Arc<str>> {
    value
        .filter(|v| v.split(',').all(panal_gateway::auth::valid_role))
        .map(Arc::from)
}

/// Headers that carry a request's context across calls and messages.
pub const TRACE_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// The longest `tracestate` passed on (W3C's own limit is 512 characters).
pub const MAX_TRACESTATE: usize = 512;

/// Where trace headers are read from: a request's headers, a message's, a context's.
pub trait Headers {
    /// The value of header `name` (lowercase), if it is there and is text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Headers for [(String, String)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The trace headers among `headers` that are well formed: a request id as the gateway
/// accepts one, a W3C `traceparent`, a `tracestate` of at most [`MAX_TRACESTATE`]
/// visible characters. Others are dropped: a message or a call from another host may
/// carry anything, and these end up in other components' log lines and requests.
pub fn trace_of(headers: &(impl Headers + ?Sized)) -> Arc<[(String, String)]> {
    TRACE_HEADERS
        .iter()
        .filter_map(|name| headers.header(name).map(|v| (name.to_string(), v)))
        .filter(|(name, value)| well_formed(name, value))
        .map(|(name, value)| (name, value.to_string()))
        .collect()
}

fn well_formed(name: &str, value: &str) -> bool {
    match name {
        "x-request-id" => panal_gateway::request_id::acceptable(value.as_bytes()),
        crate::traces::TRACEPARENT => crate::traces::trace_id_of(value).is_some(),
        _ => {
            value.len() <= MAX_TRACESTATE
                && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outages_are_noted_only_where_watched() {
        let nobody = Unavailable::default();
        nobody.note();
        assert!(!nobody.take());
        let watched = Unavailable::watched();
        assert!(!watched.take());
        // A clone is the same note: an in-process call's, a kept instance's.
        watched.clone().note();
        assert!(watched.take());
        assert!(!watched.take(), "taken once");
    }

    fn owned(pairs: &[(&str, String)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn odd_trace_headers_are_dropped() {
        let good = [
            ("x-request-id", "abc-123".to_string()),
            (
                "traceparent",
                format!("00-{}-{}-01", "a".repeat(32), "b".repeat(16)),
            ),
            ("tracestate", "vendor=x,other=y".to_string()),
        ];
        let kept = trace_of(&owned(&good)[..]);
        assert_eq!(kept.len(), 3);
        let bad = [
            ("x-request-id", "has space".to_string()),
            ("traceparent", "00-nothex".to_string()),
            ("tracestate", "x".repeat(MAX_TRACESTATE + 1)),
        ];
        let kept = trace_of(&owned(&bad)[..]);
        assert!(kept.is_empty(), "{kept:?}");
    }
}
