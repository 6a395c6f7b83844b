//! Hop-by-hop headers (RFC 9110 §7.6.1): about one connection, not the request, so the
//! gateway never forwards them.

/// Headers about one connection, not the request (RFC 9110 §7.6.1): never forwarded.
static HOP_BY_HOP: [http::HeaderName; 9] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
];

/// Remove hop-by-hop headers, and the ones `Connection` names.
pub(crate) fn strip(headers: &mut http::HeaderMap) {
    // Names parsed once (constants), not per request: this runs on every request.
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    for name in &named {
        headers.remove(name.as_str());
    }
}
