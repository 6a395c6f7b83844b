//! Payment records, request validation, the request fingerprint that detects a reused
//! Idempotency-Key, and the (mock) card decision. Pure, unit-tested natively.
//!
//! Keys in bucket `payments`: `idem:<user id>:<Idempotency-Key>` → [`Claim`] (request
//! fingerprint plus the payment it produced), `payment:<id>` → [`Payment`]. No card digit
//! beyond the last four is ever stored, in any form (not even hashed).

use panal_sdk::{ApiError, Obj, Validator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const CAPTURED: &str = "captured";
pub const DECLINED: &str = "declined";
/// The status of a void claim: no payment was made under its key, and none will be.
pub const VOID: &str = "void";
/// The mock processor declines cards ending in these digits.
const DECLINE_SUFFIX: &str = "0002";
pub const MAX_ORDER_ID_CHARS: usize = 200;

/// A stored payment: only the last four card digits, never the number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub id: String,
    /// The caller who created it; only they may read it. Records written before owners
    /// were kept read as "" and so belong to nobody (a caller id is never blank).
    #[serde(default)]
    pub owner: String,
    pub order_id: String,
    pub amount_cents: u64,
    pub status: String,
    pub card_last4: String,
    pub created_at: String,
}

impl Payment {
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "order_id": self.order_id,
            "amount_cents": self.amount_cents,
            "status": self.status,
            "card_last4": self.card_last4,
        })
    }

    /// Whether `caller` may see this payment. Anyone else gets the same 404 as for an
    /// unknown id, so payment ids cannot be probed.
    pub fn visible_to(&self, caller: Option<&str>) -> bool {
        matches!(caller, Some(c) if !c.is_empty() && c == self.owner)
    }
}

/// The value of an `idem:` key. Holding the whole payment makes the claim and the
/// payment's creation one atomic write: a replay can always answer from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// [`PaymentRequest::fingerprint`] of the request that made the claim.
    pub request_hash: String,
    pub payment: Payment,
}

impl Claim {
    /// The claim that fences `caller`'s key: nothing was charged under it, and a charge
    /// that arrives later (from a request that was stuck, say on a paused host) is
    /// refused instead of captured. It holds no payment record.
    pub fn void(caller: &str, now: String) -> Self {
        Self {
            request_hash: VOID.to_string(),
            payment: Payment {
                id: String::new(),
                owner: caller.to_string(),
                order_id: String::new(),
                amount_cents: 0,
                status: VOID.to_string(),
                card_last4: String::new(),
                created_at: now,
            },
        }
    }

    /// Whether this claim fences its key rather than holding a payment.
    pub fn is_void(&self) -> bool {
        self.payment.status == VOID
    }
}

/// A validated `POST /payments` body.
#[derive(Debug, PartialEq)]
pub struct PaymentRequest {
    pub order_id: String,
    pub amount_cents: u64,
    pub card_number: String,
}

/// The fields of a `POST /payments` body.
const REQUEST_FIELDS: [&str; 3] = ["order_id", "amount_cents", "card_number"];

pub fn payment_request(body: &[u8]) -> Result<PaymentRequest, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &REQUEST_FIELDS)?;
    let request = request_fields(&mut v, &obj);
    v.finish()?;
    Ok(request)
}

/// Validates the payment fields of `obj` into `v`; the result is only meaningful when
/// `v` finishes without errors.
fn request_fields(v: &mut Validator, obj: &Obj) -> PaymentRequest {
    let order_id = v.string(obj, "order_id");
    if let Some(id) = &order_id {
        if id.trim().is_empty() {
            v.add("order_id", "must not be empty");
        } else if id.chars().count() > MAX_ORDER_ID_CHARS {
            v.add(
                "order_id",
                format!("must be at most {MAX_ORDER_ID_CHARS} characters"),
            );
        }
    }
    // A charge of nothing is no charge: an order settled by it would be paid for free.
    let amount_cents = v.int(obj, "amount_cents", 1, u64::MAX);
    let card_number = v.string(obj, "card_number");
    if let Some(card) = &card_number {
        if !((12..=19).contains(&card.len()) && card.bytes().all(|b| b.is_ascii_digit())) {
            v.add("card_number", "must be 12 to 19 digits");
        }
    }
    PaymentRequest {
        order_id: order_id.unwrap_or_default(),
        amount_cents: amount_cents.unwrap_or_default(),
        card_number: card_number.unwrap_or_default(),
    }
}

/// A validated `payments.charge` message: the charge of `POST /payments`, with the
/// caller and the Idempotency-Key in the body (messaging has no gateway identity).
#[derive(Debug, PartialEq)]
pub struct ChargeMessage {
    pub user_id: String,
    pub idempotency_key: String,
    pub request: PaymentRequest,
}

