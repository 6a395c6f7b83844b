//! What an instance inherits from the request, message or tick that started it: how
//! deep in in-process calls it is, the verified user, the trace headers, and where its
//! own calls to other components go, and, for a middleware, the handlers after it.
//! Every capability that passes context on (calls,
//! messages) reads it from here.

use std::sync::{Arc, Weak};

use super::http_out::Calls;

/// What an instance inherits from what started it.
#[derive(Clone, Default)]
pub struct CallContext {
    /// In-process hops so far (0 from the gateway, a broker or a timer).
    pub depth: u32,
    /// The verified user, if any.
    pub identity: Option<String>,
    /// Request id and W3C trace context, passed on with every call and message it makes.
    pub trace: Arc<[(String, String)]>,
    /// Where its calls to other components go; weak, so an instance never keeps the
    /// host alive. `None` for instances that make no calls (a deploy's trial).
    pub calls: Option<Weak<dyn Calls>>,
    /// When it serves as middleware on a route: the handlers its `wasi:http/handler`
    /// import passes a request on to, in order (the last is the route's component).
    pub next: Option<Arc<[String]>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("depth", &self.depth)
            .field("identity", &self.identity)
            .field("trace", &self.trace)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// Headers that carry a request's context across calls and messages.
pub const TRACE_HEADERS: [&str; 3] = ["x-request-id", "traceparent", "tracestate"];

/// The trace headers found by `get`.
pub fn trace_of(get: impl Fn(&str) -> Option<String>) -> Arc<[(String, String)]> {
    TRACE_HEADERS
        .iter()
        .filter_map(|name| get(name).map(|v| (name.to_string(), v)))
        .collect()
}
