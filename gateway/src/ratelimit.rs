//! Rate limits per route, by client IP and by verified user: one token bucket per
//! (route, client). A request takes a token; an empty bucket answers 429 with
//! `Retry-After` (whole seconds until the next token). Buckets live beside the route
//! table, not in it, so a deploy that swaps the table does not hand out fresh tokens.
//!
//! Memory is bounded against clients that rotate addresses: an IPv6 client is keyed by
//! its /64 (what one subscriber is usually given), buckets that have refilled are
//! forgotten (that changes nothing) by a sweep at most once a second, and past
//! `max_buckets` the fullest tenth is forgotten at once (those clients get their burst
//! back: the limit weakens for them, never for memory or for every request's time).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
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

    /// Why a rate that did not come from [`Rate::parse`] (a record read back, a deploy
    /// over the network) is not one it could have made; `None` when it is.
    pub fn problem(&self) -> Option<String> {
        let periods = [1, 60, 3600].map(Duration::from_secs);
        if self.requests == 0 {
            return Some("the rate must allow at least 1 request".into());
        }
        if !periods.contains(&self.per) {
            return Some("the period must be a second, a minute or an hour".into());
        }
        if !(1..=1_000_000).contains(&self.burst) {
            return Some(format!(
                "burst must be between 1 and 1000000, got {}",
                self.burst
            ));
        }
        None
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
    /// When it will be full again if untouched: from then on, forgetting it is free.
    full_at: Instant,
}

/// Every bucket of every route.
#[derive(Debug)]
pub struct Limiter {
    buckets: Mutex<Buckets>,
    max_buckets: usize,
}

#[derive(Debug)]
struct Buckets {
    map: HashMap<(String, Client), Bucket>,
    swept: Instant,
}

/// Default most buckets kept (`[gateway] max_rate_buckets`): ~100 bytes each.
pub const MAX_BUCKETS: usize = 100_000;

/// How often refilled buckets are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Default for Limiter {
    fn default() -> Self {
        Self::new(MAX_BUCKETS)
    }
}

/// The key of a client address: IPv4 as it is (IPv4-mapped IPv6 too), IPv6 by its /64.
fn client_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

impl Limiter {
    /// A limiter keeping at most `max_buckets` buckets.
    pub fn new(max_buckets: usize) -> Self {
        Self {
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                swept: Instant::now(),
            }),
            max_buckets: max_buckets.max(1),
        }
    }

    /// Buckets kept now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Buckets> {
        self.buckets.lock()
    }

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
        let mut buckets = self.lock();
        if now.duration_since(buckets.swept) >= SWEEP_EVERY {
            buckets.map.retain(|_, b| b.full_at > now);
            buckets.swept = now;
        }
        let mut wanted = Vec::with_capacity(2);
        if let (Some(rate), Some(ip)) = (limit.per_ip, ip) {
            wanted.push(((route.to_string(), Client::Ip(client_ip(ip))), rate));
        }
        if let (Some(rate), Some(user)) = (limit.per_user, user) {
            wanted.push(((route.to_string(), Client::User(user.to_string())), rate));
        }
        let refilled: Vec<Bucket> = wanted
            .iter()
            .map(|(key, rate)| refilled(buckets.map.get(key), rate, now))
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
        if buckets.map.len() + wanted.len() > self.max_buckets {
            evict_fullest(&mut buckets.map, self.max_buckets, now);
        }
        for ((key, rate), mut bucket) in wanted.into_iter().zip(refilled) {
            bucket.tokens -= 1.0;
            bucket.full_at = now
                + Duration::from_secs_f64(
                    (f64::from(rate.burst) - bucket.tokens).max(0.0) / rate.per_second(),
                );
            buckets.map.insert(key, bucket);
        }
        Ok(())
    }
}

/// Forget the tenth of the buckets closest to full (soonest `full_at`), and every
/// bucket already full, so the map stays under `max`.
fn evict_fullest(map: &mut HashMap<(String, Client), Bucket>, max: usize, now: Instant) {
    map.retain(|_, b| b.full_at > now);
    if map.is_empty() || map.len() + 2 <= max {
        return;
    }
    let mut due: Vec<Instant> = map.values().map(|b| b.full_at).collect();
    let drop = (max / 10).max(2).min(due.len() - 1);
    let (_, cut, _) = due.select_nth_unstable(drop);
    let cut = *cut;
    map.retain(|_, b| b.full_at > cut);
    tracing::warn!(
        kept = map.len(),
        max,
        "rate limiter full (clients rotating addresses?); forgot the buckets closest to full"
    );
}

fn refilled(bucket: Option<&Bucket>, rate: &Rate, now: Instant) -> Bucket {
    let burst = f64::from(rate.burst);
    match bucket {
        None => Bucket {
            tokens: burst,
            at: now,
            full_at: now,
        },
        Some(b) => Bucket {
            tokens: (b.tokens + now.duration_since(b.at).as_secs_f64() * rate.per_second())
                .min(burst),
            at: now,
            full_at: b.full_at,
        },
    }
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
    fn rotating_addresses_cannot_grow_the_buckets_past_the_cap() {
        let limiter = Limiter::new(1000);
        let limit = RateLimit {
            per_ip: Some(Rate::parse("1/h", None).expect("rate")),
            per_user: None,
        };
        for i in 0..5000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.check("/x", &limit, Some(ip), None).is_ok());
            assert!(limiter.len() <= 1000, "{} buckets", limiter.len());
        }
        // Addresses of one IPv6 /64 share a bucket.
        let limiter = Limiter::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert!(limiter.check("/x", &limit, Some(a), None).is_ok());
        assert!(limiter.check("/x", &limit, Some(b), None).is_err());
        assert_eq!(limiter.len(), 1);
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
