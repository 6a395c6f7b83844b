//! `audit`: a sample middleware, a WASI 0.3 component of the `wasi:http/middleware`
//! world. A route puts it in front of its component with `middleware = ["audit"]`.
//!
//! - Every request it sees is logged to stderr: `audit: METHOD PATH -> STATUS`.
//! - A request carrying `x-audit-block` is answered here, 403 `blocked by audit`, and
//!   the next handler never sees it.
//! - Any other request goes on to the next handler through the imported
//!   `wasi:http/handler`, with `x-audit-seen: yes` added. The next handler's response
//!   comes back with `x-audit: checked` added; both bodies stream through untouched.
//! - A request carrying `x-audit-reroute: PATH` is passed on to PATH, with method
//!   DELETE: what a hostile middleware would try (the host refuses it).

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_future, wit_stream};

/// The `wasi:http/middleware` world, its types shared with the `wasip3` crate.
mod bindings {
    wasip3::wit_bindgen::generate!({
        path: "wit",
        world: "panal:audit/audit",
        with: {
            "wasi:http/types@0.3.2": wasip3::http::types,
            "wasi:http/client@0.3.2": wasip3::http::client,
            "wasi:clocks/types@0.3.2": wasip3::clocks::types,
            "wasi:clocks/monotonic-clock@0.3.2": wasip3::clocks::monotonic_clock,
            "wasi:clocks/system-clock@0.3.2": wasip3::clocks::system_clock,
            "wasi:cli/types@0.3.2": wasip3::cli::types,
            "wasi:cli/stdout@0.3.2": wasip3::cli::stdout,
            "wasi:cli/stderr@0.3.2": wasip3::cli::stderr,
            "wasi:cli/stdin@0.3.2": wasip3::cli::stdin,
            "wasi:random/random@0.3.2": wasip3::random::random,
            "wasi:random/insecure@0.3.2": wasip3::random::insecure,
            "wasi:random/insecure-seed@0.3.2": wasip3::random::insecure_seed,
            // The one interface the crate does not bind as an import.
            "wasi:http/handler@0.3.2": generate,
        },
        runtime_path: "wasip3::wit_bindgen::rt",
    });
}

bindings::export!(Audit with_types_in bindings);

struct Audit;

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// `fields` with one more value.
fn with_header(fields: &Fields, name: &str, value: &[u8]) -> Result<Fields, ErrorCode> {
    let copy = fields.clone();
    copy.append(name, value)
        .map_err(|e| ErrorCode::InternalError(Some(format!("header {name}: {e:?}"))))?;
    Ok(copy)
}

/// A plain-text answer of our own.
fn answer(status: u16, text: &'static str) -> Result<Response, ErrorCode> {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
        .map_err(|e| ErrorCode::InternalError(Some(format!("{e:?}"))))?;
    let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
    response
        .set_status_code(status)
        .map_err(|()| ErrorCode::InternalError(Some("status".into())))?;
    wasip3::wit_bindgen::spawn_local(async move {
        let _unsent = body_tx.write_all(text.as_bytes().to_vec()).await;
    });
    Ok(response)
}

impl bindings::exports::wasi::http::handler::Guest for Audit {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = request.get_method();
        let path = request.get_path_with_query().unwrap_or_default();
        let (scheme, authority) = (request.get_scheme(), request.get_authority());
        let line = format!("audit: {} {path} ->", method_name(&method));
        let headers = request.get_headers();
        if headers.has("x-audit-block") {
            eprintln!("{line} 403 (blocked)");
            return answer(403, "blocked by audit\n");
        }

        // Pass on a request like this one, with one more header; the body streams
        // through, and how its sending ended is told back to whoever sent it to us.
        let seen = with_header(&headers, "x-audit-seen", b"yes")?;
        let reroute = headers
            .get("x-audit-reroute")
            .first()
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let (method, path) = match reroute {
            Some(elsewhere) => (Method::Delete, elsewhere),
            None => (method, path),
        };
        let (sent_tx, sent_rx) = wit_future::new(|| Ok(()));
        let (body, trailers) = Request::consume_body(request, sent_rx);
        let (next, next_sent) = Request::new(seen, Some(body), trailers, None);
        let bad = |what: &str| ErrorCode::InternalError(Some(format!("cannot copy {what}")));
        next.set_method(&method).map_err(|()| bad("method"))?;
        next.set_scheme(scheme.as_ref())
            .map_err(|()| bad("scheme"))?;
        next.set_authority(authority.as_deref())
            .map_err(|()| bad("authority"))?;
        next.set_path_with_query(Some(&path))
            .map_err(|()| bad("path"))?;
        wasip3::wit_bindgen::spawn_local(async move {
            let _ = sent_tx.write(next_sent.await).await;
        });
        let response = bindings::wasi::http::handler::handle(next).await?;

        let status = response.get_status_code();
        eprintln!("{line} {status}");
        let checked = with_header(&response.get_headers(), "x-audit", b"checked")?;
        let (sent_tx, sent_rx) = wit_future::new(|| Ok(()));
        let (body, trailers) = Response::consume_body(response, sent_rx);
        let (back, back_sent) = Response::new(checked, Some(body), trailers);
        back.set_status_code(status).map_err(|()| bad("status"))?;
        wasip3::wit_bindgen::spawn_local(async move {
            let _ = sent_tx.write(back_sent.await).await;
        });
        Ok(back)
    }
}
