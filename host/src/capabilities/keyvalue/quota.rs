//! Bounds on what a component may make the host store or build: a size cap on keys and
//! values, a cap on keys per batch call and on the bytes a batch read returns, and a
//! quota per component (bytes and keys, manifest `limits.kv_max_mb` and
//! `limits.kv_max_keys`). Past any of them the call fails with the keyvalue error, which
//! names the limit; nothing is written, the host never traps and the disk never fills.
//!
//! [`Quota`] wraps any [`KvStore`]: usage is read from the store at open, then kept in
//! memory. Writes of one component pass one at a time through its quota (as they pass
//! one at a time through SQLite's single writer anyway), so the check and the write
//! cannot race. Far from the quota (under 90%), a write is counted as all new bytes and
//! the store is not asked what it replaces (the usage is then an overestimate, and a
//! write costs nothing extra); close to it, or when the overestimate would refuse a
//! write, the usage is read again from the store and every write counts exactly what
//! it replaces.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{KvError, KvStore};

/// Most bytes in one key.
pub const MAX_KEY_BYTES: usize = 1024;
/// Most bytes in one value.
pub const MAX_VALUE_BYTES: usize = 4 << 20;
/// Most keys in one batch call (`get-many`, `set-many`, `delete-many`).
pub const MAX_BATCH_KEYS: usize = 1000;
/// Most bytes of values one `get-many` returns.
pub const MAX_BATCH_BYTES: u64 = 16 << 20;

/// A component's storage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Most bytes of keys and values.
    pub max_bytes: u64,
    /// Most keys.
    pub max_keys: u64,
}

impl KvLimits {
    /// The quota `limits` (a component's manifest `limits`) sets.
    pub fn of(limits: &crate::manifest::Limits) -> Self {
        Self {
            max_bytes: limits.kv_max_mb << 20,
            max_keys: limits.kv_max_keys,
        }
    }
}

/// Each component's quota on a shared backend, kept across its versions (a new version
/// gets the same namespace with its own limits).
#[derive(Default)]
pub struct Namespaces(Mutex<HashMap<String, Arc<Quota>>>);

impl Namespaces {
    /// The namespace of `component` under `limits`: the one already open, or the store
    /// `open` makes, behind a new quota.
    pub async fn get_or_open<F, Fut>(
        &self,
        component: &str,
        limits: KvLimits,
        open: F,
    ) -> anyhow::Result<Arc<dyn KvStore>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = anyhow::Result<Arc<dyn KvStore>>>,
    {
        let mut namespaces = self.0.lock().await;
        if let Some(quota) = namespaces.get(component) {
            quota.set_limits(limits);
            return Ok(quota.clone());
        }
        let quota = Arc::new(Quota::new(open().await?, limits).await?);
        namespaces.insert(component.to_string(), quota.clone());
        Ok(quota)
    }
}

/// Keys and bytes in use.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    bytes: u64,
    keys: u64,
    /// Whether `bytes` and `keys` are exact (else an overestimate).
    exact: bool,
}

/// A store under a quota.
pub struct Quota {
    inner: Arc<dyn KvStore>,
    usage: Mutex<Usage>,
    max_bytes: AtomicU64,
    max_keys: AtomicU64,
}

impl Quota {
    /// `inner` under `limits`, its usage read from it now.
    pub async fn new(inner: Arc<dyn KvStore>, limits: KvLimits) -> Result<Self, KvError> {
        let (keys, bytes) = inner.usage().await?;
        let quota = Self {
            inner,
            usage: Mutex::new(Usage {
                bytes,
                keys,
                exact: true,
            }),
            max_bytes: AtomicU64::new(0),
            max_keys: AtomicU64::new(0),
        };
        quota.set_limits(limits);
        Ok(quota)
    }

    /// Apply new limits (a deploy may change them); what is stored stays.
    pub fn set_limits(&self, limits: KvLimits) {
        self.max_bytes.store(limits.max_bytes, Ordering::Relaxed);
        self.max_keys.store(limits.max_keys, Ordering::Relaxed);
    }

