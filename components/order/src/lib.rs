//! `order`: the Panal order service. Every route needs the gateway's `x-panal-user-id`.
//!
//! - `POST /orders {items:[{product_id, quantity}], card_number}` → reserves stock at the
//!   product service (all items at once), stores the order as `pending`, asks the payment
//!   service to charge it (Idempotency-Key `order-<id>`; over HTTP or, with config
//!   `payment_via = "messaging"`, as a request on `payments.charge`, see [`pay`]), and answers 201 with the order
//!   `paid`, or `payment_failed` after giving the stock back when payment declined or
//!   refused the request. When payment's outcome stays unknown (no usable answer after a
//!   retry and a re-check, see [`pay`]), the charge may have been captured: the order
//!   stays `pending` with its stock reserved (and retrievable), and the answer is 502
//!   `{"error":"payment outcome unknown","order_id":...}`. A 404/409 from the product
//!   service is passed on (naming the product) and nothing is stored.
//!   With an `Idempotency-Key` header, a replay gets the same order (200), never a
//!   second one; the same key with another body is 422 (see [`idempotency`]).
//! - `GET /orders/{id}` → the caller's order; another user's order is a 404 like an
//!   unknown one, so ids cannot be probed.
//! - `GET /orders` → `{items:[...]}`, the caller's orders, oldest first.
//!
//! - `POST /internal/reconcile` (no gateway route: the host's timer calls it, see
//!   `schedule` in panal.toml) → settles every order `pending` for longer than config
//!   `settle_after_secs` (default 60), see [`reconcile::sweep`].
//! - `GET /internal/paid/{id}` (other components only: the shipping service) → whether
//!   the order is paid, confirmed with payment, see [`confirm`].
//!
//! Storage: bucket `orders`, key layout in [`model`]. The card number is never stored.
//!
//! Events ([`events`], over wasi:messaging): `orders.created` once the order is stored as
//! `pending`, then `orders.paid` or `orders.payment_failed` once the final status is
//! stored. An order left `pending` by an unknown payment outcome gets no second event
//! here. An event that could not be published, or a failed order's stock that could not
//! be given back, keeps the order's pending marker: the sweep finishes it.
//!
//! Shipments ([`shipping`], messages on `shipments.*`): a paid order follows its
//! shipment to `shipped` and `delivered`, and its view shows the shipment (`shipment`:
//! id, status, carrier, tracking number; null before there is one).

mod abandon;
mod calls;
mod confirm;
mod events;
mod idempotency;
mod model;
mod pay;
mod reconcile;
mod shipping;

use panal_sdk::keyvalue::batch;
use panal_sdk::keyvalue::store::{self, Bucket};
use panal_sdk::kv::{self, Step};
use panal_sdk::messaging::types;
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use panal_sdk::{ApiError, ApiResult};
use serde_json::{json, Value};

use model::Order;
use pay::Payment;

const BUCKET: &str = "orders";

struct OrderService;

panal_sdk::wasi::http::proxy::export!(OrderService);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for OrderService {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        panal_sdk::reply(out, route(&request));
    }
}

panal_sdk::handler::export_messaging_handler!(OrderService with_types_in panal_sdk::handler);

impl panal_sdk::handler::exports::wasi::messaging::incoming_handler::Guest for OrderService {
    fn handle(message: types::Message) -> Result<(), types::Error> {
        shipping::handle(&message)
    }
}

