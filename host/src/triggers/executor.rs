//! The one executor behind every trigger (HTTP, messages, timers): a concurrency slot,
//! an instance of the current version with its limits and the caller's context, the
//! deadline over the whole run, the classification of what went wrong ([`Failure`]) and
//! the counters. Each trigger only adapts its input and output: [`super::http`] a
//! request and a streamed response, [`super::messaging`] a delivery and its settlement.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::WasiBody;

use crate::capabilities::http_out::{Breakers, Calls};
use crate::capabilities::CallContext;
use crate::manifest::Limits;
use crate::metrics::Stats;
use crate::registry::{Deployed, Registry};
use crate::runtime::limits::Refused;
use crate::runtime::Failure;

/// Runs components for every trigger.
pub struct Executor {
    registry: Arc<Registry>,
    /// Circuit breakers of in-process calls, per target component.
    breakers: Breakers,
    /// Itself, handed to instances as where their calls go.
    me: Weak<Executor>,
    /// The cluster this host is part of, if any: where calls to components that run
    /// on other hosts go.
    cluster: OnceLock<Arc<super::cluster::Cluster>>,
}

impl Executor {
    /// The executor of `registry`'s components.
    pub fn new(registry: Arc<Registry>) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            registry,
            breakers: Breakers::default(),
            me: me.clone(),
            cluster: OnceLock::new(),
        })
    }

    /// Send calls to components this host does not run to `cluster` (once).
    pub fn join(&self, cluster: Arc<super::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this host is part of.
    pub fn cluster(&self) -> Option<&Arc<super::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Answer `req` with component `name`, here when it runs here, else on a host of
    /// the cluster that runs it. `depth` counts the hops so far.
    pub async fn route(
        &self,
        name: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        match self.cluster.get() {
            Some(cluster)
                if self.registry.current(name).is_none() && cluster.runs_elsewhere(name) =>
            {
                cluster.call(name, req, depth).await
            }
            _ => self.call_http(name, req, depth).await,
        }
    }

    /// The components it runs.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The context of an instance started `depth` calls deep, for `identity`, carrying
    /// `trace`; its own calls come back to this executor.
    pub(crate) fn context(
        &self,
        depth: u32,
        identity: Option<String>,
        trace: Arc<[(String, String)]>,
    ) -> CallContext {
        let calls: Weak<dyn Calls> = self.me.clone();
        CallContext {
            depth,
            identity,
            roles: None,
            trace,
            calls: Some(calls),
            next: None,
            admitted: None,
        }
    }
}

/// A slot among the component's `max_concurrency`: within `queue_ms` for a request
/// (else [`Failure::Busy`]); for a message, `None`, as long as it takes (back-pressure
/// on the broker instead of a refusal).
pub(crate) async fn slot(
    deployed: &Deployed,
    queue: Option<Duration>,
) -> Result<OwnedSemaphorePermit, Failure> {
    let busy = Failure::Busy {
        max_concurrency: deployed.limits.max_concurrency,
    };
    match queue {
        Some(queue) => crate::runtime::limits::slot(&deployed.running, queue)
            .await
            .ok_or(busy),
        None => deployed
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| busy),
    }
}

/// Run `work` (an instance's whole run: instantiation, the call, a streamed body) under
/// the component's `timeout_ms`, and name what went wrong. `refused` is the instance's
/// limiter note, so a trap after refused growth is reported as the limit that refused it.
pub(crate) async fn deadline<T>(
    limits: &Limits,
    refused: &Refused,
    work: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(Duration::from_millis(limits.timeout_ms), work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Failure::of(&err, refused, limits)),
        Err(_) => Err(Failure::Stopped {
            timeout_ms: limits.timeout_ms,
        }),
    }
}

/// Counts a request in flight until it is answered or dropped.
pub(crate) struct InFlight(Arc<Stats>);

impl InFlight {
    pub fn enter(stats: Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }

    pub fn answered(self, status: StatusCode) {
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

#[async_trait::async_trait]
impl Calls for Executor {
    async fn call(
        &self,
        target: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        self.route(target, req, depth).await
    }

    fn max_body(&self, target: &str) -> Option<u64> {
        match self.registry.current(target) {
            Some(d) => Some(d.limits.max_body_kb.saturating_mul(1024)),
            None => self.cluster.get().and_then(|c| c.max_body(target)),
        }
    }

    fn breakers(&self) -> &Breakers {
        &self.breakers
    }
}
