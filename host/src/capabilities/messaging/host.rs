//! `wasi:messaging@0.2.0-draft` for guests (`types`, `producer`, `request-reply`) over
//! [`Broker`]. Sending or requesting on a subject outside the component's `publish`
//! grants fails with `permission-denied`, never a trap. Replies go to the reply subject
//! of the message being handled, which needs no grant.
//!
//! What a guest makes the host hold is capped ([`MAX_MESSAGE_BYTES`] of data per
//! message, [`MAX_METADATA`] entries of bounded size, [`MAX_HELD_BYTES`] in all the
//! messages an instance holds, [`MAX_REPLIES`] replies per request). `message`'s
//! methods have no error case, so going past a cap traps the instance with a message
//! naming the limit; metadata a broker cannot carry fails the send with `other`.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime::Result;

use super::span::producer_span;
use super::{subject_matches, valid_subject, Broker, Msg, MsgError, DEFAULT_REQUEST_TIMEOUT};
use crate::capabilities::bindings::{messaging_types as types, producer, request_reply};
use crate::manifest::subject::{inbox_shaped, reserved, MAX_SUBJECT_LEN, MAX_SUBJECT_TOKENS};
use crate::metrics::MsgOp;

/// Most bytes of data in one message.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most metadata entries on one message.
pub const MAX_METADATA: usize = 64;
/// Most bytes in one metadata name, and in one value.
pub const MAX_METADATA_NAME: usize = 256;
/// Most bytes in one metadata value.
pub const MAX_METADATA_VALUE: usize = 4096;
/// Most bytes (data, content type, metadata) in all the messages one instance made and
/// still holds.
pub const MAX_HELD_BYTES: usize = 8 << 20;
/// Most replies one request waits for.
pub const MAX_REPLIES: u32 = 100;

/// What one component may do with messaging.
#[derive(Clone)]
pub struct MsgGrant {
    /// The component (for errors and logs).
    pub component: Arc<str>,
    /// The host's broker; `None` when messaging is not configured.
    pub broker: Option<Arc<dyn Broker>>,
    /// Subjects it may publish and request on (wildcards allowed).
    pub publish: Arc<[String]>,
    /// The component's counters.
    pub stats: Arc<crate::metrics::Stats>,
}

impl MsgGrant {
    fn check(&self, subject: &str) -> Result<Arc<dyn Broker>, types::Error> {
        if !valid_subject(subject, false) {
            return Err(types::Error::Other(format!(
                "`{subject}` is not a valid subject (at most {MAX_SUBJECT_LEN} bytes and \
                 {MAX_SUBJECT_TOKENS} tokens, no wildcards)"
            )));
        }
        // Also when a grant would match it: a grant that came some other way than a
        // checked manifest or deploy must still not reach the hosts' own subjects.
        if let Some(why) = reserved(subject) {
            return Err(types::Error::PermissionDenied(why));
        }
        if !self.publish.iter().any(|p| subject_matches(p, subject)) {
            return Err(types::Error::PermissionDenied(format!(
                "component `{}` may not publish to `{subject}` (not in its messaging.publish)",
                self.component
            )));
        }
        self.broker
            .clone()
            .ok_or_else(|| types::Error::Connection("messaging is not configured".into()))
    }
}

/// A connection handle (`client`); all share the host's one broker connection.
pub struct Client;

/// A message (`message`).
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub(crate) topic: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) data: Vec<u8>,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) reply_to: Option<String>,
    /// Bytes it counts against its instance's [`MAX_HELD_BYTES`].
    counted: usize,
}

impl Message {
    /// A delivered message, for the handler.
    pub fn from_msg(msg: Msg) -> Self {
        let mut content_type = None;
        let metadata = msg
            .headers
            .into_iter()
            .filter(|(k, v)| {
                let is_ct = k.eq_ignore_ascii_case("content-type");
                if is_ct {
                    content_type = Some(v.clone());
                }
                !is_ct
            })
            .collect();
        Self {
            topic: Some(msg.subject),
            content_type,
            data: msg.payload.to_vec(),
            metadata,
            reply_to: msg.reply,
            counted: 0,
        }
    }

