//! Cluster-wide deploys. A change made through any host's admin API is published: the
//! component's bytes go in the cluster's object store (`panal-CLUSTER-wasm`, by
//! sha256), its desired version in the cluster's KV bucket (`panal-CLUSTER-desired`,
//! one key per component). Every host watches that bucket and brings each component
//! it runs to the desired version with its own zero-failure swap (trial first; a
//! version that fails the trial there is refused there, and the old one keeps
//! serving). A host that starts, or comes back, reads the bucket before it serves.
//!
//! A component first deployed through one host runs on that host; every change says
//! how the others reach it ([`Reach`]: its routes and limits), so every gateway serves
//! it, and an undeploy takes its routes off every gateway.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::record::{Desired, Reach};
use super::{Cluster, ClusterError};
use crate::registry::deploy::{DeployRequest, Outcome};
use crate::registry::error::Phase;
use crate::registry::store::RouteRecord;
use crate::registry::Registry;
use bytes::Bytes;
use futures::StreamExt;
use panal_nats::MsgError;

/// How long a host waits before it tries again a change it failed to follow.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Why a host did not follow a desired version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unfollowed {
    /// The version failed here (compiling, linking, its routes, its trial): tried
    /// [`TRIES`] times, in case it was the moment.
    Version,
    /// This host could not take it now (its disk full, its storage or the object store
    /// out of reach): tried until it can.
    HereForNow,
}

/// How long the cluster's NATS has to answer before a change is made on this host.
const REACH_WITHIN: Duration = Duration::from_secs(3);
/// How many times a host tries to follow one change.
const TRIES: u32 = 5;

