//! Connection guards against slow and greedy clients, shared by the public and the
//! admin listener:
//!
//! - a cap on open connections, in total and per client IP: one more is answered
//!   `503` with a JSON body and closed at once ([`Tracker`]);
//! - a header timeout: once the first byte of a request arrives, its whole head must
//!   follow within `header_timeout` ([`Watched`]);
//! - an idle timeout: a kept-alive connection with no request running and no byte
//!   received for `idle_timeout` is closed ([`Watched`]);
//! - a body deadline: a request's body must have arrived whole within `body_timeout` of
//!   its head, or the request is answered 408 ([`Deadline`]).
//!
//! Why not hyper's own `header_read_timeout`: it starts when hyper begins waiting for a
//! head, so it also cuts idle keep-alive connections at the header timeout, and the two
//! limits could not differ.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::{Body, BoxError};

/// The limits of every connection of one listener (`[gateway]` in the manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// From a request's first byte to the end of its head.
    pub header_timeout: Duration,
    /// A connection with nothing running and nothing received this long is closed.
    pub idle_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_timeout: Duration,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Open connections per client IP address per listener.
    pub max_connections_per_ip: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_connections_per_ip: 256,
        }
    }
}

/// Open connections of one listener.
#[derive(Debug)]
pub struct Tracker {
    limits: ConnLimits,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener has `max_connections` open.
    Total(usize),
    /// This client IP has `max_connections_per_ip` open.
    PerIp(usize),
}

impl Refusal {
    /// The whole HTTP/1.1 answer written to a refused connection before it is closed.
    pub fn response(self) -> Vec<u8> {
        let (field, limit) = match self {
            Self::Total(n) => ("max_connections", n),
            Self::PerIp(n) => ("max_connections_per_ip", n),
        };
        let body = serde_json::json!({
            "error": "too many connections",
            "limit": field,
            "max": limit,
        })
        .to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

impl Tracker {
    /// A tracker enforcing `limits`.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Count a new connection from `ip`, or say why it may not open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Open, Refusal> {
        let mut per_ip = self.per_ip.lock();
        if self.total.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(Refusal::Total(self.limits.max_connections));
        }
        let mine = per_ip.entry(ip).or_insert(0);
        if *mine >= self.limits.max_connections_per_ip {
            return Err(Refusal::PerIp(self.limits.max_connections_per_ip));
        }
        *mine += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Open {
            tracker: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// One counted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Open {
    tracker: Arc<Tracker>,
    ip: IpAddr,
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut per_ip = self.tracker.per_ip.lock();
        // Remove empty entries, so the map holds only clients with open connections.
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.tracker.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Requests of one connection, shared between its IO and its service.
#[derive(Debug, Default)]
pub struct Activity {
    running: AtomicUsize,
    /// Requests finished so far: a change tells the IO a new idle period began.
    finished: AtomicU64,
    /// The reader parked while a request ran: woken when none runs any more, so the
    /// idle timer starts even if the client sends nothing.
    reader: futures::task::AtomicWaker,
}

impl Activity {
    /// A request began; it counts until the guard (kept in its response body) drops.
    pub fn begin(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self.clone())
    }
}

/// A request in progress on a connection.
#[derive(Debug)]
pub struct Running(Arc<Activity>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// Where the connection stands between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Nothing received since `since`.
    Idle { since: Instant },
    /// A request's first bytes arrived at `since`; its head is not complete.
    Head { since: Instant },
}

/// A connection's socket, closed with a `TimedOut` error when the header or idle
/// timeout passes while no request of it is running.
pub struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
    limits: ConnLimits,
    phase: Phase,
    seen_finished: u64,
    timer: Pin<Box<Sleep>>,
}

impl<IO> Watched<IO> {
    /// `io` under `limits`, with `activity` fed by the connection's service.
    pub fn new(io: IO, activity: Arc<Activity>, limits: ConnLimits) -> Self {
        let now = Instant::now();
        Self {
            io,
            activity,
            limits,
            phase: Phase::Idle { since: now },
            seen_finished: 0,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
        }
    }

    fn running(&self) -> bool {
        self.activity.running.load(Ordering::Acquire) > 0
    }

    /// A request that finished since we last looked starts a new idle period.
    fn catch_up(&mut self, now: Instant) {
        let finished = self.activity.finished.load(Ordering::Acquire);
        if finished != self.seen_finished {
            self.seen_finished = finished;
            self.phase = Phase::Idle { since: now };
        }
    }

    fn deadline(&self) -> (Instant, &'static str) {
        match self.phase {
            Phase::Idle { since } => (since + self.limits.idle_timeout, "idle_timeout"),
            Phase::Head { since } => (since + self.limits.header_timeout, "header_timeout"),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let now = Instant::now();
        this.catch_up(now);
        match polled {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !this.running() {
                    if let Phase::Idle { .. } = this.phase {
                        this.phase = Phase::Head { since: now };
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.running() => {
                this.activity.reader.register(cx.waker());
                // The last request may have ended in between: then look again.
                if this.running() {
                    Poll::Pending
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
            Poll::Pending => {
                let (deadline, limit) = this.deadline();
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(limit, "closing a connection: {limit} passed");
                        Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{limit} passed"),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A response body that keeps its request counted as running until it is sent whole
/// (or dropped), so a long download is never taken for an idle connection.
pub struct Counted {
    inner: Body,
    _running: Running,
}

impl Counted {
    /// `inner`, counted by `running`.
    pub fn new(inner: Body, running: Running) -> Self {
        Self {
            inner,
            _running: running,
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a request body fails with past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0} ms (gateway.body_timeout_ms)")]
pub struct BodyTimedOut(pub u128);

/// A request body that must end by a deadline; past it, it fails and says so in
/// `tripped`, so the gateway answers 408 whatever the component made of the failure.
pub struct Deadline {
    inner: Body,
    timer: Pin<Box<Sleep>>,
    limit: Duration,
    tripped: Arc<AtomicBool>,
    done: bool,
}

impl Deadline {
    /// `inner`, due within `limit` from now.
    pub fn new(inner: Body, limit: Duration, tripped: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            timer: Box::pin(tokio::time::sleep(limit)),
            limit,
            tripped,
            done: false,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Pin::new(&mut this.inner).poll_frame(cx);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    this.tripped.store(true, Ordering::Relaxed);
                    tracing::info!(
                        body_timeout_ms = this.limit.as_millis(),
                        "limit hit: body_timeout_ms; the request body was too slow"
                    );
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit.as_millis())))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize) -> ConnLimits {
        ConnLimits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            ..ConnLimits::default()
        }
    }

    #[test]
    fn connections_are_capped_per_ip_and_in_total_and_given_back() {
        let t = Tracker::new(limits(3, 2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = t.admit(a).expect("first");
        let _a2 = t.admit(a).expect("second");
        assert_eq!(t.admit(a).expect_err("third from a"), Refusal::PerIp(2));
        let _b1 = t.admit(b).expect("b");
        assert_eq!(t.admit(b).expect_err("full"), Refusal::Total(3));
        drop(a1);
        assert_eq!(t.open(), 2);
        assert!(t.admit(a).is_ok());
        assert!(String::from_utf8(Refusal::PerIp(2).response())
            .expect("text")
            .starts_with("HTTP/1.1 503 "));
    }
}
