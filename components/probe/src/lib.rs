//! `probe`: a fixture component for the Panal host's tests, built on `panal-sdk`.
//!
//! It answers under any route prefix: the first path segment (`/probe-a/...`) is ignored
//! and the rest selects the endpoint:
//!
//! - `kv/...`: wasi:keyvalue store/atomics/batch (see [`kv`]),
//! - `config`, `config/{key}`: wasi:config/store,
//! - `call?url=URL`: an outgoing GET, or a POST of the body as JSON (`&forge=1`: with
//!   forged `x-panal-` headers),
//! - `whoami`: the user, roles and calling component the host passed on,
//! - `trap`, `spin`, `alloc?mb=N`, `grow?pages=N&hold_ms=M`, `recurse`, `hog`, `stream`:
//!   misbehaviour for limit tests (see [`misc`]),
//! - `msg/publish/{subject}`, `msg/request/{subject}`: wasi:messaging (see [`msg`]);
//!   `msg/hold?n=N` keeps N messages (host resources) at once,
//! - `sandbox`: what it can reach of env, files and sockets (least-privilege tests),
//! - `sleep?ms=N`: answers after N ms without burning CPU (shutdown tests).
//!
//! Anything else is 404 `{"error":"no such probe endpoint"}`.

mod kv;
mod misc;
mod msg;

use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Probe;

panal_sdk::wasi::http::proxy::export!(Probe);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (path, query) = panal_sdk::path_and_query(&request);
        let segments = panal_sdk::path_segments(&path);
        let rest: Vec<&str> = segments.iter().skip(1).map(String::as_str).collect();
        let query = query.as_deref();
        match (request.method(), rest.as_slice()) {
            (_, ["kv", ..]) => kv::handle(&request, out, &rest[1..], query),
            (Method::Get, ["config"]) => misc::config_all(out),
            (Method::Get, ["config", key]) => misc::config_get(out, key),
            (Method::Get, ["call"]) => misc::call(out, query, None),
            (Method::Post, ["call"]) => match panal_sdk::read_body(&request) {
                Ok(body) => misc::call(out, query, Some(body)),
                Err(e) => panal_sdk::error(out, 400, &e),
            },
            (_, ["whoami", ..]) => misc::whoami(out, &request),
            (Method::Get, ["trap"]) => panic!("probe asked to trap"),
            (Method::Get, ["spin"]) => misc::spin(),
            (Method::Get, ["recurse"]) => misc::recurse(),
            (Method::Get, ["hog"]) => misc::hog(),
            (Method::Get, ["stream"]) => misc::stream(out),
            (Method::Get, ["sandbox"]) => misc::sandbox(out, query),
            (Method::Get, ["alloc"]) => misc::alloc(out, query),
            (Method::Get, ["grow"]) => misc::grow(out, query),
            (Method::Get, ["msg", "hold"]) => msg::hold(out, query),
            (Method::Get, ["sleep"]) => misc::sleep(out, query),
            (Method::Post, ["msg", verb @ ("publish" | "request"), subject]) => {
                let body = match panal_sdk::read_body(&request) {
                    Ok(b) => b,
                    Err(e) => return panal_sdk::error(out, 400, &e),
                };
                if *verb == "publish" {
                    msg::publish(out, subject, body, query)
                } else {
                    msg::request(out, subject, body, query)
                }
            }
            _ => not_found(out),
        }
    }
}

panal_sdk::handler::export_messaging_handler!(Probe with_types_in panal_sdk::handler);

impl panal_sdk::handler::exports::wasi::messaging::incoming_handler::Guest for Probe {
    fn handle(
        message: panal_sdk::messaging::types::Message,
    ) -> Result<(), panal_sdk::messaging::types::Error> {
        msg::handle(message)
    }
}

/// 404 for any path or method the probe does not know.
fn not_found(out: ResponseOutparam) {
    panal_sdk::error(out, 404, "no such probe endpoint");
}
