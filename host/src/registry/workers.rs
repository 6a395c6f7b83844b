//! The kept instances of a version: a WASI 0.3 service's take up to `limits.concurrent`
//! requests at once, a 0.2 proxy's one at a time; each takes up to `limits.reuse` in its
//! life, and is dropped after `limits.idle_ms` without work (a component with
//! `reuse = 1` never comes here: a fresh instance per request). The worker loop is wasmtime-wasi-http's
//! `ProxyHandler` (the one `wasmtime serve` runs); this module supplies what Panal adds:
//! instances made like every other (grants, memory cap, counters), each request's own
//! context inside the shared instance (see `capabilities::state`), the deadline, and
//! what a failure is called.
//!
//! A request's deadline is enforced twice: inside the instance's event loop (the request
//! expires), and from outside it, where a guest stuck in a loop cannot hold it back (the
//! instance is dropped once its most recent request is past `timeout_ms`). A trap, a
//! limit hit or that expiry drops the instance and fails its requests only, each told
//! the cause.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wasmtime::component::TaskGroupId;
use wasmtime::{Engine, Store, StoreContextMut, UpdateDeadline};
use wasmtime_wasi_http::handler::{
    self, HandlerState, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::WasiHttpView;

use super::Deployed;
use crate::capabilities::{CallContext, State};
use crate::manifest::Limits;
use crate::runtime::budget::Admission;
use crate::runtime::instance::Deadline;
use crate::runtime::Failure;

/// What a request hands the instance that takes it: its context, and where the cause
/// goes when the instance fails under it.
pub(crate) struct Ask {
    pub ctx: CallContext,
    pub cause: oneshot::Sender<Failure>,
}

/// Makes the instances of one version (wasmtime-wasi-http's `HandlerState`).
pub(crate) struct Pool {
    /// Weak: a version's pool never keeps the version alive; its workers end when idle.
    pub(super) deployed: Weak<Deployed>,
    pub(super) engine: Engine,
}

impl HandlerState for Pool {
    type StoreData = State;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<handler::Instance<State, Expiry, Worker>> {
        let deployed = self
            .deployed
            .upgrade()
            .ok_or_else(|| wasmtime::format_err!("this version was replaced"))?;
        let limits = deployed.limits;
        let timeout = Duration::from_millis(limits.timeout_ms);
        let queue = Duration::from_millis(limits.queue_ms);
        let ctx = CallContext::default();
        let mut store = deployed
            .store(&self.engine, &ctx, Some(Admission::Request(queue)))
            .await?;
        let p3 = deployed.is_service();
        // Only an instance that runs several requests at once needs each one's context
        // followed task by task; a 0.2 proxy takes on the next request's when it starts.
        if p3 {
            State::follow_tasks(&mut store);
        }
        // It outlives any one request: every tick yields (a busy guest shares the
        // thread), and a request past its deadline is stopped by `Expiry`.
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let proxy = Deadline::of(&store, limits)
            .run(deployed.pre.instantiate_async(&mut store))
            .await?;
        let expired = Arc::new(AtomicBool::new(false));
        let hit = store.data().limits.hit.clone();
        Ok(handler::Instance {
            store,
            proxy,
            view: <State as WasiHttpView>::http,
            expiration: Expiry {
                idle: Duration::from_millis(limits.idle_ms),
                timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
                expired: expired.clone(),
            },
            state: Worker {
                limits,
                p3,
                hit,
                expired,
                causes: Mutex::new(Vec::new()),
            },
        })
    }
}

/// When an instance ends: `idle_ms` after its last request finished, or `timeout_ms`
/// after the most recent of the requests it still runs started (all of them are late
/// then). Polled outside the event loop.
pub(crate) struct Expiry {
    idle: Duration,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set when it ended an instance that still had requests (their cause: the deadline).
    expired: Arc<AtomicBool>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        let after = match status {
            WorkerStatus::Idle => me.idle,
            WorkerStatus::Requests | WorkerStatus::PostReturn => me.timeout,
        };
        let Some(deadline) = start.checked_add(after) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if me.sleep.deadline() != deadline {
            me.sleep.as_mut().reset(deadline);
        }
        let poll = me.sleep.as_mut().poll(cx);
        if poll.is_ready() && status != WorkerStatus::Idle {
            me.expired.store(true, Ordering::Relaxed);
        }
        poll
    }
}

/// One instance's bookkeeping (wasmtime-wasi-http's `WorkerState`).
pub(crate) struct Worker {
    limits: Limits,
    /// A WASI 0.3 service (else a 0.2 proxy: one request at a time).
    p3: bool,
    /// Set by the instance's limiter when it refused memory growth: such an instance
    /// takes no more requests (the guest may have carried on in a state it did not
    /// expect).
    hit: Arc<crate::runtime::limits::Refused>,
    expired: Arc<AtomicBool>,
    /// Where the cause goes, per request taken (those already answered are closed).
    causes: Mutex<Vec<oneshot::Sender<Failure>>>,
}

impl WorkerState for Worker {
    type StoreData = State;
    type RequestData = Ask;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.limits.reuse_for(self.p3) as usize || self.hit.any() {
            ShouldAccept::Never
        } else if concurrent >= self.limits.concurrent_for(self.p3) as usize {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, State>,
        ask: Ask,
        task: TaskGroupId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        if self.p3 {
            store.data_mut().task_context(task, ask.ctx);
        } else {
            store.data_mut().enter(&ask.ctx);
        }
        let mut causes = self.causes.lock();
        causes.retain(|c| !c.is_closed());
        causes.push(ask.cause);
        Box::pin(tokio::time::sleep(Duration::from_millis(
            self.limits.timeout_ms,
        )))
    }

    fn drop(&self, store: Store<State>, result: wasmtime::Result<()>) {
        let Err(e) = result else { return };
        let causes = std::mem::take(&mut *self.causes.lock());
        // The worker's task was dropped, not failed: the runtime is shutting down. An
        // instance holding no request then has nothing to report. (A real panic has
        // already been printed by the panic hook.)
        if causes.iter().all(oneshot::Sender::is_closed) && e.to_string() == "worker panicked" {
            tracing::debug!("an idle instance ended with the host");
            return;
        }
        let failure = if self.expired.load(Ordering::Relaxed) {
            Failure::Stopped {
                timeout_ms: self.limits.timeout_ms,
            }
        } else {
            Failure::of(&e, &store.data().limits.hit, &self.limits)
        };
        drop(store);
        for cause in causes {
            let _ = cause.send(failure.clone());
        }
    }
}

/// How long a request whose instance failed waits to hear the cause.
pub(crate) const CAUSE_WAIT: Duration = Duration::from_secs(1);
