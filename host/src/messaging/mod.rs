//! Messaging: one broker trait, its backends, and `wasi:messaging@0.2.0-draft` for guests.
//!
//! - [`Broker`]: publish, request/reply, subscribe (with optional queue group).
//! - [`inprocess`]: the embedded default, a subject router inside the host.
//! - [`nats`]: NATS through the shared `async-nats` client of `panal-nats`.
//! - [`host`]: the guest-facing `types`, `producer` and `request-reply` interfaces, with
//!   publish grants checked on every send.
//! - [`dispatch`]: each component's subscriptions, every delivery handled by the
//!   component's `incoming-handler` in a fresh instance.

pub mod dispatch;
pub mod host;
pub mod inprocess;
pub mod nats;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

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
    /// Flush what is buffered (on shutdown).
    async fn flush(&self) {}
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
