//! Per-request limits besides time (the epoch deadline lives in [`super::instance`]): memory growth
//! that remembers it was refused, so the answer and the log can name the limit; request
//! bodies capped at `max_body_kb`; the short wait for a free slot at `max_concurrency`
//! before a 503; and response bodies that end in an error, not a clean end, when their
//! instance was stopped half-way (the head, and its status, already went out).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::budget::{Charge, MemoryBudget};
use wasmtime_wasi_http::WasiBody;

/// The store's resource limiter: `memory_mb` as the total of every linear memory of the
/// instance (not per memory), its charge to the host's guest memory budget, the
/// per-instance counts the pool is sized for, and a note of which limit refused growth,
/// so the answer and the log can name it.
pub struct Limiter {
    inner: StoreLimits,
    memory: usize,
    /// Bytes of linear memory the instance has, all memories together.
    used: usize,
    /// What it holds of the host's budget (none for a deploy's trial).
    charge: Option<Charge>,
    /// Set when growth was refused, naming the limit.
    pub hit: Arc<Refused>,
}

/// Which limit refused an instance's memory growth, if any.
#[derive(Debug, Default)]
pub struct Refused {
    which: AtomicU8,
    /// The budget's size, MiB, when the budget refused it.
    budget_mb: AtomicU32,
}

const REFUSED_MEMORY_MB: u8 = 1;
const REFUSED_BUDGET: u8 = 2;

impl Refused {
    /// Whether any growth was refused (the instance is not to be reused).
    pub fn any(&self) -> bool {
        self.which.load(Ordering::Relaxed) != 0
    }

    /// The host's budget (of this many MiB) refused it.
    pub fn by_budget(&self) -> Option<u32> {
        (self.which.load(Ordering::Relaxed) & REFUSED_BUDGET != 0)
            .then(|| self.budget_mb.load(Ordering::Relaxed))
    }

    /// Its own `memory_mb` refused it.
    pub fn by_memory_mb(&self) -> bool {
        self.which.load(Ordering::Relaxed) & REFUSED_MEMORY_MB != 0
    }

    fn set(&self, which: u8) {
        self.which.fetch_or(which, Ordering::Relaxed);
    }
}

impl Limiter {
    /// At most `memory` bytes of linear memory per instance, all memories together,
    /// each byte charged to `charge` when there is one.
    pub fn new(memory: usize, charge: Option<Charge>) -> Self {
        use super::engine::{
            CORE_INSTANCES_PER_INSTANCE, MEMORIES_PER_INSTANCE, TABLES_PER_INSTANCE,
        };
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(count(CORE_INSTANCES_PER_INSTANCE))
                .tables(count(TABLES_PER_INSTANCE))
                .memories(count(MEMORIES_PER_INSTANCE))
                .build(),
            memory,
            used: 0,
            charge,
            hit: Arc::default(),
        }
    }

    /// The host's budget this instance is charged to, if any.
    pub fn budget(&self) -> Option<&MemoryBudget> {
        self.charge.as_ref().map(Charge::budget)
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory || !self.inner.memory_growing(current, desired, maximum)? {
            if total > self.memory {
                self.hit.set(REFUSED_MEMORY_MB);
            }
            return Ok(false);
        }
        if let Some(charge) = &mut self.charge {
            if !charge.grow_to(total as u64) {
                self.hit
                    .budget_mb
                    .store(charge.budget().total_mb(), Ordering::Relaxed);
                self.hit.set(REFUSED_BUDGET);
                charge.budget().refuse();
                return Ok(false);
            }
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A request body that fails once more than `left` bytes went through, and says so in
/// `over` (the answer is then 413, whatever the guest made of the failure).
pub struct Capped {
    inner: WasiBody,
    left: u64,
    over: Arc<AtomicBool>,
}

impl Capped {
    /// `inner`, cut off after `max` bytes.
    pub fn new(inner: WasiBody, max: u64, over: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            left: max,
            over,
        }
    }
}

impl Body for Capped {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let len = data.len() as u64;
                if len > this.left {
                    this.over.store(true, Ordering::Relaxed);
                    this.left = 0;
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                        "request body larger than the component's max_body_kb".into(),
                    )))));
                }
                this.left -= len;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How an instance ended, as its response body needs to know.
#[derive(Debug, Default)]
pub struct Ending(AtomicU8);

impl Ending {
    const RUNNING: u8 = 0;
    const TIMED_OUT: u8 = 1;
    const FAILED: u8 = 2;

    /// Note the instance's outcome; `timed_out` when its deadline stopped it.
    pub fn set<T, E>(&self, result: &Result<T, E>, timed_out: bool) {
        let state = match (result.is_ok(), timed_out) {
            (_, true) => Self::TIMED_OUT,
            (true, false) => Self::RUNNING,
            (false, false) => Self::FAILED,
        };
        self.0.store(state, Ordering::Relaxed);
    }
}

