//! Making one store: the only place a `Store` is created, so every instance of every
//! trigger gets the same resource limiter and the same epoch deadline; and the
//! [`Deadline`] over an instance's whole run, which names what went wrong.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, UpdateDeadline};

use super::limits::{Limiter, Refused};
use super::Failure;
use crate::manifest::Limits;

/// What a store's data gives the runtime: its resource limiter.
pub trait Limited: Send + 'static {
    /// The limiter counting this instance's memory and tables.
    fn limiter(&mut self) -> &mut Limiter;
    /// Which limit refused its memory growth, if any.
    fn refused(&self) -> &Arc<Refused>;
}

/// A store for `data` with its limiter installed and a deadline `timeout_ms` from now.
pub fn store<T: Limited>(engine: &Engine, data: T, timeout_ms: u64) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|data| data.limiter());
    arm_deadline(&mut store, timeout_ms);
    store
}

/// Every tick the guest yields to the executor, so a CPU-bound guest cannot hold a worker
/// thread (and starve other requests) until its deadline; past the deadline it traps.
/// Called again when a kept instance takes its next request.
pub fn arm_deadline<T>(store: &mut Store<T>, timeout_ms: u64) {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
}

/// The deadline over an instance's whole run (instantiation, the call, a streamed body)
/// under the component's `timeout_ms`, and what went wrong named. It holds the
/// instance's limiter note, so a trap after refused growth is reported as the limit
/// that refused it. (The epoch deadline armed in the store stops a guest that computes;
/// this one also stops one parked in a host call.)
pub struct Deadline {
    limits: Limits,
    refused: Arc<Refused>,
    until: tokio::time::Instant,
}

impl Deadline {
    /// The deadline of `store`'s run, `timeout_ms` from now (a kept instance's is set
    /// again for each run it takes).
    pub fn of<T: Limited>(store: &Store<T>, limits: Limits) -> Self {
        Self {
            limits,
            refused: store.data().refused().clone(),
            until: tokio::time::Instant::now() + Duration::from_millis(limits.timeout_ms),
        }
    }

    /// Run `work` until the deadline.
    pub async fn run<T>(
        &self,
        work: impl Future<Output = wasmtime::Result<T>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout_at(self.until, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(Failure::of(&err, &self.refused, &self.limits)),
            Err(_) => Err(Failure::Stopped {
                timeout_ms: self.limits.timeout_ms,
            }),
        }
    }
}
