//! The `panal` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs microservices as sandboxed WebAssembly components behind one HTTP gateway.
#[derive(Parser)]
#[command(name = "panal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum RolesAction {
    /// Give ACCOUNT the role ROLE.
    Grant {
        /// The account id (the `sub` of its tokens; the shop's user id).
        account: String,
        /// The role (1-64 of A-Z a-z 0-9 . _ : -).
        role: String,
    },
    /// Take ROLE from ACCOUNT (its requests lose it at once).
    Revoke {
        /// The account id.
        account: String,
        /// The role.
        role: String,
    },
    /// Every account that holds a role, and its roles.
    List,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the components of a manifest through the gateway until SIGINT/SIGTERM.
    ///
    /// Compiles each component (or takes it from the compile cache in the data dir),
    /// opens its storage and serves HTTP. On SIGINT/SIGTERM it stops accepting, lets
    /// in-flight requests finish and flushes storage.
    Run(Box<RunArgs>),
    /// Replace a running component with FILE, or add a new one with its routes.
    ///
    /// The new version is compiled, linked, checked against the component's grants and
    /// instantiated once before one atomic swap makes it current; on any failure the old
    /// version keeps serving. Deployments survive restarts.
    Deploy {
        /// The component's name.
        name: String,
        /// The component (`.wasm`).
        file: PathBuf,
        /// A route prefix of a new component (repeatable). A running component keeps
        /// its routes; `--routes` replaces them.
        #[arg(long = "route", value_name = "PREFIX")]
        routes: Vec<String>,
        /// Complete routes (a TOML file: `routes = [...]` as in the manifest, with
        /// methods, roles, rate limits, middleware), replacing the component's.
        #[arg(long = "routes", value_name = "FILE", conflicts_with_all = ["routes", "protected_routes"])]
        routes_file: Option<PathBuf>,
        /// A route prefix that needs a bearer token (repeatable).
        #[arg(long = "protected-route", value_name = "PREFIX")]
        protected_routes: Vec<String>,
        /// A bucket a new component may open (repeatable).
        #[arg(long = "keyvalue", value_name = "BUCKET")]
        keyvalue: Vec<String>,
        /// A component a new component may call (repeatable).
        #[arg(long = "outbound", value_name = "NAME")]
        outbound: Vec<String>,
        /// A subject a new component may publish to (repeatable).
        #[arg(long = "publish", value_name = "SUBJECT")]
        publish: Vec<String>,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Go back to the component's previous version.
    Rollback {
        /// The component's name.
        name: String,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Stop serving a component (also after restarts, until it is deployed again).
    Undeploy {
        /// The component's name.
        name: String,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Every component: version, deployed at, routes, requests, errors, in flight.
    Status {
        /// Print the admin API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Grant, revoke or list the roles of accounts (a bearer token's `sub`): the only
    /// way a role is given. Checked by the gateway on every request, on every host.
    Roles {
        #[command(subcommand)]
        action: RolesAction,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Validate a manifest and compile and link every component, without serving.
    ///
    /// Exits 0 when everything would start, 1 with one line per problem otherwise.
    /// Compiled components are kept in the data dir's cache, so a later `run` starts faster.
    Check {
        /// The manifest to check.
        #[arg(long, default_value = "panal.toml")]
        manifest: PathBuf,
        /// Folder for the compile cache.
        #[arg(long, default_value = ".panal")]
        data_dir: PathBuf,
    },
}

/// What `panal run` takes.
#[derive(clap::Args)]
struct RunArgs {
    /// The manifest to run.
    #[arg(long, default_value = "panal.toml")]
    manifest: PathBuf,
    /// Address of the public gateway (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin listener (`GET /healthz`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: SocketAddr,
    /// Folder for storage (one SQLite file per component) and compiled components.
    #[arg(long, default_value = ".panal")]
    data_dir: PathBuf,
    /// Use NATS at this URL for messaging (overrides the manifest's [messaging]).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Keep storage in this PostgreSQL database or NATS (JetStream KV), shared by
    /// every host that uses it (`postgres://...` or `nats://...`; overrides the
    /// manifest's [storage]).
    #[arg(long, value_name = "URL", env = "PANAL_STORAGE_URL")]
    storage_url: Option<String>,
    /// Join the cluster over NATS at this URL (comma-separated servers; overrides
    /// the manifest's [cluster] nats; the cluster is named by [cluster] name, else
    /// `panal`).
    #[arg(long, value_name = "URL", env = "PANAL_CLUSTER")]
    cluster: Option<String>,
    /// Run only these components here (comma-separated); the others are called on
    /// the hosts of the cluster that run them.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        env = "PANAL_COMPONENTS"
    )]
    components: Option<Vec<String>>,
    /// Copies the NATS cluster keeps of the cluster's deploy buckets and of streams
    /// that set none (1-5; overrides [cluster] replicas).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: Option<u8>,
    /// Forget every deployment (DATA_DIR/deployments) and serve the manifest's files.
    #[arg(long)]
    reset_deployments: bool,
    /// Redeploy a component when its manifest `source` file changes (after a
    /// rebuild); the outcome is logged.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    nats_auth: NatsAuthArgs,
    /// Serve the gateway over HTTPS with this certificate chain (PEM; with
    /// --tls-key; overrides [gateway.tls]). A renewed file is taken without a restart.
    #[arg(
        long,
        value_name = "FILE",
        env = "PANAL_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "PANAL_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Join a cluster over a NATS server that lets anyone in without credentials
    /// (for a laptop: anyone who reaches that server can act as any user and
    /// deploy code); logged as a warning at every start.
    #[arg(long)]
    insecure_cluster: bool,
    /// The host-wide budget of guest memory, MiB: every live instance is charged the
    /// memory it grew to; a new one without room waits its `queue_ms`, then 503.
    /// Default: half of the machine's memory (or of the cgroup limit).
    #[arg(long, env = "PANAL_GUEST_MEMORY_MB", value_parser = clap::value_parser!(u32).range(16..))]
    guest_memory_mb: Option<u32>,
    /// Component instances alive at once, all components together (the pool's size).
    /// Default: every component's `max_concurrency` added up, plus room for deploys.
    #[arg(long, env = "PANAL_MAX_INSTANCES", value_parser = clap::value_parser!(u32).range(1..=4096))]
    max_instances: Option<u32>,
    /// Address space reserved for each linear memory, MiB. Default 4096, which lets
    /// compiled code skip bounds checks; lower it (to at least the largest
    /// `memory_mb`) where address space is short (`ulimit -v`, valgrind).
    #[arg(long, env = "PANAL_MEMORY_RESERVATION_MB", value_parser = clap::value_parser!(u32).range(1..=4096))]
    memory_reservation_mb: Option<u32>,
}

/// How the host proves itself to NATS (every connection: messaging, cluster,
/// JetStream storage), besides `user:pass@` or `token@` in the URL.
#[derive(clap::Args)]
struct NatsAuthArgs {
    /// A NATS credentials file (user JWT and nkey seed).
    #[arg(long, value_name = "FILE", env = "PANAL_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// A file holding a user nkey seed (`SU...`).
    #[arg(long, value_name = "FILE", env = "PANAL_NATS_NKEY")]
    nats_nkey: Option<PathBuf>,
    /// CA certificates (PEM) the NATS servers' certificates must chain to (TLS).
    #[arg(long, value_name = "FILE", env = "PANAL_NATS_CA")]
    nats_ca: Option<PathBuf>,
    /// A TLS client certificate (PEM) for NATS, with --nats-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "PANAL_NATS_CERT",
        requires = "nats_key"
    )]
    nats_cert: Option<PathBuf>,
    /// The TLS client certificate's private key (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "PANAL_NATS_KEY",
        requires = "nats_cert"
    )]
    nats_key: Option<PathBuf>,
    /// The cluster connection's credentials file, instead of --nats-creds.
    #[arg(long, value_name = "FILE", env = "PANAL_CLUSTER_CREDS")]
    cluster_creds: Option<PathBuf>,
    /// The cluster connection's nkey seed file, instead of --nats-nkey.
    #[arg(long, value_name = "FILE", env = "PANAL_CLUSTER_NKEY")]
    cluster_nkey: Option<PathBuf>,
}

