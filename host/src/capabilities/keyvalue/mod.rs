//! Keyed storage: one backend trait, its backends, and the `wasi:keyvalue` host written
//! once over the trait.
//!
//! - [`KvBackend`] opens one [`KvStore`] per component: database per service, so one
//!   component never sees another's keys.
//! - [`sqlite`]: the embedded default, one WAL SQLite file per component.
//! - [`postgres`]: one PostgreSQL database shared by several hosts, a namespace per
//!   component in one table.
//! - [`nats`]: JetStream KV on a NATS server or cluster, a bucket per component.
//! - [`Prefixed`]: the shared backends (PostgreSQL, NATS) of a cluster name each
//!   component's namespace `CLUSTER_COMPONENT`, so deployments sharing one server never
//!   see each other's data.
//! - [`host`]: `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` over `Arc<dyn KvStore>`,
//!   checking bucket grants.
//! - `grant`: the [`Keyvalue`] capability: a bucket is needed to import it, the
//!   namespace is opened at load.
//! - [`quota`]: size caps on keys, values and batches, and each component's quota.
//!
//! Counters written by `increment` are stored as decimal ASCII (`b"42"`), so a plain
//! `get` reads them back as text.

mod grant;
pub mod host;
pub mod nats;
pub mod postgres;
pub mod quota;
pub mod sqlite;

pub use grant::Keyvalue;

use async_trait::async_trait;
use std::sync::Arc;

/// A storage failure, reported to the guest as `error::other` with its text. When the
/// backend itself failed or could not be reached (a restart, a partition) the text
/// starts with `storage unavailable: `: worth trying again soon. Guests may rely on it
/// (the SDK answers such a failure 503 with `Retry-After`).
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The database (SQLite, PostgreSQL) failed.
    #[error("storage unavailable: {0}")]
    Database(#[from] sqlx::Error),
    /// The NATS server failed (JetStream KV).
    #[error("storage unavailable: {0}")]
    Nats(#[from] panal_nats::MsgError),
    /// `increment` on a value that is not an integer.
    #[error("value of key `{key}` is not an integer counter")]
    NotACounter {
        /// The key.
        key: String,
    },
    /// `increment` past `i64`.
    #[error("incrementing key `{key}` by {delta} overflows")]
    Overflow {
        /// The key.
        key: String,
        /// What was added.
        delta: i64,
    },
    /// A read-modify-write lost to other writers every time it tried.
    #[error("{op} of key `{key}` lost {races} races in a row; try again")]
    Contended {
        /// `increment` or `compare-and-swap`.
        op: &'static str,
        /// The key.
        key: String,
        /// How many times it tried.
        races: u32,
    },
    /// A limit refused it (the component's quota, a key, value or batch size, what the
    /// server stores); the text names the limit.
    #[error("{0}")]
    Limit(String),
    /// No answer within [`OP_TIMEOUT`]: the backend is out of reach (a link that drops
    /// bytes leaves connections open and silent).
    #[error("storage unavailable: no answer within {}s", OP_TIMEOUT.as_secs())]
    NoAnswer,
}

impl KvError {
    /// Whether the backend failed or was out of reach, rather than refused the call.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Nats(_) | Self::NoAnswer)
    }
}

/// The longest one storage operation may take before it fails as out of reach; far
/// beyond a healthy database's answer, within most requests' deadlines.
pub const OP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// An operation still waiting this long when its run's deadline stopped it was waiting
/// on an outage (a healthy database answers in milliseconds).
pub const STALLED: std::time::Duration = std::time::Duration::from_secs(1);

/// Most keys one `list-keys` call returns; the cursor fetches the next page.
pub const LIST_PAGE: usize = 1000;

/// One `list-keys` page from up to [`LIST_PAGE`] + 1 keys read in order: the extra key
/// only tells that another page follows, whose cursor is this page's last key.
pub(crate) fn page(mut keys: Vec<String>) -> (Vec<String>, Option<String>) {
    if keys.len() > LIST_PAGE {
        keys.truncate(LIST_PAGE);
        let cursor = keys.last().cloned();
        (keys, cursor)
    } else {
        (keys, None)
    }
}

/// A storage backend: hands out one isolated namespace per component.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// The namespace of `component`, created on first use, under `limits` (the same
    /// namespace, with its limits updated, when asked again).
    async fn namespace(
        &self,
        component: &str,
        limits: quota::KvLimits,
    ) -> anyhow::Result<Arc<dyn KvStore>>;
    /// Flush and close everything (on shutdown).
    async fn close(&self);
}

/// One component's keys, grouped in buckets.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// The value of `key`, if any.
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Set `key` to `value`.
    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Remove `key`; absent keys are fine.
    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError>;
    /// Whether `key` has a value.
    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError>;
    /// Keys after `cursor` in key order, at most [`LIST_PAGE`], and the cursor for the
    /// next page (`None` on the last page).
    async fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError>;
    /// Atomically add `delta` to the counter at `key` (absent: 0) and return the result.
    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Atomically set `key` to `new` if its value is still `expected` (`None`: absent).
    async fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError>;
    /// Values of `keys`, in order.
    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError>;
    /// Set all pairs in one transaction.
    async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError>;
    /// Delete all keys in one transaction.
    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), KvError>;
    /// Keys and bytes (keys plus values) stored, across buckets.
    async fn usage(&self) -> Result<(u64, u64), KvError>;
    /// The size of `key`'s value, if it has one.
    async fn value_len(&self, bucket: &str, key: &str) -> Result<Option<u64>, KvError>;
}

/// A backend shared with other deployments, each component's namespace named
/// `PREFIX` + its name (`CLUSTER_` in a cluster: component names have no `_`, so no two
/// clusters' names meet).
pub struct Prefixed {
    /// The shared backend.
    pub inner: Arc<dyn KvBackend>,
    /// Put before every component's name.
    pub prefix: String,
}

#[async_trait]
impl KvBackend for Prefixed {
    async fn namespace(
        &self,
        component: &str,
        limits: quota::KvLimits,
    ) -> anyhow::Result<Arc<dyn KvStore>> {
        let name = format!("{}{component}", self.prefix);
        self.inner.namespace(&name, limits).await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}
