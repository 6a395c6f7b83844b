//! JetStream for Panal: the streams a host keeps, acknowledged publishes, and durable
//! pull consumers whose deliveries the host acknowledges only after its handler
//! succeeded.
//!
//! A durable consumer outlives connections: [`Nats::durable`] re-creates the stream and
//! the consumer and resumes pulling after NATS restarts, for as long as its receiver
//! lives.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures::stream::{BoxStream, StreamExt};
use tokio::sync::mpsc;

use crate::{from_message, to_headers, Msg, MsgError, Nats};

/// A stream to keep: created if missing, its subjects updated if it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name.
    pub name: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// Copies a cluster keeps (0: the default, one).
    pub replicas: usize,
}

/// A durable pull consumer on one stream.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: StreamSpec,
    /// Durable name, shared by every host running the same component.
    pub name: String,
    /// Only messages on this subject (wildcards allowed).
    pub filter: String,
    /// How long a delivery may stay unacknowledged before the server redelivers it.
    pub ack_wait: Duration,
    /// The server's own cap on deliveries (a backstop; the host dead-letters first).
    pub max_deliver: i64,
    /// Messages pulled ahead of the handler.
    pub batch: usize,
}

/// One JetStream delivery: the message, which attempt this is, and its acknowledgment.
pub struct JsDelivery {
    /// The message (never with a reply subject: on JetStream that is the ack subject).
    pub delivery: Msg,
    /// 1 on first delivery, then one more per redelivery.
    pub attempt: u32,
    /// How to settle it.
    pub acker: JsAcker,
}

/// Settles one JetStream delivery.
pub struct JsAcker(jetstream::Message);

impl JsAcker {
    /// Done: never deliver it again.
    pub async fn ack(&self) -> Result<(), MsgError> {
        self.send(AckKind::Ack).await
    }

    /// Failed: deliver it again after `delay`.
    pub async fn retry(&self, delay: Duration) -> Result<(), MsgError> {
        self.send(AckKind::Nak(Some(delay))).await
    }

    /// Given up on (after dead-lettering): never deliver it again.
    pub async fn term(&self) -> Result<(), MsgError> {
        self.send(AckKind::Term).await
    }

    /// Still in hand: restart its ack wait.
    pub async fn working(&self) -> Result<(), MsgError> {
        self.send(AckKind::Progress).await
    }

    async fn send(&self, kind: AckKind) -> Result<(), MsgError> {
        self.0
            .ack_with(kind)
            .await
            .map_err(|e| MsgError::Connection(e.to_string()))
    }
}

impl Nats {
    pub(crate) fn js(&self) -> jetstream::Context {
        jetstream::new(self.client.clone())
    }

    /// Create `spec` if it is missing (file storage), or bring its subjects up to date.
    pub async fn ensure_stream(&self, spec: &StreamSpec) -> Result<(), MsgError> {
        if !self.connected() {
            return Err(MsgError::Connection("not connected to NATS".into()));
        }
        let config = stream::Config {
            name: spec.name.clone(),
            subjects: spec.subjects.clone(),
            storage: stream::StorageType::File,
            num_replicas: spec.replicas.max(1),
            ..Default::default()
        };
        self.js()
            .create_or_update_stream(config)
            .await
            .map(drop)
            .map_err(|e| {
                let why = format!("stream `{}`: {e}", spec.name);
                use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
                match e.kind() {
                    Kind::TimedOut | Kind::JetStreamUnavailable => MsgError::Connection(why),
                    Kind::JetStream(js) if js.code() == 503 => MsgError::Connection(why),
                    _ => MsgError::Other(why),
                }
            })
    }

