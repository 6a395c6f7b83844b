//! The component registry: every component of the manifest compiled (or loaded from the
//! cache), linked against the capabilities, checked against its grants and
//! pre-instantiated. Each component sits behind an `ArcSwap`, so the request path takes
//! the current version with one atomic load and a later swap never blocks it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::Host_Pre as HostPre;
use crate::engine::{self, Compiled, Compiler};
use crate::kv::host::KvGrant;
use crate::kv::KvBackend;
use crate::manifest::{ComponentSpec, Limits, Manifest, Subscription};
use crate::messaging::host::MsgGrant;
use crate::messaging::Broker;
pub use crate::metrics::Stats;
use crate::metrics::{Metrics, VersionStats};
use crate::state::State;

/// One ready version of a component.
pub struct Deployed {
    /// The component's name.
    pub name: Arc<str>,
    /// sha256 of the `.wasm` it was built from.
    pub sha256: String,
    /// What it was deployed with (routes and grants).
    pub spec: Arc<ComponentSpec>,
    /// When this version became current.
    pub deployed_at: std::time::SystemTime,
    /// Counters shared by every version of the component.
    pub stats: Arc<Stats>,
    /// Counters of this version.
    pub metrics: Arc<VersionStats>,
    pub(crate) pre: ProxyPre<State>,
    pub(crate) kv: KvGrant,
    pub(crate) config: Arc<[(String, String)]>,
    pub(crate) msg: MsgGrant,
    /// What the host delivers to this component's messaging handler.
    pub subscriptions: Vec<Subscription>,
    /// The messaging handler, when the component subscribes to anything.
    pub(crate) handler: Option<HostPre<State>>,
    pub(crate) outbound: Arc<crate::manifest::Outbound>,
    pub(crate) limits: Limits,
    pub(crate) running: Arc<Semaphore>,
    /// Instances that served a request and may serve another (`limits.reuse` > 1).
    pub(crate) idle: std::sync::Mutex<Vec<crate::invoke::Warm>>,
}

/// One component failed to load; names it, where it was declared and the phase.
#[derive(Debug, thiserror::Error)]
#[error("{manifest}:{line}:{col}: components.{name}.source: {message}")]
pub struct LoadError {
    /// Manifest path.
    pub manifest: String,
    /// Line of the component's `source`.
    pub line: usize,
    /// Column of the component's `source`.
    pub col: usize,
    /// The component.
    pub name: String,
    /// What went wrong, phase included.
    pub message: String,
}

impl Deployed {
    /// Give the pool back the slots of idle instances (the version stops being current;
    /// requests still running on it finish on their own instances).
    pub(crate) fn drop_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
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
    pub kv: Option<Arc<dyn KvBackend>>,
    pub broker: Option<Arc<dyn Broker>>,
    pub metrics: Arc<Metrics>,
}

/// All loaded components.
pub struct Registry {
    pub(crate) engine: Engine,
    /// Copied on write: a deploy that adds or removes a component swaps the whole map,
    /// a deploy that replaces one swaps only its slot.
    components: ArcSwap<HashMap<String, Arc<ArcSwap<Deployed>>>>,
    pub(crate) env: Env,
    pub(crate) deployments: Option<crate::deploy::store::DeployStore>,
    /// One deploy, rollback or undeploy at a time.
    pub(crate) deploy_lock: tokio::sync::Mutex<()>,
    /// Circuit breakers of in-process calls, per target component.
    pub(crate) breakers: crate::resilience::Breakers,
}

/// Counts of how components were obtained, for the start-up log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Compiled during this load.
    pub compiled: usize,
    /// Taken from the on-disk cache.
    pub cached: usize,
}

