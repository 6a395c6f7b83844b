//! Several hosts as one system over NATS. A host in a cluster is one instance of the
//! NATS service `panal-CLUSTER` (so `nats micro ls`, `info` and `stats` list the hosts
//! and what they run); each component it runs is an endpoint on the subject
//! `panal.CLUSTER.call.COMPONENT`, in the queue group of every host that runs it, so
//! NATS shares calls among them and stops sending to a host the moment it leaves.
//!
//! The cluster is a layer between the registry and the triggers: it knows the
//! registry (it deploys what the cluster deploys) and no trigger. Answering the calls
//! other hosts send is a trigger (`triggers::remote`), handed in as [`Answers`].
//!
//! - `call`: calling a component this host does not run, with the same failures as
//!   an in-process call (so retries and breakers apply unchanged).
//! - [`wire`]: the frames a request and its answer travel in, in parts when big.
//! - [`rollout`]: deploys made on one host reach every host that runs the component;
//!   `record`: the desired-version records they travel in.
//! - [`seal`]: the cluster key every call and record is sealed with.
//! - `roles`: the operator's role grants, one table every host follows.

mod call;
mod error;
mod record;
mod roles;
pub mod rollout;
pub mod seal;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use panal_nats::kv::KvBucket;
use panal_nats::objects::ObjectBucket;
use panal_nats::service::{Call, Service};
use panal_nats::Nats;
use parking_lot::RwLock;
use serde_json::Value;

use crate::manifest::{ClusterSpec, Limits};
use crate::registry::Registry;
pub use error::{ClusterError, FrameError};

/// What answers the calls other hosts send to a component here: the remote-call
/// trigger, which runs them through the executor like any other request.
pub trait Answers: Send + Sync + 'static {
    /// Answer every call on `calls` to `component` (each opened with `seal`, answered
    /// over `nats`) until the stream ends, drained, when the host leaves; done when
    /// every call taken has been answered.
    fn answer_all(
        &self,
        component: String,
        calls: BoxStream<'static, Call>,
        nats: Nats,
        seal: Arc<seal::Seal>,
    ) -> BoxFuture<'static, ()>;
}

/// This host's membership of a cluster.
pub struct Cluster {
    nats: Nats,
    name: String,
    /// How this host is listed (`PID@ADDRESS`).
    host: String,
    /// Components this host runs (it follows their cluster-wide deploys): those of its
    /// manifest, and those first deployed here.
    runs: RwLock<HashSet<String>>,
    /// Components that run on other hosts, with their limits (for the body cap and how
    /// long to wait): from the manifest, and those the cluster's deploys told of.
    elsewhere: RwLock<HashMap<String, Limits>>,
    /// Answers the calls that come here.
    answers: Arc<dyn Answers>,
    /// Components whose calls this host answers now (an endpoint each).
    served: parking_lot::Mutex<HashSet<String>>,
    /// Desired version per component (`panal-CLUSTER-desired`).
    desired: KvBucket,
    /// Component bytes by sha256 (`panal-CLUSTER-wasm`).
    wasm: ObjectBucket,
    /// The operator's role grants (`panal-CLUSTER-roles`).
    roles: KvBucket,
    /// Told each time the follower takes a roles table.
    roles_taken: tokio::sync::Notify,
    service: tokio::sync::Mutex<Option<Service>>,
    /// Seals what this host sends and opens what it takes (the cluster key).
    seal: Arc<seal::Seal>,
    /// When the newest desired version taken for each component was sealed (older
    /// ones replayed into the bucket are refused).
    newest: parking_lot::Mutex<HashMap<String, u64>>,
    /// One task per component answering its calls; each ends once drained and done.
    answering: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long joining waits for the cluster's NATS to take this host's endpoints.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// How long leaving waits for the calls already taken to be answered.
const LEAVE_WAIT: Duration = Duration::from_secs(30);

/// The subject calls to `component` of cluster `cluster` go to.
pub fn subject(cluster: &str, component: &str) -> String {
    format!("panal.{cluster}.call.{component}")
}

/// The NATS service name of cluster `cluster`'s hosts.
pub fn service_name(cluster: &str) -> String {
    format!("panal-{cluster}")
}

impl Cluster {
    /// When the newest desired version taken for `name` was sealed.
    fn newest(&self, name: &str) -> Option<u64> {
        let newest = self.newest.lock();
        newest.get(name).copied()
    }

    /// Note that a desired version of `name` sealed `at` was taken.
    fn took(&self, name: &str, at: u64) {
        let mut newest = self.newest.lock();
        let entry = newest.entry(name.to_string()).or_default();
        *entry = (*entry).max(at);
    }

    /// Calls and records refused so far, by reason (`panal_cluster_refused_total`).
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.seal.refusals()
    }
}

fn failed(name: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cluster `{name}`: {e}")
}

/// How long joining waits out a cluster whose JetStream does not answer (a server just
/// restarted, a leader being elected, a quorum out of reach) before the host gives up.
const JOIN_WAIT: Duration = Duration::from_secs(60);

