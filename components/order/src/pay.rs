//! The call to the payment service and the pure reading of its answers. Two routes, by
//! wasi:config key `payment_via` ([`Route`]):
//!
//! - `http` (the default): `POST http://payment/payments`, dispatched in-process by the
//!   host.
//! - `messaging`: a request on `payments.charge` (timeout 5 s, one reply) with body
//!   `{"user_id", "idempotency_key", "order_id", "amount_cents", "card_number"}`; the
//!   reply `{"status": <HTTP status>, "body": <JSON>}` is read exactly like the HTTP
//!   answer. A timeout, a connection error or an unreadable reply is an unclear answer;
//!   a `permission-denied` (the manifest does not grant publish on `payments.charge`)
//!   sent nothing, so it reads as a 403 refusal. Needs
//!   `messaging = { publish = ["orders.>", "payments.charge"] }`.
//!
//! Over HTTP no `x-panal-user-id` is sent: the host sets it on in-process calls to the user of the
//! order request (and drops any a guest sets), so the payment belongs to that user and
//! the Idempotency-Key is scoped to them.
//!
//! A lost answer is not a failed payment: the charge may have been captured before the
//! reply went missing. So an unclear answer is retried, then re-checked with the same
//! key (payment answers an existing payment with 200), and if it is still unclear the
//! outcome is [`Payment::Unknown`], which must not give the stock back.

use panal_sdk::client;
use panal_sdk::config::store as config;
use panal_sdk::messaging::{request_reply, types};
use panal_sdk::wasi::http::types::Method;
use panal_sdk::ApiError;
use serde_json::{json, Value};

const PAYMENT_URL: &str = "http://payment/payments";
const CHARGE_SUBJECT: &str = "payments.charge";
const CHARGE_TIMEOUT_MS: u32 = 5000;
/// The config key that picks the [`Route`].
const ROUTE_KEY: &str = "payment_via";
/// The first try, its retry, and the re-check: all the same request with the same key,
/// so none of them can charge twice.
const ATTEMPTS: [&str; 3] = ["payment", "payment retry", "payment re-check"];

/// What came of asking for payment.
#[derive(Debug, PartialEq)]
pub enum Payment {
    Captured {
        payment_id: String,
    },
    Declined {
        payment_id: String,
    },
    /// Payment refused the request itself (a 4xx such as 400, 401 or 422): that request
    /// charged nothing, so this is as definite as a decline.
    Refused,
    /// No readable answer after the retry and the re-check: it may have been charged.
    Unknown,
    /// Nothing to charge (a total of 0): paid without asking payment.
    Free,
    /// The host failed the first call fast (payment's circuit is open): nothing was
    /// sent, so nothing was charged.
    Unavailable,
}

/// The Idempotency-Key of an order's payment: one per order, so every attempt is one.
pub fn idempotency_key(order_id: &str) -> String {
    format!("order-{order_id}")
}

/// How the order service reaches payment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Route {
    Http,
    Messaging,
}

/// The route named by config value `payment_via` (pure): absent or blank → HTTP.
pub fn parse_route(value: Option<&str>) -> Result<Route, String> {
    match value.map(str::trim).unwrap_or("") {
        "" | "http" => Ok(Route::Http),
        "messaging" => Ok(Route::Messaging),
        other => Err(format!(
            "config key {ROUTE_KEY} must be \"http\" or \"messaging\", not {other:?}"
        )),
    }
}

/// The configured route; a config failure or an unknown value is a 500, asked before
/// anything is reserved.
pub fn route() -> Result<Route, ApiError> {
    let value = config::get(ROUTE_KEY).map_err(|e| {
        let detail = match e {
            config::Error::Upstream(s) | config::Error::Io(s) => s,
        };
        ApiError::internal("config unavailable").with("detail", detail)
    })?;
    parse_route(value.as_deref())
        .map_err(|e| ApiError::internal("server misconfigured").with("detail", e))
}

