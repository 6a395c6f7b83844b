//! `panal run` and `panal check`: wiring the manifest, engine, backends, registry,
//! triggers and gateway together, and the clean shutdown (stop accepting, finish
//! in-flight requests, flush storage). [`serve`] runs the whole host on listeners the
//! caller bound, until a shutdown future resolves, so a test can start it in-process.

mod cluster;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

use panal_gateway::server::Gateway;

use crate::admin::Admin;
use crate::capabilities::keyvalue::nats::NatsKvBackend;
use crate::capabilities::keyvalue::postgres::PostgresBackend;
use crate::capabilities::keyvalue::sqlite::SqliteBackend;
use crate::capabilities::keyvalue::{KvBackend, Prefixed};
use crate::capabilities::messaging::inprocess::InProcessBroker;
use crate::capabilities::messaging::nats::NatsBroker;
use crate::capabilities::messaging::Broker;
use crate::capabilities::Backends;
use crate::manifest::{Manifest, MessagingBackend, Storage};
use crate::registry::store::DeployStore;
use crate::registry::Registry;
use crate::runtime::budget::MemoryBudget;
use crate::runtime::engine::{new_engine, Compiler, EpochTicker, PoolSize};
use crate::triggers::cluster::Changed;
use crate::triggers::http::GatewayBackend;
use crate::triggers::Executor;

