//! Calling a component that runs on other hosts: the request goes as a NATS request
//! to the queue group of the hosts that run it, its body in parts when it is bigger
//! than one message, and the answer streams back part by part. Failures come back as
//! the same answers an in-process call gives (503 when no host runs it or NATS is
//! down, 504 when none answers in time), so retries and breakers treat them alike.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use panal_nats::{Msg, MsgError};
use wasmtime_wasi_http::WasiBody;

use super::wire::{self, RequestHead, ResponseHead, BODY, END, MORE, SEND_TO};
use super::{subject, Cluster};
use crate::runtime::failure::error;
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
                error(http::StatusCode::SERVICE_UNAVAILABLE, target, &why)
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
            .elsewhere
            .get(target)
            .copied()
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
        let wait = Duration::from_millis(limits.queue_ms + limits.timeout_ms) + GRACE;
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
        let mut answer: Parts = answer
            .filter(|part| {
                let wait = part
                    .as_ref()
                    .is_ok_and(|p| wire::header(&p.headers, BODY) == Some(wire::WAIT));
                std::future::ready(!wait)
            })
            .boxed();
        if !rest.is_empty() {
            self.upload(&mut answer, body.slice_ref(rest), part, wait)
                .await?;
        }
        let first = match tokio::time::timeout(wait, answer.next()).await {
            Ok(Some(Ok(first))) => first,
            Ok(Some(Err(MsgError::Timeout))) => {
                let why = "the host that took the call went silent (stopped or cut off)";
                return Err(Unanswered::Unreachable(why.into()));
            }
            Err(_) | Ok(None) => return Err(no_answer()),
            Ok(Some(Err(e))) => return Err(Unanswered::Unreachable(e.to_string())),
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
}

/// The response whose first part is `first`; further parts stream from `answer`.
fn response(first: Msg, answer: Parts) -> Result<http::Response<WasiBody>, Unanswered> {
    let (head, body): (ResponseHead, Bytes) =
        wire::unframe(&first.payload).map_err(Unanswered::Unreachable)?;
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
