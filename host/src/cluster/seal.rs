//! The cluster key. Every call frame and every desired-version record a host sends is
//! sealed: HMAC-SHA256 under the key every host of the cluster shares, over what it
//! is for (the subject, or the component a record names), the time, a nonce and the
//! bytes. A host takes a call only when its seal is good, fresh (within [`FRESH`] of
//! its own clock) and not seen before, and a record only when its seal is good and it
//! is not older than the last one it took for that component. What it refuses is
//! counted by reason (`panal_cluster_refused_total`), never acted on.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The NATS header a call's seal travels in.
pub const HEADER: &str = "Panal-Seal";

/// The shortest cluster key, in bytes.
pub const MIN_KEY: usize = 32;

/// How far a call's time may be from this host's clock (both ways).
pub const FRESH: Duration = Duration::from_secs(30);

/// Why something that arrived over NATS was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No seal at all.
    #[error("it carries no seal of the cluster key")]
    Unsigned,
    /// Sealed under another key, or changed after sealing.
    #[error("its seal does not match (another key, or changed on the way)")]
    BadSeal,
    /// Sealed too long ago (or in the future), or older than what this host took.
    #[error("its seal is stale")]
    Stale,
    /// A call this host took already.
    #[error("it replays a call already taken")]
    Replayed,
    /// Sealed, but its content breaks a rule (a bad name, route or limit).
    #[error("its content is invalid")]
    Invalid,
}

const REASONS: [&str; 5] = ["unsigned", "bad_seal", "stale", "replayed", "invalid"];

impl Refusal {
    /// Its `reason` label.
    pub fn reason(self) -> &'static str {
        REASONS[self as usize]
    }
}

/// The cluster key, the nonces of calls taken lately, and the refusals counted.
pub struct Seal {
    key: Hmac<Sha256>,
    seen: Mutex<Seen>,
    refused: [AtomicU64; REASONS.len()],
}

#[derive(Default)]
struct Seen {
    /// Nonce → when it can be forgotten (ms since the epoch): after that its call is
    /// stale anyway.
    until: HashMap<u128, u64>,
    /// Size at which expired nonces are swept next.
    sweep_at: usize,
}

/// An opened seal: when it was made (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// When it was sealed.
    pub at: u64,
}