/// A component's response body that ends in an error when the instance behind it was
/// stopped (deadline, trap) or its request body was cut off, so that the client sees a
/// broken response (HTTP/1.1: no last chunk) rather than a short one that looks whole.
pub struct Guarded {
    inner: WasiBody,
    ending: Arc<Ending>,
    over: Arc<AtomicBool>,
    component: Arc<str>,
    limits: crate::manifest::Limits,
    /// The request's `max_concurrency` slot, when the body must keep it to its end.
    slot: Option<OwnedSemaphorePermit>,
}

impl Guarded {
    /// `inner`, checked at its end against `ending` and `over`.
    pub fn new(
        inner: WasiBody,
        ending: Arc<Ending>,
        over: Arc<AtomicBool>,
        component: Arc<str>,
        limits: crate::manifest::Limits,
    ) -> Self {
        Self {
            inner,
            ending,
            over,
            component,
            limits,
            slot: None,
        }
    }

    /// Keep `slot` until the body ends (or is dropped).
    #[must_use]
    pub fn holding(mut self, slot: OwnedSemaphorePermit) -> Self {
        self.slot = Some(slot);
        self
    }

    fn cut_off(&self) -> Option<String> {
        let component = &*self.component;
        if self.over.load(Ordering::Relaxed) {
            let max_body_kb = self.limits.max_body_kb;
            tracing::warn!(
                component,
                max_body_kb,
                "limit hit: max_body_kb; response cut off"
            );
            return Some(format!("request body over {max_body_kb} KiB"));
        }
        match self.ending.0.load(Ordering::Relaxed) {
            Ending::TIMED_OUT => {
                let timeout_ms = self.limits.timeout_ms;
                tracing::warn!(
                    component,
                    timeout_ms,
                    "limit hit: timeout_ms; response cut off"
                );
                Some(format!("component stopped at its {timeout_ms} ms limit"))
            }
            Ending::FAILED => {
                tracing::error!(component, "component trapped while sending its response");
                Some("component failed while sending its response".into())
            }
            _ => None,
        }
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => match this.cut_off() {
                Some(why) => Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(
                    Some(why),
                )))),
                None => Poll::Ready(None),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never promise the end early: it may yet turn into an error.
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A slot among the component's `max_concurrency`: at once when one is free, else the
/// first to free up within `queue`; `None` when none did.
pub async fn slot(running: &Arc<Semaphore>, queue: Duration) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = running.clone().try_acquire_owned() {
        return Some(permit);
    }
    if queue.is_zero() {
        return None;
    }
    tokio::time::timeout(queue, running.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    fn body(bytes: &'static [u8]) -> WasiBody {
        Full::new(Bytes::from_static(bytes))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn bodies_pass_up_to_the_cap_and_fail_past_it() {
        let over = Arc::new(AtomicBool::new(false));
        let fits = Capped::new(body(b"12345"), 5, over.clone()).collect().await;
        assert_eq!(fits.expect("fits").to_bytes().as_ref(), b"12345");
        assert!(!over.load(Ordering::Relaxed));
        let too_big = Capped::new(body(b"123456"), 5, over.clone())
            .collect()
            .await;
        assert!(too_big.is_err());
        assert!(over.load(Ordering::Relaxed));
    }

    #[test]
    fn memory_mb_bounds_all_memories_together() {
        let mut l = Limiter::new(10, None);
        assert!(l.memory_growing(0, 6, None).expect("grow"));
        assert!(!l.memory_growing(0, 6, None).expect("grow"), "6 + 6 > 10");
        assert!(l.hit.by_memory_mb() && l.hit.by_budget().is_none());
        assert!(l.memory_growing(0, 4, None).expect("grow"), "6 + 4 fits");
        assert!(l.memory_growing(6, 6, None).expect("no change"));
    }

    #[tokio::test]
    async fn the_host_budget_refuses_growth_past_it() {
        use crate::runtime::budget::Admission;
        let budget = Arc::new(MemoryBudget::new(1));
        let charge = budget.admit(0, Admission::Request(Duration::ZERO)).await;
        let mut l = Limiter::new(4 << 20, charge);
        assert!(l.memory_growing(0, 1 << 20, None).expect("grow"));
        assert!(!l.memory_growing(1 << 20, 2 << 20, None).expect("grow"));
        assert_eq!(l.hit.by_budget(), Some(1));
        assert!(!l.hit.by_memory_mb());
        assert_eq!(budget.refused(), 1);
        drop(l);
        assert_eq!(budget.used(), 0, "given back with the instance");
    }

    #[tokio::test]
    async fn a_full_component_queues_briefly_then_refuses() {
        let running = Arc::new(Semaphore::new(1));
        let held = slot(&running, Duration::ZERO).await.expect("free slot");
        assert!(slot(&running, Duration::from_millis(20)).await.is_none());
        let waiter = tokio::spawn({
            let running = running.clone();
            async move { slot(&running, Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(
            waiter.await.expect("join"),
            "a slot freed within the wait is taken"
        );
    }
}