impl NatsAuthArgs {
    /// What messaging and storage present, and what the cluster connection presents
    /// (its own creds or nkey when given, the same TLS files).
    fn split(self) -> (panal_nats::Auth, panal_nats::Auth) {
        let nats = panal_nats::Auth {
            creds: self.nats_creds,
            nkey: self.nats_nkey,
            ca: self.nats_ca,
            cert: self.nats_cert,
            key: self.nats_key,
        };
        let mut cluster = nats.clone();
        if self.cluster_creds.is_some() || self.cluster_nkey.is_some() {
            cluster.creds = self.cluster_creds;
            cluster.nkey = self.cluster_nkey;
        }
        (nats, cluster)
    }
}

/// Where the admin API is (`PANAL_ADMIN_TOKEN` is sent as bearer token when set).
#[derive(clap::Args)]
struct AdminArg {
    /// The admin API's URL.
    #[arg(
        long = "admin",
        value_name = "URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    url: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    panal::logging::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli.command));
    panal::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Run one command.
async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(run) => panal::server::run(run.options()).await,
        Command::Deploy {
            name,
            file,
            routes,
            routes_file,
            protected_routes,
            keyvalue,
            outbound,
            publish,
            admin,
        } => {
            let args = panal::cli::DeployArgs {
                routes,
                protected_routes,
                keyvalue,
                outbound,
                publish,
                routes_file,
            };
            panal::cli::deploy(&admin.url, &name, &file, &args).await
        }
        Command::Rollback { name, admin } => panal::cli::rollback(&admin.url, &name).await,
        Command::Undeploy { name, admin } => panal::cli::undeploy(&admin.url, &name).await,
        Command::Status { json, admin } => panal::cli::status(&admin.url, json).await,
        Command::Roles { action, admin } => match action {
            RolesAction::Grant { account, role } => {
                panal::cli::roles_change(&admin.url, true, &account, &role).await
            }
            RolesAction::Revoke { account, role } => {
                panal::cli::roles_change(&admin.url, false, &account, &role).await
            }
            RolesAction::List => panal::cli::roles_list(&admin.url).await,
        },
        Command::Check { manifest, data_dir } => panal::server::check(&manifest, &data_dir).await,
    }
}

