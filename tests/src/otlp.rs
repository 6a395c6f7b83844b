//! An OTLP/HTTP receiver for the tests: takes what the host exports to
//! `POST /v1/traces`, decodes it as the protobuf it is (`opentelemetry-proto`), and keeps
//! every span it held.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

/// One span as the receiver got it; ids in lowercase hex.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its trace.
    pub trace_id: String,
    /// Its own id.
    pub span_id: String,
    /// Its parent's id; empty for a root span.
    pub parent: String,
    /// Its name.
    pub name: String,
    /// The protobuf `SpanKind` (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// String and integer attributes.
    pub attrs: BTreeMap<String, String>,
    /// `service.name` of the resource it came with.
    pub service: String,
}

/// The receiver: listening until dropped.
pub struct Receiver {
    /// Its base URL, for `[traces] otlp`.
    pub url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    /// Bodies it could not decode (must stay 0).
    pub bad: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listen on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let bad: Arc<Mutex<Vec<String>>> = Arc::default();
        let (kept, failed) = (spans.clone(), bad.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (kept, failed) = (kept.clone(), failed.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (kept, failed) = (kept.clone(), failed.clone());
                        async move { Ok::<_, Infallible>(receive(req, &kept, &failed).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            spans,
            bad,
            task,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The spans of trace `trace_id`.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

async fn receive(
    req: http::Request<hyper::body::Incoming>,
    kept: &Mutex<Vec<Span>>,
    failed: &Mutex<Vec<String>>,
) -> http::Response<Full<bytes::Bytes>> {
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let decoded = ExportTraceServiceRequest::decode(body.as_ref());
    match decoded {
        Ok(export) if path == "/v1/traces" && content_type == "application/x-protobuf" => {
            kept.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(spans_of(export));
        }
        other => failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("{path} {content_type}: {:?}", other.err())),
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    let mut resp = http::Response::new(Full::new(answer.into()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    resp
}

fn spans_of(export: ExportTraceServiceRequest) -> Vec<Span> {
    let text = |v: Option<&Value>| match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut out = Vec::new();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for s in scope.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let value = text(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                        (kv.key.clone(), value)
                    })
                    .collect();
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attrs,
                    service: service.clone(),
                });
            }
        }
    }
    out
}
