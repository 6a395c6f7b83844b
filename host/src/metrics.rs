//! What the host counts, and `GET /metrics` on the admin listener in the Prometheus text
//! format (version 0.0.4).
//!
//! The request path only touches atomics: each component has one [`Stats`] (kept
//! across its versions, and across an undeploy and a later deploy of the same name) and
//! each version one [`VersionStats`]. The maps that hold them are locked only when a
//! version is prepared and when `/metrics` is read. Series of replaced versions stay, as
//! counters must; a version deployed again takes its old series back.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

/// Upper bounds of the request latency histogram, in seconds.
const BOUNDS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Keyed storage operations a component makes (`wasi:keyvalue`).
#[derive(Debug, Clone, Copy)]
pub enum KvOp {
    /// `bucket.get`
    Get,
    /// `bucket.set`
    Set,
    /// `bucket.delete`
    Delete,
    /// `bucket.exists`
    Exists,
    /// `bucket.list-keys`
    ListKeys,
    /// `atomics.increment`
    Increment,
    /// `cas.new` (a compare-and-swap begins with a read)
    Cas,
    /// `atomics.swap`
    Swap,
    /// `batch.get-many`
    GetMany,
    /// `batch.set-many`
    SetMany,
    /// `batch.delete-many`
    DeleteMany,
}

impl KvOp {
    /// Its label (metrics) and span name (traces).
    pub fn name(self) -> &'static str {
        KV_OPS[self as usize]
    }
}

const KV_OPS: [&str; 11] = [
    "get",
    "set",
    "delete",
    "exists",
    "list_keys",
    "increment",
    "cas",
    "swap",
    "get_many",
    "set_many",
    "delete_many",
];

/// Messaging operations: what a component sends, and what the host delivers to it.
#[derive(Debug, Clone, Copy)]
pub enum MsgOp {
    /// `producer.send`
    Publish,
    /// `request-reply.request`
    Request,
    /// `request-reply.reply`
    Reply,
    /// A delivery its handler finished without error.
    Delivered,
    /// A delivery that trapped, failed or timed out.
    Failed,
    /// A delivery given up on and published to the dead-letter subject.
    DeadLettered,
}

const MSG_OPS: [&str; 6] = [
    "publish",
    "request",
    "reply",
    "delivered",
    "failed",
    "dead_lettered",
];

/// Counters of one component, across its versions (its answers are counted per
/// version: [`VersionStats`]).
#[derive(Debug, Default)]
pub struct Stats {
    /// Running right now.
    pub in_flight: AtomicI64,
    kv: [AtomicU64; KV_OPS.len()],
    msg: [AtomicU64; MSG_OPS.len()],
}