/// Say why a command failed: a refusal line by line, anything else with its causes.
fn report(err: &anyhow::Error) {
    match err.downcast_ref::<panal::server::Refused>() {
        Some(refused) => {
            for line in refused.0.lines() {
                eprintln!("error: {line}");
            }
        }
        None => eprintln!("error: {err:#}"),
    }
}

impl RunArgs {
    /// What `panal run` was asked, for the server.
    fn options(self) -> panal::server::RunOptions {
        let (nats_auth, cluster_auth) = self.nats_auth.split();
        panal::server::RunOptions {
            manifest: self.manifest,
            listen: self.listen,
            admin_listen: self.admin_listen,
            data_dir: self.data_dir,
            nats: self.nats,
            storage_url: self.storage_url,
            cluster: self.cluster,
            components: self.components,
            replicas: self.replicas.map(usize::from),
            reset_deployments: self.reset_deployments,
            watch: self.watch,
            nats_auth,
            cluster_auth,
            insecure_cluster: self.insecure_cluster,
            guest_memory_mb: self.guest_memory_mb,
            pool: panal::runtime::engine::PoolOverrides {
                max_instances: self.max_instances,
                memory_reservation_mb: self.memory_reservation_mb,
            },
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| panal::manifest::TlsFiles { cert, key }),
        }
    }
}
