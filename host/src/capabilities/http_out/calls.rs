//! [`Calls`]: how a component's request reaches another component. The host's executor
//! implements it in-process; a remote implementation (another host, over NATS) can plug
//! in without this capability changing.

use wasmtime_wasi_http::WasiBody;

use super::resilience::Breakers;

/// Where in-process calls go.
#[async_trait::async_trait]
pub trait Calls: Send + Sync {
    /// Answer `req` with component `target`; `depth` counts the hops so far. Failures
    /// are answers (502, 503, 504, ...), never errors.
    async fn call(
        &self,
        target: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody>;

    /// The largest request body `target` takes (its `max_body_kb`, in bytes), `None` when
    /// it is not deployed.
    fn max_body(&self, target: &str) -> Option<u64>;

    /// The circuit breakers of calls to each target.
    fn breakers(&self) -> &Breakers;
}