    fn size(&self) -> usize {
        self.data.len()
            + self.content_type.as_ref().map_or(0, String::len)
            + self
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Why this message may not be sent as it is: metadata no broker header can carry.
    fn unsendable(&self) -> Option<types::Error> {
        self.metadata.iter().find_map(|(k, v)| {
            let bad_name = k.is_empty() || k.bytes().any(|b| !b.is_ascii_graphic() || b == b':');
            let bad_value = v.bytes().any(|b| b == b'\r' || b == b'\n');
            (bad_name || bad_value).then(|| {
                types::Error::Other(format!(
                    "metadata `{k}` cannot be sent: names are visible ASCII without `:`, \
                     values have no line breaks"
                ))
            })
        })
    }

    /// The wire message; `trace` headers the guest did not set itself are added, so a
    /// request id follows the work from HTTP to messages and back.
    fn to_msg(&self, subject: String, trace: &[(String, String)]) -> Msg {
        let mut headers = self.metadata.clone();
        if let Some(ct) = &self.content_type {
            headers.push(("content-type".into(), ct.clone()));
        }
        for (k, v) in trace {
            if !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k)) {
                headers.push((k.clone(), v.clone()));
            }
        }
        Msg {
            subject,
            reply: None,
            headers,
            payload: self.data.clone().into(),
        }
    }
}

/// Options of one request (`request-options`).
#[derive(Debug, Default)]
pub struct RequestOptions {
    timeout_ms: Option<u32>,
    expected: Option<u32>,
}

/// The slice of store state messaging needs.
pub struct MsgView<'a> {
    /// The component's grant.
    pub grant: &'a MsgGrant,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
    /// Request id and trace context to pass on with what this instance sends.
    pub trace: &'a [(String, String)],
    /// Bytes held by the messages this instance made ([`MAX_HELD_BYTES`]).
    pub held: &'a mut usize,
    /// Where a publish the broker could not take now (NATS and the outbox both out of
    /// reach) is noted for the run.
    pub unavailable: &'a crate::capabilities::context::Unavailable,
}

impl crate::capabilities::State {
    /// The messaging capability's view of one instance.
    pub(crate) fn msg(&mut self) -> MsgView<'_> {
        self.sync();
        let m = &mut self.caps.messaging;
        MsgView {
            grant: &m.grant,
            table: &mut self.table,
            trace: &self.caps.http_out.ctx.trace,
            held: &mut m.held,
            unavailable: &self.caps.http_out.ctx.unavailable,
        }
    }
}

impl MsgView<'_> {
    /// Change message `m` with `edit`, then check the caps and recount what it holds;
    /// past a cap the instance traps, naming the limit.
    fn edit(&mut self, m: &Resource<Message>, edit: impl FnOnce(&mut Message)) -> Result<()> {
        let message = self.table.get_mut(m)?;
        edit(message);
        let size = message.size();
        let before = message.counted;
        message.counted = size;
        *self.held = self.held.saturating_sub(before) + size;
        check_caps(message, *self.held)
    }

    /// Forget what a message that leaves the guest's hands held.
    fn release(&mut self, message: &Message) {
        *self.held = self.held.saturating_sub(message.counted);
    }
}

fn check_caps(m: &Message, held: usize) -> Result<()> {
    let over = |what: String| Err(wasmtime::format_err!("limit hit: messaging: {what}"));
    if m.data.len() > MAX_MESSAGE_BYTES {
        return over(format!(
            "message data of {} bytes is over {MAX_MESSAGE_BYTES}",
            m.data.len()
        ));
    }
    if m.metadata.len() > MAX_METADATA {
        return over(format!("more than {MAX_METADATA} metadata entries"));
    }
    if let Some((k, _)) = m
        .metadata
        .iter()
        .find(|(k, v)| k.len() > MAX_METADATA_NAME || v.len() > MAX_METADATA_VALUE)
    {
        return over(format!(
            "metadata `{}` over {MAX_METADATA_NAME} bytes of name or {MAX_METADATA_VALUE} of value",
            k.chars().take(64).collect::<String>()
        ));
    }
    if held > MAX_HELD_BYTES {
        return over(format!(
            "the instance holds more than {MAX_HELD_BYTES} bytes of messages"
        ));
    }
    Ok(())
}