    /// Run `write` if giving each key of `changes` its new value size (`None`: deleted)
    /// keeps the component within its quota; the usage follows when `applied` says the
    /// write took effect.
    async fn within<T>(
        &self,
        bucket: &str,
        changes: &[(&str, Option<usize>)],
        write: impl std::future::Future<Output = Result<T, KvError>>,
        applied: impl Fn(&T) -> bool,
    ) -> Result<T, KvError> {
        // A key named twice in one batch ends with its last value.
        let changes: std::collections::BTreeMap<&str, Option<usize>> =
            changes.iter().copied().collect();
        let mut usage = self.usage.lock().await;
        let (max_bytes, max_keys) = (
            self.max_bytes.load(Ordering::Relaxed),
            self.max_keys.load(Ordering::Relaxed),
        );
        let roomy = |u: &Usage| u.bytes < max_bytes / 10 * 9 && u.keys < max_keys / 10 * 9;
        if usage.exact && roomy(&usage) {
            usage.exact = false;
        }
        if !usage.exact {
            // Counted as if every key were new and nothing deleted: an overestimate.
            let mut rough = *usage;
            for (key, new_len) in &changes {
                if let Some(new) = new_len {
                    rough.bytes += key.len() as u64 + *new as u64;
                    rough.keys += 1;
                }
            }
            if rough.bytes <= max_bytes && rough.keys <= max_keys {
                let out = write.await?;
                if applied(&out) {
                    *usage = rough;
                }
                return Ok(out);
            }
            let (keys, bytes) = self.inner.usage().await?;
            *usage = Usage {
                bytes,
                keys,
                exact: true,
            };
        }
        let mut next = *usage;
        for (key, new_len) in &changes {
            let old = self.inner.value_len(bucket, key).await?;
            if let Some(old) = old {
                next.bytes = next.bytes.saturating_sub(key.len() as u64 + old);
                next.keys = next.keys.saturating_sub(1);
            }
            if let Some(new) = new_len {
                next.bytes += key.len() as u64 + *new as u64;
                next.keys += 1;
            }
        }
        // Shrinking is always allowed, even over a quota lowered since.
        let grows = next.bytes > usage.bytes || next.keys > usage.keys;
        if grows && next.bytes > max_bytes {
            tracing::warn!(bucket, max_bytes, "limit hit: kv_max_mb; write refused");
            return Err(KvError::Limit(format!(
                "storage quota exceeded: this write would use {} bytes, over limits.kv_max_mb ({} MiB)",
                next.bytes,
                max_bytes >> 20
            )));
        }
        if grows && next.keys > max_keys {
            tracing::warn!(bucket, max_keys, "limit hit: kv_max_keys; write refused");
            return Err(KvError::Limit(format!(
                "storage quota exceeded: this write would make {} keys, over limits.kv_max_keys ({max_keys})",
                next.keys
            )));
        }
        let out = write.await?;
        if applied(&out) {
            *usage = next;
        }
        Ok(out)
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Limit(format!(
            "key of {} bytes is over the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(key: &str, value: &[u8]) -> Result<(), KvError> {
    check_key(key)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Limit(format!(
            "value of {} bytes is over the {MAX_VALUE_BYTES}-byte limit",
            value.len()
        )));
    }
    Ok(())
}

fn check_batch(n: usize) -> Result<(), KvError> {
    if n > MAX_BATCH_KEYS {
        return Err(KvError::Limit(format!(
            "{n} keys in one batch call; at most {MAX_BATCH_KEYS}"
        )));
    }
    Ok(())
}

#[async_trait]
impl KvStore for Quota {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        self.inner.get(bucket, key).await
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_value(key, value)?;
        self.within(
            bucket,
            &[(key, Some(value.len()))],
            self.inner.set(bucket, key, value),
            |_| true,
        )
        .await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        self.within(
            bucket,
            &[(key, None)],
            self.inner.delete(bucket, key),
            |_| true,
        )
        .await
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        self.inner.exists(bucket, key).await
    }

    async fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        self.inner.list_keys(bucket, cursor).await
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        // A counter is at most 20 decimal digits; charge that much.
        self.within(
            bucket,
            &[(key, Some(20))],
            self.inner.increment(bucket, key, delta),
            |_| true,
        )
        .await
    }

    async fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        check_value(key, new)?;
        self.within(
            bucket,
            &[(key, Some(new.len()))],
            self.inner.compare_and_swap(bucket, key, expected, new),
            |swapped| *swapped,
        )
        .await
    }

    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        check_batch(keys.len())?;
        let mut total = 0u64;
        for key in keys {
            check_key(key)?;
            total += self.inner.value_len(bucket, key).await?.unwrap_or(0);
        }
        if total > MAX_BATCH_BYTES {
            return Err(KvError::Limit(format!(
                "get-many would return {total} bytes; at most {MAX_BATCH_BYTES}"
            )));
        }
        self.inner.get_many(bucket, keys).await
    }

    async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        check_batch(pairs.len())?;
        for (key, value) in pairs {
            check_value(key, value)?;
        }
        let changes: Vec<(&str, Option<usize>)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.len())))
            .collect();
        self.within(bucket, &changes, self.inner.set_many(bucket, pairs), |_| {
            true
        })
        .await
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), KvError> {
        check_batch(keys.len())?;
        for key in keys {
            check_key(key)?;
        }
        let changes: Vec<(&str, Option<usize>)> = keys.iter().map(|k| (k.as_str(), None)).collect();
        self.within(
            bucket,
            &changes,
            self.inner.delete_many(bucket, keys),
            |_| true,
        )
        .await
    }

    async fn usage(&self) -> Result<(u64, u64), KvError> {
        // Exact, from the store (what is kept in memory may be an overestimate).
        self.inner.usage().await
    }

    async fn value_len(&self, bucket: &str, key: &str) -> Result<Option<u64>, KvError> {
        self.inner.value_len(bucket, key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::keyvalue::KvBackend;

    #[tokio::test]
    async fn the_quota_is_exact_where_it_matters_and_free_far_from_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let backend =
            crate::capabilities::keyvalue::sqlite::SqliteBackend::new(dir.path().to_path_buf())
                .expect("dir");
        let limits = KvLimits {
            max_bytes: 1 << 20,
            max_keys: 100,
        };
        let s = backend.namespace("q", limits).await.expect("open");
        for i in 0..100 {
            s.set("b", &format!("k{i:03}"), b"v").await.expect("fits");
        }
        // An overwrite adds no key, even when the rough count says it would.
        s.set("b", "k000", b"again").await.expect("overwrite");
        let refused = s.set("b", "k100", b"v").await.expect_err("over");
        assert!(refused.to_string().contains("kv_max_keys"), "{refused}");
        s.delete("b", "k050").await.expect("delete");
        s.set("b", "k100", b"v").await.expect("room again");
        assert_eq!(s.usage().await.expect("usage").0, 100);
        let too_big = s.set("b", "big", &vec![0; MAX_VALUE_BYTES + 1]).await;
        assert!(too_big.is_err());
        let many: Vec<String> = (0..=MAX_BATCH_KEYS).map(|i| i.to_string()).collect();
        assert!(s.get_many("b", &many).await.is_err());
        backend.close().await;
    }
}
