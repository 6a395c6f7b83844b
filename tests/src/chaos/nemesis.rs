//! The nemesis: a schedule of faults drawn from a seed (the same seed, the same
//! schedule, printed before the run so any run can be replayed), and the hand that
//! injects each fault, heals it, and times how long the gateways take to serve again.
//!
//! One fault at a time, each lasting a few seconds; half of them carry a deploy or a
//! rollback of `product` in their middle, so changes race the faults too.

use std::fmt;
use std::time::Duration;

use super::world::{Break, Proc, World, HOSTS};
use crate::proxy::Way;

/// A small, seedable generator (splitmix64): the schedule must not depend on a crate's
/// algorithm choices to stay replayable.
pub struct Rng(u64);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.draw() % n as u64) as usize
    }

    /// A duration between `lo` and `hi` seconds, to the millisecond.
    pub fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        let unit = (self.draw() % 1000) as f64 / 1000.0;
        Duration::from_millis(((lo + (hi - lo) * unit) * 1000.0) as u64)
    }
}

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A host cut off from every NATS server.
    HostOffNats(usize, Break),
    /// A host cut off from PostgreSQL.
    HostOffPg(usize, Break),
    /// A NATS server cut off from the other two (its clients stay with it).
    NatsIsolated(usize, Break),
    /// SIGSTOP, then SIGCONT when it ends.
    Pause(Proc),
    /// SIGKILL, then started again (same data) when it ends.
    Crash(Proc),
    /// PostgreSQL restarted as after a crash.
    RestartPg,
    /// A host's data dir filled to the last byte, then freed.
    DiskFull(usize),
}

/// A change of the `product` component sent through a host's admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new build (a variant no host has run yet).
    Deploy(usize),
    /// Back to the version before.
    Rollback(usize),
}

/// One step of a schedule.
#[derive(Debug, Clone)]
pub struct Step {
    /// Since the run started.
    pub at: Duration,
    /// What breaks.
    pub fault: Fault,
    /// For how long.
    pub lasts: Duration,
    /// Sent halfway through the fault.
    pub change: Option<Change>,
}

/// Which faults a schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// PostgreSQL restarts and hosts cut off from it.
    pub storage: bool,
    /// Deploys and rollbacks during faults.
    pub changes: bool,
}

impl Mix {
    /// Every fault the nemesis knows.
    pub const ALL: Mix = Mix {
        storage: true,
        changes: true,
    };
}

/// The schedule of `seed` for a run of `run`, drawn from `mix`.
pub fn schedule(seed: u64, run: Duration, mix: Mix) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut at = rng.secs(2.0, 4.0);
    let mut steps = Vec::new();
    while at < run {
        let mut fault = fault(&mut rng);
        while !mix.storage && matches!(fault, Fault::HostOffPg(..) | Fault::RestartPg) {
            fault = self::fault(&mut rng);
        }
        let lasts = match fault {
            Fault::RestartPg => Duration::ZERO,
            Fault::Pause(_) => rng.secs(1.0, 6.0),
            _ => rng.secs(2.0, 8.0),
        };
        let change = match rng.below(4) {
            0 => Some(Change::Deploy(rng.below(HOSTS))),
            // Only a host that runs product can roll it back.
            1 => Some(Change::Rollback(1 + rng.below(HOSTS - 1))),
            _ => None,
        }
        .filter(|_| mix.changes);
        steps.push(Step {
            at,
            fault,
            lasts,
            change,
        });
        at += lasts + rng.secs(3.0, 6.0);
    }
    steps
}

fn fault(rng: &mut Rng) -> Fault {
    let how = match rng.below(4) {
        0 => Break::Cut,
        1 => Break::Drop(Way::Up),
        2 => Break::Drop(Way::Down),
        _ => Break::Drop(Way::Both),
    };
    let proc = if rng.below(2) == 0 {
        Proc::Host(rng.below(HOSTS))
    } else {
        Proc::Nats(rng.below(HOSTS))
    };
    match rng.below(8) {
        0 | 1 => Fault::HostOffNats(rng.below(HOSTS), how),
        2 => Fault::HostOffPg(rng.below(HOSTS), how),
        3 => Fault::NatsIsolated(rng.below(HOSTS), how),
        4 => Fault::Pause(proc),
        5 => Fault::Crash(proc),
        6 => Fault::DiskFull(rng.below(HOSTS)),
        _ => Fault::RestartPg,
    }
}