impl Cluster {
    /// Tell every host of the cluster about `outcome`, a change this host made through
    /// its admin API (`routes`: the routes the request set, if any).
    pub async fn publish(
        &self,
        registry: &Registry,
        outcome: &Outcome,
        routes: Option<&[panal_gateway::Route]>,
    ) -> Result<(), ClusterError> {
        let current = registry.current(&outcome.name);
        if let Some(current) = &current {
            let bytes = registry.blob(&current.sha256)?;
            self.wasm.put(&current.sha256, &bytes).await?;
        }
        self.follow_here(&outcome.name, outcome.version.as_deref())
            .await;
        let desired = Desired {
            sha256: current.as_ref().map(|c| c.sha256.clone()),
            routes: routes.map(|r| r.iter().map(RouteRecord::of).collect()),
            by: self.host.clone(),
            reach: current.map(|c| Reach::of(&c.spec.routes, &c.limits)),
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
    ) -> Result<String, ClusterError> {
        wasmtime::component::Component::new(registry.engine(), bytes)
            .map_err(ClusterError::NotAComponent)?;
        let sha256 = crate::runtime::engine::sha256(bytes);
        self.wasm.put(&sha256, bytes).await?;
        let reach = match (routes, self.limits_elsewhere(name)) {
            (Some(routes), Some(limits)) => Some(Reach::of(routes, &limits)),
            _ => None,
        };
        let desired = Desired {
            sha256: Some(sha256.clone()),
            routes: routes.map(|r| r.iter().map(RouteRecord::of).collect()),
            by: self.host.clone(),
            reach,
        };
        self.want(name, &desired).await?;
        Ok(sha256)
    }

    /// Publish that `name`, a component this host does not run, is undeployed.
    pub async fn publish_undeploy(&self, name: &str) -> Result<(), ClusterError> {
        let desired = Desired {
            sha256: None,
            routes: None,
            by: self.host.clone(),
            reach: None,
        };
        self.want(name, &desired).await
    }

    /// Whether the cluster can take a change of `name` now: a read of its desired
    /// version answers within [`REACH_WITHIN`] (a link that drops bytes leaves the
    /// connection up, so being connected says too little).
    pub async fn reachable(&self, name: &str) -> Result<(), ClusterError> {
        match tokio::time::timeout(REACH_WITHIN, self.desired.entry(name)).await {
            Ok(read) => read.map(|_| ()).map_err(ClusterError::Nats),
            Err(_) => Err(ClusterError::Nats(MsgError::Timeout)),
        }
    }

    /// After a change of `name` made here could not be published: every
    /// [`RETRY_EVERY`], read the cluster's desired version of it, and once that works,
    /// follow it (a newer change published meanwhile, by this host or another, is
    /// followed all the same).
    pub fn rejoin(self: &Arc<Self>, registry: Arc<Registry>, name: String) {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                let Ok(entry) = cluster.desired.entry(&name).await else {
                    continue;
                };
                let value = entry.as_ref().map(|(bytes, _)| bytes.as_ref());
                if cluster.apply(&registry, &name, value).await.is_ok() {
                    tracing::info!(component = %name, "back on the cluster's version after a change that was not published");
                    return;
                }
            }
        });
    }

    async fn want(&self, name: &str, desired: &Desired) -> Result<(), ClusterError> {
        let value = super::record::seal(&self.seal, name, desired)?;
        self.desired.put(name, value.into()).await?;
        Ok(())
    }

    /// Bring every component this host runs to the cluster's desired version, now and
    /// on every change, until the host stops.
    ///
    /// A change that fails here (its bytes could not be fetched, its trial failed) is
    /// tried again every [`RETRY_EVERY`], up to [`TRIES`] times, unless a newer one
    /// comes; a watch that fails or ends is opened again (it first replays every
    /// component's value, which changes nothing already followed).
    pub(super) async fn follow(self: Arc<Self>, registry: Arc<Registry>) {
        let mut failed: HashMap<String, (Option<Bytes>, u32)> = HashMap::new();
        let mut retry = tokio::time::interval(RETRY_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut changes = match self.desired.watch().await {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch the cluster's desired versions; trying again");
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            loop {
                tokio::select! {
                    next = changes.next() => {
                        let Some((name, value)) = next else { break };
                        failed.remove(&name);
                        self.follow_one(&registry, name, value, 1, &mut failed).await;
                    }
                    _ = retry.tick(), if !failed.is_empty() => {
                        for (name, (value, tries)) in std::mem::take(&mut failed) {
                            self.follow_one(&registry, name, value, tries + 1, &mut failed).await;
                        }
                    }
                }
            }
            tracing::warn!("the watch of the cluster's desired versions ended; watching again");
        }
    }

    /// Apply one desired value (try number `tries`); keep it in `failed` to try again.
    async fn follow_one(
        &self,
        registry: &Arc<Registry>,
        name: String,
        value: Option<Bytes>,
        tries: u32,
        failed: &mut HashMap<String, (Option<Bytes>, u32)>,
    ) {
        match self.apply(registry, &name, value.as_deref()).await {
            Ok(()) => {}
            // This host's own trouble (its disk, its storage, the object store) passes.
            Err(Unfollowed::HereForNow) => {
                failed.insert(name, (value, tries));
            }
            Err(Unfollowed::Version) if tries < TRIES => {
                failed.insert(name, (value, tries));
            }
            Err(Unfollowed::Version) => {
                tracing::error!(component = %name, "gave up following the cluster's deploy after {TRIES} tries");
            }
        }
    }

    /// Bring `name` to `value` (a [`Desired`] as JSON) if this host runs it (else serve
    /// its routes as those of a component run elsewhere); `Err` when that failed here
    /// (logged), and may work if tried again.
    pub(super) async fn apply(
        &self,
        registry: &Arc<Registry>,
        name: &str,
        value: Option<&[u8]>,
    ) -> Result<(), Unfollowed> {
        let Some(value) = value else {
            return Ok(());
        };
        let newest = self.newest(name);
        let desired = match super::record::open(&self.seal, name, value, newest) {
            Ok((desired, at)) => {
                self.took(name, at);
                desired
            }
            Err((why, detail)) => {
                tracing::warn!(component = name, reason = why.reason(), %detail, "refused a desired version from the cluster; nothing changes");
                return Ok(());
            }
        };
        if !self.runs(name) {
            self.reach(registry, name, &desired);
            return Ok(());
        }
        let current = registry.current(name);
        let result = match (&desired.sha256, &current) {
            (None, None) => return Ok(()),
            (Some(sha), Some(c)) if *sha == c.sha256 => return Ok(()),
            (None, Some(_)) => registry.undeploy(name).await,
            (Some(sha), _) => {
                let bytes = match self.bytes(registry, sha).await {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        tracing::error!(component = name, sha256 = %sha, error = %e, "cannot fetch the cluster's version");
                        return Err(Unfollowed::HereForNow);
                    }
                };
                // Checked when the record was opened.
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
                self.follow_here(name, outcome.version.as_deref()).await;
                Ok(())
            }
            Err(e) => {
                tracing::error!(component = name, by = %desired.by, error = %e, phase = e.phase.name(), "refused the cluster's deploy; the old version keeps serving");
                Err(match e.phase {
                    Phase::Read | Phase::Grants | Phase::Record => Unfollowed::HereForNow,
                    _ => Unfollowed::Version,
                })
            }
        }
    }

    /// Follow `desired` for `name`, which runs on other hosts: serve its routes while
    /// it is deployed there, none once it is undeployed.
    fn reach(&self, registry: &Registry, name: &str, desired: &Desired) {
        let routes = match (&desired.sha256, &desired.reach) {
            (Some(_), None) => return,
            (Some(_), Some(reach)) => {
                self.elsewhere
                    .write()
                    .insert(name.to_string(), reach.limits());
                reach.routes.iter().map(|r| r.route(name)).collect()
            }
            // Still known as run elsewhere: a deploy sent here goes to its hosts.
            (None, _) if self.runs_elsewhere(name) => Vec::new(),
            (None, _) => return,
        };
        if let Err(e) = registry.reach_elsewhere(name, routes) {
            tracing::error!(component = name, by = %desired.by, error = %e, "the cluster's routes for a component run elsewhere clash with this host's; not serving them");
        }
    }

    /// The bytes of version `sha256`: kept on this host, else from the object store.
    async fn bytes(&self, registry: &Registry, sha256: &str) -> Result<Vec<u8>, String> {
        if let Ok(bytes) = registry.blob(sha256) {
            return Ok(bytes);
        }
        let bytes = self
            .wasm
            .get(sha256)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("version {sha256} is not in the cluster's object store"))?;
        // The store is named by sha256, but anyone who can write to it could put other
        // bytes under a name.
        let got = crate::runtime::engine::sha256(&bytes);
        if got != sha256 {
            self.seal.refuse(super::seal::Refusal::Invalid);
            return Err(format!(
                "the object store's {sha256} holds bytes whose sha256 is {got}"
            ));
        }
        Ok(bytes)
    }
}
