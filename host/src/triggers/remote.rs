//! The remote-call trigger: answering calls from other hosts of the cluster
//! ([`Remote`], the cluster's [`Answers`]). A call's frame becomes an HTTP request for
//! the local executor (local only: a component that moved away meanwhile answers 502
//! rather than bouncing between hosts), and its answer goes back in parts as big as
//! the server takes.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, Full};
use panal_nats::service::Call;
use panal_nats::{Msg, Nats};
use wasmtime_wasi_http::WasiBody;

use super::Executor;
use crate::capabilities::http_out::MAX_CALL_DEPTH;
use crate::cluster::seal::{self, Seal};
use crate::cluster::wire::{self, RequestHead, ResponseHead, BODY, END, MORE, SEND_TO};
use crate::cluster::Answers;
use crate::runtime::failure::error;

/// How long the rest of a request body may take per part.
const PART_WAIT: Duration = Duration::from_secs(30);

/// What answers the cluster's calls here: the executor (weak: the cluster never keeps
/// the host alive).
pub struct Remote(pub Weak<Executor>);

impl Answers for Remote {
    fn answer_all(
        &self,
        component: String,
        calls: BoxStream<'static, Call>,
        nats: Nats,
        seal: Arc<Seal>,
    ) -> BoxFuture<'static, ()> {
        Box::pin(answer_all(calls, self.0.clone(), component, nats, seal))
    }
}

