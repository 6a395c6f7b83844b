//! The component registry: every component's current version, each behind an
//! `ArcSwap`, so the request path takes the current version with one atomic load and a
//! later swap never blocks it.
//!
//! - [`error`]: [`ChangeError`], a load or change refused, naming component and phase.
//! - [`version`]: one version ready to serve ([`Deployed`]), and how it is prepared.
//! - [`load`]: the manifest's components at start.
//! - [`deploy`]: deploy, rollback and undeploy while the others keep serving;
//!   [`store`]: their record on disk (history, blobs).
//! - [`watch`]: `panal run --watch` redeploys a component whose file changed.

pub mod deploy;
pub mod error;
mod handlers;
mod load;
pub mod store;
mod version;
pub mod watch;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use arc_swap::ArcSwap;
use panal_gateway::RouteTable;

use serde_json::{json, Value};
use wasmtime::Engine;

pub use error::{ChangeError, Phase};
pub(crate) use handlers::Handler;
pub use load::{LoadError, LoadStats};
pub(crate) use version::Ask;
pub use version::Deployed;
pub(crate) use version::{prepare, Env};
pub(crate) use workers::CAUSE_WAIT;

use store::DeployStore;

/// All loaded components.
pub struct Registry {
    /// Copied on write: a deploy that adds or removes a component swaps the whole map,
    /// a deploy that replaces one swaps only its slot.
    components: ArcSwap<HashMap<String, Arc<ArcSwap<Deployed>>>>,
    pub(crate) env: Env,
    pub(crate) deployments: Option<DeployStore>,
    /// One deploy, rollback or undeploy at a time.
    pub(crate) deploy_lock: tokio::sync::Mutex<()>,
    /// Routes of the components that run on other hosts of the cluster (the gateway
    /// serves them too, calling over NATS), by component.
    elsewhere: parking_lot::RwLock<BTreeMap<String, Vec<panal_gateway::Route>>>,
    /// The route table of every component here and elsewhere, sent anew whenever a
    /// change moves a route; the gateway follows it ([`Registry::route_table`]).
    table: tokio::sync::watch::Sender<Arc<RouteTable>>,
}

impl Registry {
    fn new(
        components: HashMap<String, Arc<ArcSwap<Deployed>>>,
        env: Env,
        deployments: Option<DeployStore>,
    ) -> Arc<Self> {
        let registry = Arc::new(Self {
            components: ArcSwap::from_pointee(components),
            env,
            deployments,
            deploy_lock: tokio::sync::Mutex::new(()),
            elsewhere: parking_lot::RwLock::default(),
            table: tokio::sync::watch::Sender::new(Arc::default()),
        });
        // A clash fails the start, in `run_elsewhere`.
        let _ = registry.publish_routes();
        registry
    }

    /// The engine every version is compiled for.
    pub fn engine(&self) -> &Engine {
        self.env.compiler.engine()
    }

