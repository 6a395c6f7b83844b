//! `Idempotency-Key` on `POST /orders`: a client that lost an answer (a timeout, a
//! gateway that went away) sends the same request again with the same key and gets the
//! same order, never a second one.
//!
//! The key is claimed in bucket `orders` as `idem:<user id>:<key>` → `{order_id,
//! fingerprint}` by a compare-and-swap from absent, before any stock moves, so
//! concurrent replays agree on one order id. A replay then finds:
//! - the order stored: it is answered as it stands (200), settled first like a read;
//! - no order stored yet (the first attempt is still running, or died before storing
//!   it): the replay runs the creation again under the same order id. Every step is
//!   idempotent under that id (the stock reservation, the payment's own key, the index,
//!   the events' ids), so two attempts converge on one order, one reservation and one
//!   payment.
//!
//! Keys are per user. The fingerprint covers the items and the card's length and last
//! four digits (never other digits): the same key with another body is 422.

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::wasi::http::types::IncomingRequest;
use panal_sdk::{kv, ApiError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::NewOrder;

/// What a claim found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// Create the order under this id (new, or resumed after a lost attempt).
    Create(String),
    /// The order this key made before.
    Made(String),
}

#[derive(Serialize, Deserialize)]
struct Record {
    order_id: String,
    fingerprint: String,
}

/// The request's `Idempotency-Key`, if it sent one: 1..=255 visible ASCII characters.
pub fn key_of(req: &IncomingRequest) -> Result<Option<String>, ApiError> {
    match panal_sdk::header(req, "idempotency-key") {
        None => Ok(None),
        Some(key) => validate(key.trim()).map(Some),
    }
}

fn validate(key: &str) -> Result<String, ApiError> {
    if !panal_sdk::is_idempotency_key(key) {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_string())
}

/// The bucket key of `user`'s idempotency key `key`.
pub fn claim_key(user: &str, key: &str) -> String {
    format!("idem:{user}:{key}")
}

/// What makes two requests "the same" (pure): the items, and the card's length and last
/// four digits.
pub fn fingerprint(new: &NewOrder) -> String {
    let n = new.card_number.len();
    let lines: Vec<(&str, u64)> = new
        .lines
        .iter()
        .map(|l| (l.product_id.as_str(), l.quantity))
        .collect();
    let canonical = serde_json::json!([lines, n, &new.card_number[n.saturating_sub(4)..]]);
    panal_sdk::random::hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

/// Claims `key` for `user`'s order `new` under a fresh id, or finds who claimed it.
pub fn claim(bucket: &Bucket, user: &str, key: &str, new: &NewOrder) -> Result<Claim, ApiError> {
    let mine = Record {
        order_id: panal_sdk::random_id(),
        fingerprint: fingerprint(new),
    };
    let bytes = serde_json::to_vec(&mine).map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(existing) = kv::claim(bucket, &claim_key(user, key), &bytes)? else {
        return Ok(Claim::Create(mine.order_id));
    };
    let theirs: Record = serde_json::from_slice(&existing).map_err(|e| {
        ApiError::internal("unreadable idempotency record").with("detail", e.to_string())
    })?;
    if theirs.fingerprint != mine.fingerprint {
        return Err(ApiError::new(
            422,
            "this Idempotency-Key was used with another order",
        ));
    }
    let stored = bucket.get(&crate::model::order_key(&theirs.order_id))?;
    Ok(match stored {
        Some(_) => Claim::Made(theirs.order_id),
        None => Claim::Create(theirs.order_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Line;

    fn order(card: &str, quantity: u64) -> NewOrder {
        NewOrder {
            lines: vec![Line {
                product_id: "p1".into(),
                quantity,
            }],
            card_number: card.into(),
        }
    }

    #[test]
    fn same_body_same_fingerprint() {
        let a = fingerprint(&order("4242424242424242", 1));
        assert_eq!(a, fingerprint(&order("4242424242424242", 1)));
        assert_eq!(a.len(), 64);
        assert_ne!(a, fingerprint(&order("4242424242424242", 2)));
        assert_ne!(a, fingerprint(&order("4242424242420002", 1)));
        assert_ne!(a, fingerprint(&order("424242424242424242", 1)));
        // Only the last four digits count: the rest is never kept, even hashed.
        assert_eq!(a, fingerprint(&order("5555555555554242", 1)));
    }

    #[test]
    fn keys() {
        assert_eq!(validate("k-1").ok().as_deref(), Some("k-1"));
        assert!(validate("").is_err());
        assert!(validate("has space").is_err());
        assert!(validate(&"k".repeat(256)).is_err());
        assert!(validate(&"k".repeat(255)).is_ok());
        assert_eq!(claim_key("u1", "k"), "idem:u1:k");
    }
}
