//! The request path: a fresh instance per request from the pooling allocator, with the
//! component's limits and an epoch deadline, its handler run in its own task so the body
//! can stream after the head is sent. Failures become JSON error responses that name
//! the component; they never take the host down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use tracing::Instrument;
use wasmtime::component::ResourceTable;
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpView};

use crate::logging::{ComponentLog, Output};
use crate::outbound::Outbound;
use crate::registry::{Deployed, Registry};
use crate::state::State;
use panal_gateway::auth::USER_ID_HEADER;

/// Every response names the version that answered it (the sha256 prefix).
pub const VERSION_HEADER: &str = "x-panal-version";

/// Counts a request in flight until it is answered or dropped.
struct InFlight(Arc<crate::registry::Stats>);

impl InFlight {
    fn enter(stats: Arc<crate::registry::Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }

    fn answered(self, status: StatusCode) {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.0.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Registry {
    /// Answer `req` with a fresh instance of component `name`. `depth` counts in-process
    /// hops (0 from the gateway).
    pub async fn call(
        self: &Arc<Self>,
        name: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        let Some(deployed) = self.current(name) else {
            return error(StatusCode::BAD_GATEWAY, name, "no such component");
        };
        let started = Instant::now();
        let counting = InFlight::enter(deployed.stats.clone());
        let mut resp = self.call_version(&deployed, name, req, depth).await;
        counting.answered(resp.status());
        deployed
            .metrics
            .answered(resp.status().as_u16(), started.elapsed());
        if let Ok(v) = http::HeaderValue::from_str(deployed.version()) {
            resp.headers_mut().insert(VERSION_HEADER, v);
        }
        resp
    }

    /// [`Registry::call`] on one version, which the request keeps to its end even when a
    /// deploy swaps in another meanwhile.
    async fn call_version(
        self: &Arc<Self>,
        deployed: &Arc<Deployed>,
        name: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        let limits = deployed.limits;
        let max_body = limits.max_body_kb.saturating_mul(1024);
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return too_large(name, limits.max_body_kb);
        }
        let queue = Duration::from_millis(limits.queue_ms);
        let Some(permit) = crate::limits::slot(&deployed.running, queue).await else {
            tracing::warn!(
                component = name,
                max_concurrency = limits.max_concurrency,
                queue_ms = limits.queue_ms,
                "limit hit: max_concurrency; answering 503"
            );
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                name,
                &format!(
                    "component is at its max_concurrency limit ({})",
                    limits.max_concurrency
                ),
            );
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return resp;
        };
        let over = Arc::new(AtomicBool::new(false));
        let req =
            req.map(|body| crate::limits::Capped::new(body, max_body, over.clone()).boxed_unsync());
        let timeout = Duration::from_millis(deployed.limits.timeout_ms);
        // Trusted here: the gateway strips the client's copy and sets the verified one,
        // and in-process calls carry the identity of the request that caused them.
        let ctx = {
            let headers = req.headers();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            CallContext {
                depth,
                identity: header(USER_ID_HEADER),
                trace: trace_of(header),
            }
        };
        let (mut store, warm, served) = match self.warm(deployed, ctx) {
            Ok(warm) => (warm.store, Some(warm.proxy), warm.served),
            Err(ctx) => (self.new_store(deployed, ctx), None, 0),
        };
        let out_of_memory = store.data().limits.hit.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, store.data_mut().http().new_response_outparam(tx)?)));
        let (req, out) = match prepared {
            Ok(pair) => pair,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    name,
                    &format!("bad request: {e:#}"),
                )
            }
        };
        let pre = deployed.pre.clone();
        let keep = (served + 1 < limits.reuse).then(|| deployed.clone());
        let ending = Arc::new(crate::limits::Ending::default());
        let ended = ending.clone();
        let task = tokio::spawn(
            async move {
                // The permit lives as long as the instance, streaming included.
                let _permit = permit;
                // The budget covers the whole instance: a guest parked in a host call
                // (a slow body, an outbound call) is stopped too, not only one in wasm.
                let run = async {
                    let proxy = match warm {
                        Some(proxy) => proxy,
                        None => pre.instantiate_async(&mut store).await?,
                    };
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .await?;
                    Ok::<_, wasmtime::Error>(proxy)
                };
                let result = match tokio::time::timeout(timeout, run).await {
                    Ok(result) => result,
                    Err(_) => Err(Trap::Interrupt.into()),
                };
                let timed_out = result
                    .as_ref()
                    .err()
                    .is_some_and(|e| matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)));
                // Before the store (and the response body's sender in it) is dropped.
                ended.set(&result, timed_out);
                let hit = store.data().limits.hit.load(Ordering::Relaxed);
                match (result, keep) {
                    (Ok(proxy), Some(deployed)) if !hit => {
                        if let Ok(mut idle) = deployed.idle.lock() {
                            idle.push(Warm {
                                store,
                                proxy,
                                served: served + 1,
                            });
                        }
                        Ok(())
                    }
                    (result, _) => result.map(|_| ()),
                }
            }
            // Guest log lines carry the request's span (id, component, route).
            .in_current_span(),
        );
        let answer = tokio::time::timeout(timeout, rx).await;
        if over.load(Ordering::Relaxed) {
            task.abort();
            return too_large(name, limits.max_body_kb);
        }
        match answer {
            Ok(Ok(Ok(resp))) => {
                let component: Arc<str> = deployed.name.clone();
                resp.map(|body| {
                    crate::limits::Guarded::new(body, ending, over, component, limits)
                        .boxed_unsync()
                })
            }
            Ok(Ok(Err(code))) => {
                tracing::warn!(
                    component = name,
                    ?code,
                    "component answered with an error code"
                );
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    name,
                    &format!("{code:?}"),
                )
            }
            // The guest ended without setting a response: it trapped or returned early.
            Ok(Err(_)) => {
                let outcome = task.await;
                if over.load(Ordering::Relaxed) {
                    return too_large(name, limits.max_body_kb);
                }
                if out_of_memory.load(Ordering::Relaxed) {
                    tracing::warn!(
                        component = name,
                        memory_mb = limits.memory_mb,
                        "limit hit: memory_mb; the instance failed"
                    );
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        name,
                        &format!(
                            "component ran out of memory (limit {} MiB)",
                            limits.memory_mb
                        ),
                    );
                }
                failure(name, outcome, deployed)
            }
            Err(_) => {
                task.abort();
                tracing::warn!(
                    component = name,
                    timeout_ms = deployed.limits.timeout_ms,
                    "limit hit: timeout_ms; answering 504"
                );
                error(
                    StatusCode::GATEWAY_TIMEOUT,
                    name,
                    &format!(
                        "component did not answer within {} ms",
                        deployed.limits.timeout_ms
                    ),
                )
            }
        }
    }

    /// An idle instance of `deployed` made ready for a request with `ctx`, when the
    /// component opted into reuse and one is waiting; else `ctx` back.
    fn warm(&self, deployed: &Deployed, ctx: CallContext) -> Result<Warm, CallContext> {
        if deployed.limits.reuse <= 1 {
            return Err(ctx);
        }
        let Some(mut warm) = deployed.idle.lock().ok().and_then(|mut idle| idle.pop()) else {
            return Err(ctx);
        };
        warm.store.data_mut().enter(ctx);
        arm_deadline(&mut warm.store, deployed.limits.timeout_ms);
        Ok(warm)
    }

    pub(crate) fn new_store(
        self: &Arc<Self>,
        deployed: &Deployed,
        ctx: CallContext,
    ) -> Store<State> {
        let wasi = WasiCtx::builder()
            .stdout(ComponentLog::new(deployed.name.clone(), Output::Stdout))
            .stderr(ComponentLog::new(deployed.name.clone(), Output::Stderr))
            .build();
        let memory = usize::try_from(deployed.limits.memory_mb << 20).unwrap_or(usize::MAX);
        let mut state = State {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limits: crate::limits::Limiter::new(memory),
            kv: deployed.kv.clone(),
            config: deployed.config.clone(),
            msg: deployed.msg.clone(),
            msg_held: 0,
            trace: Arc::from([]),
            outbound: Outbound {
                caller: deployed.name.clone(),
                grants: deployed.outbound.clone(),
                registry: Arc::downgrade(self),
                depth: 0,
                identity: None,
                trace: Arc::from([]),
            },
        };
        state.enter(ctx);
        deployed.metrics.instances.fetch_add(1, Ordering::Relaxed);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        arm_deadline(&mut store, deployed.limits.timeout_ms);
        store
    }
}

