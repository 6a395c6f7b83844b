//! Outgoing HTTP over `wasi:http/outgoing-handler`: `get`, `post`, `send_json`, the
//! general `send`, and `get_all`, which sends several requests at once and waits for
//! all of them.
//!
//! Errors are strings. When the host or the network refuses, the string is the
//! `ErrorCode` Debug text, e.g. `ErrorCode::HttpRequestDenied` for a call the host's
//! policy does not allow, `ErrorCode::ConnectionRefused`, ...; these never trap.

use std::io::Write as _;

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};

use crate::request::read_incoming_body;

/// A whole answer, `(status, body)`, or why there is none.
pub type Answer = Result<(u16, Vec<u8>), String>;

/// `GET url` → `(status, body)`.
pub fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    send(Method::Get, url, &[], None)
}

/// `POST url` with `body` and its content type → `(status, body)`.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    send(
        Method::Post,
        url,
        &[("content-type", content_type)],
        Some(body),
    )
}

/// Sends `body` as JSON and parses the answer as JSON → `(status, value)`. A response
/// body that is empty or not JSON gives `Value::Null`, so callers judge by status first.
pub fn send_json(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Result<(u16, serde_json::Value), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let (status, answer) = send(method, url, &all, Some(&bytes))?;
    let value = serde_json::from_slice(&answer).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

/// Sends a request to an absolute `url` (`http://authority/path?query`) and reads the
/// whole response. `body: None` sends no body at all.
pub fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let pending = start(method, url, headers, body)?;
    loop {
        if let Some(done) = pending.poll() {
            return done;
        }
        pending.future.subscribe().block();
    }
}

/// `GET` every url at once; the answers in the same order, each `(status, body)` or
/// why it failed. The requests run concurrently: the whole takes about as long as
/// the slowest.
pub fn get_all(urls: &[String]) -> Vec<Answer> {
    let mut results: Vec<Option<Answer>> = Vec::new();
    let mut pending = Vec::new();
    for url in urls {
        match start(Method::Get, url, &[], None) {
            Ok(p) => {
                pending.push((results.len(), p));
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    while !pending.is_empty() {
        let pollables: Vec<_> = pending.iter().map(|(_, p)| p.future.subscribe()).collect();
        let refs: Vec<&wasi::io::poll::Pollable> = pollables.iter().collect();
        wasi::io::poll::poll(&refs);
        // A pollable is its future's child: drop them before any future is.
        drop(refs);
        drop(pollables);
        pending.retain(|(i, p)| match p.poll() {
            Some(done) => {
                results[*i] = Some(done);
                false
            }
            None => true,
        });
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("no answer".into())))
        .collect()
}

/// A request handed to the host, its response still to come.
struct Pending {
    future: FutureIncomingResponse,
    written: Result<(), String>,
}

impl Pending {
    /// The whole answer once the response head is there; `None` while it is not.
    fn poll(&self) -> Option<Answer> {
        let response: IncomingResponse = match self.future.get()? {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => return Some(Err(format!("{code:?}"))),
            Err(()) => return Some(Err("response already taken".to_string())),
        };
        if let Err(e) = &self.written {
            return Some(Err(e.clone()));
        }
        let status = response.status();
        Some(
            response
                .consume()
                .map_err(|()| "response body already taken".to_string())
                .and_then(read_incoming_body)
                .map(|bytes| (status, bytes)),
        )
    }
}

/// Hands a request to the host and writes its body; the response comes later.
fn start(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Pending, String> {
    let (scheme, authority, path_with_query) = split_url(url)?;
    let entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    let fields = Fields::from_list(&entries).map_err(|e| format!("invalid header: {e:?}"))?;
    let req = OutgoingRequest::new(fields);
    req.set_method(&method)
        .map_err(|()| "invalid method".to_string())?;
    req.set_scheme(Some(&scheme))
        .map_err(|()| "invalid scheme".to_string())?;
    req.set_authority(Some(authority))
        .map_err(|()| format!("invalid authority {authority:?}"))?;
    req.set_path_with_query(Some(&path_with_query))
        .map_err(|()| format!("invalid path {path_with_query:?}"))?;

    // The body (if any) is taken before the request is handed over, written after.
    let out_body = match body {
        Some(_) => Some(
            req.body()
                .map_err(|()| "request body already taken".to_string())?,
        ),
        None => None,
    };
    let future = outgoing_handler::handle(req, None).map_err(|e| format!("{e:?}"))?;
    // A refused request (e.g. `HttpRequestDenied`) shows up first as a failed body write;
    // the response future then holds the real reason, so it is awaited before reporting.
    let written = match (out_body, body) {
        (Some(out_body), Some(bytes)) => write_body(out_body, bytes),
        _ => Ok(()),
    };
    Ok(Pending { future, written })
}

/// Writes all of `bytes` to a request body and finishes it.
fn write_body(out_body: OutgoingBody, bytes: &[u8]) -> Result<(), String> {
    {
        let mut stream = out_body
            .write()
            .map_err(|()| "request body stream already taken".to_string())?;
        stream
            .write_all(bytes)
            .and_then(|()| std::io::Write::flush(&mut stream))
            .map_err(|e| e.to_string())?;
    }
    OutgoingBody::finish(out_body, None).map_err(|e| format!("{e:?}"))
}

/// Splits `scheme://authority/path?query` into its wasi:http parts; the path defaults to "/".
fn split_url(url: &str) -> Result<(Scheme, &str, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not an absolute URL: {url:?}"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(format!("URL without host: {url:?}"));
    }
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok((scheme, authority, path))
}
