//! The host-wide budget for guest memory: the linear memory every live instance has
//! actually grown to, all components together, is charged to one budget and given back
//! when the instance is dropped, so however many instances run at once (a component's
//! `max_concurrency`, kept instances, message handlers, every component together) their
//! memory cannot pass it. A new instance is admitted only with room for its initial
//! memory: a request (or a timer's call) waits its `queue_ms` for room, then gets
//! 503; a message waits as long as it takes, and is admitted only while a quarter of
//! the budget is left, so message handlers cannot take the room requests need. Growth past the budget is refused
//! like growth past `memory_mb`, and the instance fails with 503 naming the budget.
//! `--guest-memory-mb` / `PANAL_GUEST_MEMORY_MB` sets it; by default it is half of the
//! machine's memory (or of the cgroup's limit, when lower).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The budget, in bytes.
#[derive(Debug)]
pub struct MemoryBudget {
    total: u64,
    used: AtomicU64,
    freed: Notify,
    /// Instances refused for want of room: not admitted in time, or growth refused.
    refused: AtomicU64,
}

/// Who asks for a new instance, which says how long it may wait and how much of the
/// budget it may find taken.
#[derive(Debug, Clone, Copy)]
pub enum Admission {
    /// A request: up to this long, up to the whole budget.
    Request(Duration),
    /// A message: as long as it takes, while a quarter of the budget is free.
    Background,
}

/// What one live instance has charged to the budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl MemoryBudget {
    /// A budget of `total_mb` MiB.
    pub fn new(total_mb: u32) -> Self {
        Self {
            total: u64::from(total_mb) << 20,
            used: AtomicU64::new(0),
            freed: Notify::new(),
            refused: AtomicU64::new(0),
        }
    }

    /// Half of this machine's memory, or of this process's cgroup limit when lower
    /// (at least 256 MiB).
    pub fn default_mb() -> u32 {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib >> 10)
        });
        let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|bytes| bytes >> 20);
        let machine = match (meminfo, cgroup) {
            (Some(m), Some(c)) => m.min(c),
            (Some(m), None) => m,
            (None, Some(c)) => c,
            (None, None) => 8192,
        };
        u32::try_from(machine / 2).unwrap_or(u32::MAX).max(256)
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The whole budget, in MiB (for messages).
    pub fn total_mb(&self) -> u32 {
        u32::try_from(self.total >> 20).unwrap_or(u32::MAX)
    }

    /// Bytes charged by live instances now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Instances refused for want of room so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Count one instance refused (its growth did not fit).
    pub(crate) fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Admit a new instance that starts with up to `initial` bytes, charging them now;
    /// `None` when there was no room within the admission's wait (counted).
    pub async fn admit(self: &Arc<Self>, initial: u64, who: Admission) -> Option<Charge> {
        let (ceiling, wait) = match who {
            Admission::Request(wait) => (self.total, Some(wait)),
            Admission::Background => (self.total - self.total / 4, None),
        };
        let room = async {
            loop {
                let freed = self.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if self.take(initial, ceiling) {
                    return;
                }
                freed.await;
            }
        };
        let admitted = match wait {
            Some(wait) => tokio::time::timeout(wait, room).await.is_ok(),
            None if initial > ceiling => false,
            None => {
                room.await;
                true
            }
        };
        if !admitted {
            self.refuse();
            return None;
        }
        Some(Charge {
            budget: self.clone(),
            bytes: initial,
        })
    }

    /// Charge `bytes` if the total stays within `ceiling`.
    fn take(&self, bytes: u64, ceiling: u64) -> bool {
        self.used
            .try_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&after| after <= ceiling)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
            self.freed.notify_waiters();
        }
    }
}

impl Default for MemoryBudget {
    /// Without bound: for `panal check`, benches and unit tests.
    fn default() -> Self {
        Self::new(u32::MAX)
    }
}

impl Charge {
    /// The instance's memories now total `bytes`: charge what is more than it already
    /// holds; `false` (and nothing charged) when that does not fit in the budget.
    /// Linear memory never shrinks, so the charge only grows.
    pub fn grow_to(&mut self, bytes: u64) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if more == 0 {
            return true;
        }
        if !self.budget.take(more, self.budget.total) {
            return false;
        }
        self.bytes = bytes;
        true
    }

    /// The budget it is charged to.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[tokio::test]
    async fn instances_are_charged_what_they_grow_to_and_give_it_back() {
        let budget = Arc::new(MemoryBudget::new(100));
        let now = Admission::Request(Duration::ZERO);
        let mut a = budget.admit(10 * MIB, now).await.expect("room");
        assert!(a.grow_to(5 * MIB), "within what it holds");
        assert!(a.grow_to(60 * MIB));
        assert_eq!(budget.used(), 60 * MIB);
        let mut b = budget.admit(10 * MIB, now).await.expect("room");
        assert!(!b.grow_to(41 * MIB + 1), "60 + 41 > 100");
        assert_eq!(budget.used(), 70 * MIB, "a refused growth charges nothing");
        let wait = Admission::Request(Duration::from_millis(10));
        assert!(budget.admit(31 * MIB, wait).await.is_none());
        assert_eq!(budget.refused(), 1);
        drop(a);
        assert_eq!(budget.used(), 10 * MIB);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(MemoryBudget::default_mb() >= 256);
    }

    #[tokio::test]
    async fn background_work_leaves_a_quarter_and_waits_for_room() {
        let budget = Arc::new(MemoryBudget::new(100));
        let held = budget
            .admit(70 * MIB, Admission::Background)
            .await
            .expect("under three quarters");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.admit(10 * MIB, Admission::Background).await }
        });
        let request = budget
            .admit(20 * MIB, Admission::Request(Duration::ZERO))
            .await
            .expect("a request may use the last quarter");
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "70 + 20 + 10 is past three quarters"
        );
        drop(held);
        let admitted = waiting.await.expect("task").expect("room once freed");
        assert_eq!(budget.used(), 30 * MIB);
        drop((admitted, request));
        assert!(
            budget
                .admit(76 * MIB, Admission::Background)
                .await
                .is_none(),
            "never fits below three quarters"
        );
    }
}
