//! The shared storage backend on NATS: one JetStream KV bucket per component
//! (`panal_kv_<component>`), replicated as the cluster is configured, so every host of
//! a cluster reads and writes the same keys without a database.
//!
//! A guest's bucket and key become one NATS key `<bucket>.<key>`, each part escaped
//! (bytes other than `A-Z a-z 0-9 - _ /` as `=HH`; an empty part as `=`), so any key a
//! guest may use is a valid NATS key and `nats kv ls` stays readable.
//!
//! `increment` and compare-and-swap read the entry and write it back only if its
//! revision is unchanged, which the server checks: a write that lost the race reads
//! again. Batches are not atomic here (`wasi:keyvalue/batch` does not promise that);
//! `get-many` reads each key on its own. A value is at most the server's
//! `max_payload` (1 MiB by default).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::try_join_all;
use panal_nats::kv::{KvBucket, Written};
use panal_nats::{Auth, Nats};

use super::quota::{KvLimits, Namespaces};
use super::{page, KvBackend, KvError, KvStore, LIST_PAGE};

/// How long the first connection may take before the host refuses to start.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Operations one batch call keeps in flight.
const BATCH_IN_FLIGHT: usize = 64;
/// Lost races one `increment` or compare-and-swap tolerates before it gives up.
const MAX_RACES: u32 = 1000;
/// Room for the key and headers next to a value within `max_payload`.
const ENVELOPE: usize = 4096;

/// JetStream KV buckets on one NATS server or cluster.
pub struct NatsKvBackend {
    nats: Nats,
    replicas: usize,
    /// Each component's quota, kept across its versions (as the SQLite backend does).
    open: Namespaces,
}

impl NatsKvBackend {
    /// Connect to `url` presenting `auth`; buckets get `replicas` copies.
    pub async fn connect(url: &str, auth: &Auth, replicas: usize) -> anyhow::Result<Self> {
        let nats = Nats::connect(url, auth)
            .await
            .map_err(|e| anyhow::anyhow!("storage: cannot connect to NATS: {e}"))?;
        nats.ready(url, CONNECT_WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("storage: {e}"))?;
        let url = panal_nats::redact(url);
        let version = nats.server_version();
        if replicas > 1 && !serializes_replicated_writes(&version) {
            anyhow::bail!(
                "storage: nats-server {version} at {url} can accept two racing conditional \
                 writes to a replicated bucket (nats-server#4320), which would lose increments \
                 and compare-and-swaps: use nats-server 2.10 or newer, or replicas = 1"
            );
        }
        Ok(Self {
            nats,
            replicas,
            open: Namespaces::default(),
        })
    }
}

#[async_trait]
impl KvBackend for NatsKvBackend {
    async fn namespace(
        &self,
        component: &str,
        limits: KvLimits,
    ) -> anyhow::Result<Arc<dyn KvStore>> {
        self.open
            .get_or_open(component, limits, || async {
                let bucket = self
                    .nats
                    .kv_bucket(&format!("panal_kv_{component}"), self.replicas)
                    .await
                    .map_err(|e| anyhow::anyhow!("storage: {e}"))?;
                let store: Arc<dyn KvStore> = Arc::new(NatsStore {
                    bucket,
                    nats: self.nats.clone(),
                });
                Ok(store)
            })
            .await
    }

    async fn close(&self) {
        // Every write was acknowledged by the server; nothing is buffered.
        let _ = self.nats.flush().await;
    }
}

/// Whether nats-server `version` checks a replicated stream's expected revision as part
/// of the write (2.10 and newer), not only before proposing it.
fn serializes_replicated_writes(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.');
    let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
    matches!((next(), next()), (Some(major), Some(minor)) if (major, minor) >= (2, 10))
}

/// One component's bucket.
struct NatsStore {
    bucket: KvBucket,
    nats: Nats,
}

