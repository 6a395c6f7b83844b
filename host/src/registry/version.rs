//! One version of a component, ready to serve: compiled, linked, checked against every
//! capability's grant rules and pre-instantiated ([`prepare`]), with its counters, its
//! concurrency slots and the instances it keeps for reuse (`workers`: a 0.3 service's
//! serve several requests at once, a 0.2 proxy's one at a time; `kept`: its messaging
//! handler's, one message at a time).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};
use wasmtime_wasi_http::handler::{ProxyHandler, ProxyPre};

use super::error::{ChangeError, Phase};
use super::handlers::Kept;
pub(crate) use super::workers::Ask;
use super::workers::Pool;
use crate::capabilities::bindings::Host_Pre as HostPre;
use crate::capabilities::{Backends, CallContext, Grants, State, Version};
use crate::manifest::{ComponentSpec, Limits, Subscription};
use crate::metrics::{Metrics, Stats, VersionStats};
use crate::runtime::budget::{Admission, MemoryBudget};
use crate::runtime::engine::{self, Compiled, Compiler};
use crate::runtime::Failure;

/// One ready version of a component.
pub struct Deployed {
    /// The component's name.
    pub name: Arc<str>,
    /// sha256 of the `.wasm` it was built from.
    pub sha256: String,
    /// What it was deployed with (routes and grants).
    pub spec: Arc<ComponentSpec>,
    /// When this version became current.
    pub deployed_at: SystemTime,
    /// Counters shared by every version of the component.
    pub stats: Arc<Stats>,
    /// Counters of this version.
    pub metrics: Arc<VersionStats>,
    /// Its limits (copied from the spec: read on every request).
    pub limits: Limits,
    /// [`Deployed::version`] as the `x-panal-version` header, made once.
    pub(crate) version_header: http::HeaderValue,
    /// What the host delivers to this component's messaging handler.
    pub subscriptions: Vec<Subscription>,
    /// A WASI 0.2 proxy (`ProxyPre::P2`) or a WASI 0.3 service (`ProxyPre::P3`).
    pub(crate) pre: Arc<ProxyPre<State>>,
    /// The messaging handler, when the component subscribes to anything.
    pub(crate) handler: Option<HostPre<State>>,
    pub(crate) grants: Grants,
    /// `max_concurrency` slots, shared with the versions before and after it.
    pub(crate) running: Arc<Semaphore>,
    /// The host's guest memory budget, which each of its instances is charged to.
    budget: Arc<MemoryBudget>,
    /// The most linear memory an instance starts with (charged at admission).
    initial_memory: u64,
    /// Its kept instances (`limits.reuse` > 1): several requests at once each for a 0.3
    /// service, one at a time for a 0.2 proxy; made on its first request.
    workers: OnceLock<ProxyHandler<Pool>>,
    /// Its idle messaging handler instances (`limits.reuse` > 1).
    pub(super) kept: Kept,
}

impl Deployed {
    /// A fresh instance's store, started by `ctx`: the only place one is made, for every
    /// trigger and for a deploy's trial, so each gets the version's limits and deadline
    /// and is charged to the host's guest memory budget, admitted as `who` (a deploy's
    /// trial, `None`, is not charged).
    pub(crate) async fn store(
        &self,
        engine: &Engine,
        ctx: &CallContext,
        who: Option<Admission>,
    ) -> Result<Store<State>, Failure> {
        let charge = match who {
            Some(who) => Some(self.budget.admit(self.initial_memory, who).await.ok_or(
                Failure::NoMemory {
                    budget_mb: self.budget.total_mb(),
                },
            )?),
            None => None,
        };
        self.metrics.instances.fetch_add(1, Ordering::Relaxed);
        let state = State::new(&self.name, &self.grants, self.limits.memory_mb, ctx, charge);
        Ok(crate::runtime::instance::store(
            engine,
            state,
            self.limits.timeout_ms,
        ))
    }

    /// The concurrent instances of this version (a 0.3 service), which serve each
    /// request handed to them with [`Ask`]: `limits.concurrent` at once per instance.
    pub(crate) fn workers(self: &Arc<Self>, engine: &Engine) -> &ProxyHandler<Pool> {
        self.workers.get_or_init(|| {
            ProxyHandler::new(Pool {
                deployed: Arc::downgrade(self),
                engine: engine.clone(),
            })
        })
    }

    /// Whether it is a WASI 0.3 service.
    pub fn is_service(&self) -> bool {
        matches!(*self.pre, ProxyPre::P3(_))
    }

    /// The version clients see in `x-panal-version`: the sha256 prefix.
    pub fn version(&self) -> &str {
        &self.sha256[..12]
    }
}

/// What loading and deploying need besides the component itself.
pub(crate) struct Env {
    pub compiler: Compiler,
    pub linker: Linker<State>,
    pub backends: Backends,
    pub metrics: Arc<Metrics>,
}

