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
//! [`crate::abandon`]). A marker whose order has its final status is one whose attempt
//! could not give its stock back or tell of it: the sweep does that ([`finish`]).
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
    match pay::lookup(&order.user_id, &order.id, order.total_cents) {
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

/// What the sweep did with one marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Swept {
    /// Not stale yet, or already gone.
    Young,
    Settled,
    /// Payment cannot say now: the next sweep asks again.
    Waiting,
    Abandoned,
    Finished,
    /// Something failed (storage, the product service, the broker): the marker stays.
    Failed,
}

/// Settle every order pending for more than `after_secs`, abandon stale markers of
/// orders never stored, finish orders whose final status is stored but not yet told:
/// `{checked, settled, waiting, abandoned, finished, failed}`. A marker that fails does
/// not stop the others.
pub fn sweep(bucket: &Bucket, after_secs: u64) -> ApiResult {
    let now = panal_sdk::time::unix_now();
    let mut counts = std::collections::BTreeMap::<Swept, u64>::new();
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
            let swept = sweep_one(bucket, marker, now, after_secs).unwrap_or_else(|e| {
                eprintln!("order: sweep of {marker} failed: {e}");
                Swept::Failed
            });
            *counts.entry(swept).or_default() += 1;
        }
        if !done {
            cursor = page.cursor;
        }
    }
    let count = |s: Swept| counts.get(&s).copied().unwrap_or(0);
    let body = json!({
        "checked": counts.iter().filter(|(s, _)| **s != Swept::Young).map(|(_, n)| n).sum::<u64>(),
        "settled": count(Swept::Settled),
        "waiting": count(Swept::Waiting),
        "abandoned": count(Swept::Abandoned),
        "finished": count(Swept::Finished),
        "failed": count(Swept::Failed),
    });
    if body["checked"] != 0 {
        eprintln!("order: sweep {body}");
    }
    Ok((200, body))
}

/// One marker of the sweep.
fn sweep_one(bucket: &Bucket, marker: &str, now: u64, after_secs: u64) -> Result<Swept, ApiError> {
    let Some(value) = bucket.get(marker)? else {
        return Ok(Swept::Young);
    };
    let (since, begun) = abandon::Marker::parse(&value);
    if now.saturating_sub(since) < after_secs {
        return Ok(Swept::Young);
    }
    let id = &marker[model::PENDING_PREFIX.len()..];
    let order = match (bucket.get(&model::order_key(id))?, begun) {
        (Some(bytes), _) => Order::from_bytes(&bytes)?,
        // Never stored: give up on it and give back what its attempts reserved.
        (None, Some(m)) => {
            abandon::abandon(bucket, id, &m.user_id, &m.lines, &abandon::not_placed())?;
            return Ok(Swept::Abandoned);
        }
        (None, None) => {
            bucket.delete(marker)?;
            return Ok(Swept::Finished);
        }
    };
    if order.status == model::ABANDONED {
        // Its stock did not go back last time.
        abandon::give_back(bucket, order);
        return Ok(Swept::Abandoned);
    }
    if order.status != model::PENDING {
        // Its attempt stored the final status but could not finish telling of it or
        // giving its stock back.
        let done = finish(bucket, &order, true);
        return Ok(if done { Swept::Finished } else { Swept::Failed });
    }
    Ok(
        match pay::lookup(&order.user_id, &order.id, order.total_cents) {
            Some(outcome) => {
                settle_with(bucket, order, &outcome)?;
                Swept::Settled
            }
            None => Swept::Waiting,
        },
    )
}

/// Record `outcome` on `order` if it is still pending; only the writer that replaces the
/// pending record finishes it (see [`finish`]).
fn settle_with(bucket: &Bucket, order: Order, outcome: &Payment) -> Result<Order, ApiError> {
    let mut settled = order.clone();
    settled.payment_unknown = false;
    match outcome {
        Payment::Captured { payment_id } => {
            settled.status = model::PAID.to_string();
            settled.payment_id = Some(payment_id.clone());
        }
        Payment::Free => settled.status = model::PAID.to_string(),
        Payment::Declined { payment_id } => {
            settled.status = model::PAYMENT_FAILED.to_string();
            settled.payment_id = Some(payment_id.clone());
        }
        Payment::Refused | Payment::Unavailable | Payment::Unknown => {
            settled.status = model::PAYMENT_FAILED.to_string();
        }
    }
    if !replace_pending(bucket, &settled)? {
        let current = bucket.get(&model::order_key(&order.id))?;
        return current.map_or(Ok(order), |b| Order::from_bytes(&b));
    }
    if settled.reservation.is_none() && settled.status == model::PAYMENT_FAILED {
        // An order from before reservations had ids: a second release could give back
        // twice, so this one is the only one.
        calls::release(None, &settled.items);
    }
    // The attempt that stored it may have died or failed before it told of it; the
    // inbox takes an event id once, so telling again is harmless.
    finish(bucket, &settled, true);
    Ok(settled)
}

/// Stores `order` over its record only while that record is still `pending`: whether it
/// did. Every writer of an order's outcome goes through here (the attempt that paid, the
/// sweep, a read that settles), so an outcome once stored is never overwritten, even
/// by an attempt that wakes up late (a paused host) holding an old answer.
pub fn replace_pending(bucket: &Bucket, order: &Order) -> Result<bool, ApiError> {
    let bytes = order.to_bytes()?;
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
    Ok(won)
}

/// What is still owed once `order`'s final status is stored: its holds settled at the
/// product service (given back when it failed, kept when it was paid), `orders.created`
/// when `tell_created`, and the final event. The pending marker goes only once all of it
/// went through; else it stays and the sweep calls this again, which is safe: releases
/// and keeps are idempotent per hold, and consumers take an event id once. Whether it
/// all went through.
pub fn finish(bucket: &Bucket, order: &Order, tell_created: bool) -> bool {
    let event = events::final_event(&order.status);
    let released = match order.reservation.as_deref() {
        // An order from before reservations had ids: nothing to settle by hold.
        None => true,
        Some(r) if event == events::PAYMENT_FAILED => calls::release(Some(r), &order.items),
        // Free orders hold stock too.
        Some(r) => calls::keep(r, &order.items),
    };
    let created = !tell_created || events::publish(events::CREATED, order);
    let told = events::publish(event, order);
    let done = released && created && told;
    if done {
        let _ = bucket.delete(&model::pending_key(&order.id));
    } else {
        eprintln!(
            "order: {} is {} but not finished (holds settled: {released}, told: {}); the sweep retries",
            order.id,
            order.status,
            created && told
        );
    }
    done
}
