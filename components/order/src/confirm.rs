//! `GET /internal/paid/{id}`, for the shipping service (in-process only: no gateway
//! route, and 403 without the host's `x-panal-caller`): whether order `id` is paid,
//! confirmed with the payment service (a captured charge of the order's total under the
//! order's idempotency key, the one the order recorded), so that an `orders.paid` event
//! someone else published ships nothing.
//!
//! 200 `{order_id, user_id, status, payment_id, total_cents}`; 404 unknown order; 409
//! `{"error": "order is not paid", ...}` when the order or payment says otherwise; 503
//! while payment cannot say (the caller retries).

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::{ApiError, ApiResult};
use serde_json::json;

use crate::model::{self, Order};
use crate::pay::{self, Payment};

/// The confirmation of order `id` (see the module doc).
pub fn paid(bucket: &Bucket, id: &str) -> ApiResult {
    let unknown = || ApiError::not_found("order not found");
    if !panal_sdk::is_id(id) {
        return Err(unknown());
    }
    let bytes = bucket.get(&model::order_key(id))?.ok_or_else(unknown)?;
    let order = Order::from_bytes(&bytes)?;
    let not_paid = |why: &str| {
        ApiError::conflict("order is not paid")
            .with("order_id", order.id.as_str())
            .with("status", order.status.as_str())
            .with("reason", why)
    };
    if ![model::PAID, model::SHIPPED, model::DELIVERED].contains(&order.status.as_str()) {
        return Err(not_paid("the order's status"));
    }
    // A free order has nothing to confirm with payment.
    if order.total_cents > 0 {
        match pay::lookup_for(&order.user_id, &order.id, order.total_cents) {
            Some(Payment::Captured { payment_id })
                if Some(&payment_id) == order.payment_id.as_ref() => {}
            Some(_) => return Err(not_paid("payment holds no captured charge of this order")),
            None => {
                return Err(ApiError::new(
                    503,
                    "payment cannot confirm the order now; retry",
                ))
            }
        }
    }
    Ok((
        200,
        json!({
            "order_id": order.id,
            "user_id": order.user_id,
            "status": order.status,
            "payment_id": order.payment_id,
            "total_cents": order.total_cents,
        }),
    ))
}
