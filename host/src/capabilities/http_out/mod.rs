//! `wasi:http/outgoing-handler` policy. `http://NAME/...` where NAME is a component the
//! caller's manifest grants goes to that component in-process (no socket); an external
//! host goes out only if the caller's allow-list names it; anything else fails with the
//! `HTTP-request-denied` error code, which the guest can handle. In-process calls go
//! through [`Calls`] (so this capability never names the registry), with a deadline,
//! retries and a circuit breaker ([`resilience`]).

mod calls;
mod forward;
pub mod resilience;

use std::future::Future;
use std::sync::Arc;

use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use panal_gateway::auth::{strip_reserved, CALLER_HEADER, ROLES_HEADER, USER_ID_HEADER};

pub use calls::Calls;
pub use forward::HANDLER;
pub(crate) use resilience::is_idempotent;
pub use resilience::Breakers;

use super::{CallContext, Capability, GrantError, State, Version};
use crate::manifest;
use crate::traces::{self, Span};

/// The outgoing HTTP capability.
pub struct HttpOut;

/// What one version may call: its name (for logs) and its `outbound` grants.
#[derive(Clone)]
pub struct HttpOutGrant {
    caller: Arc<str>,
    grants: Arc<manifest::Outbound>,
}

impl Capability for HttpOut {
    type Grant = HttpOutGrant;
    type Instance = Outbound;

    fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
        // WASI 0.3's `wasi:http/types` and `client`: its calls reach the same
        // `send_request` hook, so grants, identity and resilience are shared.
        wasmtime_wasi_http::p3::add_to_linker(linker)?;
        // A middleware's `wasi:http/handler` import: the next handler of its route.
        forward::link(linker)
    }

    async fn configure(version: &Version<'_>) -> Result<HttpOutGrant, GrantError> {
        Ok(HttpOutGrant {
            caller: version.spec.name.as_str().into(),
            grants: Arc::new(version.spec.outbound.clone()),
        })
    }

    fn prepare(grant: &HttpOutGrant, ctx: &CallContext) -> Outbound {
        Outbound {
            caller: grant.caller.clone(),
            grants: grant.grants.clone(),
            ctx: ctx.clone(),
            forwarding: false,
        }
    }

    fn enter(out: &mut Outbound, ctx: &CallContext) {
        out.ctx.clone_from(ctx);
    }
}

/// How deep in-process calls may nest before they are taken for a loop.
pub const MAX_CALL_DEPTH: u32 = 16;

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

/// The outbound side of one instance.
pub struct Outbound {
    /// Who is calling (for logs).
    pub caller: Arc<str>,
    /// The caller's grants.
    pub grants: Arc<manifest::Outbound>,
    /// The context of the request the instance serves: where its calls go (weak, so
    /// instances never keep the host alive), how deep it is, the user and roles, the
    /// trace headers added to calls that carry none of their own, and as middleware the
    /// handlers after it and what it may pass on ([`forward`]). The instance's one
    /// copy: the other capabilities' views borrow it.
    pub ctx: CallContext,
    /// Whether the request being sent goes to `next` (`wasi:http/handler`) rather than
    /// out (`wasi:http/client`): set by the view each send is made through.
    pub forwarding: bool,
}

fn done() -> IoFuture {
    Box::new(async { Ok(()) })
}

impl Outbound {
    /// The request id and trace context, where the guest did not set its own.
    fn add_trace(&self, headers: &mut http::HeaderMap) {
        for (name, value) in self.ctx.trace.iter() {
            if !headers.contains_key(name.as_str()) {
                if let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(name.as_bytes()),
                    http::HeaderValue::from_str(value),
                ) {
                    headers.insert(n, v);
                }
            }
        }
    }

    /// The span of a call to `host` (when traces are on), the child of the instance's
    /// context; the request then carries the span's, so the callee is its child.
    fn client_span(&self, request: &mut http::Request<WasiBody>, host: &str) -> Option<Span> {
        let span = traces::start(traces::Kind::Client, &self.ctx.trace, || {
            let attrs = vec![
                traces::Attr::new("panal.caller", self.caller.to_string()),
                traces::Attr::new("server.address", host.to_string()),
                traces::Attr::new("http.request.method", request.method().to_string()),
                traces::Attr::new("url.path", request.uri().path().to_string()),
            ];
            (format!("call {host}"), attrs)
        })?;
        span.carry_in(request.headers_mut());
        Some(span)
    }

    /// The verified user of the request this instance serves and the user's roles,
    /// for an in-process call (after [`strip_reserved`]: only the host sets these).
    fn add_identity(&self, headers: &mut http::HeaderMap) {
        let value = |v: Option<&str>| v.and_then(|v| http::HeaderValue::from_str(v).ok());
        if let Some(v) = value(self.ctx.identity.as_deref()) {
            headers.insert(USER_ID_HEADER, v);
        }
        if let Some(v) = value(self.ctx.roles.as_deref()) {
            headers.insert(ROLES_HEADER, v);
        }
    }
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        drop(fut);
        if self.forwarding {
            return self.forward(request);
        }
        // A guest cannot speak for a user, its roles or another caller: the `x-panal-`
        // headers are the host's to set.
        strip_reserved(request.headers_mut());
        self.add_trace(request.headers_mut());
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let in_process = !https && uri.port().is_none() && self.grants.components.contains(&host);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !in_process && !self.grants.allows_host(&host, port) {
            tracing::warn!(
                component = %self.caller,
                host = %host,
                port,
                "outbound request denied: not in the component's `outbound` grants"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let mut span = self.client_span(&mut request, &host);
        if in_process {
            self.add_identity(request.headers_mut());
            if let Ok(v) = http::HeaderValue::from_str(&self.caller) {
                request.headers_mut().insert(CALLER_HEADER, v);
            }
            let calls = self.ctx.calls.clone();
            let depth = self.ctx.depth + 1;
            let unavailable = self.ctx.unavailable.clone();
            return Box::new(async move {
                if depth > MAX_CALL_DEPTH {
                    return Err(Error::LoopDetected);
                }
                let calls = calls
                    .and_then(|c| c.upgrade())
                    .ok_or(Error::DestinationUnavailable)?;
                let resp = resilience::call(&*calls, &host, request, depth, options.as_ref()).await;
                if resp.status() == http::StatusCode::SERVICE_UNAVAILABLE {
                    unavailable.note();
                }
                if let Some(span) = span.as_mut() {
                    span.answered(resp.status().as_u16());
                }
                Ok((resp, done()))
            });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            if let Some(span) = span.as_mut() {
                match &sent {
                    Ok((resp, _)) => span.answered(resp.status().as_u16()),
                    Err(e) => span.fail(format!("{e:?}")),
                }
            }
            let (resp, io) = sent?;
            Ok((resp.map(BodyExt::boxed_unsync), Box::new(io) as IoFuture))
        })
    }
}
