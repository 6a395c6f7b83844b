//! Bearer-token authentication for protected routes: HS256 JWTs only (the algorithm is
//! pinned, so `alg: none` or any other algorithm is refused), with a valid signature,
//! `exp` in the future and a `sub`. The verified subject reaches the component in
//! [`USER_ID_HEADER`], and the roles the operator granted that account (a
//! [`RoleSource`], looked up on every request, so a revocation counts at once) in
//! [`ROLES_HEADER`]. A token's own `roles` claim is ignored: whoever can sign tokens
//! (a user service) cannot hand out roles. No client sets any `x-panal-` header.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// The header that carries the verified user id to components.
pub const USER_ID_HEADER: &str = "x-panal-user-id";

/// The header that carries the verified user's granted roles (comma-separated).
pub const ROLES_HEADER: &str = "x-panal-roles";

/// The header that carries the client's address (the connection's peer) to components.
pub const CLIENT_IP_HEADER: &str = "x-panal-client-ip";

/// The header that names the component making an in-process call (set by the host).
pub const CALLER_HEADER: &str = "x-panal-caller";

/// Headers with this prefix are the host's to set: removed from every client request.
pub const RESERVED_PREFIX: &str = "x-panal-";

/// The roles the operator granted each account.
pub trait RoleSource: Send + Sync + 'static {
    /// The roles granted to account `user` (a token's `sub`), if any.
    fn roles_of(&self, user: &str) -> Option<std::sync::Arc<[String]>>;
}

/// Whether `role` may name a role: 1-64 of `A-Z a-z 0-9 . _ : -` (a comma-separated
/// header carries them).
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// Whether `user` may name an account: 1-256 visible ASCII characters (it becomes a
/// header value).
pub fn valid_user(user: &str) -> bool {
    !user.is_empty() && user.len() <= 256 && user.bytes().all(|b| b.is_ascii_graphic())
}

/// Remove every `x-panal-` header from `headers`: only the host speaks for a caller.
pub fn strip_reserved(headers: &mut http::HeaderMap) {
    let reserved: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(RESERVED_PREFIX))
        .cloned()
        .collect();
    for name in reserved {
        headers.remove(name);
    }
}

/// Why a token was refused. Clients only see a generic message; the log gets this.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header.
    #[error("missing bearer token")]
    Missing,
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// `alg` other than HS256 (including `none`).
    #[error("token algorithm `{0}` is not accepted (HS256 only)")]
    Algorithm(String),
    /// Signature does not match.
    #[error("bad token signature")]
    Signature,
    /// `exp` is in the past (or missing).
    #[error("token expired or without exp")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// No usable `sub`.
    #[error("token has no subject")]
    NoSubject,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: the user id.
    pub user: String,
    /// The roles the operator granted the user (none until looked up).
    pub roles: Option<std::sync::Arc<[String]>>,
}

