//! Deploy, roll back and undeploy one component while the others keep serving.
//!
//! A new version is compiled, linked against its grants, pre-instantiated and
//! instantiated once as a trial beside the old one; only when all of that worked is it
//! recorded on disk ([`store`]) and made current with one atomic swap. Requests that
//! already took the old version finish on it. Any failure leaves everything as it was.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::error::{ChangeError, Phase};
use super::store::{self, added_spec, Grants, RouteRecord, VersionRecord};
use super::{prepare, Deployed, Registry};
use crate::capabilities::CallContext;
use crate::manifest::ComponentSpec;
use crate::metrics::Change;

/// How long the trial instantiation of a new version may take.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What a deploy asks for besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct DeployRequest {
    /// New routes (required for a new component; replaces the routes of an existing
    /// one when given).
    pub routes: Option<Vec<panal_gateway::Route>>,
    /// Grants of a new component (ignored for one that exists: its grants stay).
    pub grants: Grants,
}

/// What a successful change did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The component.
    pub name: String,
    /// Version now serving (`None` after undeploy).
    pub version: Option<String>,
    /// Version it replaced.
    pub previous: Option<String>,
    /// From the call to the new version serving.
    pub took: Duration,
}

impl Outcome {
    /// As the admin API answers it.
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "previous": self.previous,
            "took_ms": self.took.as_secs_f64() * 1000.0,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Registry {
    /// Replace component `name` with `bytes`, or add it. The error says why nothing
    /// changed.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
        req: DeployRequest,
    ) -> Result<Outcome, ChangeError> {
        self.one_change(name, Change::Deploy, self.try_deploy(name, bytes, req))
            .await
    }

    /// Go back to the version before the current one.
    pub async fn rollback(self: &Arc<Self>, name: &str) -> Result<Outcome, ChangeError> {
        self.one_change(name, Change::Rollback, self.try_rollback(name))
            .await
    }

    /// Stop serving `name` (also after a restart, until it is deployed again).
    pub async fn undeploy(self: &Arc<Self>, name: &str) -> Result<Outcome, ChangeError> {
        self.one_change(name, Change::Undeploy, self.try_undeploy(name))
            .await
    }

    /// Run `work` as the only change in progress, time it (lock wait included) and
    /// count it.
    async fn one_change(
        &self,
        name: &str,
        change: Change,
        work: impl std::future::Future<Output = Result<Outcome, ChangeError>>,
    ) -> Result<Outcome, ChangeError> {
        let started = Instant::now();
        let one_at_a_time = self.deploy_lock.lock().await;
        let mut result = work.await;
        drop(one_at_a_time);
        if let Ok(outcome) = &mut result {
            outcome.took = started.elapsed();
        }
        self.env.metrics.change(name, change, result.is_ok());
        result
    }

    /// The running version of `name`, for a change that needs one.
    fn running(&self, name: &str) -> Result<Arc<Deployed>, ChangeError> {
        self.current(name).ok_or_else(|| {
            ChangeError::new(name, Phase::Request, format!("`{name}` is not deployed"))
        })
    }

    async fn try_deploy(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
        req: DeployRequest,
    ) -> Result<Outcome, ChangeError> {
        let store = self.store(name)?;
        let record_err = ChangeError::at(name, Phase::Record);
        let existing = self.current(name);
        let mut record = store.record(name).map_err(&record_err)?.unwrap_or_default();
        let spec = match &existing {
            Some(old) => {
                let mut spec = ComponentSpec::clone(&old.spec);
                if let Some(routes) = &req.routes {
                    spec.routes.clone_from(routes);
                }
                spec
            }
            None => {
                if let Some(why) = crate::manifest::bad_name(name) {
                    return Err(ChangeError::new(name, Phase::Request, why));
                }
                let Some(routes) = &req.routes else {
                    return Err(ChangeError::new(
                        name,
                        Phase::Request,
                        format!(
                            "`{name}` is not deployed: a new component needs at least one --route"
                        ),
                    ));
                };
                let routes: Vec<RouteRecord> = routes.iter().map(RouteRecord::of).collect();
                record.added = Some(req.grants.clone());
                added_spec(
                    name,
                    &store.blob_path(&crate::runtime::engine::sha256(bytes)),
                    &req.grants,
                    &routes,
                )
            }
        };
        if existing
            .as_ref()
            .is_none_or(|old| old.spec.routes != spec.routes)
        {
            self.check_routes(name, &spec.routes)?;
        }
        let deployed = self.trial(spec, bytes, existing.as_deref()).await?;
        // Keep the version it replaces in the history, so a rollback reaches it.
        if record.versions.is_empty() || record.removed {
            if let Some(old) = &existing {
                record.versions.push(version_record(old, "manifest"));
            }
        }
        record.removed = false;
        record.versions.push(version_record(&deployed, "deploy"));
        store
            .put_blob(&deployed.sha256, bytes)
            .map_err(&record_err)?;
        store.save(name, &record).map_err(&record_err)?;
        Ok(self.swap_in(deployed, existing.as_deref(), "deployed"))
    }

