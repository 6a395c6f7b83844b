//! A WASI 0.3 service that uses the Panal platform imports, the same WIT as 0.2
//! components bind (`wit/`): plain (sync) functions a 0.3 guest calls as well. (Kept
//! apart from `hello-p3`, which `wasmtime serve` must run in the benchmarks.)
//!
//! - `GET /ANY/kv/KEY` → `KEY = N`: counter KEY of bucket `default`, incremented
//!   (wasi:keyvalue atomics), or `kv failed: ERROR`.
//! - `GET /ANY/config/KEY` → `KEY = VALUE`, `KEY unset`, or `config failed: ERROR`.
//! - `GET /ANY/publish/SUBJECT` → `published to SUBJECT` (wasi:messaging producer,
//!   data `from p3`), or `publish failed: ERROR`.
//! - `GET /ANY/chain/KEY` → one `get` of KEY in bucket `default` (`-` when absent), then,
//!   when config `next` names a component, the same request sent to it by name with
//!   `wasi:http/client`, its answer after a space (the `chain` scenario of `just bench`).
//! - `GET /ANY/headers` → the request's headers, `name: value` a line, sorted (what a
//!   middleware in front of it passed on).
//! - any other → 404 `no such path`.

use wasip3::http::types::{ErrorCode, Fields, Request, Response, Scheme};
use wasip3::wit_future;

wasip3::http::service::export!(ProbeP3);

struct ProbeP3;

/// The Panal platform imports (wasi:keyvalue, wasi:config, wasi:messaging), the same
/// WIT as 0.2 components bind: plain (sync) functions a 0.3 guest calls as well.
mod platform {
    wasip3::wit_bindgen::generate!({
        path: "../../wit",
        world: "panal:platform/guest",
        generate_all,
        runtime_path: "wasip3::wit_bindgen::rt",
    });
}
use platform::wasi::{config, keyvalue, messaging};

/// `kv/KEY`, `config/KEY` and `publish/SUBJECT`: the platform imports.
fn use_imports(tail: &str) -> Option<String> {
    if let Some(key) = tail.strip_prefix("kv/") {
        let counted = keyvalue::store::open("default")
            .and_then(|bucket| keyvalue::atomics::increment(&bucket, key, 1));
        return Some(match counted {
            Ok(n) => format!("{key} = {n}"),
            Err(e) => format!("kv failed: {e:?}"),
        });
    }
    if let Some(key) = tail.strip_prefix("config/") {
        return Some(match config::store::get(key) {
            Ok(Some(value)) => format!("{key} = {value}"),
            Ok(None) => format!("{key} unset"),
            Err(e) => format!("config failed: {e:?}"),
        });
    }
    let subject = tail.strip_prefix("publish/")?;
    let message = messaging::types::Message::new(b"from p3");
    let sent = messaging::types::Client::connect("default")
        .and_then(|client| messaging::producer::send(&client, subject, message));
    Some(match sent {
        Ok(()) => format!("published to {subject}"),
        Err(e) => format!("publish failed: {e:?}"),
    })
}

/// `chain/KEY`: the value of KEY, then the next link's answer to the same `path`.
async fn chain(key: &str, path: &str) -> (u16, String) {
    let value = match keyvalue::store::open("default").and_then(|bucket| bucket.get(key)) {
        Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
        Ok(None) => "-".to_string(),
        Err(e) => return (500, format!("kv failed: {e:?}")),
    };
    let Ok(Some(next)) = config::store::get("next") else {
        return (200, value);
    };
    match get(&next, path).await {
        Ok((200, body)) => (200, format!("{value} {}", String::from_utf8_lossy(&body))),
        Ok((status, _)) => (502, format!("{next} answered {status}")),
        Err(e) => (502, format!("{next} failed: {e:?}")),
    }
}

/// `GET http://target/path` through `wasi:http/client`: its status and whole body.
async fn get(target: &str, path: &str) -> Result<(u16, Vec<u8>), ErrorCode> {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (request, _sent) = Request::new(Fields::new(), None, trailers_rx, None);
    let bad = |()| ErrorCode::InternalError(Some(format!("cannot address {target}{path}")));
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

/// `name: value` lines, sorted.
fn headers_of(request: &Request) -> String {
    let mut lines: Vec<String> = request
        .get_headers()
        .copy_all()
        .into_iter()
        .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(&value)))
        .collect();
    lines.sort();
    lines.join("\n")
}

impl wasip3::exports::http::handler::Guest for ProbeP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        // What follows the route's prefix: `/x/kv/a` → `kv/a`.
        let tail = path
            .trim_start_matches('/')
            .split_once('/')
            .map_or("", |(_, tail)| tail);
        let (status, text) = match use_imports(tail) {
            None if tail.starts_with("chain/") => chain(&tail["chain/".len()..], &path).await,
            Some(text) => (200, text),
            None if tail == "headers" => (200, headers_of(&request)),
            None => (404, "no such path".to_string()),
        };
        let (mut body_tx, body_rx) = wasip3::wit_stream::new();
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
        drop(trailers_tx);
        response
            .set_status_code(status)
            .map_err(|()| ErrorCode::InternalError(Some("status".into())))?;
        wasip3::wit_bindgen::spawn_local(async move {
            let _unsent = body_tx.write_all(text.into_bytes()).await;
        });
        Ok(response)
    }
}