/// [`HasData`] marker for linking with [`MsgView`].
struct MsgData;

impl HasData for MsgData {
    type Data<'a> = MsgView<'a>;
}

/// Add the three messaging interfaces to `linker`.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> MsgView<'_>,
) -> Result<()> {
    types::add_to_linker::<T, MsgData>(linker, view)?;
    producer::add_to_linker::<T, MsgData>(linker, view)?;
    request_reply::add_to_linker::<T, MsgData>(linker, view)?;
    Ok(())
}

fn guest_error(e: MsgError) -> types::Error {
    match e {
        MsgError::Timeout => types::Error::Timeout,
        MsgError::Connection(e) => types::Error::Connection(e),
        MsgError::Other(e) | MsgError::Invalid(e) => types::Error::Other(e),
    }
}

impl types::Host for MsgView<'_> {}

impl types::HostClient for MsgView<'_> {
    async fn connect(&mut self, _name: String) -> Result<Result<Resource<Client>, types::Error>> {
        if self.grant.broker.is_none() {
            return Ok(Err(types::Error::Connection(
                "messaging is not configured".into(),
            )));
        }
        Ok(Ok(self.table.push(Client)?))
    }

    async fn disconnect(&mut self, _client: Resource<Client>) -> Result<Result<(), types::Error>> {
        Ok(Ok(()))
    }

    async fn drop(&mut self, client: Resource<Client>) -> Result<()> {
        self.table.delete(client)?;
        Ok(())
    }
}

impl types::HostMessage for MsgView<'_> {
    async fn new(&mut self, data: Vec<u8>) -> Result<Resource<Message>> {
        let m = self.table.push(Message::default())?;
        self.edit(&m, |msg| msg.data = data)?;
        Ok(m)
    }

    async fn topic(&mut self, m: Resource<Message>) -> Result<Option<String>> {
        Ok(self.table.get(&m)?.topic.clone())
    }

    async fn content_type(&mut self, m: Resource<Message>) -> Result<Option<String>> {
        Ok(self.table.get(&m)?.content_type.clone())
    }

    async fn set_content_type(&mut self, m: Resource<Message>, ct: String) -> Result<()> {
        self.edit(&m, |msg| msg.content_type = Some(ct))
    }

    async fn data(&mut self, m: Resource<Message>) -> Result<Vec<u8>> {
        Ok(self.table.get(&m)?.data.clone())
    }

    async fn set_data(&mut self, m: Resource<Message>, data: Vec<u8>) -> Result<()> {
        self.edit(&m, |msg| msg.data = data)
    }

    async fn metadata(&mut self, m: Resource<Message>) -> Result<Option<Vec<(String, String)>>> {
        let meta = &self.table.get(&m)?.metadata;
        Ok((!meta.is_empty()).then(|| meta.clone()))
    }

    async fn add_metadata(
        &mut self,
        m: Resource<Message>,
        key: String,
        value: String,
    ) -> Result<()> {
        // The WIT says "overwriting any existing value for the same key".
        self.edit(&m, |msg| {
            msg.metadata.retain(|(k, _)| *k != key);
            msg.metadata.push((key, value));
        })
    }

    async fn set_metadata(
        &mut self,
        m: Resource<Message>,
        meta: Vec<(String, String)>,
    ) -> Result<()> {
        self.edit(&m, |msg| msg.metadata = meta)
    }

    async fn remove_metadata(&mut self, m: Resource<Message>, key: String) -> Result<()> {
        self.edit(&m, |msg| msg.metadata.retain(|(k, _)| *k != key))
    }

    async fn drop(&mut self, m: Resource<Message>) -> Result<()> {
        let message = self.table.delete(m)?;
        self.release(&message);
        Ok(())
    }
}

