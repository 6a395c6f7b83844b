//! Rate limits per route, by client IP and by verified user: one token bucket per
//! (route, client). A request takes a token; an empty bucket answers 429 with
//! `Retry-After` (whole seconds until the next token). Buckets live beside the route
//! table, not in it, so a deploy that swaps the table does not hand out fresh tokens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `N` requests per `per`, with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Tokens added per period.
    pub requests: u32,
    /// The period.
    pub per: Duration,
    /// Most tokens a bucket holds (a full bucket at first).
    pub burst: u32,
}

impl Rate {
    /// Parse `"N/s"`, `"N/min"` or `"N/h"`; the burst is `burst` or else `N`.
    pub fn parse(text: &str, burst: Option<u32>) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a rate like \"10/s\", \"300/min\" or \"1000/h\"");
        let (n, unit) = text.split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if requests == 0 {
            return Err(format!("`{text}`: the rate must allow at least 1 request"));
        }
        let burst = burst.unwrap_or(requests);
        if burst == 0 {
            return Err("burst must be at least 1".into());
        }
        Ok(Self {
            requests,
            per,
            burst,
        })
    }

    fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

/// A route's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Per client IP address.
    pub per_ip: Option<Rate>,
    /// Per verified user (protected routes only).
    pub per_user: Option<Rate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Ip(IpAddr),
    User(String),
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every bucket of every route.
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<(String, Client), Bucket>>,
}

/// Buckets kept before idle (full) ones are dropped.
const SWEEP_AT: usize = 100_000;

impl Limiter {
    /// Take a token for a request to `route` from `ip` (and `user`, when verified);
    /// `Err(retry_after)` when a bucket is empty.
    pub fn check(
        &self,
        route: &str,
        limit: &RateLimit,
        ip: Option<IpAddr>,
        user: Option<&str>,
    ) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() > SWEEP_AT {
            sweep(&mut buckets, now, limit);
        }
        let mut wanted = Vec::with_capacity(2);
        if let (Some(rate), Some(ip)) = (limit.per_ip, ip) {
            wanted.push(((route.to_string(), Client::Ip(ip)), rate));
        }
        if let (Some(rate), Some(user)) = (limit.per_user, user) {
            wanted.push(((route.to_string(), Client::User(user.to_string())), rate));
        }
        let refilled: Vec<Bucket> = wanted
            .iter()
            .map(|(key, rate)| refilled(buckets.get(key), rate, now))
            .collect();
        // Both buckets must have a token before either is spent.
        let wait = wanted
            .iter()
            .zip(&refilled)
            .filter(|(_, b)| b.tokens < 1.0)
            .map(|((_, rate), b)| Duration::from_secs_f64((1.0 - b.tokens) / rate.per_second()))
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for ((key, _), mut bucket) in wanted.into_iter().zip(refilled) {
            bucket.tokens -= 1.0;
            buckets.insert(key, bucket);
        }
        Ok(())
    }
}

fn refilled(bucket: Option<&Bucket>, rate: &Rate, now: Instant) -> Bucket {
    let burst = f64::from(rate.burst);
    match bucket {
        None => Bucket {
            tokens: burst,
            at: now,
        },
        Some(b) => Bucket {
            tokens: (b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_second())
                .min(burst),
            at: now,
        },
    }
}

/// Drop buckets idle long enough to be full again: forgetting them changes nothing.
/// The slowest rate in use bounds how long that takes.
fn sweep(buckets: &mut HashMap<(String, Client), Bucket>, now: Instant, limit: &RateLimit) {
    let slowest = [limit.per_ip, limit.per_user]
        .into_iter()
        .flatten()
        .map(|r| r.per.mul_f64(f64::from(r.burst) / f64::from(r.requests)))
        .max()
        .unwrap_or(Duration::from_secs(3600))
        .max(Duration::from_secs(3600));
    buckets.retain(|_, b| now.duration_since(b.at) < slowest);
}

/// Whole seconds for `Retry-After`, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse_nonsense() {
        let r = Rate::parse("5/s", None).expect("rate");
        assert_eq!((r.requests, r.per, r.burst), (5, Duration::from_secs(1), 5));
        let r = Rate::parse("300/min", Some(10)).expect("rate");
        assert_eq!((r.per, r.burst), (Duration::from_secs(60), 10));
        for bad in ["5", "x/s", "5/week", "0/s", "-1/s"] {
            assert!(Rate::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Rate::parse("5/s", Some(0)).is_err());
    }

    #[test]
    fn a_bucket_empties_refills_and_is_per_client() {
        let limiter = Limiter::default();
        let limit = RateLimit {
            per_ip: Some(Rate::parse("2/s", Some(3)).expect("rate")),
            per_user: None,
        };
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        for _ in 0..3 {
            assert!(limiter.check("/x", &limit, Some(a), None).is_ok());
        }
        let wait = limiter
            .check("/x", &limit, Some(a), None)
            .expect_err("empty");
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        // Another client, another route: their own buckets.
        assert!(limiter.check("/x", &limit, Some(b), None).is_ok());
        assert!(limiter.check("/y", &limit, Some(a), None).is_ok());
        std::thread::sleep(Duration::from_millis(600));
        assert!(limiter.check("/x", &limit, Some(a), None).is_ok());
    }

    #[test]
    fn a_user_limit_holds_across_addresses() {
        let limiter = Limiter::default();
        let limit = RateLimit {
            per_ip: None,
            per_user: Some(Rate::parse("1/h", None).expect("rate")),
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("ip"));
        assert!(limiter
            .check("/x", &limit, ip("10.0.0.1"), Some("ana"))
            .is_ok());
        let wait = limiter
            .check("/x", &limit, ip("10.0.0.2"), Some("ana"))
            .expect_err("same user");
        assert!(wait > Duration::from_secs(3000));
        assert!(limiter
            .check("/x", &limit, ip("10.0.0.2"), Some("bo"))
            .is_ok());
    }
}
