//! Calling a component that runs on other hosts: the request goes as a NATS request
//! to the queue group of the hosts that run it, its body in parts when it is bigger
//! than one message, and the answer streams back part by part. Failures come back as
//! the same answers an in-process call gives (503 when no host runs it or NATS is
//! down, 504 when none answers in time), so retries and breakers treat them alike.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use panal_nats::{Msg, MsgError};
use wasmtime_wasi_http::WasiBody;

use super::wire::{self, RequestHead, ResponseHead, BODY, END, MORE, SEND_TO};
use super::{seal, subject, Cluster};
use crate::capabilities::http_out::is_idempotent;
use crate::manifest::Limits;
use crate::runtime::failure::HostLost;
use crate::runtime::failure::{error, retry_soon};
use crate::runtime::Failure;

/// Waited beyond the callee's own `queue_ms` + `timeout_ms` for its first answer.
const GRACE: Duration = Duration::from_secs(2);

type Parts = BoxStream<'static, Result<Msg, MsgError>>;

impl Cluster {
    /// Answer `req` with `target` on another host; `depth` counts the hops so far.
    pub async fn call(
        &self,
        target: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> http::Response<WasiBody> {
        match self.send(target, req, depth).await {
            Ok(resp) => resp,
            Err(Unanswered::Failure(failure)) => {
                failure.log(target);
                failure.response(target)
            }
            Err(Unanswered::Unreachable(why)) => {
                tracing::warn!(component = target, why, "no host of the cluster answered");
                let why = format!("no host of the cluster answered: {why}");
                retry_soon(error(http::StatusCode::SERVICE_UNAVAILABLE, target, &why))
            }
            Err(Unanswered::HostLost) => {
                let why = "the host that had the call went silent (stopped or cut off)";
                tracing::warn!(component = target, why);
                let mut resp =
                    retry_soon(error(http::StatusCode::SERVICE_UNAVAILABLE, target, why));
                resp.extensions_mut().insert(HostLost);
                resp
            }
        }
    }

    async fn send(
        &self,
        target: &str,
        req: http::Request<WasiBody>,
        depth: u32,
    ) -> Result<http::Response<WasiBody>, Unanswered> {
        let limits = self
            .limits_elsewhere(target)
            .ok_or(Unanswered::Failure(Failure::NoComponent))?;
        let (parts, body) = req.into_parts();
        let max = usize::try_from(limits.max_body_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
        let too_large = Unanswered::Failure(Failure::TooLarge {
            max_body_kb: limits.max_body_kb,
        });
        let body = Limited::new(body, max)
            .collect()
            .await
            .map_err(|_| too_large)?
            .to_bytes();
        let head = RequestHead {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            headers: wire::headers_of(&parts.headers),
            depth,
            next: parts
                .extensions
                .get::<panal_gateway::Next>()
                .map(|next| next.0.to_vec())
                .unwrap_or_default(),
        };
        let part = wire::part_size(self.nats.max_payload());
        let (first, rest) = body.split_at(part.min(body.len()));
        let mut headers = Vec::new();
        if !rest.is_empty() {
            headers.push((BODY.to_string(), MORE.to_string()));
        }
        let msg = Msg {
            subject: subject(&self.name, target),
            reply: None,
            headers,
            payload: wire::frame(&head, first),
        };
        // A call whose host went silent is sent again once when repeating it is safe:
        // NATS may drop a message on its way to a host that is leaving, and a killed
        // host's calls are better answered elsewhere than failed.
        let resend = is_idempotent(&parts.method) && rest.is_empty();
        let mut result = self
            .attempt(msg.clone(), &body, rest, part, &limits, resend)
            .await;
        if resend && matches!(result, Err(Unanswered::HostLost)) {
            tracing::info!(
                component = target,
                "sending an idempotent call again: the host that had it went silent"
            );
            result = self.attempt(msg, &body, rest, part, &limits, false).await;
        }
        result
    }

    /// One try of a call: `msg` (the head and `body`'s first part), then the `rest` of
    /// the body, then the answer's first part. `early`: give up on a call no host said
    /// it works on within one and a half keepalives (it is sent again).
    async fn attempt(
        &self,
        msg: Msg,
        body: &Bytes,
        rest: &[u8],
        part: usize,
        limits: &Limits,
        early: bool,
    ) -> Result<http::Response<WasiBody>, Unanswered> {
        // Sealed per try: a try sent again is a new call to whoever takes it.
        let mut msg = msg;
        let sealed = self.seal.seal(&msg.subject, &msg.payload);
        msg.headers.push((seal::HEADER.into(), sealed));
        let wait = Duration::from_millis(limits.queue_ms + limits.timeout_ms) + GRACE;
        let deadline = tokio::time::Instant::now() + wait;
        let no_answer = || {
            Unanswered::Failure(Failure::NoAnswer {
                timeout_ms: limits.timeout_ms,
            })
        };
        // A silent host for three keepalives is gone: the call fails then, not after
        // the whole `wait`.
        let answer = self
            .nats
            .request_parts(msg, wire::KEEPALIVE * 3)
            .await
            .map_err(|e| Unanswered::Unreachable(e.to_string()))?;
        let taken = Arc::new(AtomicBool::new(false));
        let mut answer: Parts = {
            let taken = taken.clone();
            answer
                .filter(move |part| {
                    let wait = part
                        .as_ref()
                        .is_ok_and(|p| wire::header(&p.headers, BODY) == Some(wire::WAIT));
                    if wait {
                        taken.store(true, Ordering::Relaxed);
                    }
                    std::future::ready(!wait)
                })
                .boxed()
        };
        if !rest.is_empty() {
            self.upload(&mut answer, body.slice_ref(rest), part, wait)
                .await?;
            taken.store(true, Ordering::Relaxed);
        }
        // Nothing at all within one and a half keepalives: no host took the call (or the
        // one that did is too busy to say so, which only an idempotent call may risk).
        let first = loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(no_answer());
            }
            let silence = (wire::KEEPALIVE * 3 / 2).min(deadline - now);
            match tokio::time::timeout(silence, answer.next()).await {
                Ok(Some(Ok(first))) => break first,
                Ok(Some(Err(MsgError::Timeout))) => return Err(Unanswered::HostLost),
                Ok(Some(Err(e))) => return Err(Unanswered::Unreachable(e.to_string())),
                Ok(None) => return Err(no_answer()),
                Err(_) if early && !taken.load(Ordering::Relaxed) && now + silence < deadline => {
                    return Err(Unanswered::HostLost)
                }
                Err(_) => {}
            }
        };
        response(first, answer)
    }