impl producer::Host for MsgView<'_> {
    async fn send(
        &mut self,
        _client: Resource<Client>,
        topic: String,
        message: Resource<Message>,
    ) -> Result<Result<(), types::Error>> {
        let message = self.table.delete(message)?;
        self.release(&message);
        self.grant.stats.msg(MsgOp::Publish);
        let broker = match self.grant.check(&topic) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(e) = message.unsendable() {
            return Ok(Err(e));
        }
        let mut msg = message.to_msg(topic, self.trace);
        let _span = producer_span(self.trace, &mut msg, "publish");
        let sent = broker.publish(msg).await;
        if matches!(sent, Err(MsgError::Connection(_) | MsgError::Timeout)) {
            // Nothing took the message: a handler failing for it waits the outage out.
            self.unavailable.note();
        }
        Ok(sent.map_err(guest_error))
    }
}

impl request_reply::Host for MsgView<'_> {
    async fn request(
        &mut self,
        _client: Resource<Client>,
        topic: String,
        message: Resource<Message>,
        options: Option<Resource<RequestOptions>>,
    ) -> Result<Result<Vec<Resource<Message>>, types::Error>> {
        let (timeout, expected) = match options {
            Some(o) => {
                let o = self.table.delete(o)?;
                (
                    o.timeout_ms.map_or(DEFAULT_REQUEST_TIMEOUT, |ms| {
                        Duration::from_millis(ms.into())
                    }),
                    o.expected.unwrap_or(1).min(MAX_REPLIES),
                )
            }
            None => (DEFAULT_REQUEST_TIMEOUT, 1),
        };
        let message = self.table.get(&message)?;
        let unsendable = message.unsendable();
        let mut msg = message.to_msg(topic.clone(), self.trace);
        self.grant.stats.msg(MsgOp::Request);
        let broker = match self.grant.check(&topic) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(e) = unsendable {
            return Ok(Err(e));
        }
        let _span = producer_span(self.trace, &mut msg, "request");
        let replies = match broker.request(msg, timeout, expected.max(1) as usize).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(guest_error(e))),
        };
        let mut out = Vec::with_capacity(replies.len());
        for r in replies {
            out.push(self.table.push(Message::from_msg(r))?);
        }
        Ok(Ok(out))
    }

    async fn reply(
        &mut self,
        reply_to: Resource<Message>,
        message: Resource<Message>,
    ) -> Result<Result<(), types::Error>> {
        let message = self.table.delete(message)?;
        self.release(&message);
        self.grant.stats.msg(MsgOp::Reply);
        if let Some(e) = message.unsendable() {
            return Ok(Err(e));
        }
        let Some(subject) = self.table.get(&reply_to)?.reply_to.clone() else {
            return Ok(Err(types::Error::Other(
                "the message has no reply subject".into(),
            )));
        };
        // Whoever sent the request chose the reply subject: only an inbox, never the
        // hosts' call subjects or another component's.
        if !inbox_shaped(&subject) {
            return Ok(Err(types::Error::PermissionDenied(format!(
                "the reply subject `{subject}` is not an inbox (`_INBOX.…`)"
            ))));
        }
        let Some(broker) = self.grant.broker.clone() else {
            return Ok(Err(types::Error::Connection(
                "messaging is not configured".into(),
            )));
        };
        Ok(broker
            .publish(message.to_msg(subject, self.trace))
            .await
            .map_err(guest_error))
    }
}

impl request_reply::HostRequestOptions for MsgView<'_> {
    async fn new(&mut self) -> Result<Resource<RequestOptions>> {
        Ok(self.table.push(RequestOptions::default())?)
    }

    async fn set_timeout_ms(&mut self, o: Resource<RequestOptions>, ms: u32) -> Result<()> {
        self.table.get_mut(&o)?.timeout_ms = Some(ms);
        Ok(())
    }

    async fn set_expected_replies(&mut self, o: Resource<RequestOptions>, n: u32) -> Result<()> {
        self.table.get_mut(&o)?.expected = Some(n);
        Ok(())
    }

    async fn drop(&mut self, o: Resource<RequestOptions>) -> Result<()> {
        self.table.delete(o)?;
        Ok(())
    }
}