    async fn try_rollback(self: &Arc<Self>, name: &str) -> Result<Outcome, ChangeError> {
        let store = self.store(name)?;
        let record_err = ChangeError::at(name, Phase::Record);
        let current = self.running(name)?;
        let mut record = store.record(name).map_err(&record_err)?.unwrap_or_default();
        if record.versions.len() < 2 {
            return Err(ChangeError::new(
                name,
                Phase::Request,
                format!(
                    "`{name}` has no earlier version to roll back to (it was never redeployed)"
                ),
            ));
        }
        let back = record.versions[record.versions.len() - 2].clone();
        let bytes = store
            .blob(&back.sha256)
            .map_err(ChangeError::at(name, Phase::Read))?;
        let mut spec = ComponentSpec::clone(&current.spec);
        spec.routes = back.routes.iter().map(|r| r.route(name)).collect();
        if spec.routes != current.spec.routes {
            self.check_routes(name, &spec.routes)?;
        }
        let deployed = self.trial(spec, &bytes, Some(&current)).await?;
        record.versions.pop();
        store.save(name, &record).map_err(&record_err)?;
        Ok(self.swap_in(deployed, Some(&current), "rolled back"))
    }

    /// Make `deployed` current (the one swap), log it and say what changed.
    fn swap_in(&self, deployed: Deployed, previous: Option<&Deployed>, what: &str) -> Outcome {
        let name = deployed.name.to_string();
        let version = deployed.version().to_string();
        let previous = previous.map(|d| d.version().to_string());
        self.install(deployed);
        tracing::info!(component = %name, version = %version, previous = ?previous, "{what}");
        Outcome {
            name,
            version: Some(version),
            previous,
            took: Duration::ZERO, // set by `one_change`
        }
    }

    async fn try_undeploy(self: &Arc<Self>, name: &str) -> Result<Outcome, ChangeError> {
        let store = self.store(name)?;
        let record_err = ChangeError::at(name, Phase::Record);
        let current = self.running(name)?;
        let mut record = store.record(name).map_err(&record_err)?.unwrap_or_default();
        if record.versions.is_empty() {
            record.versions.push(version_record(&current, "manifest"));
        }
        record.removed = true;
        store.save(name, &record).map_err(&record_err)?;
        self.remove(name);
        tracing::info!(component = name, version = current.version(), "undeployed");
        Ok(Outcome {
            name: name.to_string(),
            version: None,
            previous: Some(current.version().to_string()),
            took: Duration::ZERO, // set by `one_change`
        })
    }

    fn store(&self, name: &str) -> Result<&store::DeployStore, ChangeError> {
        self.deployments
            .as_ref()
            .ok_or_else(|| ChangeError::new(name, Phase::Request, "this host keeps no deployments"))
    }

    /// The route table with `name` on `routes` must still be unambiguous.
    fn check_routes(&self, name: &str, routes: &[panal_gateway::Route]) -> Result<(), ChangeError> {
        let mut all: Vec<panal_gateway::Route> = self
            .routes()
            .into_iter()
            .filter(|r| r.component != name)
            .collect();
        all.extend(routes.iter().cloned());
        panal_gateway::RouteTable::new(all)
            .map(drop)
            .map_err(|e| ChangeError::new(name, Phase::Routes, format!("routes: {e}")))
    }

    /// Compile, link and check `bytes` as `spec`, then instantiate it once: a version
    /// that traps while starting never serves.
    async fn trial(
        self: &Arc<Self>,
        spec: ComponentSpec,
        bytes: &[u8],
        previous: Option<&Deployed>,
    ) -> Result<Deployed, ChangeError> {
        let name = spec.name.clone();
        let (deployed, _) = prepare(Arc::new(spec), bytes, &self.env, previous).await?;
        // The operator's trial is not charged to the guest memory budget: it must not
        // wait behind the load, and `memory_mb` still bounds it.
        let ctx = CallContext::default();
        let mut store = deployed
            .store(self.engine(), &ctx, None)
            .await
            .map_err(|f| ChangeError::new(&name, Phase::Trial, f.message()))?;
        let instance = deployed.pre.instantiate_async(&mut store);
        match tokio::time::timeout(TRIAL_TIMEOUT, instance).await {
            Ok(Ok(_)) => Ok(deployed),
            Ok(Err(e)) => Err(format!("trapped while instantiating: {}", e.root_cause())),
            Err(_) => Err(format!(
                "instantiation took longer than {} s",
                TRIAL_TIMEOUT.as_secs()
            )),
        }
        .map_err(ChangeError::at(&name, Phase::Trial))
    }
}

fn version_record(d: &Deployed, origin: &str) -> VersionRecord {
    VersionRecord {
        sha256: d.sha256.clone(),
        deployed_at_ms: d
            .deployed_at
            .duration_since(UNIX_EPOCH)
            .map_or_else(|_| now_ms(), |t| u64::try_from(t.as_millis()).unwrap_or(0)),
        origin: origin.to_string(),
        routes: d.spec.routes.iter().map(RouteRecord::of).collect(),
    }
}
