//! A chaos run's summary: faults injected and how fast the gateways served again,
//! requests and errors by kind, orders by outcome, each invariant's checks and
//! violations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::changes::Changes;
use super::check::{Verdict, Verdicts};
use super::nemesis::Step;
use super::workload::{Outcome, Seen};
use super::{Settings, Settled, RECOVERY};

/// What a run found.
pub struct Report {
    /// What was run.
    pub settings: Settings,
    /// The schedule.
    pub steps: Vec<Step>,
    /// Per fault kind: how many, slowest recovery, how many not within [`RECOVERY`].
    pub faults: BTreeMap<&'static str, (u64, Duration, u64)>,
    /// What the clients saw.
    pub seen: Seen,
    /// Each invariant's result.
    pub verdicts: Verdicts,
    /// Orders still pending when the checker gave up waiting.
    pub pending: usize,
    /// How long the shop took to settle after the clients finished; `None`: it never did.
    pub settled_in: Option<Duration>,
    /// Deploys and rollbacks sent, and acknowledged.
    pub changes: (usize, usize),
    /// The hosts' last warnings and errors.
    pub logs: String,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        settings: &Settings,
        steps: Vec<Step>,
        recoveries: Vec<(&'static str, Option<Duration>)>,
        seen: Seen,
        settled: Settled,
        served: Verdict,
        changes: &Changes,
        logs: String,
    ) -> Self {
        let Settled {
            mut verdicts,
            pending,
            took,
        } = settled;
        let mut faults: BTreeMap<&'static str, (u64, Duration, u64)> = BTreeMap::new();
        let mut slow = Verdict::default();
        for (kind, took) in recoveries {
            let entry = faults.entry(kind).or_default();
            entry.0 += 1;
            slow.checked += 1;
            match took {
                Some(t) => entry.1 = entry.1.max(t),
                None => {
                    entry.2 += 1;
                    slow.violations.push(format!(
                        "after {kind}, a gateway did not serve within {}s",
                        RECOVERY.as_secs()
                    ));
                }
            }
        }
        verdicts.insert("served again after healing", slow);
        verdicts.insert("last acknowledged deploy served", served);
        if pending > 0 {
            let mut v = verdicts
                .remove("acknowledged orders exist")
                .unwrap_or_default();
            v.violations.push(format!(
                "{pending} orders still pending once the shop stopped changing"
            ));
            verdicts.insert("acknowledged orders exist", v);
        }
        Self {
            settings: settings.clone(),
            steps,
            faults,
            seen,
            verdicts,
            pending,
            settled_in: took,
            changes: changes.counts(),
            logs,
        }
    }

    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.verdicts.values().all(|v| v.violations.is_empty())
    }

    /// The summary table, and every violation (the first 20 of each invariant).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        let _ = writeln!(
            out,
            "chaos: seed {}, {} s of faults, {} clients, storage faults {}, deploys and rollbacks {}",
            s.seed,
            s.run.as_secs(),
            s.clients,
            if s.mix.storage { "on" } else { "off" },
            if s.mix.changes { "on" } else { "off" },
        );
        let _ = writeln!(
            out,
            "\n| fault | injected | slowest recovery | not recovered in {}s |",
            RECOVERY.as_secs()
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        for (kind, (n, slowest, late)) in &self.faults {
            let _ = writeln!(
                out,
                "| {kind} | {n} | {:.1} s | {late} |",
                slowest.as_secs_f64()
            );
        }
        let (sent, acked) = self.changes;
        let _ = writeln!(
            out,
            "\nproduct deploys and rollbacks sent: {sent}, acknowledged: {acked}"
        );
        self.traffic(&mut out);
        let _ = match self.settled_in {
            Some(t) => writeln!(
                out,
                "the shop settled (every invariant held, nothing pending) {:.0} s after the clients finished",
                t.as_secs_f64()
            ),
            None => writeln!(out, "the shop did not settle: what it stored stopped changing with invariants broken"),
        };
        let _ = writeln!(out, "\n| invariant | checked | violations |");
        let _ = writeln!(out, "|---|---:|---:|");
        for (name, v) in &self.verdicts {
            let _ = writeln!(out, "| {name} | {} | {} |", v.checked, v.violations.len());
        }
        for (name, v) in &self.verdicts {
            for violation in v.violations.iter().take(20) {
                let _ = writeln!(out, "VIOLATION {name}: {violation}");
            }
        }
        if !self.passed() {
            let _ = writeln!(out, "\nschedule (seed {}):", s.seed);
            for step in &self.steps {
                let _ = writeln!(out, "{step}");
            }
            let _ = writeln!(
                out,
                "\nhost logs (warnings and errors, last lines):\n{}",
                self.logs
            );
        }
        out
    }

    fn traffic(&self, out: &mut String) {
        let seen = &self.seen;
        let count =
            |f: &dyn Fn(&Outcome) -> bool| seen.orders.iter().filter(|p| f(&p.outcome)).count();
        let status =
            |want: &str| count(&|o| matches!(o, Outcome::Acked { status, .. } if status == want));
        let _ = writeln!(
            out,
            "\nrequests: {}; orders: {} acknowledged ({} paid, {} payment failed, {} pending), {} out of stock, {} without a final answer",
            seen.requests,
            count(&|o| matches!(o, Outcome::Acked { .. })),
            status("paid"),
            status("payment_failed"),
            status("pending"),
            count(&|o| *o == Outcome::Rejected),
            count(&|o| *o == Outcome::Unknown),
        );
        let errors: Vec<String> = seen
            .errors
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        let bare: Vec<String> = seen
            .no_retry_after
            .iter()
            .map(|(why, n)| format!("{why} ×{n}"))
            .collect();
        let _ = writeln!(
            out,
            "errors clients saw: {}; 503 without Retry-After: {}",
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            },
            if bare.is_empty() {
                "none".to_string()
            } else {
                bare.join(", ")
            }
        );
    }
}
