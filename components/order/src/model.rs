//! The order record and the validation of `POST /orders` (pure, unit-tested natively).
//!
//! Keys in bucket `orders`: `order:<id>` → order JSON, `user:<user id>` → JSON array of
//! that user's order ids, oldest first (appended by compare-and-swap).

use panal_sdk::{ApiError, Validator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Most lines one order may carry (the product service's limit too).
pub const MAX_ITEMS: usize = 100;
/// Same bound as the product service's stock, so no order it would refuse as 400 passes.
pub const MAX_QUANTITY: u64 = 1_000_000_000;

pub const PENDING: &str = "pending";
pub const PAID: &str = "paid";
pub const PAYMENT_FAILED: &str = "payment_failed";
/// Set by the shipment's events (see [`crate::shipping`]).
pub const SHIPPED: &str = "shipped";
pub const DELIVERED: &str = "delivered";
/// Never placed: no order exists under the id and none ever will (see
/// [`crate::abandon`]); never listed or shown as an order.
pub const ABANDONED: &str = "abandoned";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: String,
    pub quantity: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_id: String,
    pub quantity: u64,
    /// Unit price when the stock was reserved.
    pub price_cents: u64,
}

/// The stored order. No card data: the card number only passes through to payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub total_cents: u64,
    pub items: Vec<OrderItem>,
    pub payment_id: Option<String>,
    pub created_at: String,
    /// Payment's answer was lost: the order stays `pending`, its stock reserved, until
    /// [`crate::reconcile`] learns the outcome by the order's idempotency key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payment_unknown: bool,
    /// The id its stock was reserved under (the order id); absent on orders stored
    /// before reservations had ids, whose release gives back the items' quantities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
    /// The order's shipment as its events told it (see [`crate::shipping`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    /// An abandoned order's answer to its Idempotency-Key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<crate::abandon::Refusal>,
}

/// What the order keeps of its shipment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    pub id: String,
    pub status: String,
    pub carrier: String,
    pub tracking_number: String,
}

impl Order {
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "user_id": self.user_id,
            "status": self.status,
            "total_cents": self.total_cents,
            "items": self.items,
            "payment_id": self.payment_id,
            "created_at": self.created_at,
            "shipment": self.shipment,
        })
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::internal("corrupt order record").with("detail", e.to_string()))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(self).map_err(|e| ApiError::internal(e.to_string()))
    }
}

pub fn order_key(id: &str) -> String {
    format!("order:{id}")
}

/// The marker of an order begun and not yet settled (see [`crate::abandon::Marker`]),
/// so the sweep finds stale ones without reading every order.
pub fn pending_key(id: &str) -> String {
    format!("{PENDING_PREFIX}{id}")
}

/// What every pending marker's key starts with (keys are listed in order).
pub const PENDING_PREFIX: &str = "pending:";

pub fn user_key(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// A validated `POST /orders` body.
#[derive(Debug, PartialEq)]
pub struct NewOrder {
    pub lines: Vec<Line>,
    pub card_number: String,
}

pub fn new_order(body: &[u8]) -> Result<NewOrder, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &["items", "card_number"])?;
    let lines = v
        .item_lines(&obj, MAX_ITEMS, MAX_QUANTITY)
        .into_iter()
        .map(|(product_id, quantity)| Line {
            product_id,
            quantity,
        })
        .collect();
    let card_number = v.string(&obj, "card_number");
    if let Some(card) = &card_number {
        if !is_card_number(card) {
            v.add("card_number", "must be 12 to 19 digits");
        }
    }
    v.finish()?;
    Ok(NewOrder {
        lines,
        card_number: card_number.unwrap_or_default(),
    })
}

pub fn is_card_number(s: &str) -> bool {
    (12..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Sum of price × quantity; `None` on overflow.
pub fn total_cents(items: &[OrderItem]) -> Option<u64> {
    items.iter().try_fold(0u64, |sum, item| {
        sum.checked_add(item.price_cents.checked_mul(item.quantity)?)
    })
}

/// The order ids of a `user:<id>` index value (absent: none).
pub fn parse_index(value: Option<&[u8]>) -> Result<Vec<String>, ApiError> {
    match value {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| ApiError::internal("corrupt order index").with("detail", e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = new_order(
            br#"{"items":[{"product_id":"p1","quantity":2}],"card_number":"4242424242424242"}"#,
        )
        .expect("valid");
        assert_eq!(
            ok,
            NewOrder {
                lines: vec![Line {
                    product_id: "p1".into(),
                    quantity: 2
                }],
                card_number: "4242424242424242".into()
            }
        );
        let e = new_order(br#"{"items":[],"card_number":"4242 4242 4242"}"#).expect_err("bad");
        assert_eq!(
            e.body["fields"],
            json!({"items":"must not be empty","card_number":"must be 12 to 19 digits"})
        );
        let e = new_order(
            br#"{"items":[{"product_id":"","quantity":0}],"card_number":4242424242424242,"x":1}"#,
        )
        .expect_err("bad");
        assert_eq!(
            e.body["fields"],
            json!({"items[0].product_id":"must not be empty",
                   "items[0].quantity":"must be an integer from 1 to 1000000000",
                   "card_number":"must be a string",
                   "x":"unknown field"})
        );
        let e = new_order(br#"{}"#).expect_err("missing");
        assert_eq!(
            e.body["fields"],
            json!({"items":"is required","card_number":"is required"})
        );
    }

    #[test]
    fn cards() {
        assert!(is_card_number("123456789012"));
        assert!(is_card_number("1234567890123456789"));
        assert!(!is_card_number("12345678901"));
        assert!(!is_card_number("12345678901234567890"));
        assert!(!is_card_number("4242-4242-4242-4242"));
    }

    #[test]
    fn totals_and_index() {
        let item = |price, quantity| OrderItem {
            product_id: "p".into(),
            quantity,
            price_cents: price,
        };
        assert_eq!(total_cents(&[item(250, 2), item(100, 1)]), Some(600));
        assert_eq!(total_cents(&[]), Some(0));
        assert_eq!(total_cents(&[item(u64::MAX, 2)]), None);
        assert_eq!(total_cents(&[item(u64::MAX, 1), item(1, 1)]), None);
        assert_eq!(parse_index(None).expect("none"), Vec::<String>::new());
        assert_eq!(parse_index(Some(br#"["a","b"]"#)).expect("ok"), ["a", "b"]);
        assert!(parse_index(Some(b"{")).is_err());
    }
}
