//! Who may use the admin API: with `PANAL_ADMIN_TOKEN` set, everything but `/healthz`
//! needs `Authorization: Bearer TOKEN`; without it the listener must be on loopback.
//! Browsers are kept out whatever the token: a request with an `Origin` header (a web
//! page's fetch or form) is refused, and so is one whose `Host` is neither the address
//! the connection was accepted on (`localhost:PORT` too, on loopback) nor one of the
//! manifest's `[gateway] admin_hosts`, which defeats DNS rebinding.

use http::StatusCode;
use panal_gateway::{json_error, Body};
use serde_json::json;

use super::Admin;

impl Admin {
    /// `None` when `req` may go on, else the refusal to answer it with.
    pub(super) fn refusal<B>(&self, req: &http::Request<B>) -> Option<http::Response<Body>> {
        if let Err(why) = self.same_site(req) {
            tracing::warn!(path = %req.uri().path(), reason = %why, "admin request refused");
            return Some(json_error(
                StatusCode::FORBIDDEN,
                "admin request refused",
                json!({ "reason": why }),
            ));
        }
        let token = self.token.as_deref()?;
        (!bearer_matches(req.headers(), token)).then(|| {
            json_error(
                StatusCode::UNAUTHORIZED,
                "admin token required",
                json!({ "reason": "send Authorization: Bearer $PANAL_ADMIN_TOKEN" }),
            )
        })
    }

    /// Refuse what a browser could send on a web page's behalf (see the module doc).
    fn same_site<B>(&self, req: &http::Request<B>) -> Result<(), String> {
        if req.headers().contains_key(http::header::ORIGIN) {
            return Err("requests with an Origin header (from a web page) are not accepted".into());
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .ok_or("a Host header is required")?
            .to_ascii_lowercase();
        let local = req
            .extensions()
            .get::<panal_gateway::server::LocalAddr>()
            .map(|l| l.0);
        if host_allowed(&host, local, &self.hosts) {
            Ok(())
        } else {
            Err(format!(
                "Host `{host}` is not this listener's address; add it to [gateway] admin_hosts"
            ))
        }
    }
}

fn bearer_matches(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(got) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant time in the token's length: no early exit on the first difference.
    got.len() == token.len()
        && got
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether `host` (a `Host` value, lowercased) names the listener at `local` or one of
/// `names` (a name alone matches on any port).
fn host_allowed(host: &str, local: Option<std::net::SocketAddr>, names: &[String]) -> bool {
    if names.iter().any(|n| {
        n == host
            || host
                .rsplit_once(':')
                .is_some_and(|(name, port)| n == name && port.bytes().all(|b| b.is_ascii_digit()))
    }) {
        return true;
    }
    let Some(local) = local else {
        return false;
    };
    if host == local.to_string() {
        return true;
    }
    local.ip().is_loopback() && host == format!("localhost:{}", local.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut h = http::HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(
            http::header::AUTHORIZATION,
            "Bearer s3cret".parse().expect("hv"),
        );
        assert!(bearer_matches(&h, "s3cret"));
        assert!(!bearer_matches(&h, "s3cre"));
        assert!(!bearer_matches(&h, "s3cret!"));
    }

    #[test]
    fn only_the_listeners_own_address_or_a_configured_name_is_a_good_host() {
        let local: std::net::SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let names = vec!["ops.example.com".to_string(), "panal:9000".to_string()];
        for good in [
            "127.0.0.1:8081",
            "localhost:8081",
            "ops.example.com",
            "ops.example.com:8081",
            "panal:9000",
        ] {
            assert!(host_allowed(good, Some(local), &names), "{good}");
        }
        for bad in [
            "evil.example:8081",
            "127.0.0.1:8082",
            "localhost:80",
            "panal:9001",
            "panal",
            "ops.example.com:x",
        ] {
            assert!(!host_allowed(bad, Some(local), &names), "{bad}");
        }
        let public: std::net::SocketAddr = "10.0.0.5:8081".parse().expect("addr");
        assert!(host_allowed("10.0.0.5:8081", Some(public), &[]));
        assert!(!host_allowed("localhost:8081", Some(public), &[]));
    }
}
