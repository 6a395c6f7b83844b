//! Settling orders whose payment outcome was unknown when they were answered (payment
//! failed or went silent mid-charge). They stay `pending` with their stock reserved;
//! when their owner next reads one, payment is asked by the order's idempotency key.
//! A payment exists only once its key is claimed, so "none under this key" is final
//! when no charge can still be running: true over the direct route, whose calls the
//! host ends with the callee's deadline, and not over messaging, where a charge message
//! may still be on its way (those orders wait for a person).

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::kv::{self, Step};
use panal_sdk::ApiError;

use crate::model::{self, Order};
use crate::pay::{self, Payment, Route};
use crate::{calls, events};

/// `order` as it stands after asking payment, if it was waiting for that.
pub fn settle(bucket: &Bucket, order: Order) -> Result<Order, ApiError> {
    if !order.payment_unknown || pay::route()? != Route::Http {
        return Ok(order);
    }
    let Some(outcome) = pay::lookup(&order.id, order.total_cents) else {
        return Ok(order);
    };
    let mut settled = order.clone();
    settled.payment_unknown = false;
    let event = match &outcome {
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
    // Two readers may get here at once: only the one whose write replaces the waiting
    // record gives the stock back and tells the others.
    let won = kv::update(bucket, &model::order_key(&order.id), |current| {
        let waiting = current
            .and_then(|c| Order::from_bytes(c).ok())
            .is_some_and(|o| o.payment_unknown);
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
    if !matches!(outcome, Payment::Captured { .. } | Payment::Free) {
        calls::release(&settled.items);
    }
    events::publish(event, &settled);
    Ok(settled)
}