/// Every tick the guest yields to the executor, so a CPU-bound guest cannot hold a worker
/// thread (and starve other requests) until its deadline; past the deadline it traps.
fn arm_deadline(store: &mut Store<State>, timeout_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
}

/// An instance that answered a request cleanly, kept for the next (`limits.reuse`).
pub(crate) struct Warm {
    store: Store<State>,
    proxy: Proxy,
    /// Requests it has answered.
    served: u32,
}

/// What an instance inherits from the request or message that started it.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// In-process hops so far (0 from the gateway or a broker).
    pub depth: u32,
    /// The verified user, if any.
    pub identity: Option<String>,
    /// Request id and W3C trace context, passed on with every call and message it makes.
    pub trace: Arc<[(String, String)]>,
}

impl State {
    /// Take on the context of the request (or message) this instance now serves: a
    /// fresh instance's first, or a reused one's next.
    fn enter(&mut self, ctx: CallContext) {
        self.trace = ctx.trace.clone();
        self.outbound.depth = ctx.depth;
        self.outbound.identity = ctx.identity;
        self.outbound.trace = ctx.trace;
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

type TaskResult = Result<wasmtime::Result<()>, tokio::task::JoinError>;

fn failure(name: &str, outcome: TaskResult, deployed: &Deployed) -> http::Response<WasiBody> {
    let err = match outcome {
        Ok(Ok(())) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                name,
                "component returned without setting a response",
            )
        }
        Ok(Err(err)) => err,
        Err(join) => {
            tracing::error!(component = name, %join, "component task failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                name,
                "component task failed",
            );
        }
    };
    if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        tracing::warn!(
            component = name,
            timeout_ms = deployed.limits.timeout_ms,
            "limit hit: timeout_ms; the instance was stopped"
        );
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            name,
            &format!(
                "component ran past its {} ms limit and was stopped",
                deployed.limits.timeout_ms
            ),
        );
    }
    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        tracing::warn!(component = name, "instance pool exhausted; answering 503");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            name,
            "the host is at its instance limit",
        );
    }
    tracing::error!(component = name, error = %format!("{err:?}"), "component trapped");
    let reason = err
        .downcast_ref::<Trap>()
        .map_or_else(|| format!("{err:#}"), ToString::to_string);
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        name,
        &format!("component failed: {reason}"),
    )
}

