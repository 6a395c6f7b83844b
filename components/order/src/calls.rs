//! Calls to the product service (`http://product/...`, dispatched in-process by the
//! host), and the pure interpretation of its answers. Payment is in [`crate::pay`].

use panal_sdk::client;
use panal_sdk::wasi::http::types::Method;
use panal_sdk::ApiError;
use serde_json::{json, Value};

use crate::model::{Line, OrderItem};

const RESERVE_URL: &str = "http://product/internal/reserve";
const RELEASE_URL: &str = "http://product/internal/release";
const KEEP_URL: &str = "http://product/internal/keep";
/// Sends of one reserve or release when the answer is unclear (no answer, 502, 503,
/// 504): the reservation id makes every repeat harmless, and a repeat reaches another
/// host of product when the one that took the call died.
const ATTEMPTS: usize = 3;

/// An answer that says nothing about whether the call took effect.
fn unclear(answer: &Result<(u16, Value), String>) -> bool {
    answer
        .as_ref()
        .map_or(true, |(status, _)| matches!(status, 502..=504))
}

/// Sends `body` to `url` until the answer is clear, [`ATTEMPTS`] times at most.
fn send_idempotent(url: &str, body: &Value) -> Result<(u16, Value), String> {
    let mut answer = client::send_json(Method::Post, url, &[], body);
    for _ in 1..ATTEMPTS {
        if !unclear(&answer) {
            break;
        }
        answer = client::send_json(Method::Post, url, &[], body);
    }
    answer
}

/// Reserves every line at once under `reservation` (the order id). Err is what the order
/// request should answer: a 400/404/409 reserved nothing; after any other, something
/// may be reserved, and the caller's pending marker leaves it to the sweep (a replay of
/// the order's Idempotency-Key may hold that very reservation by now).
pub fn reserve(reservation: &str, lines: &[Line]) -> Result<Vec<OrderItem>, ApiError> {
    let body = json!({ "reservation": reservation, "items": lines });
    let (status, answer) = send_idempotent(RESERVE_URL, &body)
        .map_err(|e| ApiError::upstream("product service unavailable").with("detail", e))?;
    interpret_reserve(status, &answer, lines)
}

/// 200 → the reserved items with their prices; 404/409 (unknown product, not enough
/// stock) → the same status and body, which name the product; anything else → 502.
pub fn interpret_reserve(
    status: u16,
    answer: &Value,
    lines: &[Line],
) -> Result<Vec<OrderItem>, ApiError> {
    match status {
        200 => {
            let items: Vec<OrderItem> = answer
                .get("items")
                .cloned()
                .and_then(|v| serde_json::from_value::<Vec<ReservedItem>>(v).ok())
                .ok_or_else(|| {
                    ApiError::upstream("product service gave an unreadable reservation")
                })?
                .into_iter()
                .map(|r| OrderItem {
                    product_id: r.product_id,
                    quantity: r.quantity,
                    price_cents: r.price_cents,
                })
                .collect();
            let matches = items.len() == lines.len()
                && items
                    .iter()
                    .zip(lines)
                    .all(|(i, l)| i.product_id == l.product_id && i.quantity == l.quantity);
            if matches {
                Ok(items)
            } else {
                Err(ApiError::upstream(
                    "product service reserved something else",
                ))
            }
        }
        404 | 409 => match answer {
            Value::Object(map) if map.contains_key("error") => Err(ApiError {
                status,
                body: map.clone(),
            }),
            _ => Err(ApiError::new(
                status,
                if status == 404 {
                    "product not found"
                } else {
                    "insufficient stock"
                },
            )),
        },
        other => Err(ApiError::upstream("product service failed").with("status", other)),
    }
}

#[derive(serde::Deserialize)]
struct ReservedItem {
    product_id: String,
    quantity: u64,
    price_cents: u64,
}

/// Gives reserved units back: those held under `reservation`, or (for an order stored
/// before reservations had ids) the items' quantities; whether the product service
/// took it. Failures are logged, not raised: the order is already failing, and
/// unreleased units err on the side of not overselling.
pub fn release(reservation: Option<&str>, items: &[OrderItem]) -> bool {
    let mut body = lines_of(items);
    let answer = match reservation {
        Some(r) => {
            body["reservation"] = json!(r);
            send_idempotent(RELEASE_URL, &body)
        }
        // Without an id a repeat could give back twice: one send.
        None => client::send_json(Method::Post, RELEASE_URL, &[], &body),
    };
    match answer {
        Ok((200, _)) => return true,
        Ok((status, body)) => eprintln!("order: stock release answered {status}: {body}"),
        Err(e) => eprintln!("order: stock release failed: {e}"),
    }
    false
}

/// Tells the product service that the order holding `reservation` is paid: its holds
/// stay sold and are forgotten soon after (until then, they last as long as the order
/// may still give them back). Whether the product service took it; a failure is
/// logged, and the order's marker keeps it for the sweep.
pub fn keep(reservation: &str, items: &[OrderItem]) -> bool {
    let mut body = lines_of(items);
    body["reservation"] = json!(reservation);
    match send_idempotent(KEEP_URL, &body) {
        Ok((200, _)) => true,
        Ok((status, body)) => {
            eprintln!("order: keeping reservation {reservation} answered {status}: {body}");
            false
        }
        Err(e) => {
            eprintln!("order: keeping reservation {reservation} failed: {e}");
            false
        }
    }
}

/// `{"items": [{product_id, quantity}]}` of `items`.
fn lines_of(items: &[OrderItem]) -> Value {
    let lines: Vec<Value> = items
        .iter()
        .map(|i| json!({ "product_id": i.product_id, "quantity": i.quantity }))
        .collect();
    json!({ "items": lines })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<Line> {
        vec![Line {
            product_id: "a".into(),
            quantity: 2,
        }]
    }

    #[test]
    fn reserve_answers() {
        let ok = json!({"items":[{"product_id":"a","quantity":2,"price_cents":150,"name":"A"}]});
        assert_eq!(
            interpret_reserve(200, &ok, &lines()).expect("ok"),
            [OrderItem {
                product_id: "a".into(),
                quantity: 2,
                price_cents: 150
            }]
        );
        let conflict = json!({"error":"insufficient stock","product_id":"a"});
        let e = interpret_reserve(409, &conflict, &lines()).expect_err("409");
        assert_eq!((e.status, e.to_value()), (409, conflict));
        let e = interpret_reserve(404, &Value::Null, &lines()).expect_err("404");
        assert_eq!((e.status, e.message()), (404, "product not found"));
        assert_eq!(
            interpret_reserve(500, &Value::Null, &lines())
                .expect_err("500")
                .status,
            502
        );
        let wrong = json!({"items":[{"product_id":"b","quantity":2,"price_cents":1}]});
        assert_eq!(
            interpret_reserve(200, &wrong, &lines())
                .expect_err("mismatch")
                .status,
            502
        );
    }
}