/// Runs `step` of joining cluster `name` until it succeeds; a failure of the cluster's
/// NATS is tried again, with a pause from 200 ms doubling to 2 s, for [`JOIN_WAIT`].
async fn patiently<T, F, Fut>(name: &str, what: &str, mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let until = tokio::time::Instant::now() + JOIN_WAIT;
    let mut pause = Duration::from_millis(200);
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(ClusterError::Nats(e))
                if !matches!(e, panal_nats::MsgError::Invalid(_))
                    && tokio::time::Instant::now() + pause < until =>
            {
                tracing::warn!(cluster = %name, error = %e, "cannot {what} yet; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(failed(name, format_args!("cannot {what}: {e}"))),
        }
    }
}

impl Cluster {
    /// Join cluster `spec` on `nats` as host `host`: catch up with the cluster's
    /// deploys, announce every component of `registry` and take calls to them (which
    /// `answers` answers), and follow later deploys. Calls to the components in
    /// `elsewhere` go to the hosts that run them. `grants` follows the cluster's roles.
    pub async fn join(
        nats: Nats,
        spec: &ClusterSpec,
        host: &str,
        (registry, answers): (Arc<Registry>, Arc<dyn Answers>),
        elsewhere: HashMap<String, Limits>,
        grants: Arc<crate::roles::Roles>,
    ) -> anyhow::Result<Arc<Self>> {
        let name = spec.name.as_str();
        let key = spec.key.as_deref().unwrap_or_default();
        let seal = Arc::new(seal::Seal::new(key.as_bytes()).map_err(|e| failed(name, e))?);
        let replicas = spec.replicas;
        let (desired, wasm, roles) = patiently(name, "open its buckets", || async {
            Ok::<_, ClusterError>((
                nats.kv_bucket(&format!("panal-{name}-desired"), replicas)
                    .await?,
                nats.object_bucket(&format!("panal-{name}-wasm"), replicas)
                    .await?,
                nats.kv_bucket(&format!("panal-{name}-roles"), replicas)
                    .await?,
            ))
        })
        .await?;
        let cluster = Arc::new(Self {
            nats,
            name: name.to_string(),
            host: host.to_string(),
            runs: RwLock::new(registry.names().into_iter().collect()),
            elsewhere: RwLock::new(elsewhere),
            answers,
            served: parking_lot::Mutex::default(),
            desired,
            wasm,
            roles,
            roles_taken: tokio::sync::Notify::new(),
            service: tokio::sync::Mutex::new(None),
            seal,
            newest: parking_lot::Mutex::default(),
            answering: tokio::sync::Mutex::new(Vec::new()),
        });
        // The cluster's versions before the first call: a host that starts late, or
        // comes back, serves what the others serve.
        let versions = patiently(name, "read its versions", || async {
            Ok::<_, ClusterError>(cluster.desired.scan(">").await?)
        })
        .await?;
        for found in versions {
            if let Ok(Some((value, _))) = cluster.desired.entry(&found.key).await {
                // One that fails here is tried again by the watch `follow` opens.
                let _ = cluster.apply(&registry, &found.key, Some(&value)).await;
            }
        }
        // Roles before the first request: a revoked role is not honoured at start.
        patiently(name, "read its roles", || cluster.catch_up_roles(&grants)).await?;
        tokio::spawn(cluster.clone().follow_roles(grants));
        cluster.announce_all(&registry).await?;
        tokio::spawn(cluster.clone().follow(registry));
        Ok(cluster)
    }

    /// Become an instance of the cluster's service, one endpoint per component.
    async fn announce_all(&self, registry: &Registry) -> anyhow::Result<()> {
        let metadata = HashMap::from([("host".to_string(), self.host.clone())]);
        let service = self
            .nats
            .service(
                &service_name(&self.name),
                env!("CARGO_PKG_VERSION"),
                "Panal host: each endpoint is a component it runs",
                metadata,
            )
            .await
            .map_err(|e| failed(&self.name, e))?;
        *self.service.lock().await = Some(service);
        let local = registry.all();
        for deployed in &local {
            self.serve(&deployed.name, deployed.version()).await?;
        }
        // Everything announced is taken by the server before the host says it serves:
        // a call another host sends from then on finds this one.
        if let Err(e) = self.nats.synced(SYNC_WAIT).await {
            tracing::warn!(cluster = %self.name, error = %e, "cannot tell whether the cluster's NATS took this host's endpoints yet");
        }
        let names: Vec<&str> = local.iter().map(|d| &*d.name).collect();
        tracing::info!(cluster = %self.name, host = %self.host, components = %names.join(","), "joined the cluster");
        Ok(())
    }

