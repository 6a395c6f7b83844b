//! Traces: OpenTelemetry spans, exported over OTLP/HTTP (protobuf) to the collector the
//! manifest names (`[traces] otlp`). Off by default, and then free: [`start`] is one
//! load of an unset `OnceLock`, and nothing else in the request path changes.
//!
//! One trace per client request. The W3C `traceparent` header carries it: each span
//! started here is the child of the `traceparent` its input came with (a new trace
//! where there is none), and whatever it causes carries the span's own `traceparent`
//! on, in the headers of calls (in-process or to another host) and of messages. So the
//! gateway's span is the parent of the component's, that of its calls, their
//! components', their keyvalue and messaging operations and of the message handlers
//! their events start, on whichever host they run.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};

pub use opentelemetry::trace::SpanKind as Kind;
pub use opentelemetry::KeyValue as Attr;

/// The header that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How long finished spans may wait before they are sent.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// Where spans go; unset while traces are off.
static TRACES: OnceLock<Traces> = OnceLock::new();

struct Traces {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
}

/// Start exporting spans to the OTLP/HTTP collector at `otlp` (its base URL), each with
/// `service.name` `service_name` (once per process).
pub fn init(otlp: &str, service_name: &str) -> anyhow::Result<()> {
    let endpoint = format!("{}/v1/traces", otlp.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| anyhow::anyhow!("traces: cannot export to {endpoint}: {e}"))?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("panal");
    if TRACES.set(Traces { provider, tracer }).is_err() {
        anyhow::bail!("traces are already on");
    }
    tracing::info!(%endpoint, "traces: exporting spans over OTLP");
    Ok(())
}

/// Whether spans are made at all.
pub fn enabled() -> bool {
    TRACES.get().is_some()
}

/// Send what is finished (on shutdown).
pub fn flush() {
    if let Some(t) = TRACES.get() {
        if let Err(err) = t.provider.force_flush() {
            tracing::warn!(%err, "traces: the last spans were not sent");
        }
    }
}

/// A span in progress; it ends when dropped.
pub struct Span {
    span: opentelemetry_sdk::trace::Span,
}

impl Span {
    /// Its context as a W3C `traceparent` value: what it causes carries this on.
    pub fn traceparent(&self) -> String {
        let cx = self.span.span_context();
        format!(
            "00-{}-{}-{:02x}",
            cx.trace_id(),
            cx.span_id(),
            cx.trace_flags().to_u8()
        )
    }

    /// Makes `headers` carry its context (`traceparent`, replacing any other), so what
    /// they go with is its child.
    pub fn carry_in(&self, headers: &mut http::HeaderMap) {
        // Hex digits and dashes only: always a valid header value.
        if let Ok(value) = http::HeaderValue::from_str(&self.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
    }

    /// Adds an attribute.
    pub fn set(&mut self, attr: KeyValue) {
        self.span.set_attribute(attr);
    }

    /// Renames it (once more is known, like the route a request matched).
    pub fn rename(&mut self, name: impl Into<Cow<'static, str>>) {
        self.span.update_name(name);
    }

    /// Records an HTTP answer: its status, and an error from 500 on.
    pub fn answered(&mut self, status: u16) {
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            self.span
                .set_status(Status::error(format!("status {status}")));
        }
    }

    /// Marks it failed, saying why.
    pub fn fail(&mut self, why: impl std::fmt::Display) {
        self.span.set_status(Status::error(why.to_string()));
    }
}

/// A span of `kind`, child of the `traceparent` among `trace` (a new trace without
/// one); `None` while traces are off. `describe` names it and gives its attributes; it
/// runs only when traces are on, so building them costs nothing otherwise.
pub fn start<N: Into<Cow<'static, str>>>(
    kind: SpanKind,
    trace: &[(String, String)],
    describe: impl FnOnce() -> (N, Vec<KeyValue>),
) -> Option<Span> {
    let traces = TRACES.get()?;
    let parent = trace
        .iter()
        .find(|(n, _)| n == TRACEPARENT)
        .and_then(|(_, v)| parse(v));
    let (name, attrs) = describe();
    Some(start_under(traces, name.into(), kind, parent, attrs))
}

