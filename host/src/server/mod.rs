//! `panal run` and `panal check`: wiring the manifest, engine, backends, registry,
//! triggers and gateway together, and the clean shutdown (stop accepting, finish
//! in-flight requests, flush storage). [`serve`] runs the whole host on listeners the
//! caller bound, until a shutdown future resolves, so a test can start it in-process.

mod cluster;
mod start;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

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
use crate::runtime::engine::{new_engine, Compiler, EpochTicker, PoolOverrides, PoolSize};
use start::{Host, Plan, Serving};

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
    /// The operator's settings of the instance pool.
    pub pool: PoolOverrides,
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
    pool: PoolOverrides,
    backends: Backends,
    deployments: Option<DeployStore>,
) -> anyhow::Result<(Arc<Registry>, EpochTicker)> {
    let size = PoolSize::for_manifest(manifest)
        .with(pool)
        .map_err(|e| Refused(e.to_string()))?;
    let engine = new_engine(size)?;
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
    let (registry, _ticker) = load_registry(
        &manifest,
        data_dir,
        PoolOverrides::default(),
        Backends::default(),
        None,
    )
    .await?;
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
    let public = listeners.public.local_addr()?;
    let admin = listeners.admin.local_addr()?;
    let token = start::admin_token(admin)?;
    let plan = Plan::read(opts)?;
    let host = Host::start(opts, &plan).await?;
    host.join(opts, &plan, public).await?;
    let mut tasks = host.triggers(&plan.manifest).await?;
    let gateway = host.gateway(opts, &plan)?;
    let admin_api = host.admin(&plan, gateway.clone(), token);
    tasks.extend(opts.watch.then(|| host.watch(&plan.manifest)));
    let tls = opts.tls.is_some() || plan.manifest.gateway.tls.is_some();
    let scheme = if tls { "https" } else { "http" };
    tracing::info!(%public, %admin, "panal is serving");
    // Scripts and tests read the bound ports from this line (with `--listen :0`).
    println!("panal listening on {scheme}://{public} (admin http://{admin})");
    let limits = plan.manifest.gateway.limits;
    let serving = Serving::start(listeners, gateway, admin_api, limits);
    shutdown.await;
    host.stop(serving, tasks).await;
    Ok(())
}

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