fn too_large(name: &str, max_body_kb: u64) -> http::Response<WasiBody> {
    tracing::warn!(
        component = name,
        max_body_kb,
        "limit hit: max_body_kb; answering 413"
    );
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        name,
        &format!("request body is larger than the component's limit of {max_body_kb} KiB"),
    )
}

/// A JSON error answer from the host on behalf of `component`.
pub fn error(status: StatusCode, component: &str, message: &str) -> http::Response<WasiBody> {
    let body = serde_json::json!({ "error": message, "component": component }).to_string();
    let mut resp = http::Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A client body failure, in wasi:http's terms.
fn body_error(err: panal_gateway::BoxError) -> wasmtime_wasi_http::Error {
    match err.downcast::<hyper::Error>() {
        Ok(hyper) => wasmtime_wasi_http::Error::Hyper(*hyper),
        Err(other) => wasmtime_wasi_http::Error::InternalError(Some(other.to_string())),
    }
}

/// The gateway's view of the registry.
pub struct GatewayBackend(pub Arc<Registry>);

#[async_trait::async_trait]
impl panal_gateway::Backend for GatewayBackend {
    async fn handle(
        &self,
        component: &str,
        req: panal_gateway::Request,
    ) -> http::Response<panal_gateway::Body> {
        let (mut parts, body) = req.into_parts();
        // wasi:http wants an absolute URI; the authority comes from the Host header.
        if parts.uri.authority().is_none() {
            let authority = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost")
                .to_string();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str)
                .to_string();
            if let Ok(uri) = http::Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path)
                .build()
            {
                parts.uri = uri;
            }
        }
        let body = body.map_err(body_error).boxed_unsync();
        let resp = self
            .0
            .call(component, http::Request::from_parts(parts, body), 0)
            .await;
        resp.map(|b| {
            b.map_err(|e| Box::new(e) as panal_gateway::BoxError)
                .boxed_unsync()
        })
    }
}