/// [`start`] under a `traceparent` value.
pub fn start_from<N: Into<Cow<'static, str>>>(
    kind: SpanKind,
    traceparent: Option<&str>,
    describe: impl FnOnce() -> (N, Vec<KeyValue>),
) -> Option<Span> {
    let traces = TRACES.get()?;
    let (name, attrs) = describe();
    Some(start_under(
        traces,
        name.into(),
        kind,
        traceparent.and_then(parse),
        attrs,
    ))
}

fn start_under(
    traces: &Traces,
    name: Cow<'static, str>,
    kind: SpanKind,
    parent: Option<SpanContext>,
    attrs: Vec<KeyValue>,
) -> Span {
    let cx = match parent {
        Some(parent) => Context::new().with_remote_span_context(parent),
        None => Context::new(),
    };
    let span = traces
        .tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attrs)
        .start_with_context(&traces.tracer, &cx);
    Span { span }
}

/// The gateway's span of each client request: the root of its trace (or the child of
/// the `traceparent` the client sent), named `METHOD ROUTE` once routed.
pub struct GatewaySpans;

impl panal_gateway::Observer for GatewaySpans {
    fn start(&self, req: &mut panal_gateway::Request) -> Option<Box<dyn panal_gateway::Observed>> {
        let parent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
        let method = req.method().to_string();
        let span = start_from(SpanKind::Server, parent, || {
            let mut attrs = vec![
                KeyValue::new("http.request.method", method.clone()),
                KeyValue::new("url.path", req.uri().path().to_string()),
            ];
            if let Some(id) = req
                .headers()
                .get(panal_gateway::request_id::HEADER)
                .and_then(|v| v.to_str().ok())
            {
                attrs.push(KeyValue::new("panal.request_id", id.to_string()));
            }
            (method.clone(), attrs)
        })?;
        span.carry_in(req.headers_mut());
        Some(Box::new(GatewaySpan { span, method }))
    }
}

struct GatewaySpan {
    span: Span,
    method: String,
}

impl panal_gateway::Observed for GatewaySpan {
    fn finish(mut self: Box<Self>, status: http::StatusCode, component: &str, route: &str) {
        if !route.is_empty() {
            self.span.rename(format!("{} {route}", self.method));
            self.span
                .set(KeyValue::new("http.route", route.to_string()));
        }
        if !component.is_empty() {
            self.span
                .set(KeyValue::new("panal.component", component.to_string()));
        }
        self.span.answered(status.as_u16());
    }
}

/// `trace` with its `traceparent` replaced by `span`'s: the context of what `span`
/// causes. Without a span, `trace` as it is.
pub fn under(trace: &Arc<[(String, String)]>, span: Option<&Span>) -> Arc<[(String, String)]> {
    let Some(span) = span else {
        return trace.clone();
    };
    trace
        .iter()
        .filter(|(n, _)| n != TRACEPARENT)
        .cloned()
        .chain(std::iter::once((
            TRACEPARENT.to_string(),
            span.traceparent(),
        )))
        .collect()
}

/// The trace id of a `traceparent` value, if it is a valid one.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    parse(traceparent)?;
    traceparent.get(3..35)
}

/// A W3C `traceparent` (version 00): `00-<32 hex trace id>-<16 hex span id>-<2 hex
/// flags>`, lowercase, ids not all zero.
fn parse(value: &str) -> Option<SpanContext> {
    let parts: Vec<&str> = value.split('-').collect();
    let [version, trace, span, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if *version != "00" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let cx = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    cx.is_valid().then_some(cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_values() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse(ok).expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled());
        assert_eq!(trace_id_of(ok), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn off_makes_nothing() {
        // No collector named in this process: no span, and the context stays as it is.
        let described = std::cell::Cell::new(false);
        let span = start(SpanKind::Server, &[], || {
            described.set(true);
            ("x", Vec::new())
        });
        assert!(span.is_none() && !described.get());
        let trace: Arc<[(String, String)]> = Arc::from([("x-request-id".into(), "r".into())]);
        assert!(Arc::ptr_eq(&under(&trace, None), &trace));
    }
}
