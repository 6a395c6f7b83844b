//! Making one store: the only place a `Store` is created, so every instance of every
//! trigger gets the same resource limiter and the same epoch deadline.

use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, UpdateDeadline};

use super::limits::Limiter;

/// What a store's data gives the runtime: its resource limiter.
pub trait Limited: Send + 'static {
    /// The limiter counting this instance's memory and tables.
    fn limiter(&mut self) -> &mut Limiter;
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
