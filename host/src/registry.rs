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
use crate::state::State;

/// One ready version of a component.
pub struct Deployed {
    /// The component's name.
    pub name: Arc<str>,
    /// sha256 of the `.wasm` it was built from.
    pub sha256: String,
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

/// All loaded components.
pub struct Registry {
    pub(crate) engine: Engine,
    components: HashMap<String, ArcSwap<Deployed>>,
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
        compiler: &Compiler,
        kv: Option<&dyn KvBackend>,
        broker: Option<Arc<dyn Broker>>,
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
        let mut components = HashMap::new();
        let mut errors = Vec::new();
        let mut stats = LoadStats::default();
        for spec in &manifest.components {
            match prepare(spec, engine, compiler, &linker, kv, broker.clone()).await {
                Ok((deployed, how)) => {
                    match how {
                        Compiled::Fresh => stats.compiled += 1,
                        Compiled::Cached => stats.cached += 1,
                    }
                    tracing::info!(
                        component = %spec.name,
                        sha256 = %&deployed.sha256[..12],
                        compiled = matches!(how, Compiled::Fresh),
                        "component ready"
                    );
                    components.insert(spec.name.clone(), ArcSwap::from_pointee(deployed));
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
            components,
        });
        Ok((registry, stats))
    }

    /// The current version of every component, sorted by name.
    pub fn all(&self) -> Vec<Arc<Deployed>> {
        self.names()
            .into_iter()
            .filter_map(|n| self.current(n))
            .collect()
    }

    /// The current version of `name`.
    pub fn current(&self, name: &str) -> Option<Arc<Deployed>> {
        self.components.get(name).map(ArcSwap::load_full)
    }

    /// Names of all components, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.components.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
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

/// Read, compile, link and check one component. The error says which phase failed.
async fn prepare(
    spec: &ComponentSpec,
    engine: &Engine,
    compiler: &Compiler,
    linker: &Linker<State>,
    kv: Option<&dyn KvBackend>,
    broker: Option<Arc<dyn Broker>>,
) -> Result<(Deployed, Compiled), String> {
    let bytes = read(&spec.source)?;
    if let Some(why) = engine::not_a_component(&bytes) {
        return Err(format!("`{}` {why}", spec.source.display()));
    }
    let sha256 = engine::sha256(&bytes);
    let (component, how) = compiler
        .compile(&bytes, &sha256)
        .map_err(|e| format!("cannot compile `{}`: {e}", spec.source.display()))?;
    check_grants(spec, &component, engine)?;
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
            kv.namespace(&spec.name)
                .await
                .map_err(|e| format!("cannot open its storage: {e:#}"))?,
        ),
        _ => None,
    };
    let deployed = Deployed {
        name: spec.name.as_str().into(),
        sha256,
        pre,
        kv: KvGrant {
            store,
            buckets: spec.buckets.clone().into(),
        },
        config: spec.config.clone().into(),
        msg: MsgGrant {
            component: spec.name.as_str().into(),
            broker,
            publish: spec.publish.clone().into(),
        },
        subscriptions: spec.subscribe.clone(),
        handler,
        outbound: Arc::new(spec.outbound.clone()),
        limits: spec.limits,
        running: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
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
