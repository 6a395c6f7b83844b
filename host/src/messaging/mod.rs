//! Messaging: one broker trait, its backends, and `wasi:messaging@0.2.0-draft` for guests.
//!
//! - [`Broker`]: publish, request/reply, subscribe (with optional queue group).
//! - [`inprocess`]: the embedded default, a subject router inside the host.
//! - [`nats`]: NATS through the shared `async-nats` client of `panal-nats`.
//! - [`host`]: the guest-facing `types`, `producer` and `request-reply` interfaces, with
//!   publish grants checked on every send.
//! - [`outbox`]: durable publishes that NATS could not take yet, kept on disk in order.
//! - [`dispatch`]: each component's subscriptions, every delivery handled by the
//!   component's `incoming-handler` in a fresh instance; durable ones acknowledged after
//!   success, retried after failure, dead-lettered after their last attempt.

pub mod dispatch;
pub mod host;
pub mod inprocess;
pub mod nats;
pub mod outbox;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use crate::manifest::StreamSpec;

/// A message on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg {
    /// Where it was published.
    pub subject: String,
    /// Where a reply goes, for requests.
    pub reply: Option<String>,
    /// Headers (wasi:messaging metadata; `content-type` included).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub payload: Bytes,
}

/// A broker failure, as the guest sees it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    /// No reply within the timeout.
    #[error("timed out")]
    Timeout,
    /// The broker cannot be reached.
    #[error("connection: {0}")]
    Connection(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

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
}

/// Whether `subject` matches `pattern` (`*` one token, `>` one or more trailing tokens).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject `inner` matches is also matched by `outer`.
pub fn pattern_covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some subject is matched by both `a` and `b`.
pub fn patterns_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == y || x == "*" || y == "*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `subject` is a valid subject to publish to (no wildcards, no empty tokens).
pub fn valid_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    !subject.is_empty()
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                && match *t {
                    "*" => wildcards,
                    ">" => wildcards && i == tokens.len() - 1,
                    t => !t.contains('*') && !t.contains('>'),
                }
        })
}

/// The default request timeout when the guest sets none.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("orders.*", "orders.paid"));
        assert!(!subject_matches("orders.*", "orders.paid.late"));
        assert!(subject_matches("orders.>", "orders.paid.late"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("*.b.>", "x.b.c.d"));
    }

    #[test]
    fn patterns_cover_and_overlap() {
        assert!(pattern_covers("orders.>", "orders.*"));
        assert!(pattern_covers("orders.>", "orders.paid.late"));
        assert!(pattern_covers("orders.*", "orders.paid"));
        assert!(!pattern_covers("orders.*", "orders.>"));
        assert!(!pattern_covers("orders.paid", "orders.*"));
        assert!(!pattern_covers("orders.>", "orders"));
        assert!(patterns_overlap("orders.*", "orders.paid"));
        assert!(patterns_overlap("*.paid", "orders.>"));
        assert!(!patterns_overlap("orders.*", "payments.*"));
        assert!(!patterns_overlap("orders.*", "orders.a.b"));
    }

    #[test]
    fn subjects_are_checked() {
        assert!(valid_subject("orders.created", false));
        assert!(!valid_subject("orders.*", false));
        assert!(valid_subject("orders.*", true));
        assert!(valid_subject("orders.>", true));
        assert!(!valid_subject("orders.>.x", true));
        assert!(!valid_subject("orders..x", true));
        assert!(!valid_subject("", true));
        assert!(!valid_subject("a b", true));
    }
}
