//! A WASI 0.3 service: `wasi:http/handler#handle` is async, and the body is a stream the
//! guest writes from a task of its own after it has returned the response, so the host
//! must keep the instance's event loop running after the response head.
//!
//! `GET /...` → 200 `text/plain` `hello from WASI 0.3: METHOD PATH`.

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(HelloP3);

struct HelloP3;

impl wasip3::exports::http::handler::Guest for HelloP3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let method = match request.get_method() {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Other(other) => other,
            other => format!("{other:?}").to_uppercase(),
        };
        let path = request.get_path_with_query().unwrap_or_default();
        let text = format!("hello from WASI 0.3: {method} {path}");
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