impl Identity {
    /// Whether it holds one of `wanted` (any identity does when `wanted` is empty).
    pub fn has_any_role(&self, wanted: &[String]) -> bool {
        wanted.is_empty()
            || self
                .roles
                .as_deref()
                .is_some_and(|held| wanted.iter().any(|w| held.contains(w)))
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
}

/// Verifies HS256 tokens with one secret.
#[derive(Clone)]
pub struct Verifier {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { secret: <hidden> }")
    }
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: secret.into(),
        }
    }

    /// The identity of the bearer token in `headers`, verified at unix time `now`.
    pub fn verify_headers(
        &self,
        headers: &http::HeaderMap,
        now: i64,
    ) -> Result<Identity, AuthError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Missing);
        }
        self.verify(token.trim(), now)
    }

    /// The identity of `token`, verified at unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = decode_json(h)?;
        // Pinned before anything else: the token does not get to choose how it is checked.
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm(header.alg));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| AuthError::Malformed)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).map_err(|_| AuthError::Signature)?;
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(c.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| AuthError::Signature)?;
        let claims: Claims = decode_json(c)?;
        if claims.exp.is_none_or(|exp| exp <= now) {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now) {
            return Err(AuthError::NotYetValid);
        }
        let user = match claims.sub {
            Some(sub) if valid_user(&sub) => sub,
            _ => return Err(AuthError::NoSubject),
        };
        Ok(Identity { user, roles: None })
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// Sign `claims` as an HS256 JWT (used by tests and tools; services sign their own).
pub fn sign(secret: &[u8], claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(format!("{header}.{body}").as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{header}.{body}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    fn verifier() -> Verifier {
        Verifier::new(b"secret".to_vec())
    }

    #[test]
    fn a_good_token_yields_its_subject() {
        let t = sign(b"secret", &json!({"sub": "u1", "exp": NOW + 60}));
        assert_eq!(verifier().verify(&t, NOW).map(|i| i.user), Ok("u1".into()));
    }

    #[test]
    fn a_roles_claim_grants_nothing() {
        let t = sign(
            b"secret",
            &json!({"sub": "u1", "exp": NOW + 60, "roles": ["admin"]}),
        );
        let mut id = verifier().verify(&t, NOW).expect("valid");
        assert!(id.roles.is_none());
        assert!(!id.has_any_role(&["admin".into()]));
        assert!(id.has_any_role(&[]));
        id.roles = Some(vec!["admin".to_string(), "ops".to_string()].into());
        assert!(id.has_any_role(&["billing".into(), "ops".into()]));
        assert!(!id.has_any_role(&["billing".into()]));
    }

    #[test]
    fn role_and_user_names() {
        for good in ["admin", "ops:read", "a.b_c-d", &"r".repeat(64)] {
            assert!(valid_role(good), "{good}");
        }
        for bad in ["", "a,b", "a b", "é", &"r".repeat(65)] {
            assert!(!valid_role(bad), "{bad}");
        }
        assert!(valid_user("0123abcd-x"));
        assert!(!valid_user("a b") && !valid_user("") && !valid_user(&"u".repeat(257)));
    }

    #[test]
    fn every_reserved_header_is_stripped() {
        let mut h = http::HeaderMap::new();
        for (k, v) in [
            ("x-panal-user-id", "u"),
            ("X-Panal-Roles", "admin"),
            ("x-panal-caller", "order"),
            ("x-panal-anything", "1"),
            ("x-request-id", "keep"),
        ] {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        strip_reserved(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-request-id"));
    }

    #[test]
    fn other_secrets_expiry_and_missing_subjects_are_refused() {
        let other = sign(b"other", &json!({"sub": "u1", "exp": NOW + 60}));
        assert_eq!(verifier().verify(&other, NOW), Err(AuthError::Signature));
        let old = sign(b"secret", &json!({"sub": "u1", "exp": NOW}));
        assert_eq!(verifier().verify(&old, NOW), Err(AuthError::Expired));
        let no_exp = sign(b"secret", &json!({"sub": "u1"}));
        assert_eq!(verifier().verify(&no_exp, NOW), Err(AuthError::Expired));
        let early = sign(
            b"secret",
            &json!({"sub": "u1", "exp": NOW + 60, "nbf": NOW + 30}),
        );
        assert_eq!(verifier().verify(&early, NOW), Err(AuthError::NotYetValid));
        let nosub = sign(b"secret", &json!({"exp": NOW + 60}));
        assert_eq!(verifier().verify(&nosub, NOW), Err(AuthError::NoSubject));
        assert_eq!(verifier().verify("a.b", NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let claims = URL_SAFE_NO_PAD.encode(json!({"sub": "u1", "exp": NOW + 60}).to_string());
        for alg in ["none", "HS512", "RS256"] {
            let header = URL_SAFE_NO_PAD.encode(json!({"alg": alg}).to_string());
            let token = format!("{header}.{claims}.");
            assert_eq!(
                verifier().verify(&token, NOW),
                Err(AuthError::Algorithm(alg.into()))
            );
        }
    }

    #[test]
    fn the_header_must_be_a_bearer() {
        let t = sign(b"secret", &json!({"sub": "u1", "exp": NOW + 60}));
        let mut h = http::HeaderMap::new();
        assert_eq!(verifier().verify_headers(&h, NOW), Err(AuthError::Missing));
        h.insert(
            "authorization",
            format!("Basic {t}").parse().expect("header"),
        );
        assert_eq!(verifier().verify_headers(&h, NOW), Err(AuthError::Missing));
        h.insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
        assert_eq!(
            verifier().verify_headers(&h, NOW).map(|i| i.user),
            Ok("u1".into())
        );
    }
}
