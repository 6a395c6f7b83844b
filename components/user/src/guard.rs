//! Password guessing, held back per account and per client address: each account keeps
//! the recent failed logins of each address it saw them from (IPv6 by /64, as the
//! gateway counts clients). After [`FREE_TRIES`] failures in a row from one address, that
//! address waits 2, 4, 8... seconds (at most [`MAX_WAIT_SECS`]) between tries on that
//! account and gets 429 with `Retry-After` meanwhile, before any password work. Another
//! address is not held back, so a stranger guessing the owner's password cannot lock
//! the owner out; a success from an address forgets its failures. The gateway's
//! `rate_limit` on the login route bounds how fast one address tries accounts at all.
//!
//! Stored in the account's record `fails:<user id>` (a JSON object, address →
//! `{n, last}`), at most [`MAX_ADDRESSES`] addresses (the oldest forgotten first), so a
//! botnet cannot grow it; failures older than a day are forgotten. Unknown emails keep
//! nothing (there is no account to guard, and nothing for a flood to fill).

use std::collections::BTreeMap;

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::kv::{self, Step};
use panal_sdk::ApiError;
use serde::{Deserialize, Serialize};

/// Failures in a row from one address before it must wait.
pub const FREE_TRIES: u32 = 5;

/// The longest wait between tries.
pub const MAX_WAIT_SECS: u64 = 900;

/// Addresses remembered per account.
pub const MAX_ADDRESSES: usize = 64;

/// How long a failure is remembered.
const FORGET_SECS: u64 = 86_400;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Fails {
    /// Failures in a row.
    n: u32,
    /// When the last one was, unix seconds.
    last: u64,
}

type Record = BTreeMap<String, Fails>;

fn key(user_id: &str) -> String {
    format!("fails:{user_id}")
}

/// The client as the guard counts it: the address in the host's `x-panal-client-ip`,
/// an IPv6 one by its /64; `unknown` without one.
pub fn client_of(header: Option<&str>) -> String {
    match header.and_then(|h| h.trim().parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Some(ip) => ip.to_string(),
        None => "unknown".into(),
    }
}

/// Seconds `client` must still wait before trying `record`'s account again (0: none).
fn wait_left(record: &Record, client: &str, now: u64) -> u64 {
    let Some(f) = record.get(client) else {
        return 0;
    };
    if f.n < FREE_TRIES || now.saturating_sub(f.last) >= FORGET_SECS {
        return 0;
    }
    let wait = 1u64
        .checked_shl(f.n - FREE_TRIES + 1)
        .unwrap_or(MAX_WAIT_SECS)
        .min(MAX_WAIT_SECS);
    (f.last + wait).saturating_sub(now)
}

fn load(bucket: &Bucket, user_id: &str) -> Result<Record, ApiError> {
    Ok(bucket
        .get(&key(user_id))?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

/// Nothing when `client` may try a password on account `user_id` now; else 429 with
/// how long to wait.
pub fn check(bucket: &Bucket, user_id: &str, client: &str, now: u64) -> Result<(), ApiError> {
    match wait_left(&load(bucket, user_id)?, client, now) {
        0 => Ok(()),
        secs => Err(
            ApiError::new(429, "too many failed logins; try again later")
                .with("retry_after_secs", secs),
        ),
    }
}

/// Note a failed login on `user_id` from `client` at `now` (a compare-and-swap, so
/// failures racing each other all count).
pub fn failed(bucket: &Bucket, user_id: &str, client: &str, now: u64) -> Result<(), ApiError> {
    Ok(kv::update(bucket, &key(user_id), |current| {
        let mut record: Record = current
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        noted(&mut record, client, now);
        let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok::<_, ApiError>(Step::Write(bytes, ()))
    })?)
}

/// `record` with one more failure of `client` at `now`, old ones and the addresses
/// past [`MAX_ADDRESSES`] forgotten.
fn noted(record: &mut Record, client: &str, now: u64) {
    record.retain(|_, f| now.saturating_sub(f.last) < FORGET_SECS);
    let entry = record.entry(client.to_string()).or_default();
    entry.n = entry.n.saturating_add(1);
    entry.last = now;
    while record.len() > MAX_ADDRESSES {
        let oldest = record
            .iter()
            .min_by_key(|(_, f)| f.last)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => record.remove(&k),
            None => break,
        };
    }
}

/// Forget `client`'s failures on `user_id` (it logged in).
pub fn succeeded(bucket: &Bucket, user_id: &str, client: &str) -> Result<(), ApiError> {
    let mut record = load(bucket, user_id)?;
    if record.remove(client).is_none() {
        return Ok(());
    }
    if record.is_empty() {
        return Ok(bucket.delete(&key(user_id))?);
    }
    let bytes = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(bucket.set(&key(user_id), &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_after_the_free_tries_and_is_capped() {
        let mut record = Record::new();
        let at = |n: u32| Fails { n, last: 1000 };
        record.insert("a".into(), at(FREE_TRIES - 1));
        assert_eq!(wait_left(&record, "a", 1000), 0);
        record.insert("a".into(), at(FREE_TRIES));
        assert_eq!(wait_left(&record, "a", 1000), 2);
        assert_eq!(wait_left(&record, "a", 1001), 1);
        assert_eq!(wait_left(&record, "a", 1002), 0);
        record.insert("a".into(), at(FREE_TRIES + 2));
        assert_eq!(wait_left(&record, "a", 1000), 8);
        record.insert("a".into(), at(FREE_TRIES + 60));
        assert_eq!(wait_left(&record, "a", 1000), MAX_WAIT_SECS);
        assert_eq!(
            wait_left(&record, "b", 1000),
            0,
            "another address waits for nothing"
        );
        assert_eq!(wait_left(&record, "a", 1000 + FORGET_SECS), 0);
    }

    #[test]
    fn a_record_keeps_the_newest_addresses_only() {
        let mut record = Record::new();
        for i in 0..(MAX_ADDRESSES as u64 + 10) {
            noted(&mut record, &format!("10.0.0.{i}"), 1000 + i);
        }
        assert_eq!(record.len(), MAX_ADDRESSES);
        assert!(!record.contains_key("10.0.0.0"));
        noted(&mut record, "10.0.0.99", 1000 + FORGET_SECS + 500);
        assert_eq!(record.len(), 1, "failures older than a day are forgotten");
    }

    #[test]
    fn clients_are_addresses_and_ipv6_counts_by_its_64() {
        assert_eq!(client_of(Some("10.0.0.7")), "10.0.0.7");
        assert_eq!(
            client_of(Some("2001:db8:1:2:aaaa::1")),
            client_of(Some("2001:db8:1:2:bbbb::9"))
        );
        assert_eq!(client_of(Some("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_eq!(client_of(Some("not an address")), "unknown");
        assert_eq!(client_of(None), "unknown");
    }
}
