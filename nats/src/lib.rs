//! Everything NATS for Panal: one shared `async-nats` client per host, with the
//! publish / request / (queue) subscribe operations the messaging capability needs, in
//! plain types so the host adapts them to its broker trait.
//!
//! The client reconnects by itself; while NATS is unreachable, plain publishes are
//! buffered by the client, requests fail at once with a clear error, and durable
//! publishes ([`jetstream`]) report the failure so the host can keep them in its outbox.

mod auth;
pub mod jetstream;
pub mod kv;
pub mod objects;
mod replies;
pub mod service;

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

pub use auth::{redact, Auth};

use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

/// A message on the wire, as every broker of the host (in-process or NATS) carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Msg {
    /// Subject.
    pub subject: String,
    /// Reply subject, for requests.
    pub reply: Option<String>,
    /// Headers; a header with several values appears once per value.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub payload: Bytes,
}

/// Why a messaging operation failed, whichever broker it went to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// No reply in time.
    #[error("timed out")]
    Timeout,
    /// Not connected, or the connection broke.
    #[error("connection: {0}")]
    Connection(String),
    /// Anything else (bad subject, ...).
    #[error("{0}")]
    Other(String),
    /// The message itself can never be sent (a header NATS cannot carry, over the
    /// server's `max_payload`): retrying is pointless.
    #[error("{0}")]
    Invalid(String),
}

/// The host's one NATS client.
#[derive(Clone)]
pub struct Nats {
    client: Client,
    /// Where replies to this client's requests arrive.
    replies: Arc<replies::Replies>,
    /// The last error the server or the connection reported (a refused login, a
    /// TLS failure), for a start that waits in vain to say why.
    last_error: Arc<Mutex<Option<String>>>,
    /// Whether this client presented credentials of any kind.
    presents: bool,
}