    /// Publish into `stream` and wait for the server to store it. `msg_id` lets the
    /// server drop a second copy of the same message (a retried publish). A stream that
    /// went missing (a NATS server with a fresh store) is created again.
    pub async fn publish_durable(
        &self,
        stream: &StreamSpec,
        msg: Msg,
        msg_id: &str,
        timeout: Duration,
    ) -> Result<(), MsgError> {
        if !self.connected() {
            return Err(MsgError::Connection("not connected to NATS".into()));
        }
        let headers = to_headers(&msg.headers)?;
        let attempt = || async {
            let publish = PublishMessage::build()
                .payload(msg.payload.clone())
                .headers(headers.clone())
                .message_id(msg_id);
            let stored = async {
                self.js()
                    .send_publish(msg.subject.clone(), publish)
                    .await?
                    .await
                    .map(drop)
            };
            tokio::time::timeout(timeout, stored).await
        };
        // An outage (no ack in time, the connection gone, JetStream without a quorum or
        // leader) is `Connection`: the outbox waits it out. `Other` is a refusal of this
        // message, which the outbox tries a few times only.
        let failed = |e: async_nats::jetstream::context::PublishError| match e.kind() {
            PublishErrorKind::MaxPayloadExceeded => MsgError::Invalid(e.to_string()),
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => MsgError::Connection(e.to_string()),
            _ if unavailable(&e) => MsgError::Connection(e.to_string()),
            _ => MsgError::Other(e.to_string()),
        };
        match attempt().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.kind() == PublishErrorKind::StreamNotFound => {
                self.ensure_stream(stream).await?;
                match attempt().await {
                    Ok(Ok(())) => Ok(()),
                    // The stream is there, yet nothing took the message: its servers
                    // are out of reach of this one (a partition, an election), for now.
                    Ok(Err(e)) if e.kind() == PublishErrorKind::StreamNotFound => {
                        Err(MsgError::Connection(format!(
                            "stream `{}` exists, but none of its servers answered: {e}",
                            stream.name
                        )))
                    }
                    Ok(Err(e)) => Err(failed(e)),
                    Err(_) => Err(MsgError::Timeout),
                }
            }
            Ok(Err(e)) => Err(failed(e)),
            Err(_) => Err(MsgError::Timeout),
        }
    }

    /// Deliveries of a durable consumer, across reconnects, until the stream is dropped.
    pub fn durable(&self, spec: ConsumerSpec) -> BoxStream<'static, JsDelivery> {
        let (tx, rx) = mpsc::channel(spec.batch.max(1));
        let nats = self.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !tx.is_closed() {
                match nats.pull(&spec, &tx).await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(target: "panal::nats", consumer = %spec.name, %e,
                            "durable consumer interrupted; resuming");
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|d| (d, rx)) })
            .boxed()
    }

    /// One session of pulling: ensure stream and consumer, then forward deliveries
    /// until the message stream fails.
    async fn pull(
        &self,
        spec: &ConsumerSpec,
        tx: &mpsc::Sender<JsDelivery>,
    ) -> Result<(), MsgError> {
        self.ensure_stream(&spec.stream).await?;
        let stream = self
            .js()
            .get_stream(&spec.stream.name)
            .await
            .map_err(|e| MsgError::Other(e.to_string()))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(spec.name.clone()),
                filter_subject: spec.filter.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_deliver: spec.max_deliver,
                ..Default::default()
            })
            .await
            .map_err(|e| MsgError::Other(format!("consumer `{}`: {e}", spec.name)))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(spec.batch.max(1))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| MsgError::Other(e.to_string()))?;
        while let Some(next) = messages.next().await {
            let message = next.map_err(|e| MsgError::Connection(e.to_string()))?;
            let attempt = message
                .info()
                .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
                .unwrap_or(1);
            let mut delivery = from_message(message.message.clone());
            delivery.reply = None;
            let delivered = JsDelivery {
                delivery,
                attempt,
                acker: JsAcker(message),
            };
            if tx.send(delivered).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Whether JetStream answered `e` (or what caused it) with 503 (it cannot serve now: no
/// quorum, no leader, a partition) or with "duplicate message id is in process": an
/// outage to wait out, not a refusal.
fn unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(js) = err.downcast_ref::<async_nats::jetstream::Error>() {
            // "Duplicate message id is in process": an earlier try of this very message
            // (one whose ack timed out) is still going through the stream's quorum. Once
            // it is through, the same id is answered as a duplicate: stored.
            let in_process = js.error_code()
                == async_nats::jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT;
            return js.code() == 503 || in_process;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::unavailable;

    fn answer(json: &str) -> async_nats::jetstream::Error {
        serde_json::from_str(json).expect("a JetStream error answer")
    }

    #[test]
    fn outages_are_told_from_refusals() {
        let no_quorum = answer(
            r#"{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}"#,
        );
        let in_process = answer(
            r#"{"code":409,"err_code":10158,"description":"duplicate message id is in process"}"#,
        );
        let wrong_sequence =
            answer(r#"{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}"#);
        assert!(unavailable(&no_quorum));
        assert!(
            unavailable(&in_process),
            "an earlier try is still in the quorum"
        );
        assert!(!unavailable(&wrong_sequence));
    }
}
