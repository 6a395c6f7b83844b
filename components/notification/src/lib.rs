//! `notification`: the Panal notification service. It keeps a per-user inbox of order
//! and shipment events, fed over `wasi:messaging`, and shows it over HTTP.
//!
//! - Messages on `orders.*` and `shipments.*` (see [`event`]): each new event is appended
//!   to the inbox of its `user_id` (see [`inbox`]); a redelivered event (same `event_id`)
//!   is acknowledged and changes nothing. A malformed body is refused with
//!   `Err(other(...))`, which the host logs.
//! - `GET /notifications` (needs the gateway's `x-panal-user-id`, 401 without) → 200
//!   `{"items": [{event_id, type, order_id, status, total_cents, at}, ...]}`, newest
//!   first (shipment events carry `shipment_id`, `carrier` and `tracking_number` in
//!   place of `total_cents`). Other methods on that path 405, other paths 404.
//!
//! Storage: bucket `notifications`: `inbox:<user id>` (JSON array, newest [`inbox::CAP`]
//! entries) and `seen:<event id>` (marks a handled event).
//!
//! Manifest grants: `keyvalue = ["notifications"]`,
//! `messaging = { subscribe = ["orders.*", "shipments.*"] }` (durable, or a `queue` group
//! when several hosts share a broker, so each event is handled once).

mod event;
mod inbox;

use panal_sdk::keyvalue::store::{self, Bucket};
use panal_sdk::kv::{self, Step, UpdateError};
use panal_sdk::messaging::types;
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use panal_sdk::{ApiError, ApiResult};
use serde_json::json;

const BUCKET: &str = "notifications";

struct NotificationService;

panal_sdk::wasi::http::proxy::export!(NotificationService);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for NotificationService {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        panal_sdk::reply(out, route(&request));
    }
}

panal_sdk::handler::export_messaging_handler!(NotificationService with_types_in panal_sdk::handler);

impl panal_sdk::handler::exports::wasi::messaging::incoming_handler::Guest for NotificationService {
    fn handle(message: types::Message) -> Result<(), types::Error> {
        let topic = message.topic();
        let event = event::parse(topic.as_deref(), &message.data()).map_err(types::Error::Other)?;
        deliver(&event)
    }
}

fn route(req: &IncomingRequest) -> ApiResult {
    let (path, _) = panal_sdk::path_and_query(req);
    let segments = panal_sdk::path_segments(&path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["notifications"]) => list(&panal_sdk::require_caller(req)?),
        (_, ["notifications"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::no_route()),
    }
}

fn list(user_id: &str) -> ApiResult {
    let bucket = store::open(BUCKET)?;
    let stored = bucket.get(&inbox::key(user_id))?;
    let entries = inbox::parse(stored.as_deref())
        .map_err(|e| ApiError::internal("corrupt inbox").with("detail", e))?;
    Ok((200, json!({ "items": inbox::newest_first(entries) })))
}

fn store_error(e: store::Error) -> types::Error {
    types::Error::Other(format!("notifications storage: {e:?}"))
}

fn seen_key(event_id: &str) -> String {
    format!("seen:{event_id}")
}

/// Adds `event` to its user's inbox unless it is already there.
///
/// Delivery is at least once, so the same event may come again, also after this
/// handler failed half-way. Order of the steps:
///
/// 1. `seen:<event id>` present → a duplicate: done (a fast path only).
/// 2. Append to the inbox by compare-and-swap, skipping an entry whose `event_id` is
///    already there. This is the de-duplication that counts: it is idempotent, so a
///    redelivery after any failure either appends the event (first time round it never
///    got in) or finds it and writes nothing.
/// 3. Claim `seen:<event id>` (set only if absent) once the entry is stored.
///
/// Claiming first would lose the event whenever the append then failed: the redelivery
/// would be taken for a duplicate. Marked after the append, `seen:` only ever names
/// events that are in the inbox; it also catches a redelivery of an event the inbox has
/// already dropped under its cap, which the inbox itself could not recognise.
fn deliver(event: &event::Event) -> Result<(), types::Error> {
    let bucket = store::open(BUCKET).map_err(store_error)?;
    let seen = seen_key(&event.event_id);
    if bucket.exists(&seen).map_err(store_error)? {
        return Ok(());
    }
    append(&bucket, event)?;
    if let Err(e) = kv::claim(&bucket, &seen, event.user_id.as_bytes()) {
        // The entry is stored; without the mark a redelivery is still caught by step 2.
        eprintln!(
            "notification: marking event {} as seen failed: {e:?}",
            event.event_id
        );
    }
    Ok(())
}

/// Step 2 of [`deliver`]: appends the entry unless the inbox already has it.
fn append(bucket: &Bucket, event: &event::Event) -> Result<(), types::Error> {
    let entry = inbox::Entry::from(event);
    kv::update(bucket, &inbox::key(&event.user_id), |current| {
        Ok::<_, String>(match inbox::append(current, &entry, inbox::CAP)? {
            Some(bytes) => Step::Write(bytes, ()),
            None => Step::Keep(()),
        })
    })
    .map_err(|e| match e {
        UpdateError::Abort(why) => {
            types::Error::Other(format!("inbox of user {:?}: {why}", event.user_id))
        }
        UpdateError::Store(e) => store_error(e),
        UpdateError::Contended => {
            types::Error::Other(format!("inbox of user {:?} too contended", event.user_id))
        }
    })
}