impl Stats {
    /// Count one keyvalue operation.
    pub fn kv(&self, op: KvOp) {
        self.kv[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one messaging operation.
    pub fn msg(&self, op: MsgOp) {
        self.msg[op as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one version of one component.
#[derive(Debug)]
pub struct VersionStats {
    /// Answers by status code, 100..=599 at index `code - 100`.
    by_status: Box<[AtomicU64]>,
    /// Not cumulative here; summed when written out.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_micros: AtomicU64,
    /// Stores (one per instance) made for this version, trials included.
    pub instances: AtomicU64,
}

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            by_status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
            instances: AtomicU64::new(0),
        }
    }
}

impl VersionStats {
    /// One request answered with `status` after `took` (to the response head).
    pub fn answered(&self, status: u16, took: Duration) {
        if let Some(slot) = self.by_status.get(usize::from(status).wrapping_sub(100)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// Deploy, rollback and undeploy calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// `PUT /components/NAME`
    Deploy,
    /// `POST /components/NAME/rollback`
    Rollback,
    /// `DELETE /components/NAME`
    Undeploy,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Undeploy => "undeploy",
        }
    }
}

/// Everything the host counts.
#[derive(Debug, Default)]
pub struct Metrics {
    components: Mutex<BTreeMap<String, Arc<Stats>>>,
    versions: Mutex<BTreeMap<(String, String), Arc<VersionStats>>>,
    /// (component, change, succeeded) → count.
    changes: Mutex<BTreeMap<(String, Change, bool), u64>>,
}

impl Metrics {
    /// The counters of component `name` (made on first use).
    pub fn component(&self, name: &str) -> Arc<Stats> {
        self.components
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The counters of `version` of component `name` (made on first use).
    pub fn version(&self, name: &str, version: &str) -> Arc<VersionStats> {
        self.versions
            .lock()
            .entry((name.to_string(), version.to_string()))
            .or_default()
            .clone()
    }

    /// Requests component `name` answered, all its versions together, and how many of
    /// them with a 5xx (traps, timeouts, overload included).
    pub fn answered(&self, name: &str) -> (u64, u64) {
        let versions = self.versions.lock();
        let count = |from: usize| -> u64 {
            let of_name = versions.range((name.to_string(), String::new())..);
            let by_status = of_name.take_while(|((c, _), _)| c == name);
            let counts = by_status.flat_map(|(_, s)| s.by_status[from..].iter());
            counts.map(|n| n.load(Ordering::Relaxed)).sum()
        };
        (count(0), count(400))
    }

    /// Count one deploy, rollback or undeploy of `name`.
    pub fn change(&self, name: &str, change: Change, ok: bool) {
        *self
            .changes
            .lock()
            .entry((name.to_string(), change, ok))
            .or_default() += 1;
    }

    /// The Prometheus text exposition; `current` names the version each component
    /// serves now.
    pub fn render(&self, current: &[(String, String)]) -> String {
        let mut out = String::with_capacity(4096);
        let components = self.components.lock().clone();
        self.render_versions(&mut out);
        family(
            &mut out,
            "panal_requests_in_flight",
            "gauge",
            "Requests a component is answering right now.",
        );
        for (c, s) in &components {
            sample(
                &mut out,
                "panal_requests_in_flight",
                &[("component", c)],
                s.in_flight.load(Ordering::Relaxed),
            );
        }

        family(
            &mut out,
            "panal_component_version",
            "gauge",
            "1 for the version each component serves now.",
        );
        for (c, v) in current {
            sample(
                &mut out,
                "panal_component_version",
                &[("component", c), ("version", v)],
                1,
            );
        }

        family(
            &mut out,
            "panal_deploys_total",
            "counter",
            "Deploys, rollbacks and undeploys, by outcome (ok or failed).",
        );
        for ((c, change, ok), n) in self.changes.lock().iter() {
            let outcome = if *ok { "ok" } else { "failed" };
            sample(
                &mut out,
                "panal_deploys_total",
                &[
                    ("component", c),
                    ("action", change.name()),
                    ("outcome", outcome),
                ],
                *n,
            );
        }

        family(
            &mut out,
            "panal_keyvalue_operations_total",
            "counter",
            "wasi:keyvalue operations, by component and operation.",
        );
        ops(
            &mut out,
            "panal_keyvalue_operations_total",
            &components,
            &KV_OPS,
            |s| &s.kv,
        );

        family(
            &mut out,
            "panal_messaging_operations_total",
            "counter",
            "Messages sent by components and deliveries to them, by operation.",
        );
        ops(
            &mut out,
            "panal_messaging_operations_total",
            &components,
            &MSG_OPS,
            |s| &s.msg,
        );
        out
    }

    /// The families counted per version: requests, their durations, instances.
    fn render_versions(&self, out: &mut String) {
        let versions = self.versions.lock().clone();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            out,
            "panal_requests_total",
            "counter",
            "Requests a component answered, by component, version and status.",
        );
        for ((c, v), s) in &versions {
            for (i, n) in s.by_status.iter().enumerate() {
                let n = load(n);
                if n > 0 {
                    let status = (i + 100).to_string();
                    sample(
                        out,
                        "panal_requests_total",
                        &[("component", c), ("version", v), ("status", &status)],
                        n,
                    );
                }
            }
        }

        family(
            out,
            "panal_request_duration_seconds",
            "histogram",
            "Time from a request reaching its component to its response head.",
        );
        for ((c, v), s) in &versions {
            let mut total = 0;
            for (i, bucket) in s.buckets.iter().enumerate() {
                total += load(bucket);
                let le = BOUNDS
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), f64::to_string);
                sample(
                    out,
                    "panal_request_duration_seconds_bucket",
                    &[("component", c), ("version", v), ("le", &le)],
                    total,
                );
            }
            let labels = [("component", c.as_str()), ("version", v.as_str())];
            let sum = load(&s.sum_micros) as f64 / 1e6;
            sample(out, "panal_request_duration_seconds_sum", &labels, sum);
            sample(out, "panal_request_duration_seconds_count", &labels, total);
        }

        family(
            out,
            "panal_instances_created_total",
            "counter",
            "Component instances created (one per request or delivery unless kept for more, plus deploy trials).",
        );
        for ((c, v), s) in &versions {
            sample(
                out,
                "panal_instances_created_total",
                &[("component", c), ("version", v)],
                load(&s.instances),
            );
        }
    }
}

fn ops(
    out: &mut String,
    name: &str,
    components: &BTreeMap<String, Arc<Stats>>,
    names: &[&str],
    counters: impl Fn(&Stats) -> &[AtomicU64],
) {
    for (c, s) in components {
        for (op, n) in names.iter().zip(counters(s)) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                sample(out, name, &[("component", c), ("op", op)], n);
            }
        }
    }
}

/// Append one unlabelled sample of a host-wide series (`kind` `gauge` or `counter`).
pub fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Append one host-wide series with one label (`label` = each name, its value).
pub fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    family(out, name, kind, help);
    for (value_label, value) in values {
        sample(out, name, &[(label, value_label)], value);
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"");
        escape(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// Label values as the text format wants them: `\`, `"` and newlines escaped.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_and_escapes() {
        let m = Metrics::default();
        let v = m.version("hello", "abc");
        v.answered(200, Duration::from_millis(3));
        v.answered(200, Duration::from_secs(20));
        v.answered(503, Duration::from_micros(100));
        v.answered(42, Duration::ZERO); // not a status: counted in the histogram only
        m.component("hello").kv(KvOp::Get);
        m.change("we\"ird\n", Change::Deploy, false);
        let text = m.render(&[("hello".into(), "abc".into())]);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has(
            r#"panal_requests_total{component="hello",version="abc",status="200"} 2"#
        ));
        assert!(has(
            r#"panal_requests_total{component="hello",version="abc",status="503"} 1"#
        ));
        assert!(has(
            r#"panal_request_duration_seconds_bucket{component="hello",version="abc",le="0.0005"} 2"#
        ));
        assert!(has(
            r#"panal_request_duration_seconds_bucket{component="hello",version="abc",le="0.005"} 3"#
        ));
        assert!(has(
            r#"panal_request_duration_seconds_bucket{component="hello",version="abc",le="+Inf"} 4"#
        ));
        assert!(has(
            r#"panal_request_duration_seconds_count{component="hello",version="abc"} 4"#
        ));
        assert!(has(
            r#"panal_keyvalue_operations_total{component="hello",op="get"} 1"#
        ));
        assert!(has(
            r#"panal_deploys_total{component="we\"ird\n",action="deploy",outcome="failed"} 1"#
        ));
        assert!(has(
            r#"panal_component_version{component="hello",version="abc"} 1"#
        ));
        // The same version deployed again keeps its series.
        assert!(Arc::ptr_eq(&v, &m.version("hello", "abc")));
    }
}