/// How long a start waits for NATS before serving anyway (and catching up later).
const NATS_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `panal run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The manifest file.
    pub manifest: PathBuf,
    /// Public listener address.
    pub listen: SocketAddr,
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Data folder: storage and the compile cache.
    pub data_dir: PathBuf,
    /// Messaging over NATS at this URL, overriding the manifest's `[messaging]`.
    pub nats: Option<String>,
    /// Storage in this PostgreSQL database or NATS, overriding the manifest's
    /// `[storage]`.
    pub storage_url: Option<String>,
    /// Join the cluster over NATS at this URL, overriding the manifest's `[cluster]`.
    pub cluster: Option<String>,
    /// Run only these components here; the others run on other hosts of the cluster.
    pub components: Option<Vec<String>>,
    /// Copies of the cluster's buckets and of streams that set none (overrides
    /// `[cluster] replicas`).
    pub replicas: Option<usize>,
    /// Forget every deployment and serve the manifest's files again.
    pub reset_deployments: bool,
    /// Redeploy components whose manifest files change.
    pub watch: bool,
    /// What messaging and NATS storage present to NATS.
    pub nats_auth: panal_nats::Auth,
    /// What the cluster connection presents to NATS.
    pub cluster_auth: panal_nats::Auth,
    /// Join a cluster over a NATS server that lets anyone in (warned at every start).
    pub insecure_cluster: bool,
    /// The host-wide guest memory budget, MiB (default: half of the machine's).
    pub guest_memory_mb: Option<u32>,
    /// Serve the gateway over HTTPS with these files (overrides `[gateway.tls]`).
    pub tls: Option<crate::manifest::TlsFiles>,
}

/// A failure that has already been explained to the user in full.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    Manifest::load(path).map_err(|e| Refused(e.to_string()).into())
}

/// Compile (or load from `DATA_DIR/cache`), link and pre-instantiate every component of
/// `manifest`; the ticker drives its deadlines and must live as long as the registry.
pub async fn load_registry(
    manifest: &Manifest,
    data_dir: &Path,
    backends: Backends,
    deployments: Option<DeployStore>,
) -> anyhow::Result<(Arc<Registry>, EpochTicker)> {
    let engine = new_engine(PoolSize::for_manifest(manifest))?;
    let ticker = EpochTicker::start(&engine);
    let compiler = Compiler::new(&engine, data_dir.join("cache"))?;
    let (registry, stats) = Registry::load(manifest, compiler, backends, deployments)
        .await
        .map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Refused(lines.join("\n"))
        })?;
    tracing::info!(
        compiled = stats.compiled,
        from_cache = stats.cached,
        "components loaded"
    );
    Ok((registry, ticker))
}

/// Validate the manifest and compile and link every component, serving nothing.
pub async fn check(manifest: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let manifest = load_manifest(manifest)?;
    let (registry, _ticker) = load_registry(&manifest, data_dir, Backends::default(), None).await?;
    println!(
        "{}: ok ({} components: {})",
        manifest.path.display(),
        registry.names().len(),
        registry.names().join(", ")
    );
    Ok(())
}

/// Serve until SIGINT or SIGTERM, on the addresses of `opts`.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let listeners = Listeners {
        public: bind(opts.listen, "--listen").await?,
        admin: bind(opts.admin_listen, "--admin-listen").await?,
    };
    serve(&opts, listeners, shutdown).await
}

/// The two listeners the host serves on, bound by the caller (a test binds port 0).
pub struct Listeners {
    /// The public gateway.
    pub public: TcpListener,
    /// The admin API.
    pub admin: TcpListener,
}

/// The whole host on `listeners` until `shutdown` resolves: load the manifest and the
/// components, start the triggers, serve the gateway and the admin API, then stop
/// cleanly (stop accepting, finish in-flight requests, flush messaging and storage).
/// `opts`' listen addresses are not used; the listeners are.
pub async fn serve(
    opts: &RunOptions,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (public_addr, admin_addr) = (
        listeners.public.local_addr()?,
        listeners.admin.local_addr()?,
    );
    let admin_token = std::env::var("PANAL_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    if admin_token.is_none() && !admin_addr.ip().is_loopback() {
        return Err(Refused(format!(
            "--admin-listen {admin_addr} is not a loopback address: set PANAL_ADMIN_TOKEN so \
             the admin API (deploy, rollback, undeploy) needs a bearer token"
        ))
        .into());
    }
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
    let elsewhere =
        cluster::run_here(&mut manifest, opts.components.as_deref(), cluster.is_some())?;
    // In a cluster, streams are kept in as many copies as its buckets unless they say.
    for stream in manifest.streams.iter_mut().filter(|s| s.replicas == 0) {
        stream.replicas = cluster.as_ref().map_or(1, |c| c.replicas);
    }
    let cluster_name = cluster.as_ref().map(|c| c.name.as_str());
    let backends = open_backends(&manifest, opts, cluster_name).await?;
    let deployments = open_deployments(opts)?;
    let (registry, _ticker) = load_registry(
        &manifest,
        &opts.data_dir,
        backends.clone(),
        Some(deployments),
    )
    .await?;
    let executor = Executor::new(registry.clone());
    registry.run_elsewhere(&elsewhere);
    let roles = crate::roles::Roles::load(Some(opts.data_dir.join("roles.json")))
        .map_err(|e| Refused(format!("roles: {e}")))?;
    let roles = Arc::new(roles);
    // Deploys that come from the cluster move the gateway's routes too, once it exists.
    let routed: Arc<OnceLock<Arc<Gateway>>> = Arc::default();
    if let Some(spec) = &cluster {
        let changed: Changed = {
            let (routed, registry) = (routed.clone(), registry.clone());
            Arc::new(move |outcome| {
                if let Some(gateway) = routed.get() {
                    crate::admin::follow_routes(&registry, gateway, outcome);
                }
            })
        };
        let joined = (public_addr, changed, roles.clone());
        let cluster = cluster::join_cluster(spec, opts, &executor, &elsewhere, joined).await?;
        executor.join(cluster);
    }
    let triggers = start_triggers(&executor, &backends, &manifest).await?;
    let tls = opts.tls.as_ref().or(manifest.gateway.tls.as_ref());
    let gateway = Arc::new(gateway(&manifest, &executor, secret, tls)?.with_roles(roles.clone()));
    let scheme = if tls.is_some() { "https" } else { "http" };
    let _ = routed.set(gateway.clone());
    let admin_api = Arc::new(Admin {
        registry: registry.clone(),
        gateway: gateway.clone(),
        token: admin_token,
        hosts: manifest.gateway.admin_hosts.clone(),
        cluster: executor.cluster().cloned(),
        roles,
    });
    let watcher = opts.watch.then(|| {
        let files = manifest
            .components
            .iter()
            .map(|c| (c.name.clone(), c.source.clone()))
            .collect();
        crate::registry::watch::start(registry.clone(), files)
    });

    tracing::info!(%public_addr, %admin_addr, "panal is serving");
    // Scripts and tests read the bound ports from this line (with `--listen :0`).
    println!("panal listening on {scheme}://{public_addr} (admin http://{admin_addr})");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = manifest.gateway.limits;
    let public_task = tokio::spawn(panal_gateway::serve(
        listeners.public,
        gateway,
        stopped(stop_rx.clone()),
    ));
    let admin_task = tokio::spawn(panal_gateway::server::accept_loop(
        listeners.admin,
        limits,
        None,
        stopped(stop_rx),
        move |req| {
            let admin_api = admin_api.clone();
            async move { admin_api.handle(req).await }
        },
    ));

    shutdown.await;
    // Out of the queue groups first, so other hosts take the calls from now on.
    if let Some(cluster) = executor.cluster() {
        cluster.leave().await;
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    let _ = stop_tx.send(true);
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let _ = public_task.await;
    let _ = admin_task.await;
    for task in triggers {
        task.abort();
    }
    close(&backends).await;
    Ok(())
}

/// Flush what the backends buffer: messages first (their outbox is on disk), then
/// storage.
async fn close(backends: &Backends) {
    if let Some(broker) = &backends.broker {
        broker.flush().await;
    }
    if let Some(kv) = &backends.kv {
        kv.close().await;
    }
    // The exporter blocks while it sends the last spans.
    let _ = tokio::task::spawn_blocking(crate::traces::flush).await;
    tracing::info!("storage flushed; bye");
}

/// Start the triggers other than HTTP: every subscription and every schedule.
async fn start_triggers(
    executor: &Arc<Executor>,
    backends: &Backends,
    manifest: &Manifest,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = match &backends.broker {
        Some(broker) => crate::triggers::messaging::start(executor, broker, &manifest.streams)
            .await
            .map_err(|e| Refused(format!("{e:#}")))?,
        None => Vec::new(),
    };
    tasks.extend(crate::triggers::timer::start(
        executor,
        &manifest.components,
    ));
    Ok(tasks)
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

/// Storage and messaging as the manifest (or `--nats`) asks.
/// The storage and messaging backends; a cluster's shared storage is named by the
/// cluster (`cluster`), so clusters sharing one PostgreSQL or NATS keep apart.
async fn open_backends(
    manifest: &Manifest,
    opts: &RunOptions,
    cluster: Option<&str>,
) -> anyhow::Result<Backends> {
    let storage = match &opts.storage_url {
        // The manifest's replicas stay when only the url is overridden.
        Some(url) => match &manifest.storage {
            Storage::Nats { replicas, .. } => Storage::at(url, *replicas),
            _ => Storage::at(url, 1),
        }
        .ok_or_else(|| {
            Refused(format!(
                "--storage-url `{}` is neither a postgres:// nor a nats:// URL",
                panal_nats::redact(url)
            ))
        })?,
        None => manifest.storage.clone(),
    };
    let shared = !matches!(storage, Storage::Sqlite);
    let kv: Arc<dyn KvBackend> = match storage {
        Storage::Sqlite => Arc::new(SqliteBackend::new(opts.data_dir.join("kv"))?),
        Storage::Postgres { url } => {
            tracing::info!("storage in PostgreSQL");
            Arc::new(
                PostgresBackend::connect(&url)
                    .await
                    .map_err(|e| Refused(format!("{e:#}")))?,
            )
        }
        Storage::Nats { url, replicas } => {
            tracing::info!(url = %panal_nats::redact(&url), replicas, "storage in JetStream KV");
            Arc::new(
                NatsKvBackend::connect(&url, &opts.nats_auth, replicas)
                    .await
                    .map_err(|e| Refused(format!("{e:#}")))?,
            )
        }
    };
    let kv: Arc<dyn KvBackend> = match cluster.filter(|_| shared) {
        Some(name) => Arc::new(Prefixed {
            inner: kv,
            prefix: format!("{name}_"),
        }),
        None => kv,
    };
    let backend = match &opts.nats {
        Some(url) => MessagingBackend::Nats(url.clone()),
        None => manifest.messaging.clone(),
    };
    let broker: Arc<dyn Broker> = match &backend {
        MessagingBackend::InProcess => Arc::new(InProcessBroker::new()),
        MessagingBackend::Nats(url) => {
            tracing::info!(url = %panal_nats::redact(url), "messaging over NATS");
            let nats = panal_nats::Nats::connect(url, &opts.nats_auth)
                .await
                .map_err(|e| Refused(format!("messaging: cannot connect to NATS: {e}")))?;
            let broker = NatsBroker::start(nats, manifest.streams.clone(), &opts.data_dir).await?;
            broker.ready(NATS_READY_WAIT).await;
            broker
        }
    };
    let memory = opts
        .guest_memory_mb
        .unwrap_or_else(MemoryBudget::default_mb);
    tracing::info!(budget_mb = memory, "guest memory budget");
    Ok(Backends {
        kv: Some(kv),
        broker: Some(broker),
        memory: Arc::new(MemoryBudget::new(memory)),
    })
}

fn open_deployments(opts: &RunOptions) -> anyhow::Result<DeployStore> {
    let dir = opts.data_dir.join("deployments");
    if opts.reset_deployments && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot reset {}", dir.display()))?;
        tracing::info!("deployments reset: serving the manifest's files");
    }
    DeployStore::open(dir)
}

/// The public gateway over `executor`, with the manifest's aggregates, OpenAPI document
/// and limits.
fn gateway(
    manifest: &Manifest,
    executor: &Arc<Executor>,
    secret: String,
    tls: Option<&crate::manifest::TlsFiles>,
) -> anyhow::Result<Gateway> {
    // From the registry, not the manifest: deployed versions may have other routes.
    let table = panal_gateway::RouteTable::new(executor.registry().routes())
        .map_err(|e| Refused(e.to_string()))?;
    let aggregates = manifest.aggregates.clone();
    let mut gateway = Gateway::new(
        table,
        Arc::new(GatewayBackend(executor.clone())),
        Some(panal_gateway::auth::Verifier::new(secret.into_bytes())),
        aggregates,
    );
    if let Some(doc) = manifest.openapi.clone() {
        gateway = gateway.with_openapi(doc);
    }
    if crate::traces::enabled() {
        gateway = gateway.with_observer(Arc::new(crate::traces::GatewaySpans));
    }
    if let Some(files) = tls {
        let acceptor = panal_gateway::tls::acceptor(&files.cert, &files.key)
            .map_err(|e| Refused(e.to_string()))?;
        gateway = gateway.with_tls(acceptor);
    }
    Ok(gateway
        .with_limits(manifest.gateway.limits)
        .with_rate_buckets(manifest.gateway.max_rate_buckets))
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Refused(format!("{flag} {addr}: cannot listen: {e}")).into())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not
/// when first polled), so a signal right after start-up is never missed.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
