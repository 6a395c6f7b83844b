//! Unguessable identifiers from `wasi:random/random` (the host's CSPRNG).
//!
//! Native builds (unit tests of the services) read `/dev/urandom` instead, so that code
//! which makes ids stays testable off wasm.

/// `len` cryptographically secure random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    imp(len)
}

#[cfg(target_arch = "wasm32")]
fn imp(len: usize) -> Vec<u8> {
    wasi::random::random::get_random_bytes(len as u64)
}

#[cfg(not(target_arch = "wasm32"))]
fn imp(len: usize) -> Vec<u8> {
    use std::io::Read as _;
    let mut buf = vec![0u8; len];
    // Without an OS RNG there is no safe fallback: fail loudly rather than hand out
    // predictable ids.
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("reading /dev/urandom");
    buf
}

/// A new id: 16 random bytes as 32 lowercase hex digits (url-safe, 128 bits).
pub fn random_id() -> String {
    hex(&random_bytes(16))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Whether `s` looks like a [`random_id`]: 32 lowercase hex digits. Lets handlers turn
/// junk ids into 404 without touching storage.
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let a = random_id();
        let b = random_id();
        assert!(is_id(&a) && is_id(&b), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert!(!is_id("me"));
        assert!(!is_id(&a.to_uppercase()));
    }
}
