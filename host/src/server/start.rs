//! The start-up steps [`super::serve`] takes in order, each a function: read the plan
//! (manifest, secret, cluster), start the host (backends, registry, executor, roles),
//! join the cluster, start the triggers, build the gateway and the admin API, listen;
//! and the stop, in the reverse order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use panal_gateway::server::Gateway;

use super::{cluster, load_manifest, load_registry, open_backends, Listeners, Refused, RunOptions};
use crate::admin::Admin;
use crate::capabilities::Backends;
use crate::manifest::{ClusterSpec, ComponentSpec, Manifest};
use crate::registry::store::DeployStore;
use crate::registry::Registry;
use crate::runtime::engine::EpochTicker;
use crate::triggers::http::GatewayBackend;
use crate::triggers::Executor;

/// The admin token from `PANAL_ADMIN_TOKEN`; without one, the admin listener (at
/// `admin`) must be on loopback.
pub(super) fn admin_token(admin: SocketAddr) -> anyhow::Result<Option<String>> {
    let token = std::env::var("PANAL_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if token.is_none() && !admin.ip().is_loopback() {
        return Err(Refused(format!(
            "--admin-listen {admin} is not a loopback address: set PANAL_ADMIN_TOKEN so \
             the admin API (deploy, rollback, undeploy) needs a bearer token"
        ))
        .into());
    }
    Ok(token)
}

/// What this host is to run, read before anything starts.
pub(super) struct Plan {
    pub manifest: Manifest,
    /// The JWT secret the gateway verifies tokens with.
    pub secret: String,
    /// The cluster to join, with its key.
    pub cluster: Option<ClusterSpec>,
    /// Components that run on other hosts of the cluster, not here.
    pub elsewhere: Vec<ComponentSpec>,
}

impl Plan {
    /// The manifest as `opts` amend it; traces started and the data dir made.
    pub fn read(opts: &RunOptions) -> anyhow::Result<Self> {
        let mut manifest = load_manifest(&opts.manifest)?;
        if let Some(spec) = &manifest.traces {
            crate::traces::init(&spec.otlp, &spec.service_name)?;
        }
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("cannot create the data dir {}", opts.data_dir.display()))?;
        let secret = jwt_secret(&mut manifest, &opts.data_dir)?;
        let cluster = cluster::cluster_of(&manifest, opts)?
            .map(cluster::keyed)
            .transpose()?;
        let only = opts.components.as_deref();
        let elsewhere = cluster::run_here(&mut manifest, only, cluster.is_some())?;
        // In a cluster, streams are kept in as many copies as its buckets unless they say.
        for stream in manifest.streams.iter_mut().filter(|s| s.replicas == 0) {
            stream.replicas = cluster.as_ref().map_or(1, |c| c.replicas);
        }
        Ok(Self {
            manifest,
            secret,
            cluster,
            elsewhere,
        })
    }
}

/// The JWT secret: the manifest's, or one generated once into the data dir; given to
/// the issuing components as config `jwt_secret`.
fn jwt_secret(manifest: &mut Manifest, data_dir: &Path) -> anyhow::Result<String> {
    let secret = match &manifest.auth.jwt_secret {
        Some(secret) => secret.clone(),
        None => crate::secret::load_or_create(&data_dir.join("jwt-secret"))?,
    };
    for issuer in &manifest.auth.issuers {
        if let Some(spec) = manifest.components.iter_mut().find(|c| c.name == *issuer) {
            spec.config.push(("jwt_secret".into(), secret.clone()));
        }
    }
    Ok(secret)
}

/// The running host behind the listeners.
pub(super) struct Host {
    pub backends: Backends,
    pub registry: Arc<Registry>,
    pub executor: Arc<Executor>,
    pub roles: Arc<crate::roles::Roles>,
    /// Drives the deadlines; lives as long as the registry.
    _ticker: EpochTicker,
}

impl Host {
    /// Open the backends and the deployments, load every component and the roles.
    pub async fn start(opts: &RunOptions, plan: &Plan) -> anyhow::Result<Self> {
        let cluster_name = plan.cluster.as_ref().map(|c| c.name.as_str());
        let backends = open_backends(&plan.manifest, opts, cluster_name).await?;
        let deployments = open_deployments(opts)?;
        let (registry, ticker) = load_registry(
            &plan.manifest,
            &opts.data_dir,
            opts.pool,
            backends.clone(),
            Some(deployments),
        )
        .await?;
        let executor = Executor::new(registry.clone());
        registry
            .run_elsewhere(&plan.elsewhere)
            .map_err(|e| Refused(e.to_string()))?;
        let roles = crate::roles::Roles::load(Some(opts.data_dir.join("roles.json")))
            .map_err(|e| Refused(format!("roles: {e}")))?;
        Ok(Self {
            backends,
            registry,
            executor,
            roles: Arc::new(roles),
            _ticker: ticker,
        })
    }

    /// Join the plan's cluster, if any: deploys that come from the cluster move the
    /// gateway's routes as local ones do, through the registry's route table.
    pub async fn join(
        &self,
        opts: &RunOptions,
        plan: &Plan,
        public: SocketAddr,
    ) -> anyhow::Result<()> {
        let Some(spec) = &plan.cluster else {
            return Ok(());
        };
        let joined = (public, self.roles.clone());
        let cluster =
            cluster::join_cluster(spec, opts, &self.executor, &plan.elsewhere, joined).await?;
        self.executor.join(cluster);
        Ok(())
    }

