//! `payment`: the Panal (mock) payment service.
//!
//! The caller is the `x-panal-user-id` header: the gateway sets it to the verified user,
//! and the host sets it on in-process calls (the order service's) to the identity of the
//! original request, so a payment made for an order belongs to the order's user.
//!
//! - `POST /payments {order_id, amount_cents, card_number}` with an `Idempotency-Key`
//!   header (401 without a caller, 400 without a key) → 201 `{id, order_id,
//!   amount_cents, status, card_last4}`, status `captured`, or `declined` for a card
//!   ending in 0002. The same caller with the same key and the same body → 200 and the
//!   same payment; with a different body → 422. Keys are per caller: another user's
//!   equal key is a different key.
//! - `GET /payments/{id}` → 200 for the payment's owner; 404 for anyone else, exactly as
//!   for an unknown id.
//! - `GET /payments/by-key/{key}` → 200 with the caller's payment made under that
//!   Idempotency-Key, 404 when there is none (how the order service learns the outcome
//!   of a charge whose answer was lost).
//! - `GET /internal/by-key/{user_id}/{key}` → the same for `user_id`; in-process only
//!   (no gateway route, and 403 without the host's `x-panal-caller`), for the order
//!   service's sweep of stale orders, which runs on a timer for no user.
//! - `POST /internal/void/{user_id}/{key}` → 200 with `user_id`'s payment under the key
//!   if there is one; else the key is claimed void and the answer is 410: nothing was
//!   charged under it, and nothing ever will be (a charge that arrives later under the
//!   key, say from a request held up on a paused host, is refused with 409). For the
//!   order service only (403 for any other caller, and for requests through the
//!   gateway): how it makes "no payment" final before it settles an order as unpaid.
//!
//! The key is claimed by a compare-and-swap from absent whose value already holds the
//! payment, so concurrent replays of one key agree on a single payment: nothing is ever
//! charged twice. "Same body" means same order, amount, card length and last four digits
//! (see [`model::PaymentRequest::fingerprint`]): no other card digit is ever stored or
//! returned, in any form.
//!
//! - Messages on `payments.charge` (wasi:messaging, the order service's second route):
//!   body `{"user_id", "idempotency_key", "order_id", "amount_cents", "card_number"}`
//!   runs exactly the charge of `POST /payments` ([`charge`]: same per-caller keys, 422
//!   and decline rules), the caller being `user_id` (messaging has no gateway identity;
//!   the manifest lets only the order service publish on `payments.*`). A request is
//!   answered with `{"status": <HTTP status>, "body": <the HTTP answer's JSON>}`, also
//!   for a malformed body (400); a message without a reply subject is charged silently.
//!   The handler never traps.
//!
//! Storage: bucket `payments`, key layout in [`model`].
//!
//! Manifest grants: `keyvalue = ["payments"]`,
//! `messaging = { subscribe = ["payments.charge"], queue = "payment" }`.

mod model;

use panal_sdk::keyvalue::store::{self, Bucket};
use panal_sdk::messaging::{request_reply, types};
use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use panal_sdk::{kv, ApiError, ApiResult};

use model::{Claim, Payment, PaymentRequest};

const BUCKET: &str = "payments";

struct PaymentService;

panal_sdk::wasi::http::proxy::export!(PaymentService);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for PaymentService {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        panal_sdk::reply(out, route(&request));
    }
}

panal_sdk::handler::export_messaging_handler!(PaymentService with_types_in panal_sdk::handler);

