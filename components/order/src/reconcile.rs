//! Settling orders left `pending`: their payment outcome was unknown when they were
//! answered (payment failed or went silent mid-charge), or their request never finished
//! (a crash or a timeout between reserving the stock and paying). Their stock stays
//! reserved until payment is asked by the order's idempotency key. A payment exists only
//! once its key is claimed, so "none under this key" is final once no charge can still
//! be running:
//!
//! - [`settle`], when the owner reads an order marked `payment_unknown`: true over the
//!   direct route, whose calls the host ends with the callee's deadline, and not over
//!   messaging, where a charge message may still be on its way (those wait for the
//!   sweep);
//! - [`sweep`], on the host's timer: every order pending for longer than config
//!   `settle_after_secs` (default 60, far beyond any request's deadline), whatever the
//!   route.
//!
//! A marker whose order was never stored (its attempts failed or died before storing it)
//! is abandoned once stale, and what its attempts reserved given back (see
//! [`crate::abandon`]).
//!
//! A payment under the key that is not this order's charge (another order id or
//! amount: the caller's own `POST /payments` with that key) settles nothing as paid.

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::kv::{self, Step};
use panal_sdk::{ApiError, ApiResult};
use serde_json::json;

use crate::abandon;
use crate::model::{self, Order};
use crate::pay::{self, Payment, Route};
use crate::{calls, events};

/// Config key: seconds an order may stay `pending` before the sweep settles it.
const SETTLE_AFTER_KEY: &str = "settle_after_secs";
const DEFAULT_SETTLE_AFTER_SECS: u64 = 60;

/// `order` as it stands after asking payment, if it was waiting for that.
pub fn settle(bucket: &Bucket, order: Order) -> Result<Order, ApiError> {
    if !order.payment_unknown || pay::route()? != Route::Http {
        return Ok(order);
    }
    match pay::lookup(&order.id, order.total_cents) {
        Some(outcome) => settle_with(bucket, order, &outcome),
        None => Ok(order),
    }
}

/// The configured `settle_after_secs` (absent: 60).
pub fn settle_after() -> Result<u64, ApiError> {
    let value = panal_sdk::config::store::get(SETTLE_AFTER_KEY).map_err(|e| {
        let detail = match e {
            panal_sdk::config::store::Error::Upstream(s)
            | panal_sdk::config::store::Error::Io(s) => s,
        };
        ApiError::internal("config unavailable").with("detail", detail)
    })?;
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(DEFAULT_SETTLE_AFTER_SECS),
        Some(text) => text.parse().map_err(|_| {
            ApiError::internal("server misconfigured").with(
                "detail",
                format!("config key {SETTLE_AFTER_KEY} must be whole seconds"),
            )
        }),
    }
}

/// Settle every order pending for more than `after_secs`: `{checked, settled, waiting}`.
pub fn sweep(bucket: &Bucket, after_secs: u64) -> ApiResult {
    let now = panal_sdk::time::unix_now();
    let (mut checked, mut settled, mut waiting, mut abandoned) = (0u64, 0u64, 0u64, 0u64);
    // Keys come in order: the markers are one run of keys after the prefix.
    let mut cursor = Some(model::PENDING_PREFIX.to_string());
    while let Some(after) = cursor.take() {
        let page = bucket.list_keys(Some(&after))?;
        let done = page
            .keys
            .iter()
            .any(|k| !k.starts_with(model::PENDING_PREFIX));
        for marker in page
            .keys
            .iter()
            .filter(|k| k.starts_with(model::PENDING_PREFIX))
        {
            let Some(value) = bucket.get(marker)? else {
                continue;
            };
            let (since, begun) = abandon::Marker::parse(&value);
            if now.saturating_sub(since) < after_secs {
                continue;
            }
            checked += 1;
            let id = &marker[model::PENDING_PREFIX.len()..];
            let order = match (bucket.get(&model::order_key(id))?, begun) {
                (Some(bytes), _) => Order::from_bytes(&bytes)?,
                // Never stored: give up on it and give back what its attempts reserved.
                (None, Some(m)) => {
                    abandon::abandon(bucket, id, &m.user_id, &m.lines, &abandon::not_placed())?;
                    abandoned += 1;
                    continue;
                }
                (None, None) => {
                    bucket.delete(marker)?;
                    continue;
                }
            };
            if order.status == model::ABANDONED {
                // Its stock did not go back last time.
                abandon::give_back(bucket, order);
                continue;
            }
            if order.status != model::PENDING {
                bucket.delete(marker)?;
                continue;
            }
            match pay::lookup_for(&order.user_id, &order.id, order.total_cents) {
                Some(outcome) => {
                    settle_with(bucket, order, &outcome)?;
                    settled += 1;
                }
                // Payment cannot say now: the next sweep asks again.
                None => waiting += 1,
            }
        }
        if !done {
            cursor = page.cursor;
        }
    }
    if settled > 0 || waiting > 0 || abandoned > 0 {
        eprintln!("order: sweep settled {settled} stale pending orders, {waiting} still waiting, abandoned {abandoned} never stored");
    }
    Ok((
        200,
        json!({ "checked": checked, "settled": settled, "waiting": waiting, "abandoned": abandoned }),
    ))
}

/// Record `outcome` on `order` if it is still pending; only the writer that replaces the
/// pending record gives the stock back and tells the others.
fn settle_with(bucket: &Bucket, order: Order, outcome: &Payment) -> Result<Order, ApiError> {
    let mut settled = order.clone();
    settled.payment_unknown = false;
    let event = match outcome {
        Payment::Captured { payment_id } => {
            settled.status = model::PAID.to_string();
            settled.payment_id = Some(payment_id.clone());
            events::PAID
        }
        Payment::Free => {
            settled.status = model::PAID.to_string();
            events::PAID
        }
        Payment::Declined { payment_id } => {
            settled.status = model::PAYMENT_FAILED.to_string();
            settled.payment_id = Some(payment_id.clone());
            events::PAYMENT_FAILED
        }
        Payment::Refused | Payment::Unavailable | Payment::Unknown => {
            settled.status = model::PAYMENT_FAILED.to_string();
            events::PAYMENT_FAILED
        }
    };
    let bytes = settled.to_bytes()?;
    let won = kv::update(bucket, &model::order_key(&order.id), |current| {
        let waiting = current
            .and_then(|c| Order::from_bytes(c).ok())
            .is_some_and(|o| o.status == model::PENDING);
        Ok::<_, ApiError>(if waiting {
            Step::Write(bytes.clone(), true)
        } else {
            Step::Keep(false)
        })
    })?;
    if !won {
        let current = bucket.get(&model::order_key(&order.id))?;
        return current.map_or(Ok(order), |b| Order::from_bytes(&b));
    }
    let _ = bucket.delete(&model::pending_key(&order.id));
    if !matches!(outcome, Payment::Captured { .. } | Payment::Free) {
        calls::release(settled.reservation.as_deref(), &settled.items);
    }
    // The attempt that stored it may have died or failed before it told of it; the
    // inbox takes an event id once, so telling again is harmless.
    events::publish(events::CREATED, &order);
    events::publish(event, &settled);
    Ok(settled)
}