impl Nats {
    /// Connect to `url` (comma-separated servers; `nats://user:pass@host`,
    /// `nats://token@host` or `tls://...`) presenting `auth`. The first connection is
    /// retried in the background, so a host may start before its NATS server does.
    pub async fn connect(url: &str, auth: &Auth) -> Result<Self, MsgError> {
        // Several servers of a cluster: the client picks one and fails over to the
        // others (and to those the cluster tells it of).
        let servers = auth::Servers::parse(url)?;
        let presents = servers.has_user() || auth.authenticates();
        let last_error: Arc<Mutex<Option<String>>> = Arc::default();
        let seen = last_error.clone();
        let options = ConnectOptions::new()
            .name("panal")
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    if let async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) =
                        &event
                    {
                        *seen.lock() = Some(event.to_string());
                    }
                    tracing::info!(target: "panal::nats", %event, "nats connection event");
                }
            });
        let client = auth
            .options(&servers, options)
            .await?
            .connect(servers.addrs)
            .await
            .map_err(|e| MsgError::Connection(format!("{}: {e}", redact(url))))?;
        let replies = Arc::new(replies::Replies::new(&client));
        Ok(Self {
            client,
            replies,
            last_error,
            presents,
        })
    }

    /// The last error the server or the connection reported, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Whether the server requires clients to authenticate and this client did (so a
    /// stranger without credentials cannot connect to it).
    pub fn authenticated(&self) -> bool {
        self.presents && self.client.server_info().auth_required
    }

    /// Wait up to `within` for the first connection; whether it is up.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Wait up to `within` for the first connection; why not, naming `url` (redacted)
    /// and what the server or the connection last said (a refused login, say).
    pub async fn ready(&self, url: &str, within: Duration) -> Result<(), MsgError> {
        if self.wait_connected(within).await {
            return Ok(());
        }
        let last = self
            .last_error()
            .map_or_else(String::new, |e| format!(" (last error: {e})"));
        Err(MsgError::Connection(format!(
            "NATS at {} did not let this host in within {} s{last}",
            redact(url),
            within.as_secs()
        )))
    }

    /// Whether the client is connected right now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The version of the server connected to (`2.12.8`; empty before the first
    /// connection).
    pub fn server_version(&self) -> String {
        self.client.server_info().version
    }

    /// The server's `max_payload` in bytes (0 before the first connection).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Why `msg` can never be sent, if it cannot: a header NATS cannot carry, or (once
    /// the server said its limit) headers and payload over its `max_payload`.
    pub fn check(&self, msg: &Msg) -> Result<(), MsgError> {
        to_headers(&msg.headers)?;
        let max = self.client.server_info().max_payload;
        let size = msg.payload.len()
            + msg
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        if max > 0 && size > max {
            return Err(MsgError::Invalid(format!(
                "message of {size} bytes is over the NATS server's max_payload of {max}"
            )));
        }
        Ok(())
    }

    /// Publish a message (with a reply subject when given).
    pub async fn publish(&self, msg: Msg) -> Result<(), MsgError> {
        let headers = to_headers(&msg.headers)?;
        let result = match msg.reply {
            Some(reply) => {
                self.client
                    .publish_with_reply_and_headers(msg.subject, reply, headers, msg.payload)
                    .await
            }
            None => {
                self.client
                    .publish_with_headers(msg.subject, headers, msg.payload)
                    .await
            }
        };
        result.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                MsgError::Invalid(e.to_string())
            }
            _ => MsgError::Other(e.to_string()),
        })
    }

    /// Publish with a fresh inbox as reply subject and collect up to `expected` replies
    /// within `timeout`.
    pub async fn request(
        &self,
        mut msg: Msg,
        timeout: Duration,
        expected: usize,
    ) -> Result<Vec<Msg>, MsgError> {
        if !self.connected() {
            // Fail fast and clearly rather than waiting out the timeout for nothing.
            return Err(MsgError::Connection("not connected to NATS".into()));
        }
        let subject = msg.subject.clone();
        let (inbox, mut replies) = self.replies.open(&self.client).await?;
        msg.reply = Some(inbox);
        self.publish(msg).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < expected.max(1) {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                // A "no responders" status: nobody listens on the subject.
                Ok(Some(m)) if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) => {
                    return Err(MsgError::Other(format!(
                        "no responders on subject `{subject}`"
                    )))
                }
                Ok(Some(m)) => out.push(from_message(m)),
                Ok(None) | Err(_) => break,
            }
        }
        if out.is_empty() {
            Err(MsgError::Timeout)
        } else {
            Ok(out)
        }
    }

    /// Messages on `subject`, optionally as a member of a queue group.
    pub async fn subscribe(
        &self,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<BoxStream<'static, Msg>, MsgError> {
        let sub = match queue {
            Some(q) => {
                self.client
                    .queue_subscribe(subject.to_string(), q.to_string())
                    .await
            }
            None => self.client.subscribe(subject.to_string()).await,
        }
        .map_err(|e| MsgError::Connection(e.to_string()))?;
        Ok(sub.map(from_message).boxed())
    }

    /// Send what the client buffered (it is on the socket, not yet taken by the server).
    pub async fn flush(&self) -> Result<(), MsgError> {
        self.client
            .flush()
            .await
            .map_err(|e| MsgError::Connection(e.to_string()))
    }

    /// Wait, at most `wait`, until the server has taken everything this client sent so
    /// far, its subscriptions included: a message to an inbox of its own, sent after
    /// them on the same connection, comes back. (`flush` only writes to the socket; a
    /// message another client sends next could reach the server first.)
    pub async fn synced(&self, wait: Duration) -> Result<(), MsgError> {
        let lost = |e: &dyn std::fmt::Display| MsgError::Connection(e.to_string());
        let inbox = self.client.new_inbox();
        let mut echo = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| lost(&e))?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| lost(&e))?;
        self.flush().await?;
        match tokio::time::timeout(wait, echo.next()).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(MsgError::Connection("the connection closed".into())),
            Err(_) => Err(MsgError::Timeout),
        }
    }
}

/// NATS headers of `headers`; a name or value NATS cannot carry (a space, `:`, a line
/// break, a control character) is an error naming it, never a panic.
pub(crate) fn to_headers(headers: &[(String, String)]) -> Result<HeaderMap, MsgError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = async_nats::HeaderName::try_from(k.as_str()).map_err(|_| {
            MsgError::Invalid(format!("metadata name `{k}` cannot be a NATS header"))
        })?;
        if k.is_empty() || v.contains(['\r', '\n']) {
            return Err(MsgError::Invalid(format!(
                "metadata `{k}` cannot be a NATS header (empty name or a line break in its value)"
            )));
        }
        map.append(name, v.as_str());
    }
    Ok(map)
}

pub(crate) fn from_message(m: async_nats::Message) -> Msg {
    let headers = m
        .headers
        .as_ref()
        .map(|h| {
            h.iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Msg {
        subject: m.subject.to_string(),
        reply: m.reply.map(|r| r.to_string()),
        headers,
        payload: m.payload,
    }
}
