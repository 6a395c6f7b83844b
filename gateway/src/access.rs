//! The access log: one record per answered request. By default an `INFO` event on
//! target [`TARGET`], formatted by whatever `tracing` subscriber is installed; a host
//! may take the records itself ([`AccessLog`], [`crate::server::Gateway::with_access_log`])
//! and write them without a subscriber's formatter, whose cost per event was a sixth of
//! everything `wasmtime serve` spends on a request. Either way the `tracing` filter
//! decides whether there is a record (`RUST_LOG=panal::access=off` turns it off).

/// The target of access records.
pub const TARGET: &str = "panal::access";

/// What the access log says of one answered request.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// Its `x-request-id`, `-` when it is not printable.
    pub id: &'a str,
    /// Its method.
    pub method: &'a str,
    /// Its path, without the query.
    pub path: &'a str,
    /// The component that answered, empty when none did.
    pub component: &'a str,
    /// The route it matched, empty when none did.
    pub route: &'a str,
    /// The answer's status.
    pub status: u16,
    /// From the request's arrival to its answer's head, in microseconds.
    pub micros: u64,
}

/// Takes the access records instead of `tracing`.
pub trait AccessLog: Send + Sync + 'static {
    /// One answered request.
    fn record(&self, access: &Access<'_>);
}

/// Log `access`: to `sink` when there is one, else as a `tracing` event.
pub(crate) fn record(sink: Option<&dyn AccessLog>, access: &Access<'_>) {
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    match sink {
        Some(sink) => sink.record(access),
        None => tracing::info!(
            target: TARGET,
            id = %access.id,
            method = %access.method,
            path = %access.path,
            component = %access.component,
            route = %access.route,
            status = access.status,
            micros = access.micros,
            "answered"
        ),
    }
}
