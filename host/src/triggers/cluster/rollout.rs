//! Cluster-wide deploys. A change made through any host's admin API is published: the
//! component's bytes go in the cluster's object store (`panal-CLUSTER-wasm`, by
//! sha256), its desired version in the cluster's KV bucket (`panal-CLUSTER-desired`,
//! one key per component). Every host watches that bucket and brings each component
//! it runs to the desired version with its own zero-failure swap (trial first; a
//! version that fails the trial there is refused there, and the old one keeps
//! serving). A host that starts, or comes back, reads the bucket before it serves.

use std::sync::Arc;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::Cluster;
use crate::registry::deploy::{DeployRequest, Outcome};
use crate::registry::store::RouteRecord;
use crate::registry::Registry;

/// What every host should run of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// The version's sha256 (`None`: undeployed).
    pub sha256: Option<String>,
    /// Its routes, when the change set them (else each host keeps its own).
    pub routes: Option<Vec<RouteRecord>>,
    /// The host the change was made on.
    pub by: String,
}

/// Called after a change a host made on its own (the gateway takes new routes).
pub type Changed = Arc<dyn Fn(&Outcome) + Send + Sync>;

impl Cluster {
    /// Tell every host of the cluster about `outcome`, a change this host made through
    /// its admin API (`routes`: the routes the request set, if any).
    pub async fn publish(
        &self,
        registry: &Registry,
        outcome: &Outcome,
        routes: Option<&[panal_gateway::Route]>,
    ) -> Result<(), String> {
        let sha256 = match registry.current(&outcome.name) {
            Some(current) => {
                let bytes = registry.blob(&current.sha256)?;
                self.wasm
                    .put(&current.sha256, &bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                Some(current.sha256.clone())
            }
            None => None,
        };
        self.announce(&outcome.name, outcome.version.as_deref())
            .await;
        let desired = Desired {
            sha256,
            routes: routes.map(|r| r.iter().map(RouteRecord::of).collect()),
            by: self.host.clone(),
        };
        self.want(&outcome.name, &desired).await
    }

    /// Publish `bytes` as the desired version of `name`, a component this host does
    /// not run (after checking that it compiles here).
    pub async fn publish_elsewhere(
        &self,
        registry: &Registry,
        name: &str,
        bytes: &[u8],
        routes: Option<&[panal_gateway::Route]>,
    ) -> Result<String, String> {
        wasmtime::component::Component::new(registry.engine(), bytes)
            .map_err(|e| format!("not a component this host can compile: {e:#}"))?;
        let sha256 = crate::runtime::engine::sha256(bytes);
        self.wasm
            .put(&sha256, bytes)
            .await
            .map_err(|e| e.to_string())?;
        let desired = Desired {
            sha256: Some(sha256.clone()),
            routes: routes.map(|r| r.iter().map(RouteRecord::of).collect()),
            by: self.host.clone(),
        };
        self.want(name, &desired).await?;
        Ok(sha256)
    }

    /// Publish that `name`, a component this host does not run, is undeployed.
    pub async fn publish_undeploy(&self, name: &str) -> Result<(), String> {
        let desired = Desired {
            sha256: None,
            routes: None,
            by: self.host.clone(),
        };
        self.want(name, &desired).await
    }

    async fn want(&self, name: &str, desired: &Desired) -> Result<(), String> {
        let value = serde_json::to_vec(desired).map_err(|e| e.to_string())?;
        self.desired
            .put(name, value.into())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Bring every component this host runs to the cluster's desired version, now and
    /// on every change, until the host stops; `changed` hears of each change made.
    pub(super) async fn follow(self: Arc<Self>, registry: Arc<Registry>, changed: Changed) {
        let mut changes = match self.desired.watch().await {
            Ok(changes) => changes,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch the cluster's desired versions");
                return;
            }
        };
        while let Some((name, value)) = changes.next().await {
            if let Some(outcome) = self.apply(&registry, &name, value.as_deref()).await {
                changed(&outcome);
            }
        }
    }

    /// Bring `name` to `value` (a [`Desired`] as JSON) if this host runs it.
    pub(super) async fn apply(
        &self,
        registry: &Arc<Registry>,
        name: &str,
        value: Option<&[u8]>,
    ) -> Option<Outcome> {
        if !self.runs.contains(name) {
            return None;
        }
        let desired: Desired = match value.map(serde_json::from_slice).transpose() {
            Ok(Some(desired)) => desired,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(component = name, error = %e, "a desired version that is not one");
                return None;
            }
        };
        let current = registry.current(name);
        let result = match (&desired.sha256, &current) {
            (None, None) => return None,
            (Some(sha), Some(c)) if *sha == c.sha256 => return None,
            (None, Some(_)) => registry.undeploy(name).await,
            (Some(sha), _) => {
                let bytes = match self.bytes(registry, sha).await {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::error!(component = name, sha256 = %sha, error = %e, "cannot fetch the cluster's version");
                        return None;
                    }
                };
                let routes = desired
                    .routes
                    .as_ref()
                    .map(|r| r.iter().map(|r| r.route(name)).collect());
                let req = DeployRequest {
                    routes,
                    ..DeployRequest::default()
                };
                registry.deploy(name, &bytes, req).await
            }
        };
        match result {
            Ok(outcome) => {
                tracing::info!(component = name, version = ?outcome.version, by = %desired.by, "followed the cluster's deploy");
                self.announce(name, outcome.version.as_deref()).await;
                Some(outcome)
            }
            Err(e) => {
                tracing::error!(component = name, by = %desired.by, error = %e, phase = e.phase.name(), "refused the cluster's deploy; the old version keeps serving");
                None
            }
        }
    }

    /// The bytes of version `sha256`: kept on this host, else from the object store.
    async fn bytes(&self, registry: &Registry, sha256: &str) -> Result<Vec<u8>, String> {
        if let Ok(bytes) = registry.blob(sha256) {
            return Ok(bytes);
        }
        self.wasm
            .get(sha256)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {sha256} is not in the cluster's object store"))
    }
}
