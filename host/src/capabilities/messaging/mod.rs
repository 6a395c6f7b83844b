//! Messaging: one broker trait, its backends, and `wasi:messaging@0.2.0-draft` for guests.
//!
//! - [`Broker`]: publish, request/reply, subscribe (with optional queue group).
//! - [`inprocess`]: the embedded default, a subject router inside the host.
//! - [`nats`]: NATS through the shared `async-nats` client of `panal-nats`.
//! - `grant`: the [`Messaging`] capability: publish grants, per-instance state.
//! - [`host`]: the guest-facing `types`, `producer` and `request-reply` interfaces, with
//!   publish grants checked on every send.
//! - [`outbox`]: durable publishes that NATS could not take yet, kept on disk in order.
//!
//! Delivering messages to components is the messaging trigger's work
//! (`triggers::messaging`), not this capability's.

mod grant;
pub mod host;
pub mod inprocess;
pub mod nats;
pub mod outbox;
mod span;

pub use grant::{Messaging, MsgInstance};

use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use crate::manifest::subject::{
    pattern_covers, patterns_overlap, subject_matches, valid_subject,
};
pub use crate::manifest::StreamSpec;

/// The wire message and the broker error: one pair of types for every broker, owned by
/// `panal-nats` so the NATS backend passes them through unconverted.
pub use panal_nats::{Msg, MsgError};

/// A message broker.
#[async_trait]
pub trait Broker: Send + Sync {
    /// Publish `msg` to `msg.subject`.
    async fn publish(&self, msg: Msg) -> Result<(), MsgError>;
    /// Publish `msg` with a fresh reply subject and collect up to `expected` replies
    /// within `timeout` (at least one, or [`MsgError::Timeout`]).
    async fn request(
        &self,
        msg: Msg,
        timeout: Duration,
        expected: usize,
    ) -> Result<Vec<Msg>, MsgError>;
    /// Messages on `subject` (wildcards `*` and `>`); within a `queue` group each message
    /// goes to one member only.
    async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BoxStream<'static, Msg>, MsgError>;
    /// Deliveries of a durable subscription, each to be settled through its [`Ack`].
    async fn subscribe_durable(
        &self,
        sub: &DurableSub,
    ) -> Result<BoxStream<'static, Incoming>, MsgError>;
    /// Flush what is buffered (on shutdown).
    async fn flush(&self) {}
    /// Outbox messages given up on (never publishable), for `/metrics`.
    fn dead_lettered(&self) -> u64 {
        0
    }
}

/// A durable subscription as the broker sees it.
#[derive(Debug, Clone)]
pub struct DurableSub {
    /// Subject, wildcards allowed.
    pub subject: String,
    /// The stream that captures it.
    pub stream: StreamSpec,
    /// Consumer name, shared by every host that runs the component.
    pub consumer: String,
    /// Attempts before the host dead-letters (the broker may cap a little above).
    pub max_attempts: u32,
    /// How long one delivery may take before the broker assumes it was lost.
    pub ack_wait: Duration,
    /// Deliveries handed out ahead of the handler.
    pub batch: usize,
}

/// One durable delivery.
pub struct Incoming {
    /// The message.
    pub msg: Msg,
    /// 1 on first delivery.
    pub attempt: u32,
    /// How it is settled.
    pub ack: Box<dyn Ack>,
}

/// What became of a durable delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Handled: never again.
    Done,
    /// Failed: again after this delay.
    Retry(Duration),
    /// Dead-lettered: never again.
    GiveUp,
}

/// Settles one durable delivery.
#[async_trait]
pub trait Ack: Send {
    /// Settle it; failures (a broken connection) mean the broker redelivers later.
    async fn settle(self: Box<Self>, how: Settle) -> Result<(), MsgError>;
    /// Still in hand: the broker should wait its full ack wait again before it
    /// redelivers.
    async fn working(&mut self) -> Result<(), MsgError> {
        Ok(())
    }
}

/// The default request timeout when the guest sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
