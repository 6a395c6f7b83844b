//! HS256 JSON Web Tokens (RFC 7519), encode side only: the gateway verifies them.
//!
//! Header is always `{"alg":"HS256","typ":"JWT"}`; segments are base64url without padding;
//! the key is the `jwt_secret` config value's UTF-8 bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The claims this service issues.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    /// The user id.
    pub sub: &'a str,
    pub email: &'a str,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
}

/// Signs `claims` with `secret` → `header.payload.signature`.
pub fn encode(claims: &Claims<'_>, secret: &[u8]) -> Result<String, String> {
    let payload = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    sign_raw(&payload, secret)
}

/// Signs an already serialised payload (kept apart so tests can use published vectors).
fn sign_raw(payload: &[u8], secret: &[u8]) -> Result<String, String> {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    Ok(format!("{signing_input}.{signature}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HS256 example of jwt.io.
    #[test]
    fn published_vector() {
        let token = sign_raw(
            br#"{"sub":"1234567890","name":"John Doe","iat":1516239022}"#,
            b"your-256-bit-secret",
        )
        .expect("sign");
        assert_eq!(
            token,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
             eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
             SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
        );
    }

    #[test]
    fn claims_round_trip() {
        let claims = Claims {
            sub: "u1",
            email: "a@b.co",
            iat: 100,
            exp: 3700,
        };
        let token = encode(&claims, b"s3cret").expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(!token.contains('='));
        let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("b64");
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"sub":"u1","email":"a@b.co","iat":100,"exp":3700})
        );
        // Verifying as the gateway would: recompute over the first two segments.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").expect("key");
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        assert!(mac.verify_slice(&sig).is_ok());
    }
}
