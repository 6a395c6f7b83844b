//! Helpers that write a whole response (status, headers, body) to a `ResponseOutparam`.
//!
//! Once the response is handed to the host, a failure to write the body means the client
//! went away; the helpers then stop quietly instead of trapping.

use std::io::Write as _;

use wasi::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Writes a response with `status`, the given headers and `body`. A `content-length`
/// header is added (unless given) for statuses that may carry a body.
pub fn respond(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let may_have_body = !(100..200).contains(&status) && status != 204 && status != 304;
    if may_have_body && !entries.iter().any(|(k, _)| k == "content-length") {
        entries.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let fields = match Fields::from_list(&entries) {
        Ok(fields) => fields,
        Err(e) => {
            // A forbidden or malformed header: answer 500 rather than trap.
            let msg = format!("{{\"error\":\"invalid response header: {e:?}\"}}");
            return respond(
                out,
                500,
                &[("content-type", "application/json")],
                msg.as_bytes(),
            );
        }
    };
    let resp = OutgoingResponse::new(fields);
    let _ = resp.set_status_code(status);
    let Ok(out_body) = resp.body() else { return };
    ResponseOutparam::set(out, Ok(resp));
    if let Ok(mut stream) = out_body.write() {
        if stream
            .write_all(body)
            .and_then(|()| std::io::Write::flush(&mut stream))
            .is_err()
        {
            return;
        }
    }
    let _ = OutgoingBody::finish(out_body, None);
}

/// Writes `value` as JSON (`content-type: application/json`).
pub fn json(out: ResponseOutparam, status: u16, value: &serde_json::Value) {
    let body = serde_json::to_vec(value).unwrap_or_default();
    respond(out, status, &[("content-type", "application/json")], &body);
}

/// Writes raw bytes with the given content type.
pub fn bytes(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    respond(out, status, &[("content-type", content_type)], body);
}

/// Writes `{"error": message}` as JSON.
pub fn error(out: ResponseOutparam, status: u16, message: &str) {
    json(out, status, &serde_json::json!({ "error": message }));
}

/// Writes a response without body (e.g. 204).
pub fn empty(out: ResponseOutparam, status: u16) {
    respond(out, status, &[], &[]);
}
