//! The manifest (`panal.toml`): what runs, where it is routed and what it may touch.
//!
//! Parsing is strict: unknown fields, bad values and dangling references are errors that
//! name the field and its line. Paths are relative to the manifest's folder, and
//! `${ENV_VAR}` in config values is replaced at load time so secrets stay out of the file.
//! [`raw`] holds the serde shapes; [`validate`] turns them into the types below.

mod gateway;
mod messaging;
mod raw;
mod routes;
mod schedule;
mod storage;
pub mod subject;
mod traces;
mod validate;

use std::path::{Path, PathBuf};

pub use routes::{parse_method, route_problem, MAX_MIDDLEWARE};
pub use storage::valid_cluster_name;
pub(crate) use validate::bad_name;
pub use validate::substitute_env;

/// The only manifest version this build understands.
pub const VERSION: i64 = 1;

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// Keyed storage backend.
    pub storage: Storage,
    /// Messaging backend.
    pub messaging: MessagingBackend,
    /// Streams the host keeps (`[messaging.streams.NAME]`): publishes to their subjects
    /// are durable, and durable subscriptions read from them.
    pub streams: Vec<StreamSpec>,
    /// Bearer-token settings for protected routes.
    pub auth: Auth,
    /// Aggregate routes (`[aggregates.NAME]`): the gateway fans out to their parts.
    pub aggregates: Vec<panal_gateway::aggregate::Aggregate>,
    /// The components, sorted by name.
    pub components: Vec<ComponentSpec>,
    /// The OpenAPI document the gateway serves at `GET /openapi.json`, checked against
    /// the routes.
    pub openapi: Option<Vec<u8>>,
    /// Connection limits of both listeners, and the names the admin API answers to.
    pub gateway: GatewaySettings,
    /// The cluster the host joins (`[cluster]`), if any.
    pub cluster: Option<ClusterSpec>,
    /// Where spans go (`[traces]`); `None`: traces are off.
    pub traces: Option<TracesSpec>,
}

/// `[traces]`: OpenTelemetry spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracesSpec {
    /// The collector's OTLP/HTTP base URL (spans go to `{otlp}/v1/traces`).
    pub otlp: String,
    /// `service.name` of every span.
    pub service_name: String,
}

/// `[cluster]`: several hosts as one system over NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Names the cluster's NATS service (`panal-NAME`) and call subjects.
    pub name: String,
    /// The NATS servers (comma-separated) the hosts meet on.
    pub nats: String,
    /// Copies of the cluster's deploy buckets (1-5).
    pub replicas: usize,
    /// The key every host seals its calls and deploys with (`key`, else
    /// `PANAL_CLUSTER_KEY`); at least 32 bytes.
    pub key: Option<String>,
}

/// `[gateway]`: how the public and admin listeners guard their connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Caps and timeouts of every connection (both listeners).
    pub limits: panal_gateway::ConnLimits,
    /// Most rate-limit buckets kept (`max_rate_buckets`).
    pub max_rate_buckets: usize,
    /// `Host` names the admin API answers to besides its own address (`admin_hosts`).
    pub admin_hosts: Vec<String>,
    /// `[gateway.tls]`: the public listener serves HTTPS with this certificate chain and
    /// key (PEM), relative to the manifest's folder.
    pub tls: Option<TlsFiles>,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            limits: panal_gateway::ConnLimits::default(),
            max_rate_buckets: panal_gateway::ratelimit::MAX_BUCKETS,
            admin_hosts: Vec::new(),
            tls: None,
        }
    }
}

/// Which broker serves `wasi:messaging`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MessagingBackend {
    /// Routed inside the host (the embedded default).
    #[default]
    InProcess,
    /// A NATS server (or cluster) at this URL.
    Nats(String),
}

/// A stream of durable messages (`[[messaging.streams]]`): a JetStream stream on NATS
/// (created or updated at start), kept in memory by the in-process backend. The manifest
/// and the NATS client share this one type.
pub use panal_nats::jetstream::StreamSpec;

/// One subscription of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Subject, wildcards allowed.
    pub subject: String,
    /// Queue group: one delivery per group.
    pub queue: Option<String>,
    /// Set for a durable subscription: acknowledged after the handler succeeds,
    /// redelivered after a trap or error, dead-lettered after `max_attempts`.
    pub durable: Option<Durable>,
}

/// How a durable subscription consumes its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    /// The stream that captures the subject.
    pub stream: String,
    /// The durable consumer's name, shared by every host that runs the component.
    pub consumer: String,
    /// Deliveries before a failing message is dead-lettered.
    pub max_attempts: u32,
    /// Where a message goes after its last failed attempt.
    pub dead_letter: String,
}

/// Bearer tokens: the HS256 secret and who may mint tokens with it.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The secret, env vars substituted; `None` means generate one and keep it in the
    /// data dir, so tokens outlive restarts.
    pub jwt_secret: Option<String>,
    /// Components that receive the secret as their config key `jwt_secret`.
    pub issuers: Vec<String>,
}

/// Which keyed-storage backend serves `wasi:keyvalue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// One SQLite file per component under the data dir (WAL).
    Sqlite,
    /// One PostgreSQL database shared by every host (`url`, env vars substituted).
    Postgres {
        /// `postgres://user[:password]@host[:port]/database`.
        url: String,
    },
    /// JetStream KV buckets on a NATS server or cluster, one bucket per component.
    Nats {
        /// `nats://HOST:PORT` (several, comma-separated, for a cluster).
        url: String,
        /// Copies of each bucket the cluster keeps (1-5).
        replicas: usize,
    },
}

