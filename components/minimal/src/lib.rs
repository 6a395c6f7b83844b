//! `minimal`: answers every request 200 `hello` (text/plain, 5 bytes) and nothing else.
//! Only the `wasi` crate, so `wasmtime serve` runs the same file as Panal: the hello
//! benchmark compares hosts, not components.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Minimal;

wasi::http::proxy::export!(Minimal);

const BODY: &[u8] = b"hello";

impl wasi::exports::http::incoming_handler::Guest for Minimal {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let headers = Fields::new();
        // Fields::new() is mutable; these names and values are valid, so append cannot fail.
        let _ = headers.append("content-type", b"text/plain");
        let _ = headers.append("content-length", b"5");
        let response = OutgoingResponse::new(headers);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            let _ = stream.blocking_write_and_flush(BODY);
        }
        let _ = OutgoingBody::finish(body, None);
    }
}