    /// Start the triggers other than HTTP: every subscription and every schedule.
    pub async fn triggers(&self, manifest: &Manifest) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let mut tasks = match &self.backends.broker {
            Some(broker) => {
                crate::triggers::messaging::start(&self.executor, broker, &manifest.streams)
                    .await
                    .map_err(|e| Refused(format!("{e:#}")))?
            }
            None => Vec::new(),
        };
        tasks.extend(crate::triggers::timer::start(
            &self.executor,
            &manifest.components,
        ));
        Ok(tasks)
    }

    /// The public gateway over the executor, with the manifest's aggregates, OpenAPI
    /// document, limits and TLS (`--tls-cert` first), and the operator's roles.
    pub fn gateway(&self, opts: &RunOptions, plan: &Plan) -> anyhow::Result<Arc<Gateway>> {
        let manifest = &plan.manifest;
        // From the registry, not the manifest: deployed versions may have other routes.
        let mut gateway = Gateway::new(
            self.registry.route_table(),
            Arc::new(GatewayBackend(self.executor.clone())),
            Some(panal_gateway::auth::Verifier::new(
                plan.secret.clone().into_bytes(),
            )),
            manifest.aggregates.clone(),
        );
        if let Some(doc) = manifest.openapi.clone() {
            gateway = gateway.with_openapi(doc);
        }
        if crate::traces::enabled() {
            gateway = gateway.with_observer(Arc::new(crate::traces::GatewaySpans));
        }
        if let Some(log) = crate::logging::access_log() {
            gateway = gateway.with_access_log(log);
        }
        if let Some(files) = opts.tls.as_ref().or(manifest.gateway.tls.as_ref()) {
            let acceptor = panal_gateway::tls::acceptor(&files.cert, &files.key)
                .map_err(|e| Refused(e.to_string()))?;
            gateway = gateway.with_tls(acceptor);
        }
        let gateway = gateway
            .with_limits(manifest.gateway.limits)
            .with_rate_buckets(manifest.gateway.max_rate_buckets)
            .with_roles(self.roles.clone());
        Ok(Arc::new(gateway))
    }

    /// The admin API over this host and `gateway`.
    pub fn admin(&self, plan: &Plan, gateway: Arc<Gateway>, token: Option<String>) -> Admin {
        Admin {
            registry: self.registry.clone(),
            gateway,
            token,
            hosts: plan.manifest.gateway.admin_hosts.clone(),
            cluster: self.executor.cluster().cloned(),
            roles: self.roles.clone(),
        }
    }

    /// Redeploy components whose manifest files change (`--watch`).
    pub fn watch(&self, manifest: &Manifest) -> JoinHandle<()> {
        let files = manifest
            .components
            .iter()
            .map(|c| (c.name.clone(), c.source.clone()))
            .collect();
        crate::registry::watch::start(self.registry.clone(), files)
    }

    /// Stop: out of the cluster's queue groups first (other hosts take the calls from
    /// now on), then no new connections while in-flight requests finish, then the
    /// triggers, then messaging and storage flushed.
    pub async fn stop(self, serving: Serving, others: Vec<JoinHandle<()>>) {
        if let Some(cluster) = self.executor.cluster() {
            cluster.leave().await;
        }
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        serving.stop().await;
        for task in others {
            task.abort();
        }
        if let Some(broker) = &self.backends.broker {
            broker.flush().await;
        }
        if let Some(kv) = &self.backends.kv {
            kv.close().await;
        }
        // The exporter blocks while it sends the last spans.
        let _ = tokio::task::spawn_blocking(crate::traces::flush).await;
        tracing::info!("storage flushed; bye");
    }
}

fn open_deployments(opts: &RunOptions) -> anyhow::Result<DeployStore> {
    let dir = opts.data_dir.join("deployments");
    if opts.reset_deployments && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot reset {}", dir.display()))?;
        tracing::info!("deployments reset: serving the manifest's files");
    }
    DeployStore::open(dir)
}

/// The two listeners' accept loops, until told to stop.
pub(super) struct Serving {
    stop: watch::Sender<bool>,
    tasks: [JoinHandle<std::io::Result<()>>; 2],
}

impl Serving {
    /// Accept on `listeners`: the gateway on the public one, `admin` on the other
    /// (under the gateway's connection `limits`).
    pub fn start(
        listeners: Listeners,
        gateway: Arc<Gateway>,
        admin: Admin,
        limits: panal_gateway::ConnLimits,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let until = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let admin = Arc::new(admin);
        let public = tokio::spawn(panal_gateway::serve(
            listeners.public,
            gateway,
            until(stopped.clone()),
        ));
        let admin = tokio::spawn(panal_gateway::server::accept_loop(
            listeners.admin,
            limits,
            None,
            until(stopped),
            move |req| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            },
        ));
        Self {
            stop,
            tasks: [public, admin],
        }
    }

    /// Stop accepting and wait for the connections in flight.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