/// Asks payment, by `route`, to charge `amount_cents` for the order of `user_id`, see
/// [`settle`].
pub fn pay(
    route: Route,
    user_id: &str,
    order_id: &str,
    amount_cents: u64,
    card_number: &str,
) -> Payment {
    let key = idempotency_key(order_id);
    match route {
        Route::Http => {
            let body = json!({ "order_id": order_id, "amount_cents": amount_cents,
                               "card_number": card_number });
            settle(order_id, || {
                client::send_json(
                    Method::Post,
                    PAYMENT_URL,
                    &[("idempotency-key", &key)],
                    &body,
                )
            })
        }
        Route::Messaging => {
            let body = charge_message(user_id, &key, order_id, amount_cents, card_number);
            let bytes = body.to_string().into_bytes();
            settle(order_id, || request_charge(&bytes))
        }
    }
}

/// The `payments.charge` body (pure).
pub fn charge_message(
    user_id: &str,
    key: &str,
    order_id: &str,
    amount_cents: u64,
    card_number: &str,
) -> Value {
    json!({
        "user_id": user_id,
        "idempotency_key": key,
        "order_id": order_id,
        "amount_cents": amount_cents,
        "card_number": card_number,
    })
}

/// One request on `payments.charge`: `Ok` with the reply's status and body, `Err` when
/// the outcome is unclear.
fn request_charge(body: &[u8]) -> Result<(u16, Value), String> {
    let sent = types::Client::connect("default").and_then(|client| {
        let options = request_reply::RequestOptions::new();
        options.set_timeout_ms(CHARGE_TIMEOUT_MS);
        options.set_expected_replies(1);
        let message = types::Message::new(body);
        message.set_content_type("application/json");
        request_reply::request(&client, CHARGE_SUBJECT, &message, Some(options))
    });
    match sent {
        Ok(replies) => match replies.first() {
            Some(reply) => parse_reply(&reply.data()),
            None => Err("no reply".to_string()),
        },
        // Refused before anything was sent: nothing can have been charged.
        Err(types::Error::PermissionDenied(s)) => Ok((
            403,
            json!({ "error": format!("publish on {CHARGE_SUBJECT} denied: {s}") }),
        )),
        Err(types::Error::Timeout) => Err("timeout".to_string()),
        Err(types::Error::Connection(s)) => Err(format!("connection: {s}")),
        Err(types::Error::Other(s)) => Err(s),
    }
}

/// Reads a `payments.charge` reply `{"status": <u16>, "body": <JSON>}` (pure); anything
/// else is an unclear answer.
pub fn parse_reply(data: &[u8]) -> Result<(u16, Value), String> {
    let value: Value =
        serde_json::from_slice(data).map_err(|e| format!("unreadable reply: {e}"))?;
    let status = value
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("reply without a status: {value}"))?;
    let body = value.get("body").cloned().unwrap_or(Value::Null);
    Ok((status, body))
}

/// Sends (with `send`) until an answer is definite, at most [`ATTEMPTS`] times; still
/// unclear after that → [`Payment::Unknown`].
pub fn settle(order_id: &str, mut send: impl FnMut() -> Result<(u16, Value), String>) -> Payment {
    for (i, attempt) in ATTEMPTS.iter().enumerate() {
        match send() {
            // Only the first: once a call may have reached payment, its outcome is open.
            Ok((status, answer)) if i == 0 && not_sent(status, &answer) => {
                eprintln!("order: payment for {order_id} not sent: its circuit is open");
                return Payment::Unavailable;
            }
            Ok((status, answer)) => match interpret_payment(status, &answer) {
                Some(outcome) => return outcome,
                None => eprintln!("order: {attempt} for {order_id} answered {status}: {answer}"),
            },
            Err(e) => eprintln!("order: {attempt} for {order_id} failed: {e}"),
        }
    }
    Payment::Unknown
}

/// The host's fail-fast answer of an open circuit (pure): the call was never sent.
pub fn not_sent(status: u16, answer: &Value) -> bool {
    status == 503 && answer.get("circuit").and_then(Value::as_str) == Some("open")
}

/// What payment knows of the key of `user_id`'s order, made final: `Some` when definite,
/// with [`Payment::Refused`] standing for "never charged". Payment answers with the
/// charge under the key, or voids the key (410) so that no charge can land under it
/// later: a charge still on its way (held up on a paused host, in a message) is then
/// refused, and "never charged" cannot turn out wrong. `None` while payment cannot say.
/// In-process only (`/internal`), so the sweep, which acts for no user, can ask too.
pub fn lookup(user_id: &str, order_id: &str, total_cents: u64) -> Option<Payment> {
    let base = PAYMENT_URL.trim_end_matches("/payments");
    let url = format!(
        "{base}/internal/void/{user_id}/{}",
        idempotency_key(order_id)
    );
    let (status, body) = client::post(&url, "application/json", b"{}").ok()?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lookup_answer(status, &answer, order_id, total_cents)
}