/// Compile, link and check one component from its bytes. The error says which phase
/// failed. `previous` hands over the concurrency slots of the version it replaces.
pub(crate) async fn prepare(
    spec: Arc<ComponentSpec>,
    bytes: &[u8],
    env: &Env,
    previous: Option<&Deployed>,
) -> Result<(Deployed, Compiled), ChangeError> {
    let source = spec.source.display();
    let name = spec.name.as_str();
    let failed = |phase: Phase, message: String| ChangeError::new(name, phase, message);
    if let Some(why) = engine::not_a_component(bytes) {
        return Err(failed(Phase::Compile, format!("`{source}` {why}")));
    }
    let sha256 = engine::sha256(bytes);
    let (component, how) = env
        .compiler
        .compile(bytes, &sha256)
        .map_err(|e| failed(Phase::Compile, format!("cannot compile `{source}`: {e}")))?;
    let imports: Vec<String> = component
        .component_type()
        .imports(env.linker.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    let pre = env
        .linker
        .instantiate_pre(&component)
        .map_err(|e| failed(Phase::Link, format!("cannot link: {e:#}")))?;
    let (pre, handler) = exports(&spec, &component, pre, env.linker.engine())?;
    // Last: storage is opened only for a version that links.
    let stats = env.metrics.component(&spec.name);
    let grants = Grants::configure(&Version {
        spec: &spec,
        imports: &imports,
        stats: &stats,
        backends: &env.backends,
    })
    .await
    .map_err(|e| failed(Phase::Grants, e.to_string()))?;
    let metrics = env.metrics.version(&spec.name, &sha256[..12]);
    let version_header = http::HeaderValue::from_str(&sha256[..12])
        .map_err(|e| failed(Phase::Compile, format!("version header: {e}")))?;
    let deployed = Deployed {
        version_header,
        name: spec.name.as_str().into(),
        sha256,
        spec: spec.clone(),
        deployed_at: SystemTime::now(),
        stats,
        metrics,
        limits: spec.limits,
        subscriptions: spec.subscribe.clone(),
        pre: Arc::new(pre),
        handler,
        grants,
        running: previous.map_or_else(
            || Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
            |p| p.running.clone(),
        ),
        workers: OnceLock::new(),
        kept: Kept::default(),
        budget: env.backends.memory.clone(),
        initial_memory: initial_memory(&component, spec.limits.memory_mb),
    };
    Ok((deployed, how))
}

/// What `component` (linked as `pre`) exports for its triggers: `wasi:http` as a 0.2
/// proxy or a 0.3 service, and the messaging handler when `spec` subscribes.
fn exports(
    spec: &ComponentSpec,
    component: &wasmtime::component::Component,
    pre: wasmtime::component::InstancePre<State>,
    engine: &Engine,
) -> Result<(ProxyPre<State>, Option<HostPre<State>>), ChangeError> {
    let failed = |message: String| ChangeError::new(&spec.name, Phase::Exports, message);
    let handler = if spec.subscribe.is_empty() {
        None
    } else {
        Some(HostPre::new(pre.clone()).map_err(|e| {
            failed(format!(
                "subscribes to messages but does not export \
                 `wasi:messaging/incoming-handler@0.2.0-draft` ({e:#})"
            ))
        })?)
    };
    let pre = entry(component, pre, engine).map_err(failed)?;
    if let (ProxyPre::P2(_), Some(n @ 2..)) = (&pre, spec.limits.concurrent) {
        return Err(failed(format!(
            "`limits.concurrent` is {n}, but `{}` is a WASI 0.2 proxy, which serves \
             one request at a time: drop the limit, or build it as a 0.3 service",
            spec.name
        )));
    }
    Ok((pre, handler))
}

/// The most linear memory an instance of `component` starts with, all its memories
/// together, at most `memory_mb` (which is assumed when the component cannot tell).
fn initial_memory(component: &wasmtime::component::Component, memory_mb: u64) -> u64 {
    const PAGE: u64 = 64 << 10;
    let most = memory_mb << 20;
    component.resources_required().map_or(most, |r| {
        let pages = r.max_initial_memory_size.unwrap_or(0);
        u64::from(r.num_memories)
            .saturating_mul(pages)
            .saturating_mul(PAGE)
            .min(most)
    })
}

/// How `component` serves HTTP, told by what it exports: `wasi:http/handler@0.3.x`
/// (a WASI 0.3 service) or `wasi:http/incoming-handler@0.2.x` (a 0.2 proxy).
fn entry(
    component: &wasmtime::component::Component,
    pre: wasmtime::component::InstancePre<State>,
    engine: &wasmtime::Engine,
) -> Result<ProxyPre<State>, String> {
    if let Ok(service) = wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.clone()) {
        return Ok(ProxyPre::P3(service));
    }
    match wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre) {
        Ok(proxy) => Ok(ProxyPre::P2(proxy)),
        Err(e) => {
            let exports: Vec<String> = component
                .component_type()
                .exports(engine)
                .map(|(name, _)| format!("`{name}`"))
                .collect();
            let exports = if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            };
            Err(format!(
                "exports neither `wasi:http/incoming-handler@0.2.x` (a WASI 0.2 proxy) nor \
                 `wasi:http/handler@0.3.x` (a WASI 0.3 service), so it cannot serve \
                 requests; it exports {exports} ({e:#})"
            ))
        }
    }
}