/// Parses a `payments.charge` message body: `{"user_id", "idempotency_key", "order_id",
/// "amount_cents", "card_number"}`; every problem is a 400 like the HTTP endpoint's.
pub fn charge_message(data: &[u8]) -> Result<ChargeMessage, ApiError> {
    let mut v = Validator::new();
    let mut allowed = vec!["user_id", "idempotency_key"];
    allowed.extend(REQUEST_FIELDS);
    let obj = v.parse_object(data, &allowed)?;
    let user_id = v.string(&obj, "user_id").map(|u| u.trim().to_string());
    if user_id.as_deref() == Some("") {
        v.add("user_id", "must not be empty");
    }
    let key = v
        .string(&obj, "idempotency_key")
        .map(|k| k.trim().to_string());
    if let Some(problem) = key.as_deref().and_then(key_problem) {
        v.add("idempotency_key", problem);
    }
    let request = request_fields(&mut v, &obj);
    v.finish()?;
    Ok(ChargeMessage {
        user_id: user_id.unwrap_or_default(),
        idempotency_key: key.unwrap_or_default(),
        request,
    })
}

/// The reply to a `payments.charge` request: `{"status": <HTTP status>, "body": <what
/// POST /payments would answer>}`.
pub fn charge_reply(result: &Result<(u16, Value), ApiError>) -> Value {
    match result {
        Ok((status, body)) => json!({ "status": status, "body": body }),
        Err(e) => json!({ "status": e.status, "body": e.to_value() }),
    }
}

impl PaymentRequest {
    /// sha256 over `[order_id, amount_cents, last four digits, card length]` (a JSON
    /// array, so field boundaries are unambiguous), as hex. It deliberately leaves out
    /// every other card digit: a hash over the full number could be brute-forced back
    /// from storage (the few unknown digits are a small search space), and everything it
    /// does cover is already stored in the clear, so it needs no salt.
    ///
    /// Accepted consequence: a replay with the same key, order, amount, last four and
    /// length but other middle digits matches and gets the original payment (200)
    /// instead of 422. Only the key's owner can replay it (keys are per caller), and the
    /// mock decision depends only on the last four digits anyway.
    pub fn fingerprint(&self) -> String {
        let canonical = json!([
            self.order_id,
            self.amount_cents,
            self.last4(),
            self.card_number.len()
        ])
        .to_string();
        panal_sdk::random::hex(&Sha256::digest(canonical.as_bytes()))
    }

    pub fn last4(&self) -> String {
        let n = self.card_number.len();
        self.card_number[n.saturating_sub(4)..].to_string()
    }

    pub fn decision(&self) -> &'static str {
        if self.card_number.ends_with(DECLINE_SUFFIX) {
            DECLINED
        } else {
            CAPTURED
        }
    }
}

/// The `idem:` key of `caller`'s Idempotency-Key `key`: keys are per caller, so one
/// user's key can never replay (or block) another user's payment.
pub fn claim_key(caller: &str, key: &str) -> String {
    format!("idem:{caller}:{key}")
}