/// What payment holds under the key of `user_id`'s order, read only (the key is not
/// voided): how shipping's confirmation checks a paid order. Answers as [`lookup`].
pub fn lookup_for(user_id: &str, order_id: &str, total_cents: u64) -> Option<Payment> {
    let base = PAYMENT_URL.trim_end_matches("/payments");
    let url = format!(
        "{base}/internal/by-key/{user_id}/{}",
        idempotency_key(order_id)
    );
    let (status, body) = client::get(&url).ok()?;
    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    lookup_answer(status, &answer, order_id, total_cents)
}

/// The meaning of payment's answer to [`lookup`] and [`lookup_for`] (pure).
pub fn lookup_answer(
    status: u16,
    answer: &Value,
    order_id: &str,
    total_cents: u64,
) -> Option<Payment> {
    match status {
        404 | 410 => Some(Payment::Refused),
        200 if !is_charge_of(answer, order_id, total_cents) => {
            // The key was claimed by another request (the caller's own POST /payments):
            // that payment is not this order's, and this order's charge, sent under the
            // same key, could only have been refused with 422.
            eprintln!("order: payment under the key of {order_id} is for another charge: {answer}");
            Some(Payment::Refused)
        }
        200 => interpret_payment(200, answer),
        _ => None,
    }
}

/// Whether payment `answer` charged `total_cents` for order `order_id` (pure).
pub fn is_charge_of(answer: &Value, order_id: &str, total_cents: u64) -> bool {
    answer.get("order_id").and_then(Value::as_str) == Some(order_id)
        && answer.get("amount_cents").and_then(Value::as_u64) == Some(total_cents)
}

