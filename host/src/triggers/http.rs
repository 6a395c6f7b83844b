//! The HTTP trigger: a request (from the gateway, a timer or another component) answered
//! by an instance of the component's current version, through the executor's pipeline
//! ([`Executor::prepare`], then a fresh instance's [`Prepared::store`] and
//! [`Deadline`](crate::runtime::instance::Deadline), or the version's kept instances). Read top to bottom:
//! [`Executor::call_http`] counts and labels the answer; `serve` checks the body size
//! and takes the slot; `fresh` runs a fresh instance's handler in its own task (so the
//! body can stream after the head is sent) and `kept` hands the request to the version's
//! workers; `answer` waits for the head. Failures are [`Failure`]s, answered as JSON
//! errors that name the component; they never take the host down. [`Executor::route`]
//! sends a request for a component that runs only on other hosts to the cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::Instrument;
use wasmtime::component::Resource;
use wasmtime::{AsContextMut, Engine, Store};
use wasmtime_wasi_http::handler::{self, ProxyPre};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::executor::{Executor, InFlight, Prepared, Wait};
use crate::capabilities::context::Admitted;
use crate::capabilities::{trace_of, CallContext, State};
use crate::registry::{Ask, Deployed, CAUSE_WAIT};
use crate::runtime::limits::{Capped, Ending, Guarded, Refused};
use crate::runtime::Failure;
use crate::traces;
use panal_gateway::auth::{CLIENT_IP_HEADER, ROLES_HEADER, USER_ID_HEADER};

/// Every response names the version that answered it (the sha256 prefix).
pub const VERSION_HEADER: &str = "x-panal-version";

type Head = Result<http::Response<WasiBody>, ErrorCode>;

/// A response head, with what its body needs to end cleanly: how the instance ended
/// (a fresh one), the slot (a kept one's, held until the body ends).
struct Answered {
    resp: http::Response<WasiBody>,
    ending: Arc<Ending>,
    slot: Option<OwnedSemaphorePermit>,
}

impl Executor {
    /// Answer `req` with component `name`, here when it runs here, else on a host of
    /// the cluster that runs it. `depth` counts the hops so far.
    pub async fn route(
        &self,
        name: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        match self.cluster() {
            Some(cluster)
                if self.registry().current(name).is_none() && cluster.runs_elsewhere(name) =>
            {
                cluster.call(name, req, depth).await
            }
            _ => self.call_http(name, req, depth).await,
        }
    }

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
        let _in_flight = InFlight::enter(deployed.stats.clone());
        let mut resp = match self.serve(&deployed, req, depth).await {
            Ok(resp) => resp,
            Err(failure) => {
                failure.log(name);
                failure.response(name)
            }
        };
        let status = resp.status().as_u16();
        deployed.metrics.answered(status, started.elapsed());
        if let Some(span) = span.as_mut() {
            span.answered(status);
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
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Err(too_large(deployed));
        }
        let ctx = self.context_of(&req, depth);
        let prepared = self.prepare(deployed.clone(), ctx, Wait::Request).await?;
        let over = Arc::new(AtomicBool::new(false));
        let req = req.map(|body| Capped::new(body, max_body, over.clone()).boxed_unsync());
        let engine = self.registry().engine();
        let answered = if limits.reuse_for(deployed.is_service()) > 1 {
            kept(prepared, engine, req, &over).await?
        } else {
            fresh(prepared, engine, req, &over).await?
        };
        let Answered { resp, ending, slot } = answered;
        let component = deployed.name.clone();
        Ok(resp.map(|body| {
            let body = Guarded::new(body, ending, over, component, limits);
            match slot {
                Some(slot) => body.holding(slot).boxed_unsync(),
                None => body.boxed_unsync(),
            }
        }))
    }

    /// The context a request hands its instance. Trusted here: the gateway strips the
    /// client's identity header and sets the verified one, and in-process calls carry
    /// the identity of the request that caused them.
    fn context_of(&self, req: &http::Request<WasiBody>, depth: u32) -> CallContext {
        let headers = req.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let identity = header(USER_ID_HEADER).map(str::to_string);
        let mut ctx = self.context(depth, identity, trace_of(headers));
        ctx.roles = crate::capabilities::context::roles_of(header(ROLES_HEADER));
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
                client: headers.get(CLIENT_IP_HEADER).cloned(),
            }));
        }
        ctx
    }
}