/// One component as the manifest declares it.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// Its name: a DNS label, also the host name other components call it by.
    pub name: String,
    /// The `.wasm` file, resolved against the manifest's folder.
    pub source: PathBuf,
    /// Where `source` was written, for errors found later (compile, link, grants).
    pub source_at: Location,
    /// Gateway routes answered by this component.
    pub routes: Vec<panal_gateway::Route>,
    /// Buckets it may open through `wasi:keyvalue`.
    pub buckets: Vec<String>,
    /// Whom it may call through `wasi:http/outgoing-handler`.
    pub outbound: Outbound,
    /// `wasi:config/store` values, env vars already substituted.
    pub config: Vec<(String, String)>,
    /// Subjects it may publish and request on (wildcards allowed).
    pub publish: Vec<String>,
    /// What is delivered to its `wasi:messaging/incoming-handler`.
    pub subscribe: Vec<Subscription>,
    /// Hard limits.
    pub limits: Limits,
    /// Calls the host makes to it on a timer.
    pub schedule: Vec<Schedule>,
}

/// One timer of a component (`schedule`): every `every`, the host calls `POST path` on
/// it in-process, never through the gateway, one run at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The period (at least a second).
    pub every: std::time::Duration,
    /// The path called, with its query if any.
    pub path: String,
}

/// Outbound grants: other components by name (in-process) and external hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    /// Components of this manifest it may call as `http://NAME/...`.
    pub components: Vec<String>,
    /// External hosts, each with an optional port (`None`: any port).
    pub hosts: Vec<(String, Option<u16>)>,
}

impl Outbound {
    /// Whether an external `host` on `port` is granted.
    pub fn allows_host(&self, host: &str, port: u16) -> bool {
        self.hosts
            .iter()
            .any(|(h, p)| h.eq_ignore_ascii_case(host) && p.is_none_or(|p| p == port))
    }
}

/// Per-component limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most linear memory one instance may grow to.
    pub memory_mb: u64,
    /// Wall-clock budget for one request, guest execution included.
    pub timeout_ms: u64,
    /// Most instances of this component running at once.
    pub max_concurrency: u32,
    /// How long a request waits for a free slot at `max_concurrency` before its 503.
    pub queue_ms: u64,
    /// Largest request body it is handed; more is answered 413.
    pub max_body_kb: u64,
    /// Requests one instance may serve in its life before it is dropped (1: a fresh
    /// instance per request). Unset: 1 for a WASI 0.2 proxy (reuse is opt-in: state a
    /// request leaves in the instance is seen by the next ones), 128 for a 0.3 service
    /// (see [`Limits::reuse_for`]).
    pub reuse: Option<u32>,
    /// Requests one instance of a WASI 0.3 service serves at once (unset: 16; a 0.2
    /// proxy serves one at a time).
    pub concurrent: Option<u32>,
    /// How long an instance kept for more requests waits idle before it is dropped.
    pub idle_ms: u64,
    /// Most MiB of keys and values the component may store (all its buckets).
    pub kv_max_mb: u64,
    /// Most keys the component may store (all its buckets).
    pub kv_max_keys: u64,
}

impl Limits {
    /// Requests one instance serves in its life, for a 0.3 service (`p3`) or a 0.2 proxy.
    pub fn reuse_for(&self, p3: bool) -> u32 {
        self.reuse.unwrap_or(if p3 { 128 } else { 1 })
    }

    /// Requests one instance serves at once, for a 0.3 service (`p3`) or a 0.2 proxy.
    pub fn concurrent_for(&self, p3: bool) -> u32 {
        if p3 {
            self.concurrent.unwrap_or(16)
        } else {
            1
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mb: 128,
            timeout_ms: 30_000,
            max_concurrency: 256,
            queue_ms: 100,
            max_body_kb: 1024,
            reuse: None,
            concurrent: None,
            idle_ms: 1000,
            kv_max_mb: 1024,
            kv_max_keys: 1_000_000,
        }
    }
}

/// Where something was written in the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// One problem in a manifest, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The manifest file.
    pub path: PathBuf,
    /// Where, when known.
    pub at: Option<Location>,
    /// The dotted field path, e.g. `components.user.routes[1]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(at) = self.at {
            write!(f, ":{}:{}", at.line, at.col)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Why a manifest was refused: every problem found, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ManifestError(pub Vec<Problem>);

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

impl Manifest {
    /// Read, parse and validate the manifest at `path`. Component files must exist;
    /// whether they are valid components is checked when they are compiled.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            ManifestError(vec![Problem {
                path: path.to_path_buf(),
                at: None,
                field: String::new(),
                message: format!("cannot read the manifest: {err}"),
            }])
        })?;
        Self::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Parse and validate manifest `text`, as if read from `path`; `env` looks up
    /// environment variables for `${VAR}` substitution.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ManifestError> {
        validate::parse(path, text, env)
    }

    /// The routes of component `name` written alone, as in a manifest (`routes =
    /// [...]`), held to the manifest's rules; `names`: the components middleware may
    /// name; `label` names the text in errors.
    pub fn routes(
        label: &Path,
        text: &str,
        name: &str,
        names: &[String],
    ) -> Result<Vec<panal_gateway::Route>, ManifestError> {
        validate::routes_alone(label, text, name, names)
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.components.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests;
