//! `GET /metrics`: the registry's counters (every component and version), then the
//! gateway's, the broker's, the guest memory budget's and the cluster's own, in the
//! Prometheus text format.

use panal_gateway::Body;

use super::Admin;

impl Admin {
    /// The whole scrape.
    pub(super) fn metrics(&self) -> http::Response<Body> {
        let mut resp = http::Response::new(panal_gateway::full(self.metrics_text()));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    fn metrics_text(&self) -> String {
        let mut text = self.registry.metrics();
        crate::metrics::single(
            &mut text,
            "panal_gateway_rate_buckets",
            "gauge",
            "Rate-limit buckets the gateway keeps (at most [gateway] max_rate_buckets).",
            self.gateway.rate_buckets() as u64,
        );
        let backends = self.registry.backends();
        let dead = backends.broker.as_ref().map_or(0, |b| b.dead_lettered());
        crate::metrics::single(
            &mut text,
            "panal_outbox_dead_lettered_total",
            "counter",
            "Durable messages the outbox gave up on (kept in outbox.db, table outbox_dead).",
            dead,
        );
        let memory = &backends.memory;
        for (name, kind, help, value) in [
            (
                "panal_guest_memory_budget_bytes",
                "gauge",
                "The host-wide budget of guest memory (--guest-memory-mb).",
                memory.total(),
            ),
            (
                "panal_guest_memory_used_bytes",
                "gauge",
                "Linear memory live instances have grown to, all components together.",
                memory.used(),
            ),
            (
                "panal_guest_memory_refused_total",
                "counter",
                "Instances refused for want of guest memory budget: not admitted in time, \
                 or memory growth past it (503).",
                memory.refused(),
            ),
        ] {
            crate::metrics::single(&mut text, name, kind, help, value);
        }
        if let Some(cluster) = &self.cluster {
            crate::metrics::labelled(
                &mut text,
                "panal_cluster_refused_total",
                "counter",
                "Calls and desired versions from the cluster refused: unsigned, bad_seal, stale, replayed, invalid.",
                "reason",
                &cluster.refusals(),
            );
        }
        text
    }
}