/// Answer every call on `calls` with `component`, each in a task of its own, until the
/// host leaves the cluster (the stream ends once drained); returns when every call
/// taken has been answered.
async fn answer_all(
    mut calls: BoxStream<'static, Call>,
    executor: Weak<Executor>,
    component: String,
    nats: Nats,
    seal: Arc<Seal>,
) {
    let mut running = tokio::task::JoinSet::new();
    while let Some(call) = calls.next().await {
        let Some(executor) = executor.upgrade() else {
            break;
        };
        let sealed = wire::header(&call.msg.headers, seal::HEADER);
        if let Err(why) = seal.open(&call.msg.subject, &call.msg.payload, sealed, true) {
            tracing::warn!(
                component,
                reason = why.reason(),
                "refused a call from the cluster: {why}"
            );
            let refused = error(
                http::StatusCode::FORBIDDEN,
                &component,
                &format!("refused: {why}"),
            );
            running.spawn(async move {
                let _ = send(call, refused, 1 << 16).await;
            });
            continue;
        }
        running.spawn(answer(executor, component.clone(), call, nats.clone()));
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

async fn answer(executor: Arc<Executor>, component: String, call: Call, nats: Nats) {
    let resp = match request(&executor, &component, &call, &nats).await {
        Ok((req, depth)) => keeping_alive(&call, executor.call_http(&component, req, depth)).await,
        Err((status, why)) => error(status, &component, &why),
    };
    if let Err(e) = send(call, resp, wire::part_size(nats.max_payload())).await {
        tracing::warn!(component, error = %e, "cannot answer a call from another host");
    }
}

/// The HTTP request (and its depth) a call carries, its body read to the end; or the
/// status and reason that say why not.
async fn request(
    executor: &Executor,
    component: &str,
    call: &Call,
    nats: &Nats,
) -> Result<(http::Request<WasiBody>, u32), (http::StatusCode, String)> {
    let bad = |why: String| (http::StatusCode::BAD_REQUEST, why);
    let (head, first): (RequestHead, Bytes) =
        wire::unframe(&call.msg.payload).map_err(|e| bad(e.to_string()))?;
    // Sealed by a host of the cluster, and still held to the rules a local call keeps.
    if head.depth > MAX_CALL_DEPTH {
        return Err(bad(format!(
            "a call {} hops deep (at most {MAX_CALL_DEPTH})",
            head.depth
        )));
    }
    if let Some(why) = head
        .next
        .iter()
        .take(crate::manifest::MAX_MIDDLEWARE + 1)
        .find_map(|n| crate::manifest::bad_name(n))
        .or_else(|| {
            (head.next.len() > crate::manifest::MAX_MIDDLEWARE + 1)
                .then(|| "too long a middleware chain".into())
        })
    {
        return Err(bad(format!("a call's next handlers: {why}")));
    }
    let mut body = BytesMut::from(&first[..]);
    if wire::header(&call.msg.headers, BODY) == Some(MORE) {
        let max = executor
            .registry()
            .current(component)
            .map_or(0, |d| d.limits.max_body_kb.saturating_mul(1024));
        receive(call, nats, &mut body, max).await?;
    }
    let mut req = http::Request::builder()
        .method(head.method.as_str())
        .uri(head.uri.as_str())
        .body(
            Full::new(body.freeze())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| bad(format!("a bad request from another host: {e}")))?;
    wire::fill(req.headers_mut(), &head.headers);
    if !head.next.is_empty() {
        req.extensions_mut()
            .insert(panal_gateway::Next(head.next.into()));
    }
    Ok((req, head.depth))
}

/// The rest of a request body, sent by the caller part by part to an inbox of ours;
/// past `max` bytes the caller is told to stop.
async fn receive(
    call: &Call,
    nats: &Nats,
    body: &mut BytesMut,
    max: u64,
) -> Result<(), (http::StatusCode, String)> {
    let broken = |why: &str| (http::StatusCode::BAD_GATEWAY, why.to_string());
    let inbox = nats.inbox();
    let mut parts = nats
        .subscribe(&inbox, None)
        .await
        .map_err(|e| broken(&e.to_string()))?;
    call.part(&[(SEND_TO.into(), inbox)], Bytes::new())
        .await
        .map_err(|e| broken(&e.to_string()))?;
    loop {
        let part = tokio::time::timeout(PART_WAIT, parts.next())
            .await
            .ok()
            .flatten()
            .ok_or_else(|| broken("the caller stopped sending the request body"))?;
        body.extend_from_slice(&part.payload);
        let over = body.len() as u64 > max;
        let last = wire::header(&part.headers, BODY) == Some(END);
        if let Some(reply) = part.reply {
            // `end` back tells the caller to stop sending: the answer follows.
            let ack = if over || last { END } else { MORE };
            let _ = nats
                .publish(Msg {
                    subject: reply,
                    reply: None,
                    headers: vec![(BODY.into(), ack.into())],
                    payload: Bytes::new(),
                })
                .await;
        }
        if over {
            let kb = max / 1024;
            let why = format!("request body is larger than the component's limit of {kb} KiB");
            return Err((http::StatusCode::PAYLOAD_TOO_LARGE, why));
        }
        if last {
            return Ok(());
        }
    }
}

/// Send `resp` back: one message when it fits, else parts of `part` bytes, each but
/// the last saying `more`. A body that breaks midway ends with `broken`.
async fn send(
    call: Call,
    resp: http::Response<WasiBody>,
    part: usize,
) -> Result<(), panal_nats::MsgError> {
    let (parts, mut body) = resp.into_parts();
    // A server error counts as the endpoint's error in `nats micro stats`.
    let error = parts
        .status
        .is_server_error()
        .then(|| format!("answered {}", parts.status));
    let head = ResponseHead {
        status: parts.status.as_u16(),
        headers: wire::headers_of(&parts.headers),
    };
    let mut head = Some(head);
    let mut buf = BytesMut::new();
    let more = [(BODY.to_string(), MORE.to_string())];
    loop {
        match keeping_alive(&call, body.frame()).await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
                while buf.len() >= part {
                    let chunk = buf.split_to(part);
                    call.part(&more, payload(&mut head, &chunk)).await?;
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a body answering another host broke");
                let broken = [(BODY.to_string(), wire::BROKEN.to_string())];
                let why = Some(format!("body broke off: {e}"));
                return call.reply(&broken, payload(&mut head, &buf), why).await;
            }
            None => {
                let end = [(BODY.to_string(), END.to_string())];
                return call.reply(&end, payload(&mut head, &buf), error).await;
            }
        }
    }
}

/// The first part carries the head.
fn payload(head: &mut Option<ResponseHead>, body: &[u8]) -> Bytes {
    match head.take() {
        Some(head) => wire::frame(&head, body),
        None => Bytes::copy_from_slice(body),
    }
}

/// `work`, telling the caller every [`wire::KEEPALIVE`] that this host is still at it.
async fn keeping_alive<T>(call: &Call, work: impl std::future::Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let wait = [(BODY.to_string(), wire::WAIT.to_string())];
    loop {
        match tokio::time::timeout(wire::KEEPALIVE, &mut work).await {
            Ok(done) => return done,
            Err(_) => {
                let _ = call.part(&wait, Bytes::new()).await;
            }
        }
    }
}
