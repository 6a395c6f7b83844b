//! The state of one `Store`: one request's instance. Each capability gets its own view
//! of it (the wasmtime `*View` pattern), so capability code never sees the rest.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::config::ConfigView;
use crate::kv::host::{KvGrant, KvView};
use crate::messaging::host::{MsgGrant, MsgView};
use crate::outbound::Outbound;

/// Per-instance state.
pub struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: crate::limits::Limiter,
    pub(crate) kv: KvGrant,
    pub(crate) config: Arc<[(String, String)]>,
    pub(crate) msg: MsgGrant,
    /// Bytes held by the messages this instance made (capped).
    pub(crate) msg_held: usize,
    /// Request id and trace context of what started this instance.
    pub(crate) trace: Arc<[(String, String)]>,
    pub(crate) outbound: Outbound,
}

impl State {
    pub(crate) fn kv(&mut self) -> KvView<'_> {
        KvView {
            grant: &self.kv,
            table: &mut self.table,
        }
    }

    pub(crate) fn msg(&mut self) -> MsgView<'_> {
        MsgView {
            grant: &self.msg,
            table: &mut self.table,
            trace: &self.trace,
            held: &mut self.msg_held,
        }
    }

    pub(crate) fn config(&mut self) -> ConfigView<'_> {
        ConfigView(&self.config)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
