//! The kept instances of a version's messaging handler (`limits.reuse` > 1, the same
//! limit HTTP requests honour): a message goes to an idle instance of the version when
//! there is one, else to a fresh one; after a clean run the instance is kept for the
//! next message until it has handled `reuse` of them, or has waited `limits.idle_ms`.
//! An instance takes one message at a time (the handler export is synchronous). One
//! that failed (a trap, the deadline, a memory limit) is never kept, so a message never
//! lands in an instance in a state its guest did not expect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::Deployed;
use crate::capabilities::bindings::Host_ as Host;
use crate::capabilities::{CallContext, State};

/// An instance of a messaging handler, with how many messages it has handled.
pub(crate) struct Handler {
    pub store: Store<State>,
    pub bindings: Host,
    handled: u32,
}

impl Handler {
    /// A fresh instance.
    pub fn new(store: Store<State>, bindings: Host) -> Self {
        Self {
            store,
            bindings,
            handled: 0,
        }
    }
}

/// A version's idle handler instances, newest last, and whether a sweeper task is
/// watching them (one per version, not one per message).
#[derive(Default)]
pub(crate) struct Kept {
    idle: Mutex<Vec<(Handler, Instant)>>,
    swept: AtomicBool,
}

impl Kept {
    fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<(Handler, Instant)>> {
        self.idle.lock()
    }

    /// Drop the instances idle for `idle` or longer (outside the lock: dropping a store
    /// gives its memory back); whether any are left.
    fn sweep(&self, idle: Duration) -> bool {
        let (expired, left): (Vec<_>, bool) = {
            let mut kept = self.lock();
            let now = Instant::now();
            let (old, fresh) = kept
                .drain(..)
                .partition(|(_, since)| now.duration_since(*since) >= idle);
            *kept = fresh;
            (old, !kept.is_empty())
        };
        drop(expired);
        left
    }
}

impl Deployed {
    /// A kept instance for a message started by `ctx`, its context and deadline set
    /// for it; `None` when there is none idle (the caller makes a fresh one).
    pub(crate) fn kept_handler(&self, ctx: &CallContext) -> Option<Handler> {
        let idle = Duration::from_millis(self.limits.idle_ms);
        self.kept.sweep(idle);
        let (mut handler, _) = self.kept.lock().pop()?;
        handler.store.data_mut().enter(ctx);
        crate::runtime::instance::arm_deadline(&mut handler.store, self.limits.timeout_ms);
        Some(handler)
    }

    /// `handler` handled a message cleanly: keep it for the next one, unless it has
    /// handled `reuse` or hit a memory limit; dropped after `idle_ms` unused.
    pub(crate) fn keep_handler(self: &Arc<Self>, mut handler: Handler) {
        handler.handled += 1;
        let reuse = self.limits.reuse_for(self.is_service());
        if handler.handled >= reuse || handler.store.data().limits.hit.any() {
            return;
        }
        self.kept.lock().push((handler, Instant::now()));
        if self.kept.swept.swap(true, Ordering::AcqRel) {
            return;
        }
        let idle = Duration::from_millis(self.limits.idle_ms);
        let version: Weak<Self> = Arc::downgrade(self);
        // Sweeps every `idle` while anything is kept; the next keep starts it again.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(idle).await;
                let Some(version) = version.upgrade() else {
                    return;
                };
                if !version.kept.sweep(idle) {
                    version.kept.swept.store(false, Ordering::Release);
                    // Kept again between the sweep and the flag: keep sweeping.
                    if version.kept.lock().is_empty()
                        || version.kept.swept.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                }
            }
        });
    }
}
