//! `hello`: a plain wasi:http proxy component that knows nothing of Panal (only the `wasi`
//! crate). Used to check that the host runs any standard `wasi:http/proxy` component.
//!
//! - `POST .../echo`: streams the request body back as it arrives, content-type copied.
//! - anything else: 200 JSON describing the request (method, path, x-request-id, user-agent).
//!
//! Each request logs `hello handled METHOD PATH` to stdout and `hello stderr METHOD PATH`
//! to stderr (PATH is the path with its query, as received).

use std::io::Write as _;

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

struct Hello;

wasi::http::proxy::export!(Hello);

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = method_str(&request.method());
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
        println!("hello handled {method} {path}");
        eprintln!("hello stderr {method} {path}");

        let route = path.split('?').next().unwrap_or("");
        if matches!(request.method(), Method::Post) && route.ends_with("/echo") {
            echo(request, response_out);
        } else {
            let info = serde_json::json!({
                "component": "hello",
                "method": method,
                "path": path,
                "request_id": header(&request, "x-request-id"),
                "user_agent": header(&request, "user-agent"),
                // Names only: lets tests see what the gateway let through.
                "headers": request
                    .headers()
                    .entries()
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<String>>(),
            });
            let body = serde_json::to_vec(&info).unwrap_or_default();
            let len = body.len().to_string();
            let headers = [
                ("content-type", "application/json"),
                ("content-length", len.as_str()),
            ];
            let Some(out_body) = start_response(response_out, &headers) else {
                return;
            };
            if let Ok(mut stream) = out_body.write() {
                if stream
                    .write_all(&body)
                    .and_then(|()| std::io::Write::flush(&mut stream))
                    .is_err()
                {
                    return;
                }
            }
            let _ = OutgoingBody::finish(out_body, None);
        }
    }
}

/// Streams the request body back chunk by chunk, never holding more than one chunk.
fn echo(request: IncomingRequest, response_out: ResponseOutparam) {
    let content_type = header(&request, "content-type");
    let headers: Vec<(&str, &str)> = content_type
        .iter()
        .map(|ct| ("content-type", ct.as_str()))
        .collect();
    let Ok(in_body) = request.consume() else {
        return;
    };
    let Some(out_body) = start_response(response_out, &headers) else {
        return;
    };
    {
        let (Ok(input), Ok(mut output)) = (in_body.stream(), out_body.write()) else {
            return;
        };
        loop {
            match input.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    if output
                        .write_all(&chunk)
                        .and_then(|()| std::io::Write::flush(&mut output))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return,
            }
        }
    }
    let _ = OutgoingBody::finish(out_body, None);
}

/// Sends status 200 with `headers`; returns the body to write.
fn start_response(out: ResponseOutparam, headers: &[(&str, &str)]) -> Option<OutgoingBody> {
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries).unwrap_or_else(|_| Fields::new());
    let resp = OutgoingResponse::new(fields);
    let body = resp.body().ok()?;
    ResponseOutparam::set(out, Ok(resp));
    Some(body)
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    let values = request.headers().get(name);
    values
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn method_str(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}