    /// Send the rest of a request body to where the host that took the call says,
    /// one acknowledged part at a time; stop early when it says so (its answer, a 413,
    /// follows on `answer`).
    async fn upload(
        &self,
        answer: &mut Parts,
        rest: Bytes,
        part: usize,
        wait: Duration,
    ) -> Result<(), Unanswered> {
        let broken = |why: String| Unanswered::Unreachable(format!("sending the body: {why}"));
        let go = match answer.next().await {
            Some(Ok(go)) => go,
            Some(Err(e)) => return Err(broken(e.to_string())),
            None => return Err(broken("no answer".into())),
        };
        let to = wire::header(&go.headers, SEND_TO)
            .ok_or_else(|| broken("the host did not say where to send it".into()))?
            .to_string();
        let count = rest.len().div_ceil(part);
        for (i, chunk) in rest.chunks(part).enumerate() {
            let flag = if i + 1 == count { END } else { MORE };
            let msg = Msg {
                subject: to.clone(),
                reply: None,
                headers: vec![(BODY.into(), flag.into())],
                payload: rest.slice_ref(chunk),
            };
            let ack = self
                .nats
                .request(msg, wait, 1)
                .await
                .map_err(|e| broken(e.to_string()))?;
            let stop = ack
                .first()
                .is_some_and(|a| wire::header(&a.headers, BODY) == Some(END));
            if stop {
                break;
            }
        }
        Ok(())
    }
}

/// Why a remote call has no answer.
enum Unanswered {
    /// As an in-process call would fail.
    Failure(Failure),
    /// No host took it (none runs the component, or NATS is unreachable).
    Unreachable(String),
    /// The host that took it went silent (it died or was cut off, not the component),
    /// or the call was lost on its way to a host that was leaving.
    HostLost,
}

/// The response whose first part is `first`; further parts stream from `answer`.
fn response(first: Msg, answer: Parts) -> Result<http::Response<WasiBody>, Unanswered> {
    let (head, body): (ResponseHead, Bytes) =
        wire::unframe(&first.payload).map_err(|e| Unanswered::Unreachable(e.to_string()))?;
    let status = http::StatusCode::from_u16(head.status)
        .map_err(|_| Unanswered::Unreachable(format!("a bad status {}", head.status)))?;
    let body = match wire::header(&first.headers, BODY) {
        Some(MORE) => rest_of(body, answer),
        Some(wire::BROKEN) => broken_body(body),
        _ => Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    };
    let mut resp = http::Response::new(body);
    *resp.status_mut() = status;
    wire::fill(resp.headers_mut(), &head.headers);
    Ok(resp)
}

fn body_error(why: &str) -> wasmtime_wasi_http::Error {
    wasmtime_wasi_http::Error::InternalError(Some(format!("answer from another host: {why}")))
}

fn broken_body(body: Bytes) -> WasiBody {
    let frames = futures::stream::iter([
        Ok(http_body::Frame::data(body)),
        Err(body_error("the body broke off")),
    ]);
    StreamBody::new(frames).boxed_unsync()
}

/// A body of `first`, then the parts on `answer` up to the last.
fn rest_of(first: Bytes, answer: Parts) -> WasiBody {
    let rest = futures::stream::unfold(Some(answer), |answer| async move {
        let mut answer = answer?;
        match answer.next().await {
            Some(Ok(part)) => {
                let frame = Ok(http_body::Frame::data(part.payload));
                match wire::header(&part.headers, BODY) {
                    Some(MORE) => Some((frame, Some(answer))),
                    Some(wire::BROKEN) => Some((Err(body_error("the body broke off")), None)),
                    _ => Some((frame, None)),
                }
            }
            Some(Err(e)) => Some((Err(body_error(&e.to_string())), None)),
            None => Some((Err(body_error("the answer stopped")), None)),
        }
    });
    let frames =
        futures::stream::once(async move { Ok(http_body::Frame::data(first)) }).chain(rest);
    StreamBody::new(frames).boxed_unsync()
}
