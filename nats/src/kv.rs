//! JetStream key-value buckets, as Panal's shared storage uses them: read an entry with
//! its revision, write only if the revision is still the one read (the server checks,
//! so this is atomic across hosts), and scan the keys under a prefix.
//!
//! Keys here are already valid NATS KV keys; turning a guest's key into one is the
//! storage backend's business.

use std::time::Duration;

use async_nats::jetstream::consumer::{push, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::{MsgError, Nats};

/// How long one scan waits for its next entry before giving up.
const SCAN_WAIT: Duration = Duration::from_secs(10);

/// One JetStream KV bucket (a stream `KV_<name>`), history of one.
#[derive(Clone)]
pub struct KvBucket {
    store: kv::Store,
    client: async_nats::Client,
}

/// What a conditional write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Done, at this revision.
    At(u64),
    /// The key had moved on (another revision, or it exists for a create).
    Conflict,
}

/// One key found by [`KvBucket::scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// The key, as stored.
    pub key: String,
    /// Size of its value in bytes.
    pub size: u64,
}

fn other(what: &str, err: impl std::fmt::Display) -> MsgError {
    MsgError::Other(format!("jetstream kv {what}: {err}"))
}

impl Nats {
    /// The bucket `name`, created (file storage, `replicas` copies) if it is missing.
    /// Several hosts may open it at once: creating an identical bucket twice is fine.
    ///
    /// With replicas, reads go to the bucket's leader (no "direct get", which any
    /// replica answers and a follower may answer from behind): a read then sees every
    /// write acknowledged before it, whichever host wrote.
    pub async fn kv_bucket(&self, name: &str, replicas: usize) -> Result<KvBucket, MsgError> {
        let js = self.js();
        // What async-nats's `create_key_value` makes, but for `allow_direct`.
        let config = stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: replicas <= 1,
            num_replicas: replicas.max(1),
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let created = js.create_stream(config).await.err();
        // Made before with other settings (replicas): use it as it is.
        let store = js.get_key_value(name).await.map_err(|e| {
            let why = match created {
                Some(created) => format!("cannot create ({created}) or open ({e})"),
                None => format!("cannot open ({e})"),
            };
            other(&format!("bucket `{name}`"), why)
        })?;
        Ok(KvBucket {
            store,
            client: self.client.clone(),
        })
    }
}

impl KvBucket {
    /// The value of `key` and its revision, if it has a value (not deleted).
    pub async fn entry(&self, key: &str) -> Result<Option<(Bytes, u64)>, MsgError> {
        let entry = self.store.entry(key).await.map_err(|e| other("get", e))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| (e.value, e.revision)))
    }

    /// Set `key`, whatever it held.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, MsgError> {
        self.store
            .put(key, value)
            .await
            .map_err(|e| other("put", e))
    }

    /// Set `key` only if it has no value (never set, or deleted).
    pub async fn create(&self, key: &str, value: Bytes) -> Result<Written, MsgError> {
        match self.store.create(key, value).await {
            Ok(revision) => Ok(Written::At(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Written::Conflict),
            Err(e) => Err(other("create", e)),
        }
    }

    /// Set `key` only if its revision is still `revision`.
    pub async fn update(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Written, MsgError> {
        match self.store.update(key, value, revision).await {
            Ok(revision) => Ok(Written::At(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Written::Conflict),
            // A replicated bucket refuses a write whose check raced another in flight
            // with its own code (10164), which the client does not map: a conflict too.
            Err(e) if e.to_string().contains("wrong last sequence") => Ok(Written::Conflict),
            Err(e) => Err(other("update", e)),
        }
    }

    /// Delete `key` (a tombstone; absent keys are fine).
    pub async fn delete(&self, key: &str) -> Result<(), MsgError> {
        self.store.delete(key).await.map_err(|e| other("delete", e))
    }

    /// The value of every key (`None`: deleted), first as they are now, then each
    /// change as it happens, for as long as the stream is read.
    pub async fn watch(&self) -> Result<BoxStream<'static, (String, Option<Bytes>)>, MsgError> {
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| other("watch", e))?;
        Ok(watch
            .filter_map(|entry| async move {
                let entry = entry.ok()?;
                let value = (entry.operation == Operation::Put).then_some(entry.value);
                Some((entry.key, value))
            })
            .boxed())
    }

    /// Every key with a value whose name matches `filter` (a NATS subject filter over
    /// keys, `>` for all), with its value's size, in no particular order.
    pub async fn scan(&self, filter: &str) -> Result<Vec<Scanned>, MsgError> {
        let prefix = format!("$KV.{}.", self.store.name);
        // Only headers: the server says each value's size in `Nats-Msg-Size`.
        let consumer = self
            .store
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{prefix}{filter}"),
                headers_only: true,
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| other("scan", e))?;
        let mut pending = consumer.cached_info().num_pending;
        let mut messages = consumer.messages().await.map_err(|e| other("scan", e))?;
        let mut found = Vec::new();
        while pending > 0 {
            let message = match tokio::time::timeout(SCAN_WAIT, messages.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Err(other("scan", e)),
                Ok(None) => return Err(other("scan", "the consumer ended early")),
                Err(_) => return Err(other("scan", "no entry within 10 s")),
            };
            pending = message.info().map_err(|e| other("scan", e))?.pending;
            let headers = message.headers.as_ref();
            let op = headers
                .and_then(|h| h.get("KV-Operation"))
                .map(|v| v.as_str());
            if matches!(op, Some("DEL" | "PURGE")) {
                continue;
            }
            let size = headers
                .and_then(|h| h.get("Nats-Msg-Size"))
                .and_then(|v| v.as_str().parse().ok())
                .unwrap_or(0);
            if let Some(key) = message.subject.strip_prefix(prefix.as_str()) {
                found.push(Scanned {
                    key: key.to_string(),
                    size,
                });
            }
        }
        Ok(found)
    }
}