impl Fault {
    /// Apply it to `world`.
    pub async fn inject(self, world: &mut World) {
        match self {
            Fault::HostOffNats(h, how) => world.host_off_nats(h, how),
            Fault::HostOffPg(h, how) => world.host_off_pg(h, how),
            Fault::NatsIsolated(n, how) => world.nats_isolated(n, how),
            Fault::Pause(p) => world.signal(p, true),
            Fault::Crash(p) => world.kill(p),
            Fault::RestartPg => world.restart_pg().await,
            Fault::DiskFull(h) => {
                if !world.fill_disk(h) {
                    eprintln!("chaos: host {h} has no disk of its own to fill; skipped");
                }
            }
        }
    }

    /// Undo it.
    pub async fn heal(self, world: &mut World) {
        match self {
            Fault::Pause(p) => world.signal(p, false),
            Fault::Crash(p) => world.restart(p).await,
            Fault::DiskFull(h) => world.free_disk(h),
            _ => world.heal(),
        }
    }

    /// Its kind, for the summary table.
    pub fn kind(self) -> &'static str {
        match self {
            Fault::HostOffNats(..) => "host off NATS",
            Fault::HostOffPg(..) => "host off PostgreSQL",
            Fault::NatsIsolated(..) => "NATS server isolated",
            Fault::Pause(Proc::Host(_)) => "host paused",
            Fault::Pause(Proc::Nats(_)) => "NATS server paused",
            Fault::Crash(Proc::Host(_)) => "host kill -9",
            Fault::Crash(Proc::Nats(_)) => "NATS server kill -9",
            Fault::RestartPg => "PostgreSQL restart",
            Fault::DiskFull(_) => "host disk full",
        }
    }
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::Cut => write!(f, "cut"),
            Break::Drop(Way::Up) => write!(f, "its sends stopped"),
            Break::Drop(Way::Down) => write!(f, "what it receives stopped"),
            Break::Drop(Way::Both) => write!(f, "stopped both ways"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.fault {
            Fault::HostOffNats(h, how) => format!("host {h} off NATS ({how})"),
            Fault::HostOffPg(h, how) => format!("host {h} off PostgreSQL ({how})"),
            Fault::NatsIsolated(n, how) => format!("NATS server {n} isolated ({how})"),
            Fault::Pause(Proc::Host(h)) => format!("host {h} paused"),
            Fault::Pause(Proc::Nats(n)) => format!("NATS server {n} paused"),
            Fault::Crash(Proc::Host(h)) => format!("host {h} killed (-9)"),
            Fault::Crash(Proc::Nats(n)) => format!("NATS server {n} killed (-9)"),
            Fault::RestartPg => "PostgreSQL restarted (immediate)".to_string(),
            Fault::DiskFull(h) => format!("host {h}'s disk full"),
        };
        write!(f, "{:>7.1}s  {what}", self.at.as_secs_f64())?;
        if !self.lasts.is_zero() {
            write!(f, " for {:.1}s", self.lasts.as_secs_f64())?;
        }
        match self.change {
            Some(Change::Deploy(h)) => write!(f, "; product deployed through host {h}"),
            Some(Change::Rollback(h)) => write!(f, "; product rolled back through host {h}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_a_schedule() {
        let run = Duration::from_secs(120);
        let a: Vec<String> = schedule(7, run, Mix::ALL)
            .iter()
            .map(ToString::to_string)
            .collect();
        let b: Vec<String> = schedule(7, run, Mix::ALL)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            schedule(8, run, Mix::ALL)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        assert!(a.len() >= 10, "{a:?}");
        // Steps never overlap.
        let steps = schedule(7, run, Mix::ALL);
        for pair in steps.windows(2) {
            assert!(pair[0].at + pair[0].lasts < pair[1].at);
        }
    }

    #[test]
    fn every_kind_of_fault_is_drawn() {
        let steps = schedule(1, Duration::from_secs(3600), Mix::ALL);
        let kinds: std::collections::BTreeSet<&str> =
            steps.iter().map(|s| s.fault.kind()).collect();
        assert_eq!(kinds.len(), 9, "{kinds:?}");
        let calm = Mix {
            storage: false,
            changes: false,
        };
        for step in schedule(1, Duration::from_secs(3600), calm) {
            assert!(!matches!(
                step.fault,
                Fault::HostOffPg(..) | Fault::RestartPg
            ));
            assert_eq!(step.change, None);
        }
    }
}
