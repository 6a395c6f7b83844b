//! A WASI 0.3 service: `wasi:http/handler#handle` is async, and the body is a stream the
//! guest writes from a task of its own after it has returned the response, so the host
//! must keep the instance's event loop running after the response head.
//!
//! Paths are read after the route's first segment (`/p3/count`, `/other/count`).
//!
//! - `GET /p3/call/COMPONENT/PATH` → 200 `STATUS BODY` of `GET http://COMPONENT/PATH`,
//!   sent with `wasi:http/client` (the host dispatches it by name, in-process), or
//!   `failed: ERROR-CODE`.
//! - `GET /p3/wait/MS` → waits MS ms (the instance is free for other requests
//!   meanwhile), then `waited MS ms; request N of this instance`.
//! - `GET /p3/count` → `request N of this instance` (N > 1: the instance was reused).
//! - `GET /p3/spin` → loops forever (a runaway guest, stopped by the deadline).
//! - `GET /p3/trap` → traps.
//! - any other → 200 `text/plain` `hello from WASI 0.3: METHOD PATH`.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(HelloP3);

struct HelloP3;

/// Requests this instance has taken (state shared by every request it serves).
static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `GET http://target/path` through `wasi:http/client`: its status and whole body.
async fn call(target: &str, path: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (request, _sent) = Request::new(Fields::new(), None, trailers_rx, None);
    let bad = |_| ErrorCode::InternalError(Some(format!("cannot address {target}{path}")));
    request.set_scheme(Some(&Scheme::Http)).map_err(bad)?;
    request.set_authority(Some(target)).map_err(bad)?;
    request.set_path_with_query(Some(path)).map_err(bad)?;
    let response = wasip3::http::client::send(request).await?;
    let status = response.get_status_code();
    let (read_tx, read_rx) = wit_future::new(|| Ok(()));
    let (body, _trailers) = Response::consume_body(response, read_rx);
    let bytes = body.collect().await;
    drop(read_tx);
    Ok((status, bytes))
}

impl wasip3::exports::http::handler::Guest for HelloP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = match request.get_method() {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Other(other) => other,
            other => format!("{other:?}").to_uppercase(),
        };
        let path = request.get_path_with_query().unwrap_or_default();
        let n = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // What follows the route's prefix: `/p3/wait/5` → `wait/5`.
        let tail = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, tail)| tail);
        let text = match tail.strip_prefix("call/") {
            _ if tail == "count" => format!("request {n} of this instance"),
            _ if tail == "trap" => panic!("asked to trap"),
            _ if tail == "spin" => {
                let mut x: u64 = n;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            _ if tail.starts_with("wait/") => {
                let ms: u64 = tail["wait/".len()..].parse().unwrap_or(0);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                format!("waited {ms} ms; request {n} of this instance")
            }
            Some(rest) => {
                let (target, tail) = rest.split_once('/').unwrap_or((rest, ""));
                match call(target, &format!("/{tail}")).await {
                    Ok((status, body)) => format!("{status} {}", String::from_utf8_lossy(&body)),
                    Err(e) => format!("failed: {e:?}"),
                }
            }
            None => format!("hello from WASI 0.3: {method} {path}"),
        };
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
        let (mut body_tx, body_rx) = wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        drop(trailers_tx);
        wit_bindgen::spawn_local(async move {
            let _unsent = body_tx.write_all(text.into_bytes()).await;
        });
        Ok(response)
    }
}
