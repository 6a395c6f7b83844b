//! The NATS backend of [`Broker`], over the host's one shared client from `panal-nats`.

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use panal_nats::{Delivery, Nats, NatsError};

use super::{Broker, Msg, MsgError};

/// Messaging over NATS.
pub struct NatsBroker(pub Nats);

fn to_delivery(m: Msg) -> Delivery {
    Delivery {
        subject: m.subject,
        reply: m.reply,
        headers: m.headers,
        payload: m.payload,
    }
}

fn to_msg(d: Delivery) -> Msg {
    Msg {
        subject: d.subject,
        reply: d.reply,
        headers: d.headers,
        payload: d.payload,
    }
}

fn err(e: NatsError) -> MsgError {
    match e {
        NatsError::Timeout => MsgError::Timeout,
        NatsError::Connection(e) => MsgError::Connection(e),
        NatsError::Other(e) => MsgError::Other(e),
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn publish(&self, msg: Msg) -> Result<(), MsgError> {
        self.0.publish(to_delivery(msg)).await.map_err(err)
    }

    async fn request(
        &self,
        msg: Msg,
        timeout: Duration,
        expected: usize,
    ) -> Result<Vec<Msg>, MsgError> {
        let replies = self
            .0
            .request(to_delivery(msg), timeout, expected)
            .await
            .map_err(err)?;
        Ok(replies.into_iter().map(to_msg).collect())
    }

    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BoxStream<'static, Msg>, MsgError> {
        Ok(self
            .0
            .subscribe(subject, queue)
            .await
            .map_err(err)?
            .map(to_msg)
            .boxed())
    }

    async fn flush(&self) {
        if let Err(e) = self.0.flush().await {
            tracing::warn!(%e, "flushing NATS on shutdown failed");
        }
    }
}
