//! Helpers for an incoming request: body, headers, method, path segments and query.

use wasi::http::types::{IncomingBody, IncomingRequest, Method};
use wasi::io::streams::StreamError;

use crate::api::ApiError;
use crate::body::{Obj, Validator};

/// The header in which the gateway (or a calling service) passes the verified user id.
pub const USER_ID_HEADER: &str = "x-panal-user-id";

/// The header in which the host passes the roles the operator granted the caller
/// (comma-separated): set by the gateway after checking them, kept on in-process calls.
pub const ROLES_HEADER: &str = "x-panal-roles";

/// The header in which the host names the component making an in-process call; absent
/// on requests from the gateway or a timer. No client or guest can set it.
pub const CALLER_HEADER: &str = "x-panal-caller";

/// The header in which the gateway passes the client's address (the connection's peer).
pub const CLIENT_IP_HEADER: &str = "x-panal-client-ip";

/// Bytes asked for per read of a body stream.
const READ_CHUNK: u64 = 64 * 1024;

/// Reads the whole body of `req` into memory. Fails if the body was already consumed or
/// the stream reports an error (the text is the `ErrorCode` Debug text when there is one).
pub fn read_body(req: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = req
        .consume()
        .map_err(|()| "request body already consumed".to_string())?;
    read_incoming_body(body)
}

/// Reads an [`IncomingBody`] (of a request or of a response) to its end.
pub fn read_incoming_body(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| "body stream already taken".to_string())?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match wasi::http::types::http_error_code(&e) {
                        Some(code) => format!("{code:?}"),
                        None => e.to_debug_string(),
                    });
                }
            }
        }
        // `stream` is a child of `body`: it is dropped here, before `finish`.
    }
    let _trailers = IncomingBody::finish(body);
    Ok(out)
}

/// The first value of header `name` (case-insensitive), as UTF-8 (lossy).
pub fn header(req: &IncomingRequest, name: &str) -> Option<String> {
    let values = req.headers().get(&name.to_ascii_lowercase());
    values
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Whether `key` (already trimmed) is a valid `Idempotency-Key`: 1 to 255 visible
/// ASCII characters, the rule every service that takes one keeps.
pub fn is_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The caller's user id from [`USER_ID_HEADER`]; `None` when absent or blank.
pub fn caller_id(req: &IncomingRequest) -> Option<String> {
    header(req, USER_ID_HEADER)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// [`caller_id`] or 401 `{"error":"authentication required"}`.
pub fn require_caller(req: &IncomingRequest) -> Result<String, ApiError> {
    caller_id(req).ok_or_else(|| ApiError::unauthorized("authentication required"))
}

/// The roles the operator granted the caller ([`ROLES_HEADER`]); none when absent.
pub fn caller_roles(req: &IncomingRequest) -> Vec<String> {
    header(req, ROLES_HEADER)
        .map(|v| {
            v.split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Nothing, when the caller holds `role`; else 401 without a caller, 403 with one:
/// a check that holds even if a route's `roles` were left out by mistake.
pub fn require_role(req: &IncomingRequest, role: &str) -> Result<(), ApiError> {
    require_caller(req)?;
    if caller_roles(req).iter().any(|r| r == role) {
        return Ok(());
    }
    Err(ApiError::new(403, "forbidden").with("reason", format!("this needs the role `{role}`")))
}

/// The component making this in-process call ([`CALLER_HEADER`]); 403 for a request
/// that came through the gateway: for endpoints only other components may use.
pub fn require_component(req: &IncomingRequest) -> Result<String, ApiError> {
    header(req, CALLER_HEADER)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            ApiError::new(403, "forbidden").with("reason", "only other components may call this")
        })
}

/// Reads the body and parses it as a JSON object with [`Validator::parse_object`].
pub fn read_json_object(
    req: &IncomingRequest,
    v: &mut Validator,
    allowed: &[&str],
) -> Result<Obj, ApiError> {
    let bytes = read_body(req)
        .map_err(|e| ApiError::bad_request("could not read request body").with("detail", e))?;
    v.parse_object(&bytes, allowed)
}

/// The method as its HTTP token: "GET", "POST", ... (or the custom method's text).
pub fn method_str(method: &Method) -> String {
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
        Method::Other(other) => return other.clone(),
    }
    .to_string()
}

/// Splits the request's path-with-query into `(path, query)`; path defaults to "/",
/// query is `None` when there is no `?`.
pub fn path_and_query(req: &IncomingRequest) -> (String, Option<String>) {
    let pq = req.path_with_query().unwrap_or_else(|| "/".to_string());
    match pq.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (pq, None),
    }
}

/// The non-empty segments of `path`, percent-decoded: "/a/b%20c/" → ["a", "b c"].
pub fn path_segments(path: &str) -> Vec<String> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect()
}

/// The `name=value` pairs of a query string (without the leading `?`), decoded
/// (`+` is a space). A bare `name` gives an empty value.
pub fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// The first value of `name` in `query` (which may be `None`), decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query_params(query?)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Decodes `%XX` escapes (invalid ones are kept as they are) and, if `plus`, `+` as space.
fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_query() {
        assert_eq!(path_segments("/a/b%20c//d/?x=1"), ["a", "b c", "d"]);
        assert_eq!(path_segments("/"), Vec::<String>::new());
        let q = query_params("a=1&b=x+y&c&d=%2F%zz%");
        assert_eq!(
            q,
            [("a", "1"), ("b", "x y"), ("c", ""), ("d", "/%zz%")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            query_param(Some("url=http%3A%2F%2Fh%2Fp%3Fq%3D1"), "url").as_deref(),
            Some("http://h/p?q=1")
        );
        assert_eq!(query_param(None, "url"), None);
    }
}