impl panal_sdk::handler::exports::wasi::messaging::incoming_handler::Guest for PaymentService {
    fn handle(message: types::Message) -> Result<(), types::Error> {
        let result = model::charge_message(&message.data())
            .and_then(|m| charge(&m.user_id, &m.idempotency_key, &m.request));
        let status = match &result {
            Ok((status, _)) => *status,
            Err(e) => e.status,
        };
        let reply = types::Message::new(model::charge_reply(&result).to_string().as_bytes());
        reply.set_content_type("application/json");
        match request_reply::reply(&message, reply) {
            Ok(()) => Ok(()),
            // A plain publish has no reply subject: the charge is done, nothing to answer.
            // A failure is still worth a redelivery (the charge is idempotent).
            Err(types::Error::Other(_)) if status < 500 => Ok(()),
            Err(types::Error::Other(_)) => Err(types::Error::Other(format!(
                "payments.charge failed with {status}"
            ))),
            Err(e) => Err(e),
        }
    }
}

fn route(req: &IncomingRequest) -> ApiResult {
    let (path, _) = panal_sdk::path_and_query(req);
    let segments = panal_sdk::path_segments(&path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Post, ["payments"]) => create(req),
        (Method::Get, ["payments", id]) => get(panal_sdk::caller_id(req).as_deref(), id),
        (Method::Get, ["payments", "by-key", key]) => {
            by_key(panal_sdk::caller_id(req).as_deref(), key)
        }
        // No gateway route reaches `/internal`: only components granted `payment` in
        // their `outbound` (the order service's timer, which acts for no user).
        (Method::Get, ["internal", "by-key", user, key]) => {
            panal_sdk::require_component(req)?;
            by_key(Some(user), key)
        }
        // A write that fails an order: the order service's alone, not every component
        // that may read payments.
        (Method::Post, ["internal", "void", user, key]) => {
            if panal_sdk::require_component(req)? != "order" {
                return Err(ApiError::new(403, "forbidden")
                    .with("reason", "only the order service voids a key"));
            }
            void(user, key)
        }
        (_, ["payments"] | ["payments", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::no_route()),
    }
}

fn open() -> Result<Bucket, ApiError> {
    Ok(store::open(BUCKET)?)
}

fn payment_key(id: &str) -> String {
    format!("payment:{id}")
}

fn to_bytes<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::internal(e.to_string()))
}

fn create(req: &IncomingRequest) -> ApiResult {
    let caller = panal_sdk::require_caller(req)?;
    let key = model::idempotency_key(panal_sdk::header(req, "idempotency-key"))?;
    let body = panal_sdk::read_body(req)
        .map_err(|e| ApiError::bad_request("could not read request body").with("detail", e))?;
    let request = model::payment_request(&body)?;
    charge(&caller, &key, &request)
}

/// The charge itself, for `POST /payments` and `payments.charge` alike: 201 with a new
/// payment, or for a key `caller` already used, 200 with its payment (same request) or
/// 422 (another request).
fn charge(caller: &str, key: &str, request: &PaymentRequest) -> ApiResult {
    let bucket = open()?;
    let claim_key = model::claim_key(caller, key);
    if let Some(existing) = bucket.get(&claim_key)? {
        return replay(&bucket, &existing, caller, request);
    }
    let claim = Claim {
        request_hash: request.fingerprint(),
        payment: Payment {
            id: panal_sdk::random_id(),
            owner: caller.to_string(),
            order_id: request.order_id.clone(),
            amount_cents: request.amount_cents,
            status: request.decision().to_string(),
            card_last4: request.last4(),
            created_at: panal_sdk::time::now_rfc3339(),
        },
    };
    if let Some(existing) = kv::claim(&bucket, &claim_key, &to_bytes(&claim)?)? {
        // A concurrent request with this key won the claim: answer with its payment.
        return replay(&bucket, &existing, caller, request);
    }
    bucket.set(&payment_key(&claim.payment.id), &to_bytes(&claim.payment)?)?;
    Ok((201, claim.payment.view()))
}

