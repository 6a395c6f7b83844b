//! The state of one `Store`: one instance. Each capability gets its own view of it (the
//! wasmtime `*View` pattern), so capability code never sees the rest.

use std::sync::Arc;

use parking_lot::Mutex;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::tasks;
use super::{CallContext, Grants, Instances};
use crate::logging::{ComponentLog, Output, RequestTag, Tag};
use crate::runtime::budget::Charge;
use crate::runtime::instance::Limited;
use crate::runtime::limits::Limiter;

/// Per-instance state.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limiter,
    /// Each capability's part; the request's context is its outbound side's
    /// (`caps.http_out.ctx`: wasi:http's hooks need it), which the other views borrow.
    pub(crate) caps: Instances,
    /// In an instance serving several requests at once: each one's context, and the
    /// serial of the one taken on last.
    tasks: Option<(tasks::Shared, u64)>,
    /// The request id its output lines carry.
    request: RequestTag,
}

impl State {
    /// The state of a fresh instance of `component` (guest output logged under its
    /// name), with memory capped at `memory_mb` and charged to `charge`, started by `ctx`.
    pub fn new(
        component: &Arc<str>,
        grants: &Grants,
        memory_mb: u64,
        ctx: &CallContext,
        charge: Option<Charge>,
    ) -> Self {
        let request: RequestTag = Arc::new(Mutex::new(tag(ctx)));
        let log = |output| ComponentLog::new(component.clone(), output, request.clone());
        let wasi = WasiCtx::builder()
            .stdout(log(Output::Stdout))
            .stderr(log(Output::Stderr))
            .build();
        let memory = usize::try_from(memory_mb << 20).unwrap_or(usize::MAX);
        let mut table = ResourceTable::new();
        table.set_max_capacity(resource_cap(memory_mb));
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table,
            limits: Limiter::new(memory, charge),
            caps: Instances::prepare(grants, ctx),
            tasks: None,
            request,
        }
    }

    /// Serve several requests at once in `store`'s instance, each with its own context
    /// ([`State::task_context`]), followed by the store's task-group hook.
    pub(crate) fn follow_tasks(store: &mut wasmtime::Store<Self>) {
        let shared = tasks::Shared::default();
        store.task_group_hook(tasks::Follow(shared.clone()));
        store.data_mut().tasks = Some((shared, 0));
    }

    /// Guest task `task` serves a request started by `ctx`.
    pub(crate) fn task_context(
        &mut self,
        task: wasmtime::component::TaskGroupId,
        ctx: CallContext,
    ) {
        if let Some((shared, _)) = &self.tasks {
            tasks::lock(shared).start(task, ctx);
        }
    }

    /// Take on the context of the guest task running now, before a capability reads it
    /// (every view calls it first).
    pub(crate) fn sync(&mut self) {
        let Some((shared, entered)) = &self.tasks else {
            return;
        };
        let switch = tasks::lock(shared).switch(*entered);
        if let Some((serial, ctx)) = switch {
            if let Some((_, entered)) = &mut self.tasks {
                *entered = serial;
            }
            self.enter(&ctx);
        }
    }

    /// Take on the context of the request this kept instance serves next.
    pub fn enter(&mut self, ctx: &CallContext) {
        self.caps.enter(ctx);
        *self.request.lock() = tag(ctx);
    }
}

impl Limited for State {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limits
    }

    fn refused(&self) -> &Arc<crate::runtime::limits::Refused> {
        &self.limits.hit
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.sync();
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl State {
    /// The wasi:http view of a middleware's `wasi:http/handler` import: the same as
    /// [`WasiHttpView::http`], but a request sent through it goes to the next handler.
    pub(crate) fn forward_view(&mut self) -> WasiHttpCtxView<'_> {
        self.http_view(true)
    }

    /// Every send takes its view just before it calls the hook, so `forwarding` is
    /// always that send's own.
    fn http_view(&mut self, forwarding: bool) -> WasiHttpCtxView<'_> {
        self.sync();
        self.caps.http_out.forwarding = forwarding;
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.caps.http_out,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.http_view(false)
    }
}

/// Resources (handles the host keeps for a guest: messages, streams, fields...) one
/// instance may hold per MiB of its `memory_mb`. Each costs the host memory outside the
/// guest's own (a message ~200 bytes), so the table grows with the limit: 256 per MiB
/// keeps it to a few percent of it.
pub const RESOURCES_PER_MIB: usize = 256;

/// The most resources an instance with `memory_mb` may hold at once (at least 4096, so
/// a small instance still serves concurrent requests).
pub fn resource_cap(memory_mb: u64) -> usize {
    usize::try_from(memory_mb)
        .unwrap_or(usize::MAX)
        .saturating_mul(RESOURCES_PER_MIB)
        .clamp(4096, 1_000_000)
}

/// The request id and trace id in `ctx`'s trace headers, for the output lines.
fn tag(ctx: &CallContext) -> Tag {
    use super::context::Headers;
    Tag {
        request_id: ctx.trace.header("x-request-id").map(Arc::from),
        trace_id: ctx
            .trace
            .header(crate::traces::TRACEPARENT)
            .and_then(crate::traces::trace_id_of)
            .map(Arc::from),
    }
}