    /// The host's backends (storage, broker).
    pub fn backends(&self) -> &crate::capabilities::Backends {
        &self.env.backends
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

    /// Every route of every component, for the gateway's table: those run here, and
    /// those run on other hosts of the cluster (unless one of the same name runs here).
    pub fn routes(&self) -> Vec<panal_gateway::Route> {
        let elsewhere = self.elsewhere.read();
        self.routes_with(&elsewhere)
    }

    fn routes_with(
        &self,
        elsewhere: &BTreeMap<String, Vec<panal_gateway::Route>>,
    ) -> Vec<panal_gateway::Route> {
        let local = self.components.load();
        self.all()
            .iter()
            .flat_map(|d| d.spec.routes.iter().cloned())
            .chain(
                elsewhere
                    .iter()
                    .filter(|(name, _)| !local.contains_key(*name))
                    .flat_map(|(_, routes)| routes.iter().cloned()),
            )
            .collect()
    }

    /// The bytes of version `sha256`, if this host keeps them (every version it ran).
    pub fn blob(&self, sha256: &str) -> Result<Vec<u8>, store::StoreError> {
        self.deployments
            .as_ref()
            .ok_or(store::StoreError::NoDeployments)?
            .blob(sha256)
    }

    /// Serve `specs`' routes too: these components run on other hosts (at start).
    /// Refused when the routes here and there clash.
    pub fn run_elsewhere(
        &self,
        specs: &[crate::manifest::ComponentSpec],
    ) -> Result<(), panal_gateway::RouteError> {
        let mut elsewhere = self.elsewhere.write();
        for spec in specs {
            elsewhere.insert(spec.name.clone(), spec.routes.clone());
        }
        drop(elsewhere);
        self.publish_routes()
    }

    /// The route table the gateway follows: every change that moves a route sends it
    /// a new one, in effect before the change is answered.
    pub fn route_table(&self) -> panal_gateway::server::Routes {
        self.table.subscribe()
    }

    /// Send the routes of now to the gateway, when they changed.
    fn publish_routes(&self) -> Result<(), panal_gateway::RouteError> {
        let table = RouteTable::new(self.routes())?;
        self.table.send_if_modified(|now| {
            let changed = **now != table;
            if changed {
                *now = Arc::new(table);
            }
            changed
        });
        Ok(())
    }

    /// After a change that may move routes. The change checked them first, so a clash
    /// here is a bug worth a loud line: the gateway keeps the last table.
    fn routes_moved(&self) {
        if let Err(e) = self.publish_routes() {
            tracing::error!(%e, "route table rejected after a change");
        }
    }

    /// Serve `routes` for `name`, which runs on other hosts (none: it is undeployed
    /// there); refused when they clash with the others.
    pub fn reach_elsewhere(
        &self,
        name: &str,
        routes: Vec<panal_gateway::Route>,
    ) -> Result<(), panal_gateway::RouteError> {
        let mut elsewhere = self.elsewhere.write();
        if elsewhere.get(name) == Some(&routes) {
            return Ok(());
        }
        let before = elsewhere.insert(name.to_string(), routes);
        if let Err(e) = RouteTable::new(self.routes_with(&elsewhere)) {
            match before {
                Some(routes) => elsewhere.insert(name.to_string(), routes),
                None => elsewhere.remove(name),
            };
            return Err(e);
        }
        drop(elsewhere);
        self.routes_moved();
        Ok(())
    }

    /// Make `deployed` the current version of its component (adding the component when
    /// it is new). Requests that already hold the old version finish on it.
    pub(crate) fn install(&self, deployed: Deployed) {
        let name = deployed.name.to_string();
        if let Some(slot) = self.components.load().get(&name) {
            // The old version's kept instances end once idle (`limits.idle_ms`).
            slot.swap(Arc::new(deployed));
        } else {
            let mut map = HashMap::clone(&self.components.load());
            map.insert(name, Arc::new(ArcSwap::from_pointee(deployed)));
            self.components.store(Arc::new(map));
        }
        self.routes_moved();
    }

    /// Remove `name`; whether it was there.
    pub(crate) fn remove(&self, name: &str) -> bool {
        let mut map = HashMap::clone(&self.components.load());
        let was = map.remove(name).is_some();
        self.components.store(Arc::new(map));
        self.routes_moved();
        was
    }

    /// The Prometheus exposition of everything counted so far.
    pub fn metrics(&self) -> String {
        let current: Vec<(String, String)> = self
            .all()
            .iter()
            .map(|d| (d.name.to_string(), d.version().to_string()))
            .collect();
        self.env.metrics.render(&current)
    }

    /// Every component: version, when, routes, counters, history length.
    pub fn status(&self) -> Value {
        let components: Vec<Value> = self.all().iter().map(|d| self.status_of(d)).collect();
        json!({ "components": components })
    }

    fn status_of(&self, d: &Deployed) -> Value {
        let history = self
            .deployments
            .as_ref()
            .and_then(|s| s.record(&d.name).ok().flatten())
            .map_or(1, |r| r.versions.len().max(1));
        let at = d
            .deployed_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs());
        let routes: Vec<&str> = d.spec.routes.iter().map(|r| r.prefix.as_str()).collect();
        let (requests, errors) = self.env.metrics.answered(&d.name);
        json!({
            "name": &*d.name,
            "version": d.version(),
            "sha256": d.sha256,
            "deployed_at": at,
            "routes": routes,
            "requests": requests,
            "errors": errors,
            "in_flight": d.stats.in_flight.load(Ordering::Relaxed),
            "versions": history,
        })
    }
}
