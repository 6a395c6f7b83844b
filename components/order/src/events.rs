//! Shop events over `wasi:messaging`: one message per stored state change of an order.
//!
//! - `orders.created`: the order is stored as `pending` (stock reserved, not yet paid).
//! - `orders.paid` / `orders.payment_failed`: the final status is stored.
//!
//! The subject is the event type. The body (content-type `application/json`):
//!
//! ```json
//! {"event_id": "<order id>-paid", "type": "orders.paid", "order_id": "...", "user_id": "...",
//!  "status": "paid", "total_cents": 600,
//!  "items": [{"product_id": "...", "quantity": 2, "price_cents": 300}],
//!  "at": "2024-01-01T00:00:00Z"}
//! ```
//!
//! `event_id` is the order's id and the event's kind: an order has each event at most
//! once, so consumers de-duplicate by it, whether a message was redelivered or
//! published again (the sweep finishing an order). A failed publish never fails or changes
//! the order: it is logged, and the order's pending marker stays until the sweep has told
//! it (see `reconcile::finish`). The manifest must grant
//! `messaging = { publish = ["orders.>"] }` (or the three subjects).

use panal_sdk::messaging::{producer, types};
use serde_json::{json, Value};

use crate::model::Order;

pub const CREATED: &str = "orders.created";
pub const PAID: &str = "orders.paid";
pub const PAYMENT_FAILED: &str = "orders.payment_failed";

/// The messaging client name (the host has one broker; the name is not interpreted).
const CLIENT: &str = "default";

/// The event body for `order` as it is now (pure).
pub fn body(kind: &str, order: &Order, event_id: &str, at: &str) -> Value {
    json!({
        "event_id": event_id,
        "type": kind,
        "order_id": order.id,
        "user_id": order.user_id,
        "status": order.status,
        "total_cents": order.total_cents,
        "items": order.items,
        "at": at,
    })
}

/// The id of `order_id`'s event `kind` (pure): `<order id>-created`, `-paid`, ...
pub fn event_id(kind: &str, order_id: &str) -> String {
    let suffix = kind.strip_prefix("orders.").unwrap_or(kind);
    format!("{order_id}-{suffix}")
}

/// Publishes event `kind` (also the subject) for `order`; whether the broker took it (a
/// failure is logged, and the order's pending marker stays for the sweep to tell again).
pub fn publish(kind: &str, order: &Order) -> bool {
    let event = body(
        kind,
        order,
        &event_id(kind, &order.id),
        &panal_sdk::time::now_rfc3339(),
    );
    let sent = serde_json::to_vec(&event)
        .map_err(|e| types::Error::Other(e.to_string()))
        .and_then(|bytes| {
            let client = types::Client::connect(CLIENT)?;
            let message = types::Message::new(&bytes);
            message.set_content_type("application/json");
            producer::send(&client, kind, message)
        });
    if let Err(e) = &sent {
        eprintln!(
            "order: publishing {kind} for order {} failed: {e:?}",
            order.id
        );
    }
    sent.is_ok()
}

/// The event that tells of `status`, a final one: `orders.payment_failed` for a failed
/// order, else `orders.paid` (an order shipped or delivered was paid first).
pub fn final_event(status: &str) -> &'static str {
    if status == crate::model::PAYMENT_FAILED {
        PAYMENT_FAILED
    } else {
        PAID
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OrderItem;

    #[test]
    fn event_body() {
        let order = Order {
            id: "o1".into(),
            user_id: "u1".into(),
            status: "paid".into(),
            total_cents: 600,
            items: vec![OrderItem {
                product_id: "p1".into(),
                quantity: 2,
                price_cents: 300,
            }],
            payment_id: Some("pay1".into()),
            payment_unknown: false,
            reservation: Some("o1".into()),
            created_at: "2024-01-01T00:00:00Z".into(),
            shipment: None,
            refusal: None,
        };
        assert_eq!(
            body(PAID, &order, "e1", "2024-01-01T00:00:05Z"),
            json!({
                "event_id": "e1",
                "type": "orders.paid",
                "order_id": "o1",
                "user_id": "u1",
                "status": "paid",
                "total_cents": 600,
                "items": [{"product_id": "p1", "quantity": 2, "price_cents": 300}],
                "at": "2024-01-01T00:00:05Z",
            })
        );
        assert_eq!(event_id(PAID, "o1"), "o1-paid");
        assert_eq!(event_id(PAYMENT_FAILED, "o1"), "o1-payment_failed");
        // The subjects are valid NATS subjects with no wildcard.
        for subject in [CREATED, PAID, PAYMENT_FAILED] {
            assert!(subject.starts_with("orders.") && !subject.contains(['*', '>', ' ']));
        }
    }
}
