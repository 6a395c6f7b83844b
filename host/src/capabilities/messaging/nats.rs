//! The NATS backend of [`Broker`], over the host's one shared client from `panal-nats`.
//!
//! Subjects captured by a manifest stream are durable: a publish returns once JetStream
//! stored it, or once the [`Outbox`] did while NATS is unreachable; a relay task then
//! hands the outbox to JetStream in order as soon as NATS is back, also after a restart.
//! Durable subscriptions are JetStream durable pull consumers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use panal_nats::jetstream::{ConsumerSpec, JsAcker};
use panal_nats::Nats;
use tokio::sync::Notify;

use super::outbox::Outbox;
use super::{
    subject_matches, Ack, Broker, DurableSub, Incoming, Msg, MsgError, Settle, StreamSpec,
};

/// How long a durable publish waits for JetStream before the outbox takes it.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// Tries of one outbox row that NATS answered with an error (not an outage) before the
/// row is dead-lettered.
const MAX_RELAY_TRIES: u32 = 5;

/// Messaging over NATS.
pub struct NatsBroker {
    nats: Nats,
    streams: Vec<StreamSpec>,
    outbox: Outbox,
    /// Messages in the outbox; while any wait, new durable publishes queue behind them.
    backlog: AtomicI64,
    wake: Notify,
    /// Outbox rows given up on.
    dead: AtomicU64,
}

impl NatsBroker {
    /// A broker over `nats` that keeps `streams`, with its outbox under `data_dir`; the
    /// relay runs until the process ends.
    pub async fn start(
        nats: Nats,
        streams: Vec<StreamSpec>,
        data_dir: &Path,
    ) -> anyhow::Result<Arc<Self>> {
        let outbox = Outbox::open(&data_dir.join("outbox.db")).await?;
        let backlog = outbox.len().await?;
        if backlog > 0 {
            tracing::info!(backlog, "outbox holds durable messages from an earlier run");
        }
        let broker = Arc::new(Self {
            nats,
            streams,
            outbox,
            backlog: AtomicI64::new(backlog),
            wake: Notify::new(),
            dead: AtomicU64::new(0),
        });
        tokio::spawn(relay(broker.clone()));
        Ok(broker)
    }

    /// Wait up to `within` for the first connection (and make the streams); a host whose
    /// NATS is not up yet still starts and catches up when it is.
    pub async fn ready(&self, within: Duration) {
        if !self.nats.wait_connected(within).await {
            tracing::warn!("NATS is not reachable yet; starting anyway and retrying");
            return;
        }
        for stream in &self.streams {
            if let Err(e) = self.nats.ensure_stream(stream).await {
                tracing::warn!(%e, "cannot create stream yet");
            }
        }
    }

    fn stream_for(&self, subject: &str) -> Option<&StreamSpec> {
        self.streams
            .iter()
            .find(|s| s.subjects.iter().any(|p| subject_matches(p, subject)))
    }

    async fn publish_durable(&self, stream: &StreamSpec, msg: Msg) -> Result<(), MsgError> {
        let msg_id = uuid::Uuid::new_v4().to_string();
        // A message NATS can never take is the guest's error now, not the outbox's
        // problem later (it would block every durable message behind it).
        self.nats.check(&msg.clone())?;
        if self.backlog.load(Ordering::Acquire) == 0 {
            let sent = self
                .nats
                .publish_durable(stream, msg.clone(), &msg_id, STORE_TIMEOUT)
                .await;
            match sent {
                Ok(()) => return Ok(()),
                Err(MsgError::Invalid(e)) => return Err(MsgError::Other(e)),
                Err(e) => {
                    tracing::warn!(subject = %msg.subject, %e,
                        "JetStream did not store a durable message; keeping it in the outbox");
                }
            }
        }
        // Neither JetStream nor the disk can take it now (a full disk, say): an outage of
        // this host, to be waited out like NATS's own.
        self.outbox
            .push(&msg_id, &msg)
            .await
            .map_err(|e| MsgError::Connection(format!("outbox: {e:#}")))?;
        self.backlog.fetch_add(1, Ordering::AcqRel);
        self.wake.notify_one();
        Ok(())
    }
}

