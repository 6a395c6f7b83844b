//! Validation of how hosts share state and work: `[storage]` (where keyed storage
//! lives, embedded or shared) and `[cluster]` (which NATS the hosts of one system
//! meet on).

use super::validate::{substitute_env, Checker};
use super::{ClusterSpec, Storage};

/// `[storage]`: the keyed-storage backend, `sqlite` (no `url`), `postgres` (a
/// `postgres://` `url`) or `nats` (a `nats://` `url`, optional `replicas`); `${ENV}` is
/// substituted in the url so a password stays out of the file.
pub(super) fn storage(
    c: &mut Checker,
    raw: Option<super::raw::RawStorage>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Storage {
    let Some(s) = raw else {
        return Storage::Sqlite;
    };
    let backend = s.backend.get_ref().as_str();
    let replicas = match &s.replicas {
        None => 1,
        Some(r) if backend != "nats" => {
            let why = "only the nats backend takes replicas".to_string();
            c.problem(Some(r.span()), "storage.replicas".into(), why);
            1
        }
        Some(r) => replicas(c, r, "storage.replicas"),
    };
    let url = match s.url.map(|u| (u.span(), substitute_env(u.get_ref(), env))) {
        None => None,
        Some((span, Ok(url))) => Some((span, url)),
        Some((span, Err(why))) => {
            c.problem(Some(span), "storage.url".into(), why);
            return Storage::Sqlite;
        }
    };
    let field = "storage.url".to_string();
    match (backend, url) {
        ("sqlite", None) => Storage::Sqlite,
        ("sqlite", Some((span, _))) => {
            let why = "the sqlite backend takes no url (its files live in the data dir)";
            c.problem(Some(span), field, why.into());
            Storage::Sqlite
        }
        ("postgres" | "nats", None) => {
            let why = format!("the {backend} backend needs `url = \"{backend}://...\"`");
            c.problem(Some(s.backend.span()), field, why);
            Storage::Sqlite
        }
        ("postgres" | "nats", Some((span, url))) => match Storage::at(&url, replicas) {
            Some(storage) if storage.backend() == backend => storage,
            _ => {
                let schemes = if backend == "nats" {
                    "a nats:// or tls:// URL (comma-separated for several servers)"
                } else {
                    "a postgres:// or postgresql:// URL"
                };
                let why = format!("`{}` is not {schemes}", panal_nats::redact(&url));
                c.problem(Some(span), field, why);
                Storage::Sqlite
            }
        },
        (other, _) => {
            c.problem(
                Some(s.backend.span()),
                "storage.backend".into(),
                format!("unknown backend `{other}`; expected `sqlite`, `postgres` or `nats`"),
            );
            Storage::Sqlite
        }
    }
}

impl Storage {
    /// The shared backend `url` names: `postgres://` or `postgresql://` for PostgreSQL,
    /// `nats://` or `tls://` (comma-separated for several servers) for JetStream KV with
    /// `replicas` copies. `None` for anything else.
    pub fn at(url: &str, replicas: usize) -> Option<Storage> {
        let is = |part: &str, prefixes: &[&str]| {
            prefixes
                .iter()
                .any(|p| part.starts_with(p) && part.len() > p.len())
        };
        if is(url, &["postgres://", "postgresql://"]) {
            Some(Storage::Postgres { url: url.into() })
        } else if url.split(',').all(|part| is(part, &["nats://", "tls://"])) {
            Some(Storage::Nats {
                url: url.into(),
                replicas,
            })
        } else {
            None
        }
    }

    /// The manifest's name of this backend.
    pub fn backend(&self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite",
            Storage::Postgres { .. } => "postgres",
            Storage::Nats { .. } => "nats",
        }
    }
}

/// `[cluster]`: the cluster's `name` (`A-Z a-z 0-9 _ -`, what its NATS service and
/// subjects are called), the `nats` servers its hosts meet on (default the local
/// one) and the `replicas` of its deploy buckets.
pub(super) fn cluster(
    c: &mut Checker,
    raw: Option<super::raw::RawCluster>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<ClusterSpec> {
    let raw = raw?;
    let name = raw.name.get_ref().clone();
    if !valid_cluster_name(&name) {
        let why = format!(
            "`{name}` is not a cluster name: 1-64 of A-Z a-z 0-9 _ - (it names the NATS \
             service and subjects)"
        );
        c.problem(Some(raw.name.span()), "cluster.name".into(), why);
    }
    let nats = match raw.nats {
        None => "nats://127.0.0.1:4222".to_string(),
        Some(u) => match substitute_env(u.get_ref(), env) {
            Ok(url) if matches!(Storage::at(&url, 1), Some(Storage::Nats { .. })) => url,
            Ok(url) => {
                let why = format!(
                    "`{}` is not a nats:// or tls:// URL",
                    panal_nats::redact(&url)
                );
                c.problem(Some(u.span()), "cluster.nats".into(), why);
                url
            }
            Err(why) => {
                c.problem(Some(u.span()), "cluster.nats".into(), why);
                String::new()
            }
        },
    };
    let replicas = raw
        .replicas
        .as_ref()
        .map_or(1, |r| replicas(c, r, "cluster.replicas"));
    let key = raw
        .key
        .and_then(|k| match substitute_env(k.get_ref(), env) {
            Ok(key) if key.len() >= 32 => Some(key),
            Ok(key) => {
                let why = format!(
                    "the cluster key has {} bytes; it needs at least 32 (`openssl rand -hex 32` \
                 makes one; write `key = \"${{PANAL_CLUSTER_KEY}}\"` to keep it out of the file)",
                    key.len()
                );
                c.problem(Some(k.span()), "cluster.key".into(), why);
                None
            }
            Err(why) => {
                c.problem(Some(k.span()), "cluster.key".into(), why);
                None
            }
        });
    Some(ClusterSpec {
        name,
        nats,
        replicas,
        key,
    })
}

/// Copies of a JetStream bucket or stream: 1 to 5.
pub(super) fn replicas(c: &mut Checker, r: &toml::Spanned<i64>, field: &str) -> usize {
    match usize::try_from(*r.get_ref()) {
        Ok(n @ 1..=5) => n,
        _ => {
            let why = format!(
                "{} copies: a JetStream bucket has 1 to 5 replicas",
                r.get_ref()
            );
            c.problem(Some(r.span()), field.into(), why);
            1
        }
    }
}

/// Whether `name` may name a cluster.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