fn route(req: &IncomingRequest) -> ApiResult {
    let (path, _) = panal_sdk::path_and_query(req);
    let segments = panal_sdk::path_segments(&path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method();
    match segments.as_slice() {
        ["orders"] | ["orders", _] => {}
        ["internal", "reconcile"] if matches!(method, Method::Post) => {
            return reconcile::sweep(&open()?, reconcile::settle_after()?)
        }
        ["internal", "paid", id] if matches!(method, Method::Get) => {
            panal_sdk::require_component(req)?;
            return confirm::paid(&open()?, id);
        }
        _ => return Err(ApiError::no_route()),
    }
    let user_id = panal_sdk::require_caller(req)?;
    match (method, segments.as_slice()) {
        (Method::Post, ["orders"]) => create(req, &user_id),
        (Method::Get, ["orders"]) => list(&user_id),
        (Method::Get, ["orders", id]) => get(&user_id, id),
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn open() -> Result<Bucket, ApiError> {
    Ok(store::open(BUCKET)?)
}

fn create(req: &IncomingRequest, user_id: &str) -> ApiResult {
    let body = panal_sdk::read_body(req)
        .map_err(|e| ApiError::bad_request("could not read request body").with("detail", e))?;
    let new = model::new_order(&body)?;
    let route = pay::route()?;
    let bucket = open()?;
    let key = if cfg!(feature = "broken-idempotency") {
        None
    } else {
        idempotency::key_of(req)?
    };
    let id = match &key {
        None => panal_sdk::random_id(),
        Some(key) => match idempotency::claim(&bucket, user_id, key, &new)? {
            idempotency::Claim::Create(id) => id,
            idempotency::Claim::Made(id) => return replay(&bucket, user_id, &id),
        },
    };
    abandon::mark(&bucket, &id, user_id, &new.lines)?;
    let keyed = key.is_some();
    let lines = &new.lines;
    let items = match calls::reserve(&id, lines) {
        Ok(items) => items,
        Err(e) if is_definite(&e) => {
            return unplaced(&bucket, keyed, user_id, &id, lines, e, Held::No)
        }
        Err(e) => return unplaced(&bucket, keyed, user_id, &id, lines, e, Held::Maybe),
    };
    let Some(total_cents) = model::total_cents(&items) else {
        let too_large = ApiError::bad_request("order total is too large");
        return unplaced(&bucket, keyed, user_id, &id, lines, too_large, Held::Yes);
    };
    let mut order = Order {
        reservation: Some(id.clone()),
        id,
        user_id: user_id.to_string(),
        status: model::PENDING.to_string(),
        total_cents,
        items,
        payment_id: None,
        created_at: panal_sdk::time::now_rfc3339(),
        payment_unknown: false,
        shipment: None,
        refusal: None,
    };
    let stored = match store_new(&bucket, &order) {
        Ok(stored) => stored,
        Err(e) => return unplaced(&bucket, keyed, user_id, &order.id, lines, e, Held::Maybe),
    };
    if let Stored::Before = stored {
        // Another attempt under the same Idempotency-Key stored it first and owns it,
        // or the order was abandoned.
        return replay(&bucket, user_id, &order.id);
    }
    let told_created = events::publish(events::CREATED, &order);

    // Payment charges at least 1 cent; an order of free items has nothing to charge.
    let outcome = if order.total_cents == 0 {
        Payment::Free
    } else {
        pay::pay(
            route,
            user_id,
            &order.id,
            order.total_cents,
            &new.card_number,
        )
    };
    match outcome {
        Payment::Free => order.status = model::PAID.to_string(),
        Payment::Captured { payment_id } => {
            order.status = model::PAID.to_string();
            order.payment_id = Some(payment_id);
        }
        Payment::Declined { payment_id } => {
            order.status = model::PAYMENT_FAILED.to_string();
            order.payment_id = Some(payment_id);
        }
        // Payment turned the request down before charging: as final as a decline.
        Payment::Refused => order.status = model::PAYMENT_FAILED.to_string(),
        Payment::Unavailable => {
            // Nothing was sent to payment: the order is over, and its stock goes back.
            order.status = model::PAYMENT_FAILED.to_string();
            if !reconcile::replace_pending(&bucket, &order)? {
                return get(user_id, &order.id);
            }
            reconcile::finish(&bucket, &order, !told_created);
            return Err(ApiError::new(
                503,
                "payment is unavailable; the order was not placed and its stock released",
            )
            .with("order_id", order.id)
            // A new order may go through once payment's circuit lets calls in again.
            .with("retry_after_secs", 1));
        }
        Payment::Unknown => {
            // The charge may have been captured: releasing the stock could sell paid-for
            // goods to someone else. The stored `pending` order keeps its stock until
            // the payment under key `order-<id>` is known (see `reconcile`); marking it
            // only now, with every attempt over, keeps a reader from settling it early.
            order.payment_unknown = true;
            if !reconcile::replace_pending(&bucket, &order)? {
                return get(user_id, &order.id);
            }
            return Err(ApiError::upstream("payment outcome unknown").with("order_id", order.id));
        }
    }
    // One retry: by now money may have moved, so losing this write is worth avoiding.
    let stored = match reconcile::replace_pending(&bucket, &order) {
        Ok(stored) => stored,
        Err(_) => reconcile::replace_pending(&bucket, &order)?,
    };
    if !stored {
        // The sweep or a read settled it meanwhile (this attempt was held up): that
        // outcome stands, and with the key voided first it agrees with payment.
        return get(user_id, &order.id);
    }
    // Stored: a failed order's stock goes back and the others are told. What fails of
    // that is left to the sweep, with the marker.
    reconcile::finish(&bucket, &order, !told_created);
    Ok((201, order.view()))
}

/// Whether this attempt stored the new order, or found it stored by an earlier one.
enum Stored {
    Now,
    Before,
}

/// Writes the pending order if no attempt under its id did (a replay of its
/// Idempotency-Key may run beside the first, or the order was abandoned), then makes
/// sure its id is in the owner's index.
fn store_new(bucket: &Bucket, order: &Order) -> Result<Stored, ApiError> {
    let stored = match kv::claim(bucket, &model::order_key(&order.id), &order.to_bytes()?)? {
        None => Stored::Now,
        Some(bytes) if Order::from_bytes(&bytes)?.status == model::ABANDONED => {
            return Ok(Stored::Before)
        }
        Some(_) => Stored::Before,
    };
    // Again on a replay: the first attempt's append may have failed. A failure leaves
    // the order stored and its marker: the sweep settles it.
    kv::update(bucket, &model::user_key(&order.user_id), |current| {
        let mut ids = model::parse_index(current)?;
        if ids.contains(&order.id) {
            return Ok(Step::Keep(()));
        }
        ids.push(order.id.clone());
        let bytes = serde_json::to_vec(&ids).map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Step::Write(bytes, ()))
    })?;
    Ok(stored)
}

/// Whether a failed reservation surely reserved nothing (a bad line, an unknown product,
/// not enough stock), rather than maybe something (no clear answer).
fn is_definite(e: &ApiError) -> bool {
    matches!(e.status, 400 | 404 | 409)
}

/// What a failed attempt may hold of the stock it asked for.
enum Held {
    No,
    Maybe,
    Yes,
}

/// An attempt that did not place order `id` answers `why`. Without an Idempotency-Key
/// no other attempt shares the id: what it may hold goes back now, and the marker stays
/// for the sweep while anything is in doubt (a reservation still on its way, an order
/// stored after all). With a key a replay may own the reservation by now: the order is
/// abandoned when nothing is in doubt (see [`abandon`]; an attempt that stored it first
/// wins, and the order is answered as it stands), else left to the sweep.
fn unplaced(
    bucket: &Bucket,
    keyed: bool,
    user_id: &str,
    id: &str,
    lines: &[model::Line],
    why: ApiError,
    held: Held,
) -> ApiResult {
    let marker = model::pending_key(id);
    match (keyed, held) {
        (false, Held::No) => {
            let _ = bucket.delete(&marker);
        }
        (false, held) => {
            let back = calls::release(Some(id), &abandon::items_of(lines));
            if back && matches!(held, Held::Yes) {
                let _ = bucket.delete(&marker);
            }
        }
        (true, Held::Maybe) => {}
        (true, _) => {
            return match abandon::abandon(bucket, id, user_id, lines, &why)? {
                abandon::Abandoned::Refused(answer) => Err(answer),
                abandon::Abandoned::Placed => replay(bucket, user_id, id),
            }
        }
    }
    Err(why)
}

/// The answer to a replay of an Idempotency-Key: its order as it stands, or, when the
/// order was abandoned, the answer that says why (with its stock given back again, in
/// case this replay's own reservation took some).
fn replay(bucket: &Bucket, user_id: &str, id: &str) -> ApiResult {
    match bucket.get(&model::order_key(id))? {
        Some(bytes) => {
            let order = Order::from_bytes(&bytes)?;
            if order.status == model::ABANDONED && order.user_id == user_id {
                return Err(abandon::give_back(bucket, order));
            }
            get(user_id, id)
        }
        None => get(user_id, id),
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("order not found")
}

fn get(user_id: &str, id: &str) -> ApiResult {
    if !panal_sdk::is_id(id) {
        return Err(not_found());
    }
    let bucket = open()?;
    let bytes = bucket.get(&model::order_key(id))?.ok_or_else(not_found)?;
    let order = Order::from_bytes(&bytes)?;
    if order.user_id != user_id || order.status == model::ABANDONED {
        return Err(not_found());
    }
    let order = reconcile::settle(&bucket, order)?;
    Ok((200, order.view()))
}

fn list(user_id: &str) -> ApiResult {
    let bucket = open()?;
    let ids = model::parse_index(bucket.get(&model::user_key(user_id))?.as_deref())?;
    let mut items: Vec<Value> = Vec::with_capacity(ids.len());
    // Matched by key, so the order in which get-many answers does not matter.
    for chunk in ids.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|id| model::order_key(id)).collect();
        let mut found = std::collections::BTreeMap::new();
        for (key, bytes) in batch::get_many(&bucket, &keys)?.into_iter().flatten() {
            found.insert(key, bytes);
        }
        for key in &keys {
            if let Some(bytes) = found.get(key) {
                let order = Order::from_bytes(bytes)?;
                if order.user_id == user_id && order.status != model::ABANDONED {
                    items.push(order.view());
                }
            }
        }
    }
    Ok((200, json!({ "items": items })))
}
