//! `bench`: the component side of `just bench`, each path doing exactly what its native
//! baseline (`panal-tests`'s `native` binary) does, so a ratio measures the host.
//!
//! - `GET .../kv/{key}`: one `get` and one `set` of `key` in bucket `default` (the
//!   value is a decimal counter, bumped), answered 200 with the new value.
//! - `GET .../chain/{key}`: one `get` of `key`, then, when config `next` names a
//!   component, the same request to it by name; answered 200 with the value (`-` when
//!   absent), then a space and the next one's answer.
//! - `POST .../publish/{subject}`: the request body published on `subject`, 204.
//! - messages: a request (a message with a reply subject) is answered with its own
//!   data; anything else is dropped.

use panal_sdk::keyvalue::store;
use panal_sdk::messaging::{producer, request_reply, types};
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Bench;

panal_sdk::wasi::http::proxy::export!(Bench);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for Bench {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (path, _) = panal_sdk::path_and_query(&request);
        let segments = panal_sdk::path_segments(&path);
        let tail: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (request.method(), tail.as_slice()) {
            (Method::Get, [.., "kv", key]) => kv(out, key),
            (Method::Get, [.., "chain", key]) => chain(out, key),
            (Method::Post, [.., "publish", subject]) => publish(&request, out, subject),
            _ => panal_sdk::error(out, 404, "no such bench endpoint"),
        }
    }
}

fn kv(out: ResponseOutparam, key: &str) {
    let bumped = store::open("default").and_then(|bucket| {
        let old = bucket.get(key)?;
        let n = old
            .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let new = (n + 1).to_string();
        bucket.set(key, new.as_bytes())?;
        Ok(new)
    });
    match bumped {
        Ok(value) => panal_sdk::bytes(out, 200, "text/plain", value.as_bytes()),
        Err(e) => panal_sdk::error(out, 500, &format!("{e:?}")),
    }
}

fn chain(out: ResponseOutparam, key: &str) {
    let mut body = match store::open("default").and_then(|bucket| bucket.get(key)) {
        Ok(value) => value.unwrap_or_else(|| b"-".to_vec()),
        Err(e) => return panal_sdk::error(out, 500, &format!("{e:?}")),
    };
    if let Ok(Some(next)) = panal_sdk::config::store::get("next") {
        match panal_sdk::client::get(&format!("http://{next}/chain/{key}")) {
            Ok((200, rest)) => {
                body.push(b' ');
                body.extend(rest);
            }
            Ok((status, _)) => {
                return panal_sdk::error(out, 502, &format!("{next} answered {status}"))
            }
            Err(e) => return panal_sdk::error(out, 502, &e),
        }
    }
    panal_sdk::bytes(out, 200, "text/plain", &body);
}

fn publish(request: &IncomingRequest, out: ResponseOutparam, subject: &str) {
    let body = match panal_sdk::read_body(request) {
        Ok(body) => body,
        Err(e) => return panal_sdk::error(out, 400, &e),
    };
    let sent = types::Client::connect("default")
        .and_then(|c| producer::send(&c, subject, types::Message::new(&body)));
    match sent {
        Ok(()) => panal_sdk::empty(out, 204),
        Err(e) => panal_sdk::error(out, 503, &format!("{e:?}")),
    }
}

panal_sdk::handler::export_messaging_handler!(Bench with_types_in panal_sdk::handler);

impl panal_sdk::handler::exports::wasi::messaging::incoming_handler::Guest for Bench {
    fn handle(message: types::Message) -> Result<(), types::Error> {
        if request_reply::reply(&message, types::Message::new(&message.data())).is_err() {
            // A plain publish has no reply subject: nothing to answer.
        }
        Ok(())
    }
}
