//! Messaging endpoints and the message handler of the probe fixture.
//!
//! - `POST msg/publish/{subject}?meta=NAME&size=N` (body = data, or N bytes of `x`
//!   when `size` is given; metadata `NAME: probe` added when `meta` is) → 204; errors
//!   as 403/503/500.
//! - `POST msg/request/{subject}?timeout_ms=N&replies=N` → 200 `{"replies": [text...]}`;
//!   504 on timeout.
//! - `GET msg/hold?n=N` → 200 `{"held": N}` after making N messages at once.
//! - The handler: a request (a message with a reply subject) is answered with
//!   `echo:<data>`; every message bumps the counter `count:<subject>` and is kept as
//!   `last:<subject>` (its metadata as JSON in `meta:<subject>`) in bucket `default`;
//!   data `trap` makes the handler panic.

use panal_sdk::keyvalue::{atomics, store};
use panal_sdk::messaging::{producer, request_reply, types};
use panal_sdk::wasi::http::types::ResponseOutparam;
use serde_json::json;

fn client() -> Result<types::Client, types::Error> {
    types::Client::connect("default")
}

fn fail(out: ResponseOutparam, e: types::Error) {
    let (status, text) = match e {
        types::Error::PermissionDenied(s) => (403, format!("permission-denied: {s}")),
        types::Error::Timeout => (504, "timeout".to_string()),
        types::Error::Connection(s) => (503, format!("connection: {s}")),
        types::Error::Other(s) => (500, s),
    };
    panal_sdk::error(out, status, &text);
}

/// `GET msg/hold?n=N`: makes N messages and holds them all before answering, each a
/// resource the host keeps for the instance (resource-table limit tests).
pub fn hold(out: ResponseOutparam, query: Option<&str>) {
    let n = match panal_sdk::query_param(query, "n").map(|t| t.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return panal_sdk::error(out, 400, "bad n="),
    };
    let held: Vec<types::Message> = (0..n).map(|_| types::Message::new(b"")).collect();
    panal_sdk::json(out, 200, &json!({ "held": held.len() }));
}

/// `POST msg/publish/{subject}`.
pub fn publish(out: ResponseOutparam, subject: &str, body: Vec<u8>, query: Option<&str>) {
    let size = panal_sdk::query_param(query, "size").and_then(|v| v.parse::<usize>().ok());
    let data = size.map_or(body, |n| vec![b'x'; n]);
    let message = types::Message::new(&data);
    message.set_content_type("text/plain");
    message.add_metadata("sent-by", "probe");
    if let Some(name) = panal_sdk::query_param(query, "meta") {
        message.add_metadata(&name, "probe");
    }
    match client().and_then(|c| producer::send(&c, subject, message)) {
        Ok(()) => panal_sdk::empty(out, 204),
        Err(e) => fail(out, e),
    }
}

/// `POST msg/request/{subject}`.
pub fn request(out: ResponseOutparam, subject: &str, body: Vec<u8>, query: Option<&str>) {
    let number =
        |name: &str| panal_sdk::query_param(query, name).and_then(|v| v.parse::<u32>().ok());
    let options = request_reply::RequestOptions::new();
    options.set_timeout_ms(number("timeout_ms").unwrap_or(2000));
    options.set_expected_replies(number("replies").unwrap_or(1));
    let message = types::Message::new(&body);
    match client().and_then(|c| request_reply::request(&c, subject, &message, Some(options))) {
        Ok(replies) => {
            let texts: Vec<String> = replies
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data()).into_owned())
                .collect();
            panal_sdk::json(out, 200, &json!({ "replies": texts }));
        }
        Err(e) => fail(out, e),
    }
}

/// Messages this instance has handled without failing.
static HANDLED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The `wasi:messaging/incoming-handler` export.
pub fn handle(message: types::Message) -> Result<(), types::Error> {
    let subject = message.topic().unwrap_or_default();
    let data = message.data();
    let bucket = store::open("default").map_err(|e| types::Error::Other(format!("{e:?}")))?;
    // Every delivery is counted, failed ones too, so tests can see redeliveries.
    atomics::increment(&bucket, &format!("tries:{subject}"), 1)
        .map_err(|e| types::Error::Other(format!("{e:?}")))?;
    // The subject picks a failure, not the body, so a dead letter (same body, another
    // subject) is handled normally.
    let last = subject.rsplit('.').next().unwrap_or_default();
    if last.starts_with("trap") {
        panic!("probe asked to trap on {subject}");
    }
    if last.starts_with("fail") {
        return Err(types::Error::Other(format!(
            "probe asked to fail on {subject}"
        )));
    }
    // How many messages this instance has handled, this one included: 1 in a fresh
    // instance, more in one the host kept (`limits.reuse`).
    let seen = HANDLED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    bucket
        .set(&format!("seen:{subject}"), seen.to_string().as_bytes())
        .map_err(|e| types::Error::Other(format!("{e:?}")))?;
    bucket
        .set(&format!("last:{subject}"), &data)
        .map_err(|e| types::Error::Other(format!("{e:?}")))?;
    let meta: serde_json::Map<String, serde_json::Value> = message
        .metadata()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    bucket
        .set(
            &format!("meta:{subject}"),
            serde_json::Value::Object(meta).to_string().as_bytes(),
        )
        .map_err(|e| types::Error::Other(format!("{e:?}")))?;
    // The count last: tests wait for it, then read what the message left.
    atomics::increment(&bucket, &format!("count:{subject}"), 1)
        .map_err(|e| types::Error::Other(format!("{e:?}")))?;
    // Replies go to the reply subject, which needs no publish grant.
    let mut reply = b"echo:".to_vec();
    reply.extend_from_slice(&data);
    match request_reply::reply(&message, types::Message::new(&reply)) {
        Ok(()) => Ok(()),
        // A plain publish has no reply subject: nothing to answer.
        Err(types::Error::Other(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