    /// Answer calls to `component` (at `version`) here: an endpoint in its queue group,
    /// and a task answering what comes. Nothing when it already has one, or the host
    /// left the cluster.
    async fn serve(&self, component: &str, version: &str) -> anyhow::Result<()> {
        let service = self.service.lock().await;
        let Some(service) = service.as_ref() else {
            return Ok(());
        };
        if !self.served().insert(component.to_string()) {
            service.set_metadata(component, "version", version);
            return Ok(());
        }
        let metadata = HashMap::from([("version".to_string(), version.to_string())]);
        let calls = service
            .endpoint(component, &subject(&self.name, component), metadata)
            .await
            .map_err(|e| failed(&self.name, e))?;
        self.answering
            .lock()
            .await
            .push(tokio::spawn(self.answers.answer_all(
                component.to_string(),
                calls,
                self.nats.clone(),
                self.seal.clone(),
            )));
        Ok(())
    }

    /// Stop answering calls to `component` here (it was undeployed): its endpoint
    /// drains, and the calls already taken are answered.
    async fn unserve(&self, component: &str) {
        if !self.served().remove(component) {
            return;
        }
        if let Some(service) = self.service.lock().await.as_ref() {
            service.remove(component).await;
        }
    }

    /// Serve `component` here when it now runs here, stop when it no longer does, and
    /// show its version (`none` when undeployed) in `nats micro info`.
    async fn follow_here(&self, component: &str, version: Option<&str>) {
        match version {
            Some(version) => {
                self.runs.write().insert(component.to_string());
                if let Err(e) = self.serve(component, version).await {
                    tracing::error!(component, error = %e, "cannot take calls from other hosts");
                }
            }
            None => self.unserve(component).await,
        }
    }

    fn served(&self) -> parking_lot::MutexGuard<'_, HashSet<String>> {
        self.served.lock()
    }

    /// Whether this host runs `component` (as its manifest says, or it was deployed here).
    fn runs(&self, component: &str) -> bool {
        self.runs.read().contains(component)
    }

    /// Whether `component` runs on other hosts (as this host's manifest says).
    pub fn runs_elsewhere(&self, component: &str) -> bool {
        self.elsewhere.read().contains_key(component)
    }

    /// The limits of `component`, run elsewhere.
    fn limits_elsewhere(&self, component: &str) -> Option<Limits> {
        self.elsewhere.read().get(component).copied()
    }

    /// The largest request body `component` (run elsewhere) takes, in bytes.
    pub fn max_body(&self, component: &str) -> Option<u64> {
        self.limits_elsewhere(component)
            .map(|l| l.max_body_kb.saturating_mul(1024))
    }

    /// Every host of the cluster as `$SRV.INFO` answers within half a second: its
    /// name, and each component it runs with its version.
    pub async fn hosts(&self) -> Vec<Value> {
        let ask = panal_nats::Msg {
            subject: format!("$SRV.INFO.{}", service_name(&self.name)),
            ..Default::default()
        };
        let answers = self
            .nats
            .request(ask, Duration::from_millis(500), usize::MAX)
            .await
            .unwrap_or_default();
        let mut hosts: Vec<Value> = answers
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
            .map(|info| {
                let components: Vec<Value> = info["endpoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| serde_json::json!({ "name": e["name"], "version": e["metadata"]["version"] }))
                    .collect();
                serde_json::json!({ "host": info["metadata"]["host"], "components": components })
            })
            .collect();
        hosts.sort_by_key(|h| h["host"].as_str().unwrap_or_default().to_string());
        hosts
    }

    /// Leave every queue group, before the host stops answering: no new calls come
    /// here, the calls NATS had already sent are taken (the endpoints drain), and all
    /// of them are answered (for up to 30 s).
    pub async fn leave(&self) {
        if let Some(service) = self.service.lock().await.take() {
            service.stop().await;
            tracing::info!(cluster = %self.name, "left the cluster");
        }
        for task in self.answering.lock().await.drain(..) {
            if tokio::time::timeout(LEAVE_WAIT, task).await.is_err() {
                tracing::warn!(cluster = %self.name, "calls from other hosts still running after 30 s");
            }
        }
        // The last answers may still sit in the client's buffer: the host exits soon.
        let _ = self.nats.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panal_nats::MsgError;

    #[tokio::test]
    async fn joining_waits_out_the_clusters_nats_but_not_a_refusal() {
        let mut tries = 0;
        let joined = patiently("c", "read its versions", || {
            tries += 1;
            let outcome = if tries < 3 {
                Err(ClusterError::Nats(MsgError::Other(
                    "JetStream system temporarily unavailable".into(),
                )))
            } else {
                Ok(tries)
            };
            async move { outcome }
        })
        .await;
        assert_eq!(joined.expect("joined after two failures"), 3);
        for refusal in [
            ClusterError::Record("unsealed".into()),
            ClusterError::Nats(MsgError::Invalid("too big".into())),
        ] {
            let mut once = Some(refusal);
            let mut tries = 0;
            let failed = patiently("c", "read its roles", || {
                tries += 1;
                let e = once.take().expect("tried once only");
                async move { Err::<(), _>(e) }
            })
            .await
            .expect_err("a refusal ends the join");
            assert!(
                failed.to_string().contains("cannot read its roles"),
                "{failed}"
            );
            assert_eq!(tries, 1);
        }
    }
}
