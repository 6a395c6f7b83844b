//! The manifest exactly as written: serde structs with `deny_unknown_fields` and spans,
//! so every later error can name the field and its line.

use std::collections::BTreeMap;

use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    pub version: Spanned<i64>,
    #[serde(default)]
    pub storage: Option<RawStorage>,
    #[serde(default)]
    pub messaging: Option<RawMessagingBackend>,
    #[serde(default)]
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub components: BTreeMap<String, Spanned<RawComponent>>,
    #[serde(default)]
    pub aggregates: BTreeMap<String, Spanned<RawAggregate>>,
    #[serde(default)]
    pub gateway: Option<RawGateway>,
    #[serde(default)]
    pub cluster: Option<RawCluster>,
    #[serde(default)]
    pub traces: Option<RawTraces>,
}

/// `[traces]`: where spans go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraces {
    pub otlp: Spanned<String>,
    pub service_name: Option<Spanned<String>>,
}

/// `[cluster]`: which cluster the host joins, and on which NATS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub name: Spanned<String>,
    pub nats: Option<Spanned<String>>,
    pub replicas: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
}

/// `[gateway]`: what the gateway serves itself, and how it guards its connections.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub openapi: Option<Spanned<String>>,
    pub header_timeout_ms: Option<Spanned<i64>>,
    pub idle_timeout_ms: Option<Spanned<i64>>,
    pub body_timeout_ms: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_connections_per_ip: Option<Spanned<i64>>,
    pub max_rate_buckets: Option<Spanned<i64>>,
    #[serde(default)]
    pub admin_hosts: Vec<Spanned<String>>,
    pub tls: Option<RawTls>,
}

/// `[gateway.tls]`: the public listener's certificate chain and key (PEM files).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessagingBackend {
    pub backend: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    #[serde(default)]
    pub streams: BTreeMap<String, Spanned<RawStream>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    pub subjects: Vec<Spanned<String>>,
    pub replicas: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessaging {
    #[serde(default)]
    pub publish: Vec<Spanned<String>>,
    #[serde(default)]
    pub subscribe: Vec<Spanned<RawSubscription>>,
}

/// A subscription is a subject string or `{ subject = "...", queue = "...", ... }`.
#[derive(Debug)]
pub(super) struct RawSubscription {
    pub subject: String,
    pub queue: Option<String>,
    pub durable: bool,
    pub max_attempts: Option<i64>,
    pub dead_letter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionTable {
    subject: String,
    queue: Option<String>,
    #[serde(default)]
    durable: bool,
    max_attempts: Option<i64>,
    dead_letter: Option<String>,
}

impl<'de> Deserialize<'de> for RawSubscription {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t: SubscriptionTable = string_or_table(
            d,
            r#"a subject like "jobs.*" or { subject = "jobs.*", queue = "workers" }"#,
        )?;
        Ok(RawSubscription {
            subject: t.subject,
            queue: t.queue,
            durable: t.durable,
            max_attempts: t.max_attempts,
            dead_letter: t.dead_letter,
        })
    }
}

impl From<String> for SubscriptionTable {
    fn from(subject: String) -> Self {
        Self {
            subject,
            queue: None,
            durable: false,
            max_attempts: None,
            dead_letter: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub jwt_secret: Option<Spanned<String>>,
    #[serde(default)]
    pub issuers: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAggregate {
    pub path: Spanned<String>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub roles: Vec<String>,
    pub rate_limit: Option<RawRateLimit>,
    pub parts: BTreeMap<String, Spanned<RawPart>>,
}

/// One part of an aggregate: `{ component = "user", path = "/users/{id}" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPart {
    pub component: Spanned<String>,
    pub path: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub backend: Spanned<String>,
    pub url: Option<Spanned<String>>,
    pub replicas: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawComponent {
    pub source: Spanned<String>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub keyvalue: Vec<Spanned<String>>,
    #[serde(default)]
    pub outbound: Vec<Spanned<String>>,
    #[serde(default)]
    pub config: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub messaging: RawMessaging,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub schedule: Vec<Spanned<RawSchedule>>,
}

/// `schedule = [{ every = "30s", path = "/internal/reconcile" }]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub every: String,
    pub path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub memory_mb: Option<Spanned<i64>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub max_concurrency: Option<Spanned<i64>>,
    pub queue_ms: Option<Spanned<i64>>,
    pub max_body_kb: Option<Spanned<i64>>,
    pub reuse: Option<Spanned<i64>>,
    pub concurrent: Option<Spanned<i64>>,
    pub idle_ms: Option<Spanned<i64>>,
    pub kv_max_mb: Option<Spanned<i64>>,
    pub kv_max_keys: Option<Spanned<i64>>,
}

/// A route is either a bare prefix string or `{ prefix = "...", methods = [...] }`.
#[derive(Debug)]
pub(super) struct RawRoute {
    pub prefix: String,
    pub methods: Option<Vec<String>>,
    pub protected: bool,
    pub roles: Vec<String>,
    pub rate_limit: Option<RawRateLimit>,
    pub middleware: Vec<String>,
}

/// `rate_limit = { per_ip = "10/s", per_user = "100/min", burst = 20 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRateLimit {
    pub per_ip: Option<String>,
    pub per_user: Option<String>,
    pub burst: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteTable {
    prefix: String,
    methods: Option<Vec<String>>,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    roles: Vec<String>,
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    middleware: Vec<String>,
}

impl<'de> Deserialize<'de> for RawRoute {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t: RouteTable = string_or_table(
            d,
            r#"a path prefix like "/api" or { prefix = "/api", methods = ["GET"], protected = true, roles = ["admin"], rate_limit = { per_ip = "10/s" }, middleware = ["audit"] }"#,
        )?;
        Ok(RawRoute {
            prefix: t.prefix,
            methods: t.methods,
            protected: t.protected,
            roles: t.roles,
            rate_limit: t.rate_limit,
            middleware: t.middleware,
        })
    }
}

impl From<String> for RouteTable {
    fn from(prefix: String) -> Self {
        Self {
            prefix,
            methods: None,
            protected: false,
            roles: Vec::new(),
            rate_limit: None,
            middleware: Vec::new(),
        }
    }
}

/// A value written either as a bare string (the common case) or as a strict table.
fn string_or_table<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: de::Deserializer<'de>,
    T: Deserialize<'de> + From<String>,
{
    struct V<T>(&'static str, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de> + From<String>> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            Ok(T::from(v.to_string()))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V(expecting, std::marker::PhantomData))
}
