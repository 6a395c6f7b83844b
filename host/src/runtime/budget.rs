//! The host-wide budget for guest memory: every live instance holds its component's
//! `memory_mb` of it from the moment its store is made until it is dropped, so however
//! many instances run at once (a component's `max_concurrency`, kept instances, message
//! handlers, every component together), their memory cannot pass the budget. A new
//! instance that does not fit waits (a request its `queue_ms`, then 503; a message as
//! long as it takes). `--guest-memory-mb` / `PANAL_GUEST_MEMORY_MB` sets it; by default
//! it is half of the machine's memory (or of the cgroup's limit, when lower).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget, in MiB.
#[derive(Debug)]
pub struct MemoryBudget {
    total_mb: u32,
    free: Arc<Semaphore>,
    /// Instances that could not start within their wait.
    refused: AtomicU64,
}

/// A live instance's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _held: OwnedSemaphorePermit,
}

impl MemoryBudget {
    /// A budget of `total_mb` MiB.
    pub fn new(total_mb: u32) -> Self {
        Self {
            total_mb,
            free: Arc::new(Semaphore::new(total_mb as usize)),
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

    /// The whole budget, in MiB.
    pub fn total_mb(&self) -> u32 {
        self.total_mb
    }

    /// MiB held by live instances now.
    pub fn reserved_mb(&self) -> u32 {
        let free = u32::try_from(self.free.available_permits()).unwrap_or(u32::MAX);
        self.total_mb.saturating_sub(free)
    }

    /// Instances refused for want of budget so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Hold `mb` MiB for a new instance, waiting up to `wait` (`None`: as long as it
    /// takes); `None` when it did not fit in time (counted). More than the whole budget
    /// never fits.
    pub async fn reserve(&self, mb: u64, wait: Option<Duration>) -> Option<Reservation> {
        let Ok(mb) = u32::try_from(mb) else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if mb > self.total_mb {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let acquire = self.free.clone().acquire_many_owned(mb);
        let permit = match wait {
            None => acquire.await.ok(),
            Some(wait) => tokio::time::timeout(wait, acquire)
                .await
                .ok()
                .and_then(Result::ok),
        };
        if permit.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        permit.map(|held| Reservation { _held: held })
    }
}

impl Default for MemoryBudget {
    /// As large as the semaphore allows: for `panal check` and tests.
    fn default() -> Self {
        Self::new(u32::MAX >> 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn instances_wait_for_room_and_give_it_back() {
        let budget = MemoryBudget::new(100);
        let a = budget
            .reserve(60, Some(Duration::ZERO))
            .await
            .expect("fits");
        assert_eq!(budget.reserved_mb(), 60);
        assert!(budget
            .reserve(50, Some(Duration::from_millis(10)))
            .await
            .is_none());
        assert_eq!(budget.refused(), 1);
        assert!(budget.reserve(101, None).await.is_none(), "never fits");
        drop(a);
        assert_eq!(budget.reserved_mb(), 0);
        let b = budget.reserve(100, Some(Duration::ZERO)).await;
        assert!(b.is_some());
        assert!(MemoryBudget::default_mb() >= 256);
    }
}
