//! JWTs signed as any JWT library would sign them, independent of the code under test.

/// Unpadded base64url, as JWTs use it.
pub fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// HS256 as any JWT library would make it, independent of the code under test.
pub fn sign_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    use hmac::{Hmac, Mac};
    let header = base64_url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = base64_url(claims.to_string().as_bytes());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{header}.{body}").as_bytes());
    format!(
        "{header}.{body}.{}",
        base64_url(&mac.finalize().into_bytes())
    )
}
