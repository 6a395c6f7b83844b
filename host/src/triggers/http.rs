//! The HTTP trigger: a request (from the gateway, a timer or another component) answered
//! by an instance of the component's current version. Read top to bottom:
//! [`Executor::call_http`] counts and labels the answer; `serve` checks the body size,
//! takes a slot and hands the request to a kept instance (`concurrent`, when the
//! component opted into reuse) or a fresh one; `start` runs a fresh one's handler in
//! its own task (so the body can stream after the head is sent); `answer` waits for the
//! head, which the deadline bounds. Failures are [`Failure`]s, answered as JSON errors that
//! name the component; they never take the host down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::Instrument;
use wasmtime::{AsContextMut, Store};
use wasmtime_wasi_http::handler::{Prepared, ProxyPre};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::executor::{deadline, slot, Executor, InFlight};
use crate::capabilities::context::Admitted;
use crate::capabilities::{trace_of, CallContext, State};
use crate::registry::{Ask, Deployed, CAUSE_WAIT};
use crate::runtime::budget::Admission;
use crate::runtime::limits::{Capped, Ending, Guarded, Refused};
use crate::runtime::Failure;
use crate::traces;
use panal_gateway::auth::{CLIENT_IP_HEADER, ROLES_HEADER, USER_ID_HEADER};

/// Every response names the version that answered it (the sha256 prefix).
pub const VERSION_HEADER: &str = "x-panal-version";

type Head = Result<http::Response<WasiBody>, ErrorCode>;

/// A started handler: where its response head arrives, and its task.
type Started = (oneshot::Receiver<Head>, JoinHandle<Result<(), Failure>>);

impl Executor {
    /// Answer `req` with an instance of component `name`. `depth` counts in-process hops
    /// (0 from the gateway or a timer).
    pub async fn call_http(
        &self,
        name: &str,
        mut req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        let Some(deployed) = self.registry().current(name) else {
            return Failure::NoComponent.response(name);
        };
        let started = Instant::now();
        let mut span = span_of(name, &mut req, depth);
        let counting = InFlight::enter(deployed.stats.clone());
        let mut resp = match self.serve(&deployed, req, depth).await {
            Ok(resp) => resp,
            Err(failure) => {
                failure.log(name);
                failure.response(name)
            }
        };
        counting.answered(resp.status());
        deployed
            .metrics
            .answered(resp.status().as_u16(), started.elapsed());
        if let Some(span) = span.as_mut() {
            span.answered(resp.status().as_u16());
        }
        resp.headers_mut()
            .insert(VERSION_HEADER, deployed.version_header.clone());
        resp
    }

    /// [`Executor::call_http`] on one version, which the request keeps to its end even
    /// when a deploy swaps in another meanwhile.
    async fn serve(
        &self,
        deployed: &Arc<Deployed>,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> Result<http::Response<WasiBody>, Failure> {
        let limits = deployed.limits;
        let max_body = limits.max_body_kb.saturating_mul(1024);
        let too_large = Failure::TooLarge {
            max_body_kb: limits.max_body_kb,
        };
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Err(too_large);
        }
        let permit = slot(deployed, Some(Duration::from_millis(limits.queue_ms))).await?;
        let over = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| Capped::new(body, max_body, over.clone()).boxed_unsync());
        let ctx = self.context_of(&req, depth);
        let component: Arc<str> = deployed.name.clone();
        if limits.reuse_for(deployed.is_service()) > 1 {
            let answer = concurrent(deployed, self.registry().engine(), ctx, req).await;
            if over.load(Ordering::Relaxed) {
                return Err(too_large);
            }
            let guard = |body| Guarded::new(body, Arc::default(), over, component, limits);
            return Ok(answer?.map(|body| guard(body).holding(permit).boxed_unsync()));
        }
        let queue = Duration::from_millis(limits.queue_ms);
        let store = deployed
            .store(
                self.registry().engine(),
                &ctx,
                Some(Admission::Request(queue)),
            )
            .await?;
        let ending = Arc::new(Ending::default());
        let (head, task) = start(deployed, store, req, permit, ending.clone())?;
        let stop = task.abort_handle();
        let answer = answer(deployed, head, task, &over).await;
        if over.load(Ordering::Relaxed) {
            stop.abort();
            return Err(too_large);
        }
        let resp = answer?;
        Ok(resp.map(|body| Guarded::new(body, ending, over, component, limits).boxed_unsync()))
    }

    /// The context a request hands its instance. Trusted here: the gateway strips the
    /// client's identity header and sets the verified one, and in-process calls carry
    /// the identity of the request that caused them.
    fn context_of(&self, req: &http::Request<WasiBody>, depth: u32) -> CallContext {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut ctx = self.context(depth, header(USER_ID_HEADER), trace_of(header));
        ctx.roles = crate::capabilities::context::roles_of(header(ROLES_HEADER).as_deref());
        // Set by the gateway (a route with middleware) or by a middleware's `handler`
        // import passing the request on: never by a client or a guest.
        ctx.next = req
            .extensions()
            .get::<panal_gateway::Next>()
            .map(|next| next.0.clone());
        if ctx.next.is_some() {
            ctx.admitted = Some(Arc::new(Admitted {
                method: req.method().clone(),
                path: req.uri().path().to_string(),
                client: req.headers().get(CLIENT_IP_HEADER).cloned(),
            }));
        }
        ctx
    }
}

