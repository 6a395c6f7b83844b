//! The one executor behind every trigger (HTTP, messages, timers): a concurrency slot,
//! an instance of the current version with its limits and the caller's context, the
//! deadline over the whole run, the classification of what went wrong ([`Failure`]) and
//! the counters. Each trigger only adapts its input and output: [`super::http`] a
//! request and a streamed response, [`super::messaging`] a delivery and its settlement.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::WasiBody;

use crate::capabilities::http_out::{Breakers, Calls};
use crate::capabilities::{CallContext, State};
use crate::metrics::Stats;
use crate::registry::{Deployed, Registry};
use crate::runtime::budget::Admission;
use crate::runtime::instance::Deadline;
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
    cluster: OnceLock<Arc<crate::cluster::Cluster>>,
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
    pub fn join(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this host is part of.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
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
            unavailable: Default::default(),
        }
    }
}

/// How a run waits for its slot and for room in the memory budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// A request (from the gateway, a timer, another component or host): within the
    /// component's `queue_ms`, then 503.
    Request,
    /// A message: as long as it takes (back-pressure on the broker instead of a
    /// refusal), and only while a quarter of the memory budget is left to requests.
    Message,
}

/// A run admitted on one version: the version, its slot among `max_concurrency`, and
/// the context its instance gets. The instance comes from the same version as the slot,
/// even when a deploy swaps in another meanwhile.
pub(crate) struct Prepared {
    pub deployed: Arc<Deployed>,
    pub ctx: CallContext,
    pub permit: OwnedSemaphorePermit,
    wait: Wait,
}

impl Executor {
    /// The first step of every run (HTTP, messages, timers, remote calls): a slot on
    /// `deployed`, waited for as `wait` says.
    pub(crate) async fn prepare(
        &self,
        deployed: Arc<Deployed>,
        ctx: CallContext,
        wait: Wait,
    ) -> Result<Prepared, Failure> {
        let busy = Failure::Busy {
            max_concurrency: deployed.limits.max_concurrency,
        };
        let permit = match wait {
            Wait::Request => {
                let queue = Duration::from_millis(deployed.limits.queue_ms);
                crate::runtime::limits::slot(&deployed.running, queue).await
            }
            Wait::Message => deployed.running.clone().acquire_owned().await.ok(),
        };
        Ok(Prepared {
            permit: permit.ok_or(busy)?,
            deployed,
            ctx,
            wait,
        })
    }
}

impl Prepared {
    /// The second step for a fresh instance: its store, admitted into the host's memory
    /// budget as the wait allows, and the deadline over its whole run, from now.
    pub async fn store(&self, engine: &Engine) -> Result<(Store<State>, Deadline), Failure> {
        let admission = match self.wait {
            Wait::Request => {
                Admission::Request(Duration::from_millis(self.deployed.limits.queue_ms))
            }
            Wait::Message => Admission::Background,
        };
        let store = self
            .deployed
            .store(engine, &self.ctx, Some(admission))
            .await?;
        let deadline = Deadline::of(&store, self.deployed.limits);
        Ok((store, deadline))
    }
}

/// Counts a request in flight until it is answered or dropped.
pub(crate) struct InFlight(Arc<Stats>);

impl InFlight {
    pub fn enter(stats: Arc<Stats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats)
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
