//! How an HTTP request and its answer travel between hosts as NATS messages.
//!
//! A message's payload is a frame: the head (JSON) after its length (4 bytes, big
//! endian), then body bytes. A body bigger than one message goes in parts:
//!
//! - a request's first message says `Panal-Body: more`; the host that took it answers
//!   with a part naming a subject of its own (`Panal-Send-To`), and the caller sends
//!   the rest there, one acknowledged request per part (so a slow receiver slows the
//!   sender instead of dropping parts), the last saying `Panal-Body: end`;
//! - an answer comes as parts on the caller's inbox, every one but the last saying
//!   `Panal-Body: more` (only the first has a head);
//! - while the answer is not ready (or its body is slow), the host sends an empty part
//!   saying `Panal-Body: wait` every second, so a caller tells a slow host from a dead
//!   one in seconds.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// More body follows this message.
pub const BODY: &str = "Panal-Body";
/// Where the rest of a request body goes.
pub const SEND_TO: &str = "Panal-Send-To";
/// `BODY`: more parts follow.
pub const MORE: &str = "more";
/// `BODY`: the last part.
pub const END: &str = "end";
/// `BODY`: the answer's body broke off here.
pub const BROKEN: &str = "broken";
/// `BODY`: nothing yet, but the host is still at it (sent every [`KEEPALIVE`]).
pub const WAIT: &str = "wait";

/// How often a host working on a call says so: a caller that hears nothing for three
/// of these takes the host for dead (killed, cut off) and fails the call.
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// Room kept in a message for the head and the NATS headers.
const ROOM: usize = 16 * 1024;

/// The head of a request from another host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequestHead {
    /// HTTP method.
    pub method: String,
    /// The URI as the caller had it.
    pub uri: String,
    /// Headers (the identity and trace headers among them), values as text.
    pub headers: Vec<(String, String)>,
    /// Calls so far on the way here (the loop guard spans hosts).
    pub depth: u32,
    /// The handlers after this one when it is middleware on a route (`panal_gateway::
    /// Next`); absent for any other call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<String>,
}

/// The head of an answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResponseHead {
    /// HTTP status.
    pub status: u16,
    /// Headers, values as text.
    pub headers: Vec<(String, String)>,
}

/// The least `max_payload` a cluster's NATS server may announce: a call's head (its
/// headers, up to the gateway's 32 KiB) must fit in one message beside a part of body.
pub const MIN_PAYLOAD: usize = 64 * 1024;

/// Body bytes per message for a server whose `max_payload` is `max` (0: not known).
pub fn part_size(max: usize) -> usize {
    let max = if max == 0 { 1 << 20 } else { max };
    // A server with a tiny `max_payload` still gets parts that fit, heads permitting;
    // joining refuses one under `MIN_PAYLOAD`, and a part is never empty (no endless
    // or divided-by-zero upload should a server announce less after a reconnect).
    max.saturating_sub(ROOM).max(max / 2).max(1)
}

/// A frame of `head` and `body`.
pub fn frame<H: Serialize>(head: &H, body: &[u8]) -> Bytes {
    let head = serde_json::to_vec(head).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + head.len() + body.len());
    out.put_u32(u32::try_from(head.len()).unwrap_or(u32::MAX));
    out.put_slice(&head);
    out.put_slice(body);
    out.freeze()
}

/// The head and body of a frame, or why it is not one.
pub fn unframe<H: for<'de> Deserialize<'de>>(
    payload: &Bytes,
) -> Result<(H, Bytes), super::FrameError> {
    use super::FrameError::Short;
    let len = payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or(Short("frame header"))?;
    let head = payload.get(4..4 + len).ok_or(Short("head"))?;
    let head = serde_json::from_slice(head)?;
    Ok((head, payload.slice(4 + len..)))
}

/// `headers` as text pairs; a value that is not text is left out (and logged).
pub fn headers_of(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| match v.to_str() {
            Ok(v) => Some((k.as_str().to_string(), v.to_string())),
            Err(_) => {
                tracing::debug!(header = %k, "header value not text: not sent to another host");
                None
            }
        })
        .collect()
}

/// Text pairs back into `headers`; what HTTP refuses is left out.
pub fn fill(headers: &mut http::HeaderMap, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            headers.append(k, v);
        }
    }
}

/// The value of NATS header `name` in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_named() {
        let head = ResponseHead {
            status: 201,
            headers: vec![("content-type".into(), "text/plain".into())],
        };
        let framed = frame(&head, b"body bytes");
        let (back, body): (ResponseHead, Bytes) = unframe(&framed).expect("frame");
        assert_eq!(back, head);
        assert_eq!(&body[..], b"body bytes");
        assert!(unframe::<ResponseHead>(&Bytes::from_static(b"\0\0")).is_err());
        assert!(unframe::<ResponseHead>(&Bytes::from_static(b"\0\0\0\x09{}")).is_err());
        assert_eq!(part_size(0), (1 << 20) - 16 * 1024);
        assert_eq!(part_size(1000), 500);
    }

    #[test]
    fn a_request_head_carries_the_middleware_chain_only_when_there_is_one() {
        let mut head = RequestHead {
            method: "GET".into(),
            uri: "http://shop/x".into(),
            headers: Vec::new(),
            depth: 1,
            next: vec!["audit2".into(), "shop".into()],
        };
        let (back, _): (RequestHead, Bytes) = unframe(&frame(&head, b"")).expect("frame");
        assert_eq!(back, head);
        head.next.clear();
        let framed = frame(&head, b"");
        assert!(!String::from_utf8_lossy(&framed).contains("next"));
        let (back, _): (RequestHead, Bytes) = unframe(&framed).expect("frame");
        assert_eq!(back, head);
    }
}
