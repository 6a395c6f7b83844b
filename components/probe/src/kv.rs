//! The probe's `kv/...` endpoints over wasi:keyvalue (store, atomics, batch). The bucket
//! is opened per request with `store::open(bucket)`.
//!
//! Error mapping: access-denied → 403 `{"error":"access-denied","bucket":B}`,
//! no-such-store → 404 `{"error":"no-such-store"}`, other(s) → 500 `{"error":s}`.

use panal_sdk::keyvalue::atomics::{self, Cas, CasError};
use panal_sdk::keyvalue::batch;
use panal_sdk::keyvalue::store::{self, Bucket, Error};
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use serde_json::{json, Map, Value};

/// How many swaps `cas-append` tries before it gives up with 409.
const CAS_ATTEMPTS: u32 = 100;

/// Dispatches `kv/{bucket}[/{key}[/incr|/cas-append]]` and `kv/{bucket}/batch`.
pub fn handle(req: &IncomingRequest, out: ResponseOutparam, rest: &[&str], query: Option<&str>) {
    let method = req.method();
    let bucket_name = match rest.first() {
        Some(b) => *b,
        None => return crate::not_found(out),
    };
    let known = matches!(
        (&method, &rest[1..]),
        (Method::Get, [])
            | (Method::Post, ["batch"])
            | (Method::Get | Method::Put | Method::Delete, [_])
            | (Method::Post, [_, "incr" | "cas-append"])
            | (Method::Get, [_, "many"])
    );
    if !known {
        return crate::not_found(out);
    }
    let bucket = match store::open(bucket_name) {
        Ok(bucket) => bucket,
        Err(e) => return kv_error(out, bucket_name, e),
    };
    let result = match (&method, &rest[1..]) {
        (Method::Get, []) => list(&bucket, query),
        (Method::Post, ["batch"]) => batch_roundtrip(&bucket, req),
        (Method::Get, [key, "many"]) => {
            let times = panal_sdk::query_param(query, "times")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(1);
            let keys = vec![(*key).to_string(); times];
            batch::get_many(&bucket, &keys)
                .map(|values| (200, json!({ "count": values.iter().flatten().count() })))
        }
        (Method::Get, [key]) => match bucket.get(key) {
            Ok(Some(value)) => {
                return panal_sdk::bytes(out, 200, "application/octet-stream", &value)
            }
            Ok(None) => Ok((404, json!({ "error": "not found" }))),
            Err(e) => Err(e),
        },
        (Method::Put, [key]) => match panal_sdk::read_body(req) {
            Ok(body) => bucket.set(key, &body).map(|()| (204, Value::Null)),
            Err(e) => Ok((400, json!({ "error": e }))),
        },
        (Method::Delete, [key]) => bucket.delete(key).map(|()| (204, Value::Null)),
        (Method::Post, [key, "incr"]) => incr(&bucket, key, query),
        (Method::Post, [key, "cas-append"]) => cas_append(&bucket, key, req),
        _ => Ok((404, json!({ "error": "no such probe endpoint" }))),
    };
    match result {
        Ok((204, _)) => panal_sdk::empty(out, 204),
        Ok((status, body)) => panal_sdk::json(out, status, &body),
        Err(e) => kv_error(out, bucket_name, e),
    }
}

type KvResult = Result<(u16, Value), Error>;

fn list(bucket: &Bucket, query: Option<&str>) -> KvResult {
    let cursor = panal_sdk::query_param(query, "cursor");
    let page = bucket.list_keys(cursor.as_deref())?;
    Ok((200, json!({ "keys": page.keys, "cursor": page.cursor })))
}

fn incr(bucket: &Bucket, key: &str, query: Option<&str>) -> KvResult {
    let by = match panal_sdk::query_param(query, "by") {
        None => 1,
        Some(text) => match text.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return Ok((400, json!({ "error": format!("bad by={text}") }))),
        },
    };
    let value = atomics::increment(bucket, key, by)?;
    Ok((200, json!({ "value": value })))
}

/// Appends the request body to the key's value with a CAS loop (new, current, swap).
fn cas_append(bucket: &Bucket, key: &str, req: &IncomingRequest) -> KvResult {
    let suffix = match panal_sdk::read_body(req) {
        Ok(body) => body,
        Err(e) => return Ok((400, json!({ "error": e }))),
    };
    let mut cas = Cas::new(bucket, key)?;
    for attempt in 1..=CAS_ATTEMPTS {
        let mut value = cas.current()?.unwrap_or_default();
        value.extend_from_slice(&suffix);
        match atomics::swap(cas, &value) {
            Ok(()) => {
                let text = String::from_utf8_lossy(&value);
                return Ok((200, json!({ "value": text, "attempts": attempt })));
            }
            Err(CasError::CasFailed(next)) => cas = next,
            Err(CasError::StoreError(e)) => return Err(e),
        }
    }
    Ok((
        409,
        json!({ "error": "cas retries exhausted", "attempts": CAS_ATTEMPTS }),
    ))
}

/// set-many of the body's object, then get-many of its keys plus "__missing__".
fn batch_roundtrip(bucket: &Bucket, req: &IncomingRequest) -> KvResult {
    let parsed = panal_sdk::read_body(req).and_then(|body| {
        serde_json::from_slice::<Map<String, Value>>(&body).map_err(|e| e.to_string())
    });
    let object = match parsed {
        Ok(object) => object,
        Err(e) => {
            return Ok((
                400,
                json!({ "error": format!("body must be a JSON object: {e}") }),
            ))
        }
    };
    let pairs: Vec<(String, Vec<u8>)> = object
        .iter()
        .map(|(k, v)| {
            let bytes = match v {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            (k.clone(), bytes)
        })
        .collect();
    batch::set_many(bucket, &pairs)?;
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.push("__missing__".to_string());
    let values = batch::get_many(bucket, &keys)?;
    let mut got = Map::new();
    for key in &keys {
        got.insert(key.clone(), Value::Null);
    }
    for (key, value) in values.into_iter().flatten() {
        got.insert(
            key,
            Value::String(String::from_utf8_lossy(&value).into_owned()),
        );
    }
    Ok((200, json!({ "got": got })))
}

fn kv_error(out: ResponseOutparam, bucket: &str, e: Error) {
    match e {
        Error::AccessDenied => panal_sdk::json(
            out,
            403,
            &json!({ "error": "access-denied", "bucket": bucket }),
        ),
        Error::NoSuchStore => panal_sdk::error(out, 404, "no-such-store"),
        Error::Other(s) => panal_sdk::error(out, 500, &s),
    }
}
