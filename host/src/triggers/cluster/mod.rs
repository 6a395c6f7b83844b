//! Several hosts as one system over NATS. A host in a cluster is one instance of the
//! NATS service `panal-CLUSTER` (so `nats micro ls`, `info` and `stats` list the hosts
//! and what they run); each component it runs is an endpoint on the subject
//! `panal.CLUSTER.call.COMPONENT`, in the queue group of every host that runs it, so
//! NATS shares calls among them and stops sending to a host the moment it leaves.
//!
//! - `serve`: answering calls from other hosts with the local executor.
//! - `remote`: calling a component this host does not run, with the same failures as
//!   an in-process call (so retries and breakers apply unchanged).
//! - [`wire`]: the frames a request and its answer travel in, in parts when big.

mod remote;
mod serve;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use panal_nats::service::Service;
use panal_nats::Nats;

use super::Executor;
use crate::manifest::Limits;

/// This host's membership of a cluster.
pub struct Cluster {
    nats: Nats,
    name: String,
    /// Components of the manifest that run on other hosts, with their limits (for the
    /// body cap and how long to wait).
    elsewhere: HashMap<String, Limits>,
    service: tokio::sync::Mutex<Option<Service>>,
    /// One task per component answering its calls; each ends once drained and done.
    answering: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long leaving waits for the calls already taken to be answered.
const LEAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The subject calls to `component` of cluster `cluster` go to.
pub fn subject(cluster: &str, component: &str) -> String {
    format!("panal.{cluster}.call.{component}")
}

/// The NATS service name of cluster `cluster`'s hosts.
pub fn service_name(cluster: &str) -> String {
    format!("panal-{cluster}")
}

impl Cluster {
    /// Join cluster `name` on `nats` as host `host`: announce every component
    /// `executor` runs and answer calls to them; calls to the components in
    /// `elsewhere` go to the hosts that run them.
    pub async fn join(
        nats: Nats,
        name: &str,
        host: &str,
        executor: &Arc<Executor>,
        elsewhere: HashMap<String, Limits>,
    ) -> anyhow::Result<Arc<Self>> {
        let local = executor.registry().all();
        let names: Vec<&str> = local.iter().map(|d| &*d.name).collect();
        let metadata = HashMap::from([
            ("host".to_string(), host.to_string()),
            ("components".to_string(), names.join(",")),
        ]);
        let service = nats
            .service(
                &service_name(name),
                env!("CARGO_PKG_VERSION"),
                "Panal host: each endpoint is a component it runs",
                metadata,
            )
            .await
            .map_err(|e| anyhow::anyhow!("cluster `{name}`: {e}"))?;
        let mut answering = Vec::new();
        for deployed in &local {
            let metadata = HashMap::from([("version".to_string(), deployed.version().to_string())]);
            let calls = service
                .endpoint(&deployed.name, &subject(name, &deployed.name), metadata)
                .await
                .map_err(|e| anyhow::anyhow!("cluster `{name}`: {e}"))?;
            answering.push(tokio::spawn(serve::answer_all(
                calls,
                Arc::downgrade(executor),
                deployed.name.to_string(),
                nats.clone(),
            )));
        }
        // Everything announced reaches the server before the host says it serves.
        let _ = nats.flush().await;
        tracing::info!(cluster = name, host, components = %names.join(","), "joined the cluster");
        Ok(Arc::new(Self {
            nats,
            name: name.to_string(),
            elsewhere,
            service: tokio::sync::Mutex::new(Some(service)),
            answering: tokio::sync::Mutex::new(answering),
        }))
    }

    /// Whether `component` runs on other hosts (as this host's manifest says).
    pub fn runs_elsewhere(&self, component: &str) -> bool {
        self.elsewhere.contains_key(component)
    }

    /// The largest request body `component` (run elsewhere) takes, in bytes.
    pub fn max_body(&self, component: &str) -> Option<u64> {
        self.elsewhere
            .get(component)
            .map(|l| l.max_body_kb.saturating_mul(1024))
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
    }
}