impl Registry {
    /// Compile, link and check every component of `manifest`, opening storage in `kv`
    /// when given. All failures are returned, not just the first.
    pub async fn load(
        manifest: &Manifest,
        engine: &Engine,
        compiler: Compiler,
        kv: Option<Arc<dyn KvBackend>>,
        broker: Option<Arc<dyn Broker>>,
        deployments: Option<crate::deploy::store::DeployStore>,
    ) -> Result<(Arc<Self>, LoadStats), Vec<LoadError>> {
        let linker = linker(engine).map_err(|e| {
            vec![LoadError {
                manifest: manifest.path.display().to_string(),
                line: 0,
                col: 0,
                name: "*".into(),
                message: format!("host linker setup failed: {e:#}"),
            }]
        })?;
        let env = Env {
            compiler,
            linker,
            kv,
            broker,
            metrics: Arc::default(),
        };
        let mut components = HashMap::new();
        let mut errors = Vec::new();
        let mut stats = LoadStats::default();
        let specs = match &deployments {
            Some(d) => d.effective(&manifest.components),
            None => manifest
                .components
                .iter()
                .map(|s| (s.clone(), None))
                .collect(),
        };
        for (spec, deployed_sha) in specs {
            let bytes = match &deployed_sha {
                Some(sha) => deployments
                    .as_ref()
                    .map_or_else(|| Err("no deployment store".to_string()), |d| d.blob(sha)),
                None => read(&spec.source),
            };
            let prepared = match bytes {
                Ok(bytes) => {
                    let prepared = prepare(Arc::new(spec.clone()), &bytes, engine, &env, None)
                        .await
                        .map(|(d, how)| (d, how, bytes_note(&deployed_sha)));
                    // Keep the manifest's version too, so a rollback can always reach it.
                    if let (Some(store), Ok((d, _, _)), None) =
                        (&deployments, &prepared, &deployed_sha)
                    {
                        if let Err(e) = store.put_blob(&d.sha256, &bytes) {
                            tracing::warn!(component = %spec.name, %e, "cannot keep a copy for rollback");
                        }
                    }
                    prepared
                }
                Err(e) => Err(e),
            };
            match prepared {
                Ok((deployed, how, note)) => {
                    match how {
                        Compiled::Fresh => stats.compiled += 1,
                        Compiled::Cached => stats.cached += 1,
                    }
                    tracing::info!(
                        component = %spec.name,
                        sha256 = %deployed.version(),
                        compiled = matches!(how, Compiled::Fresh),
                        from = note,
                        "component ready"
                    );
                    components.insert(spec.name.clone(), Arc::new(ArcSwap::from_pointee(deployed)));
                }
                Err(message) => errors.push(LoadError {
                    manifest: manifest.path.display().to_string(),
                    line: spec.source_at.line,
                    col: spec.source_at.col,
                    name: spec.name.clone(),
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let registry = Arc::new(Self {
            engine: engine.clone(),
            components: ArcSwap::from_pointee(components),
            env,
            deployments,
            deploy_lock: tokio::sync::Mutex::new(()),
            breakers: crate::resilience::Breakers::default(),
        });
        Ok((registry, stats))
    }

    /// The current version of every component, sorted by name.
    pub fn all(&self) -> Vec<Arc<Deployed>> {
        self.names()
            .into_iter()
            .filter_map(|n| self.current(&n))
            .collect()
    }

    /// The current version of `name`.
    pub fn current(&self, name: &str) -> Option<Arc<Deployed>> {
        self.components
            .load()
            .get(name)
            .map(|slot| slot.load_full())
    }

    /// Names of all components, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.components.load().keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// Every route of every component, for the gateway's table.
    pub fn routes(&self) -> Vec<panal_gateway::Route> {
        self.all()
            .iter()
            .flat_map(|d| d.spec.routes.iter().cloned())
            .collect()
    }

    /// Make `deployed` the current version of its component (adding the component when
    /// it is new). Requests that already hold the old version finish on it.
    pub(crate) fn install(&self, deployed: Deployed) {
        let name = deployed.name.to_string();
        if let Some(slot) = self.components.load().get(&name) {
            slot.swap(Arc::new(deployed)).drop_idle();
            return;
        }
        let mut map = HashMap::clone(&self.components.load());
        map.insert(name, Arc::new(ArcSwap::from_pointee(deployed)));
        self.components.store(Arc::new(map));
    }

    /// Remove `name`; whether it was there.
    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut map = HashMap::clone(&self.components.load());
        let removed = map.remove(name);
        if let Some(slot) = &removed {
            slot.load().drop_idle();
        }
        let was = removed.is_some();
        self.components.store(Arc::new(map));
        was
    }
}

/// The linker with every capability a component may import.
fn linker(engine: &Engine) -> anyhow::Result<Linker<State>> {
    let mut linker = Linker::new(engine);
    let fail = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(fail)?;
    crate::kv::host::add_to_linker(&mut linker, State::kv).map_err(fail)?;
    crate::config::add_to_linker(&mut linker, State::config).map_err(fail)?;
    crate::messaging::host::add_to_linker(&mut linker, State::msg).map_err(fail)?;
    Ok(linker)
}

fn bytes_note(deployed: &Option<String>) -> &'static str {
    if deployed.is_some() {
        "deployments"
    } else {
        "manifest"
    }
}

/// Compile, link and check one component from its bytes. The error says which phase
/// failed. `previous` hands over the concurrency slots of the version it replaces.
pub(crate) async fn prepare(
    spec: Arc<ComponentSpec>,
    bytes: &[u8],
    engine: &Engine,
    env: &Env,
    previous: Option<&Deployed>,
) -> Result<(Deployed, Compiled), String> {
    let source = spec.source.display();
    if let Some(why) = engine::not_a_component(bytes) {
        return Err(format!("`{source}` {why}"));
    }
    let sha256 = engine::sha256(bytes);
    let (component, how) = env
        .compiler
        .compile(bytes, &sha256)
        .map_err(|e| format!("cannot compile `{source}`: {e}"))?;
    let linker = &env.linker;
    let kv = env.kv.as_deref();
    let broker = env.broker.clone();
    check_grants(&spec, &component, engine)?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("cannot link: {e:#}"))?;
    let handler = if spec.subscribe.is_empty() {
        None
    } else {
        Some(HostPre::new(pre.clone()).map_err(|e| {
            format!(
                "subscribes to messages but does not export \
                 `wasi:messaging/incoming-handler@0.2.0-draft` ({e:#})"
            )
        })?)
    };
    let pre = ProxyPre::new(pre).map_err(|e| {
        format!("does not export `wasi:http/incoming-handler@0.2.x`, so it cannot serve requests ({e:#})")
    })?;
    // `panal check` passes no backend: it links and checks, but opens no storage.
    let store = match kv {
        Some(kv) if !spec.buckets.is_empty() => Some(
            kv.namespace(&spec.name, crate::kv::quota::KvLimits::of(&spec.limits))
                .await
                .map_err(|e| format!("cannot open its storage: {e:#}"))?,
        ),
        _ => None,
    };
    let stats = env.metrics.component(&spec.name);
    let metrics = env.metrics.version(&spec.name, &sha256[..12]);
    let deployed = Deployed {
        name: spec.name.as_str().into(),
        sha256,
        spec: spec.clone(),
        deployed_at: std::time::SystemTime::now(),
        stats: stats.clone(),
        metrics,
        pre,
        kv: KvGrant {
            store,
            buckets: spec.buckets.clone().into(),
            stats: stats.clone(),
        },
        config: spec.config.clone().into(),
        msg: MsgGrant {
            component: spec.name.as_str().into(),
            broker,
            publish: spec.publish.clone().into(),
            stats,
        },
        subscriptions: spec.subscribe.clone(),
        handler,
        outbound: Arc::new(spec.outbound.clone()),
        limits: spec.limits,
        running: previous.map_or_else(
            || Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
            |p| p.running.clone(),
        ),
        idle: std::sync::Mutex::new(Vec::new()),
    };
    Ok((deployed, how))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// Deny by default: a component that imports keyed storage must be granted a bucket.
fn check_grants(
    spec: &ComponentSpec,
    component: &Component,
    engine: &Engine,
) -> Result<(), String> {
    let imports_kv = component
        .component_type()
        .imports(engine)
        .any(|(name, _)| name.starts_with("wasi:keyvalue/"));
    if imports_kv && spec.buckets.is_empty() {
        return Err(format!(
            "imports wasi:keyvalue but no bucket is granted: add `keyvalue = [\"...\"]` to \
             [components.{}] (bucket not granted)",
            spec.name
        ));
    }
    Ok(())
}
