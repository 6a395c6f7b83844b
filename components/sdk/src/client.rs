//! Outgoing HTTP over `wasi:http/outgoing-handler`: `get`, `post`, `send_json` and the
//! general `send`.
//!
//! Errors are strings. When the host or the network refuses, the string is the
//! `ErrorCode` Debug text, e.g. `ErrorCode::HttpRequestDenied` for a call the host's
//! policy does not allow, `ErrorCode::ConnectionRefused`, ...; these never trap.

use std::io::Write as _;

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

use crate::request::read_incoming_body;

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

    let response = loop {
        match future.get() {
            Some(Ok(Ok(response))) => break response,
            Some(Ok(Err(code))) => return Err(format!("{code:?}")),
            Some(Err(())) => return Err("response already taken".to_string()),
            None => future.subscribe().block(),
        }
    };
    written?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| "response body already taken".to_string())?;
    let bytes = read_incoming_body(body)?;
    Ok((status, bytes))
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