/// The component's span of `req` (when traces are on): the child of the request's
/// `traceparent`, which from here on names this span, so what the instance does is its
/// child in turn. It ends with the response head.
fn span_of(name: &str, req: &mut http::Request<WasiBody>, depth: u32) -> Option<traces::Span> {
    let parent = req
        .headers()
        .get(traces::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    let span = traces::start_from(traces::Kind::Server, parent, || {
        let attrs = vec![
            traces::Attr::new("panal.component", name.to_string()),
            traces::Attr::new("panal.depth", i64::from(depth)),
            traces::Attr::new("http.request.method", req.method().to_string()),
            traces::Attr::new("url.path", req.uri().path().to_string()),
        ];
        (name.to_string(), attrs)
    })?;
    span.carry_in(req.headers_mut());
    Some(span)
}

/// Hand `req` to a fresh instance (`store`) and run its handler in a task of its own.
/// The task holds the slot as long as the instance lives (streaming included) and notes
/// in `ending` how it ended, for the response body.
fn start(
    deployed: &Arc<Deployed>,
    mut store: Store<State>,
    req: http::Request<WasiBody>,
    permit: tokio::sync::OwnedSemaphorePermit,
    ending: Arc<Ending>,
) -> Result<Started, Failure> {
    let pre = match &*deployed.pre {
        ProxyPre::P2(pre) => pre.clone(),
        ProxyPre::P3(_) => return Ok(start_service(deployed, store, req, permit, ending)),
    };
    let (tx, rx) = oneshot::channel();
    let handed = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(tx)?)));
    let (req, out) = handed.map_err(|e| Failure::BadRequest(format!("{e:#}")))?;
    let limits = deployed.limits;
    let task = async move {
        let _permit = permit;
        let hit = store.data().limits.hit.clone();
        // The deadline covers the whole instance: a guest parked in a host call (a
        // slow body, an outbound call) is stopped too, not only one running wasm.
        let run = deadline(&limits, &hit, async {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        })
        .await;
        // Before the store (and the response body's sender in it) is dropped.
        ending.set(&run, matches!(run, Err(Failure::Stopped { .. })));
        run
    };
    // Guest log lines keep the caller's span, if any (a message delivery has one).
    Ok((rx, tokio::spawn(task.in_current_span())))
}

/// [`start`] for a WASI 0.3 service with `reuse = 1` (a fresh instance per request; with
/// more, [`concurrent`] serves it): `wasi:http/handler#handle` called in its event loop, and the
/// loop kept running after the response head, as long as the guest has work (it may
/// write the body after returning the response). The deadline covers it all, from
/// outside the event loop.
fn start_service(
    deployed: &Arc<Deployed>,
    mut store: Store<State>,
    req: http::Request<WasiBody>,
    permit: tokio::sync::OwnedSemaphorePermit,
    ending: Arc<Ending>,
) -> Started {
    let (tx, rx) = oneshot::channel();
    let pre = deployed.pre.clone();
    let limits = deployed.limits;
    let task = async move {
        let _permit = permit;
        let hit = store.data().limits.hit.clone();
        let run = deadline(&limits, &hit, async {
            let proxy = pre.instantiate_async(&mut store).await?;
            let (head_tx, head_rx) = futures::channel::oneshot::channel();
            let prepared = Prepared::new(
                store.as_context_mut(),
                &proxy,
                req,
                <State as WasiHttpView>::http,
                head_tx,
            )?;
            store
                .run_concurrent(async move |accessor| {
                    prepared.run(accessor, std::future::pending()).await?;
                    if let Ok(head) = head_rx.await {
                        let why =
                            |e: wasmtime::Error| ErrorCode::InternalError(Some(format!("{e:#}")));
                        let _ = tx.send(head.map_err(why));
                    }
                    std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                    wasmtime::Result::Ok(())
                })
                .await?
        })
        .await;
        ending.set(&run, matches!(run, Err(Failure::Stopped { .. })));
        run
    };
    (rx, tokio::spawn(task.in_current_span()))
}

