//! Request ids: every request carries one in `x-request-id`, from the client when it sent
//! a sane one, otherwise made here, and the response returns it.

use http::HeaderValue;

/// The header name.
pub const HEADER: &str = "x-request-id";

/// Longest client-supplied id we keep; longer ones are replaced, not truncated, so a
/// client never sees a half of its own id.
const MAX_LEN: usize = 128;

/// The id to use for a request with these headers.
pub fn take_or_make(headers: &http::HeaderMap) -> HeaderValue {
    headers
        .get(HEADER)
        .filter(|v| acceptable(v.as_bytes()))
        .cloned()
        .unwrap_or_else(make)
}

/// Whether `id` may be kept as a request id: 1 to 128 visible ASCII characters (no
/// spaces), so it can go in log lines and headers as it is.
pub fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_LEN && id.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh random id (32 lowercase hex digits).
pub fn make() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sane_client_id() {
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(take_or_make(&h), "abc-123");
    }

    #[test]
    fn replaces_missing_or_odd_ids() {
        let mut h = http::HeaderMap::new();
        let made = take_or_make(&h);
        assert_eq!(made.len(), 32);
        h.insert(HEADER, HeaderValue::from_static("has space"));
        assert_ne!(take_or_make(&h), "has space");
        h.insert(
            HEADER,
            HeaderValue::from_str(&"x".repeat(129)).expect("ascii"),
        );
        assert_eq!(take_or_make(&h).len(), 32);
    }
}