/// One answer's meaning: `Some` when definite, `None` when it leaves the charge unknown
/// (5xx, 408/429, a success without a readable payment, anything unexpected).
pub fn interpret_payment(status: u16, answer: &Value) -> Option<Payment> {
    match status {
        200 | 201 => {
            let id = answer.get("id").and_then(Value::as_str).map(str::to_string);
            match (answer.get("status").and_then(Value::as_str), id) {
                (Some("captured"), Some(payment_id)) => Some(Payment::Captured { payment_id }),
                (Some("declined"), Some(payment_id)) => Some(Payment::Declined { payment_id }),
                // A success we cannot read may still be a capture: ask again.
                _ => None,
            }
        }
        // "Try again later": the request may not have been looked at, or may have been.
        408 | 429 => None,
        400..=499 => {
            eprintln!("order: payment refused with {status}: {answer}");
            Some(Payment::Refused)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured() -> Payment {
        Payment::Captured {
            payment_id: "p1".into(),
        }
    }

    #[test]
    fn answers() {
        assert_eq!(
            interpret_payment(201, &json!({"id":"p1","status":"captured"})),
            Some(captured())
        );
        assert_eq!(
            interpret_payment(200, &json!({"id":"p1","status":"declined"})),
            Some(Payment::Declined {
                payment_id: "p1".into()
            })
        );
        for status in [400, 401, 404, 422] {
            assert_eq!(
                interpret_payment(status, &json!({"error":"x"})),
                Some(Payment::Refused)
            );
        }
        for status in [500, 502, 503, 504, 408, 429, 204, 302] {
            assert_eq!(interpret_payment(status, &Value::Null), None, "{status}");
        }
        assert_eq!(interpret_payment(201, &json!({"status":"captured"})), None);
        assert_eq!(
            interpret_payment(200, &json!({"id":"p1","status":"?"})),
            None
        );
    }

    #[test]
    fn a_void_or_missing_key_is_never_charged() {
        for status in [404, 410] {
            let answer = json!({"error": "void"});
            assert_eq!(
                lookup_answer(status, &answer, "o1", 5),
                Some(Payment::Refused)
            );
        }
        let own = json!({"id":"p1","order_id":"o1","amount_cents":5,"status":"captured"});
        assert_eq!(lookup_answer(200, &own, "o1", 5), Some(captured()));
        for status in [500, 503, 504] {
            assert_eq!(lookup_answer(status, &Value::Null, "o1", 5), None);
        }
    }

    #[test]
    fn only_the_orders_own_charge_settles_it() {
        let own = json!({"id":"p1","order_id":"o1","amount_cents":500,"status":"captured"});
        assert!(is_charge_of(&own, "o1", 500));
        assert!(!is_charge_of(&own, "o1", 499), "another amount");
        assert!(!is_charge_of(&own, "o2", 500), "another order");
        assert!(!is_charge_of(
            &json!({"id":"p1","status":"captured"}),
            "o1",
            500
        ));
    }

    /// `settle` over canned answers; also returns how many were sent.
    fn settle_with(answers: Vec<Result<(u16, Value), String>>) -> (Payment, usize) {
        let mut answers = answers.into_iter();
        let mut sent = 0;
        let outcome = settle("o1", || {
            sent += 1;
            answers.next().expect("no more answers than attempts")
        });
        (outcome, sent)
    }

    #[test]
    fn definite_answers_stop_at_once() {
        let ok = Ok((201, json!({"id":"p1","status":"captured"})));
        assert_eq!(settle_with(vec![ok]), (captured(), 1));
        let refused = Ok((422, json!({"error":"x"})));
        assert_eq!(settle_with(vec![refused]), (Payment::Refused, 1));
    }

    #[test]
    fn a_lost_reply_is_retried_then_rechecked() {
        let lost = || Err::<(u16, Value), _>("ErrorCode::ConnectionTimeout".to_string());
        let replayed = Ok((200, json!({"id":"p1","status":"captured"})));
        assert_eq!(
            settle_with(vec![Ok((503, Value::Null)), replayed.clone()]),
            (captured(), 2)
        );
        // The re-check finds the payment the lost replies were about.
        assert_eq!(
            settle_with(vec![lost(), Ok((500, Value::Null)), replayed]),
            (captured(), 3)
        );
        // Still nothing: unknown, never a failure.
        assert_eq!(
            settle_with(vec![lost(), lost(), Ok((502, Value::Null))]),
            (Payment::Unknown, 3)
        );
    }

    #[test]
    fn an_open_circuit_first_means_nothing_was_sent() {
        let open = || Ok((503, json!({"error": "circuit open", "circuit": "open"})));
        assert_eq!(settle_with(vec![open()]), (Payment::Unavailable, 1));
        // After a call that may have reached payment, an open circuit settles nothing.
        assert_eq!(
            settle_with(vec![Ok((500, Value::Null)), open(), open()]),
            (Payment::Unknown, 3)
        );
        // A plain 503 from payment itself is no proof of anything.
        assert!(!not_sent(503, &json!({"error": "busy"})));
    }

    #[test]
    fn keys() {
        assert_eq!(idempotency_key("abc"), "order-abc");
    }

    #[test]
    fn routes() {
        assert_eq!(parse_route(None), Ok(Route::Http));
        assert_eq!(parse_route(Some("")), Ok(Route::Http));
        assert_eq!(parse_route(Some("http")), Ok(Route::Http));
        assert_eq!(parse_route(Some(" messaging ")), Ok(Route::Messaging));
        assert!(parse_route(Some("nats")).is_err());
        assert!(parse_route(Some("HTTP")).is_err());
    }

    #[test]
    fn charge_messages_and_replies() {
        assert_eq!(
            charge_message("u1", "order-o1", "o1", 500, "4242424242424242"),
            json!({"user_id":"u1","idempotency_key":"order-o1","order_id":"o1",
                   "amount_cents":500,"card_number":"4242424242424242"})
        );
        let reply = br#"{"status":201,"body":{"id":"p1","status":"captured"}}"#;
        let (status, body) = parse_reply(reply).expect("reply");
        assert_eq!(interpret_payment(status, &body), Some(captured()));
        let refused = parse_reply(br#"{"status":422,"body":{"error":"x"}}"#).expect("reply");
        assert_eq!(
            interpret_payment(refused.0, &refused.1),
            Some(Payment::Refused)
        );
        assert_eq!(parse_reply(br#"{"status":503}"#), Ok((503, Value::Null)));
        for bad in [
            &b"nope"[..],
            br#"{"body":{}}"#,
            br#"{"status":"201"}"#,
            br#"{"status":70000}"#,
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