/// Validates the Idempotency-Key header: 1..=255 visible ASCII characters.
pub fn idempotency_key(header: Option<String>) -> Result<String, ApiError> {
    let key = header.map(|k| k.trim().to_string()).unwrap_or_default();
    if key.is_empty() {
        return Err(ApiError::bad_request("Idempotency-Key header is required"));
    }
    if key_problem(&key).is_some() {
        return Err(ApiError::bad_request(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key)
}

/// What is wrong with a (trimmed) idempotency key, if anything.
fn key_problem(key: &str) -> Option<&'static str> {
    (!panal_sdk::is_idempotency_key(key)).then_some("must be 1 to 255 visible ASCII characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(card: &str, amount: u64) -> PaymentRequest {
        PaymentRequest {
            order_id: "o1".into(),
            amount_cents: amount,
            card_number: card.into(),
        }
    }

    #[test]
    fn validation() {
        let r = payment_request(
            br#"{"order_id":"o1","amount_cents":500,"card_number":"4242424242424242"}"#,
        )
        .expect("ok");
        assert_eq!(r, request("4242424242424242", 500));
        let e = payment_request(br#"{"order_id":"","amount_cents":-1,"card_number":"42"}"#)
            .expect_err("bad");
        assert_eq!(
            e.body["fields"],
            json!({"order_id":"must not be empty","amount_cents":"must be an integer >= 1",
                   "card_number":"must be 12 to 19 digits"})
        );
    }

    #[test]
    fn decisions_and_last4() {
        assert_eq!(request("4000000000000002", 1).decision(), DECLINED);
        assert_eq!(request("4242424242424242", 1).decision(), CAPTURED);
        assert_eq!(request("4000000000000002", 1).last4(), "0002");
    }

    #[test]
    fn fingerprints() {
        let a = request("4242424242424242", 500);
        assert_eq!(
            a.fingerprint(),
            request("4242424242424242", 500).fingerprint()
        );
        assert_eq!(a.fingerprint().len(), 64);
        // Order, amount, last four and length all count.
        let mut other_order = request("4242424242424242", 500);
        other_order.order_id = "o2".into();
        assert_ne!(a.fingerprint(), other_order.fingerprint());
        assert_ne!(
            a.fingerprint(),
            request("4242424242424242", 501).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            request("4000000000000002", 500).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            request("424242424242424242", 500).fingerprint()
        );
        // The middle digits do not (the accepted consequence): nothing about them is kept.
        assert_eq!(
            a.fingerprint(),
            request("4000000000004242", 500).fingerprint()
        );
    }

    #[test]
    fn stored_claims_hold_no_card_digits_but_the_last_four() {
        let r = request("4111222233334242", 500);
        let claim = Claim {
            request_hash: r.fingerprint(),
            payment: Payment {
                id: "p".into(),
                owner: "u1".into(),
                order_id: r.order_id.clone(),
                amount_cents: r.amount_cents,
                status: r.decision().into(),
                card_last4: r.last4(),
                created_at: "t".into(),
            },
        };
        let stored = serde_json::to_string(&claim).expect("json");
        assert!(!stored.contains("1112222333"), "{stored}");
        // The hash is computable from the last four and the length alone.
        assert_eq!(
            claim.request_hash,
            request("0000000000004242", 500).fingerprint()
        );
    }

    #[test]
    fn void_claims_hold_no_payment() {
        let void = Claim::void("u1", "2026-12-07T00:00:00Z".into());
        assert!(void.is_void());
        assert_eq!(void.payment.owner, "u1");
        assert!(void.payment.id.is_empty() && void.payment.amount_cents == 0);
        let request = request("4242424242424242", 100);
        assert_ne!(void.request_hash, request.fingerprint());
        let back: Claim = serde_json::from_slice(&serde_json::to_vec(&void).unwrap()).unwrap();
        assert!(back.is_void());
        let paid = Claim {
            request_hash: request.fingerprint(),
            payment: Payment {
                status: CAPTURED.into(),
                ..void.payment.clone()
            },
        };
        assert!(!paid.is_void());
    }

    #[test]
    fn owners_and_claim_keys() {
        let p: Payment = serde_json::from_value(json!({"id":"p","owner":"u1","order_id":"o",
            "amount_cents":1,"status":"captured","card_last4":"4242","created_at":"t"}))
        .expect("payment");
        assert!(p.visible_to(Some("u1")));
        assert!(!p.visible_to(Some("u2")));
        assert!(!p.visible_to(None));
        assert!(p.view().get("owner").is_none());
        // A record from before owners were kept belongs to nobody.
        let old: Payment = serde_json::from_value(json!({"id":"p","order_id":"o",
            "amount_cents":1,"status":"captured","card_last4":"4242","created_at":"t"}))
        .expect("old payment");
        assert_eq!(old.owner, "");
        assert!(!old.visible_to(Some("")));
        assert!(!old.visible_to(None));
        assert_eq!(claim_key("u1", "k"), "idem:u1:k");
        assert_ne!(claim_key("u1", "k"), claim_key("u2", "k"));
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(
            idempotency_key(Some(" order-1 ".into())).expect("ok"),
            "order-1"
        );
        assert_eq!(idempotency_key(None).expect_err("missing").status, 400);
        assert_eq!(
            idempotency_key(Some("".into())).expect_err("empty").status,
            400
        );
        assert!(idempotency_key(Some("a b".into())).is_err());
        assert!(idempotency_key(Some("x".repeat(256))).is_err());
    }

    #[test]
    fn charge_messages() {
        let m = charge_message(
            br#"{"user_id":" u1 ","idempotency_key":"order-o1","order_id":"o1",
                 "amount_cents":500,"card_number":"4242424242424242"}"#,
        )
        .expect("ok");
        assert_eq!(
            m,
            ChargeMessage {
                user_id: "u1".into(),
                idempotency_key: "order-o1".into(),
                request: request("4242424242424242", 500),
            }
        );
        // Every field is checked, as the HTTP endpoint checks its body and header.
        let e = charge_message(
            br#"{"user_id":"","idempotency_key":"a b","order_id":"o1","amount_cents":1,
                 "card_number":"42","extra":1}"#,
        )
        .expect_err("bad");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.body["fields"],
            json!({"user_id":"must not be empty",
                   "idempotency_key":"must be 1 to 255 visible ASCII characters",
                   "card_number":"must be 12 to 19 digits","extra":"unknown field"})
        );
        let e = charge_message(
            br#"{"order_id":"o1","amount_cents":1,"card_number":"4242424242424242"}"#,
        )
        .expect_err("no user, no key");
        assert!(e.body["fields"].get("user_id").is_some(), "{e}");
        assert!(e.body["fields"].get("idempotency_key").is_some(), "{e}");
        assert_eq!(charge_message(b"not json").expect_err("json").status, 400);
        assert_eq!(charge_message(b"[1]").expect_err("array").status, 400);
    }

    #[test]
    fn charge_replies() {
        assert_eq!(
            charge_reply(&Ok((201, json!({"id":"p1","status":"captured"})))),
            json!({"status":201,"body":{"id":"p1","status":"captured"}})
        );
        let e = ApiError::new(
            422,
            "Idempotency-Key was already used with a different request",
        );
        assert_eq!(
            charge_reply(&Err(e)),
            json!({"status":422,"body":{"error":"Idempotency-Key was already used with a different request"}})
        );
    }
}