/// One part of a NATS key: `A-Z a-z 0-9 - _ /` as they are, other bytes `=HH`, and the
/// empty string `=`.
fn escape(part: &str) -> String {
    if part.is_empty() {
        return "=".into();
    }
    let mut out = String::with_capacity(part.len());
    for b in part.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// The part [`escape`] made, or `None` for what it never makes.
fn unescape(part: &str) -> Option<String> {
    if part == "=" {
        return Some(String::new());
    }
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn key_of(bucket: &str, key: &str) -> String {
    format!("{}.{}", escape(bucket), escape(key))
}

impl NatsStore {
    /// Refuse a value the server would refuse, saying why.
    fn fits(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let max = self.nats.max_payload();
        if max > 0 && value.len() + ENVELOPE > max {
            return Err(KvError::Limit(format!(
                "value of key `{key}` ({} bytes) is over what the NATS server stores \
                 (max_payload {max} bytes, less {ENVELOPE} for the key): raise max_payload \
                 in nats-server's configuration",
                value.len()
            )));
        }
        Ok(())
    }

    /// Write `value` if `key` is still at `seen` (its revision; `None`: no value).
    async fn write_if(&self, key: &str, value: &[u8], seen: Option<u64>) -> Result<bool, KvError> {
        let value = Bytes::copy_from_slice(value);
        let written = match seen {
            Some(revision) => self.bucket.update(key, value, revision).await?,
            None => self.bucket.create(key, value).await?,
        };
        Ok(matches!(written, Written::At(_)))
    }
}

#[async_trait]
impl KvStore for NatsStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let entry = self.bucket.entry(&key_of(bucket, key)).await?;
        Ok(entry.map(|(value, _)| value.to_vec()))
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.fits(key, value)?;
        let value = Bytes::copy_from_slice(value);
        self.bucket.put(&key_of(bucket, key), value).await?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        Ok(self.bucket.delete(&key_of(bucket, key)).await?)
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.bucket.entry(&key_of(bucket, key)).await?.is_some())
    }

    async fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        // The server keeps no order we could page by: read the bucket's keys, sort them
        // bytewise as the other backends do, and cut the page after the cursor.
        let prefix = format!("{}.", escape(bucket));
        let found = self.bucket.scan(&format!("{prefix}*")).await?;
        let mut keys: Vec<String> = found
            .iter()
            .filter_map(|s| s.key.strip_prefix(prefix.as_str()).and_then(unescape))
            .filter(|k| cursor.is_none_or(|c| k.as_str() > c))
            .collect();
        keys.sort_unstable();
        keys.truncate(LIST_PAGE + 1);
        Ok(page(keys))
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let at = key_of(bucket, key);
        for _ in 0..MAX_RACES {
            let entry = self.bucket.entry(&at).await?;
            let current = match &entry {
                None => 0,
                Some((value, _)) => std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .ok_or_else(|| KvError::NotACounter {
                        key: key.to_string(),
                    })?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Overflow {
                    key: key.to_string(),
                    delta,
                })?;
            let seen = entry.map(|(_, revision)| revision);
            if self
                .write_if(&at, next.to_string().as_bytes(), seen)
                .await?
            {
                return Ok(next);
            }
        }
        Err(KvError::Contended {
            op: "increment",
            key: key.to_string(),
            races: MAX_RACES,
        })
    }

    async fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        self.fits(key, new)?;
        let at = key_of(bucket, key);
        for _ in 0..MAX_RACES {
            let entry = self.bucket.entry(&at).await?;
            if entry.as_ref().map(|(value, _)| value.as_ref()) != expected {
                return Ok(false);
            }
            // Lost to a write between our read and ours: the value may have come back
            // to `expected`, so read again rather than answer `false`.
            if self.write_if(&at, new, entry.map(|(_, r)| r)).await? {
                return Ok(true);
            }
        }
        Err(KvError::Contended {
            op: "compare-and-swap",
            key: key.to_string(),
            races: MAX_RACES,
        })
    }

    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_IN_FLIGHT) {
            out.extend(try_join_all(chunk.iter().map(|k| self.get(bucket, k))).await?);
        }
        Ok(out)
    }

    async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        for (key, value) in pairs {
            self.fits(key, value)?;
        }
        for chunk in pairs.chunks(BATCH_IN_FLIGHT) {
            try_join_all(chunk.iter().map(|(k, v)| self.set(bucket, k, v))).await?;
        }
        Ok(())
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), KvError> {
        for chunk in keys.chunks(BATCH_IN_FLIGHT) {
            try_join_all(chunk.iter().map(|k| self.delete(bucket, k))).await?;
        }
        Ok(())
    }

    async fn usage(&self) -> Result<(u64, u64), KvError> {
        let found = self.bucket.scan(">").await?;
        let bytes = found
            .iter()
            .map(|s| {
                let key = s.key.split_once('.').and_then(|(_, k)| unescape(k));
                key.map_or(0, |k| k.len() as u64) + s.size
            })
            .sum();
        Ok((found.len() as u64, bytes))
    }

    async fn value_len(&self, bucket: &str, key: &str) -> Result<Option<u64>, KvError> {
        let entry = self.bucket.entry(&key_of(bucket, key)).await?;
        Ok(entry.map(|(value, _)| value.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::{escape, unescape};

    #[test]
    fn replicated_buckets_need_a_server_that_serializes_their_writes() {
        use super::serializes_replicated_writes as ok;
        assert!(ok("2.10.0") && ok("2.12.8") && ok("3.0.1"));
        assert!(!ok("2.9.10") && !ok("2.9.25") && !ok("") && !ok("junk"));
    }

    #[test]
    fn keys_escape_to_nats_keys_and_back() {
        for part in ["", "user:42", "a.b", "=", "ünï/code", "plain-key_1", " "] {
            let escaped = escape(part);
            assert!(
                escaped
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/=".contains(&b)),
                "{escaped}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(part), "{part:?}");
        }
        assert_eq!(escape("user:42"), "user=3A42");
        assert_eq!(unescape("=4"), None);
        assert_eq!(unescape("=ZZ"), None);
        assert_eq!(unescape("=+1"), None);
    }
}