/// Answers a request whose key is already claimed: 200 with the claimed payment if the
/// request matches the first one, 422 if not.
fn replay(bucket: &Bucket, existing: &[u8], caller: &str, request: &PaymentRequest) -> ApiResult {
    let claim = parse_claim(existing)?;
    if claim.is_void() {
        return Err(ApiError::new(409, VOID_MESSAGE));
    }
    // The owner check keeps another user's payment out of reach even where `idem:` keys
    // could coincide (a caller id containing ':', or a record from before keys were per
    // caller, which has no owner).
    if claim.payment.owner != caller || request.fingerprint() != claim.request_hash {
        return Err(ApiError::new(
            422,
            "Idempotency-Key was already used with a different request",
        ));
    }
    recorded(bucket, &claim.payment)?;
    Ok((200, claim.payment.view()))
}

/// Writes `payment`'s own record if it is missing. The request that claimed its key may
/// have died (or lost its storage) between the claim and this record, or still be about
/// to write it; writing the same record again is harmless. Every answer that tells a
/// caller of a claimed payment goes through here first, so a payment an order refers to
/// can always be read by its id.
fn recorded(bucket: &Bucket, payment: &Payment) -> Result<(), ApiError> {
    let key = payment_key(&payment.id);
    if !bucket.exists(&key)? {
        bucket.set(&key, &to_bytes(payment)?)?;
    }
    Ok(())
}

/// The caller's payment made with Idempotency-Key `key`, or 404 when the caller made
/// none: final once no charge with that key is running, since a payment exists only
/// after its key is claimed.
fn by_key(caller: Option<&str>, key: &str) -> ApiResult {
    let not_found = || ApiError::not_found("no payment under this key");
    let Some(caller) = caller else {
        return Err(ApiError::unauthorized("authentication required"));
    };
    let key = model::idempotency_key(Some(key.to_string()))?;
    let bucket = open()?;
    let Some(bytes) = bucket.get(&model::claim_key(caller, &key))? else {
        return Err(not_found());
    };
    answer_claim(&bucket, &bytes, caller)
}

/// Makes "no payment under `caller`'s `key`" final: 200 with the payment if one was
/// made, else 410 once the key is claimed void (by this call or an earlier one).
fn void(caller: &str, key: &str) -> ApiResult {
    let key = model::idempotency_key(Some(key.to_string()))?;
    let bucket = open()?;
    let claim_key = model::claim_key(caller, &key);
    let void = Claim::void(caller, panal_sdk::time::now_rfc3339());
    match kv::claim(&bucket, &claim_key, &to_bytes(&void)?)? {
        None => Err(voided()),
        Some(existing) => answer_claim(&bucket, &existing, caller),
    }
}

/// The answer to a read of a claimed key: its payment (its record written first), 410
/// for a void key, the unknown key's 404 for anyone but the owner.
fn answer_claim(bucket: &Bucket, bytes: &[u8], caller: &str) -> ApiResult {
    let claim = parse_claim(bytes)?;
    if claim.payment.owner != caller {
        return Err(ApiError::not_found("no payment under this key"));
    }
    if claim.is_void() {
        return Err(voided());
    }
    recorded(bucket, &claim.payment)?;
    Ok((200, claim.payment.view()))
}

fn parse_claim(bytes: &[u8]) -> Result<Claim, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal("corrupt idempotency record").with("detail", e.to_string()))
}

const VOID_MESSAGE: &str =
    "this Idempotency-Key is void: nothing was charged under it, and nothing will be";

fn voided() -> ApiError {
    ApiError::new(410, VOID_MESSAGE)
}

/// Without a caller, or for anyone but the owner, the answer is the unknown id's 404.
fn get(caller: Option<&str>, id: &str) -> ApiResult {
    let not_found = || ApiError::not_found("payment not found");
    if !panal_sdk::is_id(id) {
        return Err(not_found());
    }
    let bytes = open()?.get(&payment_key(id))?.ok_or_else(not_found)?;
    let payment: Payment = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::internal("corrupt payment record").with("detail", e.to_string()))?;
    if !payment.visible_to(caller) {
        return Err(not_found());
    }
    Ok((200, payment.view()))
}