fn too_large(deployed: &Deployed) -> Failure {
    Failure::TooLarge {
        max_body_kb: deployed.limits.max_body_kb,
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

/// A fresh instance (`limits.reuse = 1`): its handler runs in a task of its own, which
/// holds the slot as long as the instance lives (streaming included), under the
/// deadline, and notes in `ending` how it ended, for the response body.
async fn fresh(
    prepared: Prepared,
    engine: &Engine,
    req: http::Request<WasiBody>,
    over: &AtomicBool,
) -> Result<Answered, Failure> {
    let (mut store, deadline) = prepared.store(engine).await?;
    let Prepared {
        deployed, permit, ..
    } = prepared;
    let (tx, head) = oneshot::channel();
    let call = Call::new(&deployed.pre, &mut store, req, tx)?;
    let ending = Arc::new(Ending::default());
    let ended = ending.clone();
    let task = async move {
        let _permit = permit;
        // The deadline covers the whole instance: a guest parked in a host call (a
        // slow body, an outbound call) is stopped too, not only one running wasm.
        let run = deadline.run(call.run(&mut store)).await;
        // Before the store (and the response body's sender in it) is dropped.
        ended.set(&run, matches!(run, Err(Failure::Stopped { .. })));
        // Dropping the store resets the instance's memory (a memset of up to
        // KEEP_RESIDENT): yield first, so the connection task the answer woke writes
        // it before that, instead of after it on this same worker (at c=1, ~90 µs).
        tokio::task::yield_now().await;
        drop(store);
        run
    };
    // Guest log lines keep the caller's span, if any (a message delivery has one).
    let task = tokio::spawn(task.in_current_span());
    let stop = task.abort_handle();
    let answer = answer(&deployed, head, task, over).await;
    if over.load(Ordering::Relaxed) {
        stop.abort();
        return Err(too_large(&deployed));
    }
    Ok(Answered {
        resp: answer?,
        ending,
        slot: None,
    })
}

/// What a fresh instance is asked to do, by the interface it exports.
enum Call {
    /// A WASI 0.2 proxy: `incoming-handler#handle`, the request and the response's
    /// outparam already in its table.
    P2(
        wasmtime_wasi_http::p2::bindings::ProxyPre<State>,
        Resource<HostIncomingRequest>,
        Resource<HostResponseOutparam>,
    ),
    /// A WASI 0.3 service: `handler#handle` in its event loop, which keeps running
    /// after the head as long as the guest has work (it may write the body after
    /// returning the response).
    P3(
        Arc<ProxyPre<State>>,
        http::Request<WasiBody>,
        oneshot::Sender<Head>,
    ),
}

impl Call {
    /// Hand `req` to an instance in `store`; the head goes to `tx`.
    fn new(
        pre: &Arc<ProxyPre<State>>,
        store: &mut Store<State>,
        req: http::Request<WasiBody>,
        tx: oneshot::Sender<Head>,
    ) -> Result<Self, Failure> {
        let ProxyPre::P2(p2) = &**pre else {
            return Ok(Self::P3(pre.clone(), req, tx));
        };
        let handed = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(tx)?)));
        let (req, out) = handed.map_err(|e| Failure::BadRequest(format!("{e:#}")))?;
        Ok(Self::P2(p2.clone(), req, out))
    }

    /// Instantiate and call.
    async fn run(self, store: &mut Store<State>) -> wasmtime::Result<()> {
        match self {
            Self::P2(pre, req, out) => {
                let proxy = pre.instantiate_async(&mut *store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(store, req, out)
                    .await
            }
            Self::P3(pre, req, tx) => {
                let proxy = pre.instantiate_async(&mut *store).await?;
                let (head_tx, head_rx) = futures::channel::oneshot::channel();
                let view = <State as WasiHttpView>::http;
                let call =
                    handler::Prepared::new(store.as_context_mut(), &proxy, req, view, head_tx)?;
                store
                    .run_concurrent(async move |accessor| {
                        call.run(accessor, std::future::pending()).await?;
                        if let Ok(head) = head_rx.await {
                            let why = |e: wasmtime::Error| {
                                ErrorCode::InternalError(Some(format!("{e:#}")))
                            };
                            let _ = tx.send(head.map_err(why));
                        }
                        std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
                        wasmtime::Result::Ok(())
                    })
                    .await?
            }
        }
    }
}

/// Kept instances (`limits.reuse` > 1): the request goes to the version's workers (an
/// instance with room takes it, else a new one starts: a 0.3 service's take several at
/// once, a 0.2 proxy's one), which run it in their instance's event loop, in their own
/// tokio task; here only the wait for the head, within `timeout_ms`. The slot is held
/// until the body ends.
async fn kept(
    prepared: Prepared,
    engine: &Engine,
    req: http::Request<WasiBody>,
    over: &AtomicBool,
) -> Result<Answered, Failure> {
    let Prepared {
        deployed,
        ctx,
        permit,
        ..
    } = prepared;
    let limits = deployed.limits;
    let (cause, failed) = oneshot::channel();
    let handled = deployed.workers(engine).handle(Ask { ctx, cause }, req);
    let answer = match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), handled).await
    {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(kept_failure(&e, failed, &limits).await),
        Err(_) => Err(Failure::NoAnswer {
            timeout_ms: limits.timeout_ms,
        }),
    };
    if over.load(Ordering::Relaxed) {
        return Err(too_large(&deployed));
    }
    Ok(Answered {
        resp: answer?,
        ending: Arc::default(),
        slot: Some(permit),
    })
}

/// What a request to a kept instance failed on: its own deadline, the failure of the
/// instance under it (as the instance's end tells), or the guest's error code.
async fn kept_failure(
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
/// task ended. No timer of its own: the task runs under the deadline, so a guest that
/// never answers ends the task, and that ends the wait.
async fn answer(
    deployed: &Deployed,
    mut head: oneshot::Receiver<Head>,
    mut task: JoinHandle<Result<(), Failure>>,
    over: &AtomicBool,
) -> Result<http::Response<WasiBody>, Failure> {
    let outcome = tokio::select! {
        biased;
        sent = &mut head => match sent {
            Ok(head) => return head_of(head),
            // The guest ended without setting a response: it trapped or returned early.
            Err(_) => task.await,
        },
        // The task ended first: a head sent before the end is still there.
        outcome = &mut task => match head.try_recv() {
            Ok(head) => return head_of(head),
            Err(_) => outcome,
        },
    };
    if over.load(Ordering::Relaxed) {
        return Err(too_large(deployed));
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

/// The head the guest sent: a response, or a wasi:http error code.
fn head_of(head: Head) -> Result<http::Response<WasiBody>, Failure> {
    head.map_err(|code| Failure::ErrorCode(format!("{code:?}")))
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
