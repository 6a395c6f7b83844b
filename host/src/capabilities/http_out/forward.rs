//! `wasi:http/handler@0.3.0` as an import: how a middleware component (the
//! `wasi:http/middleware` world) passes a request on to the next handler of its route.
//!
//! A route with `middleware = ["audit", ...]` hands the request to the first middleware,
//! with the rest of the chain (ending with the route's component) as the instance's
//! `next`. Its `handler.handle(request)` goes to the first of those, in-process or on the
//! host of the cluster that runs it, one hop deeper, with the caller's verified user and
//! trace, carrying the rest of the chain. It is not an outbound call: the route grants
//! it (no `outbound` entry is needed), and it is not retried, as the gateway does not
//! retry a route's component either.
//!
//! The function shares `wasi:http/client.send`'s host code (the request and response
//! resources, the body streams); only the hook it ends in differs: the view it is handed
//! ([`crate::capabilities::State`]'s `forward_view`) marks the outbound side as
//! forwarding, so [`Outbound::send_request`] takes this path.

use wasmtime::component::{Accessor, Linker, Resource};
use wasmtime_wasi_http::p3::bindings::http::client::HostWithStore;
use wasmtime_wasi_http::p3::{Request, Response};
use wasmtime_wasi_http::{Error, WasiBody, WasiHttp};

use panal_gateway::auth::{strip_reserved, CLIENT_IP_HEADER};

use super::{done, Outbound, SendFuture, MAX_CALL_DEPTH};
use crate::capabilities::State;

/// The interface a middleware imports to call the next handler.
pub const HANDLER: &str = "wasi:http/handler@0.3.0";

/// Define `wasi:http/handler@0.3.0#handle` as an import.
pub(super) fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    linker.instance(HANDLER)?.func_wrap_concurrent(
        "handle",
        |store: &Accessor<State>, (request,): (Resource<Request>,)| {
            Box::pin(async move {
                let store = store.with_getter::<WasiHttp>(State::forward_view);
                match <WasiHttp as HostWithStore<State>>::send(&store, request).await {
                    Ok(response) => Ok((Ok::<Resource<Response>, _>(response),)),
                    // An error code goes back to the guest; anything else is a trap.
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    )
}

impl Outbound {
    /// Why `request` may not be passed on: another method or path than the gateway
    /// admitted (whose route's roles were checked for those, not for what a middleware
    /// would like to reach).
    fn changed_route(&self, request: &http::Request<WasiBody>) -> Option<String> {
        let admitted = self.ctx.admitted.as_deref()?;
        let (method, path) = (&admitted.method, &admitted.path);
        (request.method() != method || request.uri().path() != path).then(|| {
            format!(
                "`{}` passed on {} {} where the gateway admitted {method} {path}: refused",
                self.caller,
                request.method(),
                request.uri().path()
            )
        })
    }

    /// Pass `request` on to the next handler of the route this middleware serves.
    pub(super) fn forward(&mut self, mut request: http::Request<WasiBody>) -> SendFuture {
        let Some((first, rest)) = self.ctx.next.as_deref().and_then(<[String]>::split_first) else {
            let why = format!(
                "`{}` called wasi:http/handler but is not middleware on this request's route",
                self.caller
            );
            tracing::warn!(component = %self.caller, "{why}");
            return Box::new(async { Err(Error::InternalError(Some(why))) });
        };
        let first = first.clone();
        if let Some(why) = self.changed_route(&request) {
            tracing::warn!(component = %self.caller, "{why}");
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        // The user and roles are the ones the gateway verified, whatever the
        // middleware wrote; the request is the client's, not the middleware's call.
        strip_reserved(request.headers_mut());
        self.add_identity(request.headers_mut());
        if let Some(client) = self.ctx.admitted.as_ref().and_then(|a| a.client.clone()) {
            request.headers_mut().insert(CLIENT_IP_HEADER, client);
        }
        self.add_trace(request.headers_mut());
        // A request the middleware made itself may have no authority; the next handler
        // gets an absolute URI, as from the gateway.
        if request.uri().authority().is_none() {
            let path = request
                .uri()
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str)
                .to_string();
            if let Ok(uri) = http::Uri::builder()
                .scheme("http")
                .authority(first.as_str())
                .path_and_query(path)
                .build()
            {
                *request.uri_mut() = uri;
            }
        }
        if !rest.is_empty() {
            request
                .extensions_mut()
                .insert(panal_gateway::Next(rest.into()));
        }
        let calls = self.ctx.calls.clone();
        let depth = self.ctx.depth + 1;
        Box::new(async move {
            if depth > MAX_CALL_DEPTH {
                return Err(Error::LoopDetected);
            }
            let calls = calls
                .and_then(|c| c.upgrade())
                .ok_or(Error::DestinationUnavailable)?;
            let resp = calls.call(&first, request, depth).await;
            Ok((resp, done()))
        })
    }
}