impl Seal {
    /// A seal under `key` (at least [`MIN_KEY`] bytes).
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_KEY {
            return Err(format!(
                "the cluster key has {} bytes; it needs at least {MIN_KEY} (`openssl rand -hex 32` makes one)",
                key.len()
            ));
        }
        let key = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
        Ok(Self {
            key,
            seen: Mutex::new(Seen {
                sweep_at: 4096,
                ..Seen::default()
            }),
            refused: Default::default(),
        })
    }

    /// The seal of `bytes` sent for `purpose` (`1.TIME.NONCE.MAC`, hex).
    pub fn seal(&self, purpose: &str, bytes: &[u8]) -> String {
        let at = now_ms();
        let nonce = uuid::Uuid::new_v4().as_u128();
        let mac = self.mac(purpose, at, nonce, bytes);
        format!("1.{at}.{nonce:032x}.{}", hex::encode(mac))
    }

    /// Check `seal` on `bytes` received for `purpose`; `once`: a call, which must be
    /// fresh and new. A refusal is counted.
    pub fn open(
        &self,
        purpose: &str,
        bytes: &[u8],
        seal: Option<&str>,
        once: bool,
    ) -> Result<Opened, Refusal> {
        self.check(purpose, bytes, seal, once)
            .inspect_err(|why| self.refuse(*why))
    }

    /// Count a refusal made after the seal was good (an invalid content, a stale
    /// record).
    pub fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far, by reason.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    fn check(
        &self,
        purpose: &str,
        bytes: &[u8],
        seal: Option<&str>,
        once: bool,
    ) -> Result<Opened, Refusal> {
        let seal = seal.ok_or(Refusal::Unsigned)?;
        let mut parts = seal.split('.');
        let (Some("1"), Some(at), Some(nonce), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::BadSeal);
        };
        let at: u64 = at.parse().map_err(|_| Refusal::BadSeal)?;
        let nonce = u128::from_str_radix(nonce, 16).map_err(|_| Refusal::BadSeal)?;
        let mac = hex::decode(mac).map_err(|_| Refusal::BadSeal)?;
        self.keyed(purpose, at, nonce, bytes)
            .verify_slice(&mac)
            .map_err(|_| Refusal::BadSeal)?;
        if once {
            let now = now_ms();
            let fresh = FRESH.as_millis() as u64;
            if at.abs_diff(now) > fresh {
                return Err(Refusal::Stale);
            }
            let mut seen = self.seen.lock();
            if seen.until.insert(nonce, at + fresh).is_some() {
                return Err(Refusal::Replayed);
            }
            seen.sweep(now);
        }
        Ok(Opened { at })
    }

    fn mac(&self, purpose: &str, at: u64, nonce: u128, bytes: &[u8]) -> Vec<u8> {
        self.keyed(purpose, at, nonce, bytes)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    fn keyed(&self, purpose: &str, at: u64, nonce: u128, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        // Lengths first, so no two (purpose, bytes) pairs feed the same stream.
        mac.update(b"panal-seal-1");
        mac.update(&(purpose.len() as u64).to_be_bytes());
        mac.update(purpose.as_bytes());
        mac.update(&at.to_be_bytes());
        mac.update(&nonce.to_be_bytes());
        mac.update(bytes);
        mac
    }
}

impl Seen {
    /// Forget nonces whose calls are stale by now, once the map has doubled since the
    /// last sweep (so a sweep costs O(1) per insert over time).
    fn sweep(&mut self, now: u64) {
        if self.until.len() < self.sweep_at {
            return;
        }
        self.until.retain(|_, until| *until >= now);
        self.sweep_at = (self.until.len() * 2).max(4096);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_seal_opens_once_for_its_purpose_and_bytes() {
        let seal = Seal::new(KEY).expect("key");
        let s = seal.seal("panal.t.call.back", b"frame");
        assert!(seal
            .open("panal.t.call.back", b"frame", Some(&s), true)
            .is_ok());
        assert_eq!(
            seal.open("panal.t.call.back", b"frame", Some(&s), true),
            Err(Refusal::Replayed)
        );
        let s = seal.seal("panal.t.call.back", b"frame");
        assert_eq!(
            seal.open("panal.t.call.other", b"frame", Some(&s), true),
            Err(Refusal::BadSeal)
        );
        assert_eq!(
            seal.open("panal.t.call.back", b"framf", Some(&s), true),
            Err(Refusal::BadSeal)
        );
        assert_eq!(
            seal.open("panal.t.call.back", b"frame", None, true),
            Err(Refusal::Unsigned)
        );
        let other = Seal::new(b"another key, also of 32 bytes...").expect("key");
        assert_eq!(
            other.open("panal.t.call.back", b"frame", Some(&s), true),
            Err(Refusal::BadSeal)
        );
        let counted: u64 = seal.refusals().iter().map(|(_, n)| n).sum();
        assert_eq!(counted, 4);
    }

    #[test]
    fn an_old_seal_is_stale_for_a_call_but_opens_for_a_record() {
        let seal = Seal::new(KEY).expect("key");
        let at = now_ms() - 120_000;
        let mac = seal.mac("p", at, 7, b"x");
        let old = format!("1.{at}.{:032x}.{}", 7, hex::encode(mac));
        assert_eq!(seal.open("p", b"x", Some(&old), true), Err(Refusal::Stale));
        assert_eq!(seal.open("p", b"x", Some(&old), false), Ok(Opened { at }));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Seal::new(b"short").is_err());
    }
}