/// Hands the outbox to JetStream, oldest first, whenever there is something in it. A
/// row NATS refuses for what it is (not for an outage) is dead-lettered at once when it
/// can never be sent, else after [`MAX_RELAY_TRIES`]; the queue behind it moves on.
async fn relay(broker: Arc<NatsBroker>) {
    let mut pause = Duration::from_millis(200);
    let mut tries: HashMap<i64, u32> = HashMap::new();
    loop {
        tokio::select! {
            () = broker.wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
        if broker.backlog.load(Ordering::Acquire) <= 0 {
            continue;
        }
        let batch = match broker.outbox.peek(100).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot read the outbox");
                continue;
            }
        };
        let mut sent = 0;
        let mut stuck = false;
        for pending in batch {
            let id = pending.id;
            let subject = pending.msg.subject.clone();
            let published = match broker.stream_for(&subject).cloned() {
                Some(stream) => {
                    broker
                        .nats
                        .publish_durable(&stream, pending.msg, &pending.msg_id, STORE_TIMEOUT)
                        .await
                }
                // The manifest no longer captures it: publish it plainly rather than
                // hold the queue forever.
                None => broker.nats.publish(pending.msg).await,
            };
            let reason = match published {
                Ok(()) => None,
                Err(MsgError::Invalid(why)) => Some(why),
                Err(MsgError::Other(why)) if broker.nats.connected() => {
                    let n = tries.entry(id).or_default();
                    *n += 1;
                    if *n < MAX_RELAY_TRIES {
                        tracing::warn!(%subject, tries = *n, error = %why, "outbox relay: NATS refused a message; will retry");
                        stuck = true;
                        break;
                    }
                    Some(format!("refused {MAX_RELAY_TRIES} times: {why}"))
                }
                Err(e) => {
                    tracing::debug!(%e, "outbox relay waits for NATS");
                    stuck = true;
                    break;
                }
            };
            let removed = match &reason {
                None => broker.outbox.remove(id).await,
                Some(why) => broker.outbox.dead_letter(id, why).await,
            };
            if let Err(e) = removed {
                tracing::error!(error = %format!("{e:#}"), "cannot take a message off the outbox");
                stuck = true;
                break;
            }
            tries.remove(&id);
            broker.backlog.fetch_sub(1, Ordering::AcqRel);
            match reason {
                None => sent += 1,
                Some(why) => {
                    broker.dead.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(%subject, reason = %why,
                        "outbox relay dead-lettered a message NATS will not take (kept in outbox.db, table outbox_dead)");
                }
            }
        }
        if sent > 0 {
            let left = broker.backlog.load(Ordering::Acquire);
            tracing::info!(sent, left, "outbox relayed durable messages to JetStream");
        }
        pause = if stuck {
            (pause * 2).min(Duration::from_secs(2))
        } else {
            Duration::from_millis(200)
        };
        if !stuck && broker.backlog.load(Ordering::Acquire) > 0 {
            broker.wake.notify_one();
        }
    }
}

struct JsAck(JsAcker);

#[async_trait]
impl Ack for JsAck {
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), MsgError> {
        match how {
            Settle::Done => self.0.ack().await,
            Settle::Retry(delay) => self.0.retry(delay).await,
            Settle::GiveUp => self.0.term().await,
        }
    }

    async fn working(&mut self) -> Result<(), MsgError> {
        self.0.working().await
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, msg: Msg) -> Result<(), MsgError> {
        // Replies and plain subjects go out directly; captured subjects are durable.
        match self.stream_for(&msg.subject) {
            Some(stream) if msg.reply.is_none() => {
                let stream = stream.clone();
                self.publish_durable(&stream, msg).await
            }
            _ => self.nats.publish(msg).await,
        }
    }

    async fn request(
        &self,
        msg: Msg,
        timeout: Duration,
        expected: usize,
    ) -> Result<Vec<Msg>, MsgError> {
        self.nats.request(msg, timeout, expected).await
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BoxStream<'static, Msg>, MsgError> {
        self.nats.subscribe(subject, queue).await
    }

    async fn subscribe_durable(
        &self,
        sub: &DurableSub,
    ) -> Result<BoxStream<'static, Incoming>, MsgError> {
        let spec = ConsumerSpec {
            stream: sub.stream.clone(),
            name: sub.consumer.clone(),
            filter: sub.subject.clone(),
            ack_wait: sub.ack_wait,
            // A backstop above the host's own limit, for a host that dies mid-handler
            // every time.
            max_deliver: i64::from(sub.max_attempts) + 2,
            batch: sub.batch,
        };
        Ok(self
            .nats
            .durable(spec)
            .map(|d| Incoming {
                msg: d.delivery,
                attempt: d.attempt,
                ack: Box::new(JsAck(d.acker)),
            })
            .boxed())
    }

    fn dead_lettered(&self) -> u64 {
        self.dead.load(Ordering::Relaxed)
    }

    async fn flush(&self) {
        // While NATS is down a flush would wait for the reconnect; the outbox keeps what
        // matters, so give up after a moment.
        match tokio::time::timeout(Duration::from_secs(2), self.nats.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(%e, "flushing NATS on shutdown failed"),
            Err(_) => tracing::warn!("NATS did not take buffered messages before shutdown"),
        }
        self.outbox.close().await;
    }
}