/// A component with kept instances (`limits.reuse` > 1): the request goes to the
/// version's workers (an instance with room takes it, else a new one starts: a 0.3
/// service's take several at once, a 0.2 proxy's one), which run it in their instance's
/// event loop, in their own tokio task; here only the wait for the head, within
/// `timeout_ms`. (The caller keeps the slot until the body ends.)
async fn concurrent(
    deployed: &Arc<Deployed>,
    engine: &wasmtime::Engine,
    ctx: CallContext,
    req: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Failure> {
    let limits = deployed.limits;
    let (cause, failed) = oneshot::channel();
    let handled = deployed.workers(engine).handle(Ask { ctx, cause }, req);
    match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), handled).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(concurrent_failure(&e, failed, &limits).await),
        Err(_) => Err(Failure::NoAnswer {
            timeout_ms: limits.timeout_ms,
        }),
    }
}

/// What a request to a concurrent instance failed on: its own deadline, the failure of
/// the instance under it (as the instance's end tells), or the guest's error code.
async fn concurrent_failure(
    e: &wasmtime::Error,
    failed: oneshot::Receiver<Failure>,
    limits: &crate::manifest::Limits,
) -> Failure {
    use wasmtime_wasi_http::handler::{ExpirationError, InstantiationError, TrapOrPanicError};
    if e.is::<ExpirationError>() {
        return Failure::Stopped {
            timeout_ms: limits.timeout_ms,
        };
    }
    if e.is::<TrapOrPanicError>() {
        return match tokio::time::timeout(CAUSE_WAIT, failed).await {
            Ok(Ok(failure)) => failure,
            _ => Failure::TaskFailed,
        };
    }
    if let Some(i) = e.downcast_ref::<InstantiationError<Ask>>() {
        // Nothing was refused that it could note: admission charged its initial memory.
        return Failure::of(&i.error, &Refused::default(), limits);
    }
    Failure::ErrorCode(format!("{e:#}"))
}

/// Wait for the response head; when the guest ended without one, say why from how its
/// task ended. No timer of its own: the task runs under the deadline (`deadline`), so a
/// guest that never answers ends the task, and that ends the wait.
async fn answer(
    deployed: &Deployed,
    mut head: oneshot::Receiver<Head>,
    mut task: JoinHandle<Result<(), Failure>>,
    over: &AtomicBool,
) -> Result<http::Response<WasiBody>, Failure> {
    let outcome = tokio::select! {
        biased;
        sent = &mut head => match sent {
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(code)) => return Err(Failure::ErrorCode(format!("{code:?}"))),
            // The guest ended without setting a response: it trapped or returned early.
            Err(_) => task.await,
        },
        // The task ended first: a head sent before the end is still there.
        outcome = &mut task => match head.try_recv() {
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(code)) => return Err(Failure::ErrorCode(format!("{code:?}"))),
            Err(_) => outcome,
        },
    };
    if over.load(Ordering::Relaxed) {
        return Err(Failure::TooLarge {
            max_body_kb: deployed.limits.max_body_kb,
        });
    }
    match outcome {
        Ok(Ok(())) => Err(Failure::NoResponse),
        Ok(Err(failure)) => Err(failure),
        Err(join) => {
            tracing::error!(component = %deployed.name, %join, "component task failed");
            Err(Failure::TaskFailed)
        }
    }
}

/// A client body failure, in wasi:http's terms.
fn body_error(err: panal_gateway::BoxError) -> wasmtime_wasi_http::Error {
    match err.downcast::<hyper::Error>() {
        Ok(hyper) => wasmtime_wasi_http::Error::Hyper(*hyper),
        Err(other) => wasmtime_wasi_http::Error::InternalError(Some(other.to_string())),
    }
}

/// The gateway's view of the executor.
pub struct GatewayBackend(pub Arc<Executor>);

#[async_trait::async_trait]
impl panal_gateway::Backend for GatewayBackend {
    async fn handle(
        &self,
        component: &str,
        req: panal_gateway::Request,
    ) -> http::Response<panal_gateway::Body> {
        let (mut parts, body) = req.into_parts();
        // wasi:http wants an absolute URI; the authority comes from the Host header.
        // Built from the parts (no text round trip: this runs on every request).
        if parts.uri.authority().is_none() {
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.scheme = Some(http::uri::Scheme::HTTP);
            uri.authority = Some(host);
            if uri.path_and_query.is_none() {
                uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
            }
            parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
        }
        let body = body.map_err(body_error).boxed_unsync();
        let resp = self
            .0
            .route(component, http::Request::from_parts(parts, body), 0)
            .await;
        resp.map(|b| {
            b.map_err(|e| Box::new(e) as panal_gateway::BoxError)
                .boxed_unsync()
        })
    }
}
