//! Orders that were never placed, and the stock their attempts may still hold.
//!
//! Every attempt writes the order's pending marker (`pending:<id>`: when, whose, which
//! lines) before it reserves any stock under the order id. An attempt that cannot tell
//! whether its order was stored (storage out of reach, an unclear answer from the
//! product service) gives nothing back itself: a replay of the same `Idempotency-Key`
//! may own that very reservation by now. The marker leaves it to the sweep.
//!
//! Giving stock back is safe once no order can ever be stored under the id. The
//! abandoned record makes sure of that: it is claimed at `order:<id>` from absent, the
//! same compare-and-swap an order is stored with, so exactly one of the two exists. It
//! keeps the answer the order's key gets from then on (the first attempt's 409, or "not
//! placed" when the sweep gave up on it), and is never listed or readable as an order.

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::{kv, ApiError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::calls;
use crate::model::{self, Line, Order, OrderItem};

/// A pending marker's value.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// When the attempt began (unix seconds).
    pub at: u64,
    pub user_id: String,
    /// The lines in the order they were reserved (a hold is `<id>/<line index>`).
    pub lines: Vec<Line>,
}

impl Marker {
    /// Reads a marker: one of this shape, or a bare unix time (no lines: an order
    /// stored before markers said which).
    pub fn parse(bytes: &[u8]) -> (u64, Option<Self>) {
        if let Ok(marker) = serde_json::from_slice::<Self>(bytes) {
            return (marker.at, Some(marker));
        }
        let at = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        (at, None)
    }
}

/// What an attempt answers on behalf of an order that was never placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub body: Map<String, Value>,
}

impl From<&ApiError> for Refusal {
    fn from(e: &ApiError) -> Self {
        Self {
            status: e.status,
            body: e.body.clone(),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError {
            status: r.status,
            body: r.body,
        }
    }
}

/// Marks order `id` of `user_id` as begun, before any of its stock moves.
pub fn mark(bucket: &Bucket, id: &str, user_id: &str, lines: &[Line]) -> Result<(), ApiError> {
    let marker = Marker {
        at: panal_sdk::time::unix_now(),
        user_id: user_id.to_string(),
        lines: lines.to_vec(),
    };
    let bytes = serde_json::to_vec(&marker).map_err(|e| ApiError::internal(e.to_string()))?;
    bucket.set(&model::pending_key(id), &bytes)?;
    Ok(())
}

/// How [`abandon`] ended.
pub enum Abandoned {
    /// No order will be stored under the id; its answer from now on.
    Refused(ApiError),
    /// An attempt stored the order first: it stands.
    Placed,
}

/// Gives up on order `id` with answer `why`, unless an order is stored under it: then
/// that order stands. Once abandoned, whatever its attempts reserved goes back (again,
/// harmlessly, if an earlier call gave it back), and the marker goes with it.
pub fn abandon(
    bucket: &Bucket,
    id: &str,
    user_id: &str,
    lines: &[Line],
    why: &ApiError,
) -> Result<Abandoned, ApiError> {
    let record = Order {
        id: id.to_string(),
        user_id: user_id.to_string(),
        status: model::ABANDONED.to_string(),
        total_cents: 0,
        items: items_of(lines),
        payment_id: None,
        created_at: panal_sdk::time::now_rfc3339(),
        payment_unknown: false,
        reservation: Some(id.to_string()),
        shipment: None,
        refusal: Some(Refusal::from(why)),
    };
    let order = match kv::claim(bucket, &model::order_key(id), &record.to_bytes()?)? {
        None => record,
        Some(existing) => Order::from_bytes(&existing)?,
    };
    if order.status != model::ABANDONED {
        return Ok(Abandoned::Placed);
    }
    Ok(Abandoned::Refused(give_back(bucket, order)))
}

/// An abandoned order's stock back, then its marker gone (kept when the release failed,
/// so the sweep tries again); its answer.
pub fn give_back(bucket: &Bucket, order: Order) -> ApiError {
    if calls::release(order.reservation.as_deref(), &order.items) {
        let _ = bucket.delete(&model::pending_key(&order.id));
    }
    order.refusal.map_or_else(not_placed, ApiError::from)
}

/// The answer of an order the sweep gave up on: it was never stored.
pub fn not_placed() -> ApiError {
    ApiError::new(
        409,
        "the order was not placed: it could not be stored in time; nothing was charged",
    )
}

/// The lines as items of an abandoned record: no prices, nothing was sold.
pub fn items_of(lines: &[Line]) -> Vec<OrderItem> {
    lines
        .iter()
        .map(|l| OrderItem {
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            price_cents: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_of_both_shapes() {
        assert_eq!(Marker::parse(b"1700000000"), (1_700_000_000, None));
        assert_eq!(Marker::parse(b"junk"), (0, None));
        let lines = vec![Line {
            product_id: "p1".into(),
            quantity: 2,
        }];
        let marker = Marker {
            at: 5,
            user_id: "u1".into(),
            lines: lines.clone(),
        };
        let bytes = serde_json::to_vec(&marker).expect("json");
        assert_eq!(Marker::parse(&bytes), (5, Some(marker)));
    }

    #[test]
    fn refusals_round_trip() {
        let e = ApiError::new(409, "insufficient stock").with("product_id", "p1");
        let back = ApiError::from(Refusal::from(&e));
        assert_eq!((back.status, back.body), (e.status, e.body));
    }
}
