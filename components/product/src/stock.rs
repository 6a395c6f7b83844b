//! Stock reservation for the order service: `POST /internal/reserve` and
//! `POST /internal/release`, both `{reservation?, items:[{product_id, quantity}]}`.
//!
//! Reserve is all-or-nothing. Each product's stock is changed by a compare-and-swap loop
//! on its record, so no interleaving of reservations and PATCHes can take stock below
//! zero or lose an update; when a later item fails, the items already taken are put back
//! before answering.
//!
//! With a `reservation` id both calls are idempotent, so the order service can repeat one
//! whose answer was lost (a host that died mid-call): each line's take is recorded in the
//! product record itself, in the same write, as hold `<reservation>/<line index>`. A
//! repeated reserve finds its holds and takes nothing again; a release gives back what a
//! hold took, once, and nothing for a line that was never taken.
//!
//! `POST /internal/keep` (same body, a reservation required) tells that the order is
//! paid: its holds are kept. A kept or released hold is settled: the reservation sent
//! again takes nothing (a replay that raced the first attempt, a resend delayed by a
//! partition), a release gives nothing back, and it is forgotten a minute later. A hold
//! nothing settled is remembered for a week (see [`crate::model::HOLD_SECS`]), so that an
//! order settled late (its payment unknown for a while) still gives back exactly what it
//! took.

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::kv::{self, Step, UpdateError};
use panal_sdk::{ApiError, ApiResult, Validator};
use serde_json::{json, Value};

use crate::model::{HoldState, Product, MAX_STOCK};

/// Most lines one reservation may carry.
pub const MAX_ITEMS: usize = 100;
/// Longest reservation id.
const MAX_RESERVATION: usize = 64;

/// One requested line.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub product_id: String,
    pub quantity: u64,
}

/// A parsed reserve or release: its lines, and its id when the caller gave one.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub reservation: Option<String>,
    pub lines: Vec<Line>,
}

impl Request {
    /// The hold of line `i`, when the request has an id.
    fn hold(&self, i: usize) -> Option<String> {
        self.reservation.as_ref().map(|r| format!("{r}/{i}"))
    }
}

/// Parses `{reservation?, items:[{product_id, quantity}]}` with the same line rules as the
/// order service (`Validator::item_lines`), so that every order it accepts is parsed alike
/// here. A reservation id is 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn parse(body: &[u8]) -> Result<Request, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &["reservation", "items"])?;
    let reservation = v.opt_string(&obj, "reservation");
    if let Some(r) = &reservation {
        let fine = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if r.is_empty() || r.len() > MAX_RESERVATION || !r.chars().all(fine) {
            v.add(
                "reservation",
                format!("must be 1 to {MAX_RESERVATION} of A-Z a-z 0-9 _ -"),
            );
        }
    }
    let lines = v
        .item_lines(&obj, MAX_ITEMS, MAX_STOCK)
        .into_iter()
        .map(|(product_id, quantity)| Line {
            product_id,
            quantity,
        })
        .collect();
    v.finish()?;
    Ok(Request { reservation, lines })
}

fn not_found(product_id: &str) -> ApiError {
    ApiError::not_found("product not found").with("product_id", product_id)
}

/// Takes `quantity` units of the product stored at `key`, under `hold` when given (and
/// nothing when that hold already took them).
fn take(bucket: &Bucket, key: &str, line: &Line, hold: Option<&str>) -> Result<Product, ApiError> {
    let result = kv::update(bucket, key, |current| {
        let bytes = current.ok_or_else(|| not_found(&line.product_id))?;
        let mut product = Product::from_bytes(bytes)?;
        if hold.is_some_and(|h| product.hold(h).is_some()) {
            return Ok(Step::Keep(product));
        }
        product.stock = product.stock.checked_sub(line.quantity).ok_or_else(|| {
            ApiError::conflict("insufficient stock").with("product_id", line.product_id.as_str())
        })?;
        if let Some(h) = hold {
            product.add_hold(h, line.quantity, panal_sdk::time::unix_now());
        }
        Ok(Step::Write(product.to_bytes()?, product))
    });
    result.map_err(ApiError::from)
}

/// Puts units back into the product stored at `key`: what `hold` took (nothing when it
/// took nothing or was given back already), or `quantity` when there is no hold.
fn give_back(
    bucket: &Bucket,
    key: &str,
    quantity: u64,
    hold: Option<&str>,
) -> Result<u64, UpdateError<ApiError>> {
    kv::update(bucket, key, |current| {
        let Some(bytes) = current else {
            // Products are never deleted; nothing to give back to.
            return Ok(Step::Keep(0));
        };
        let mut product = Product::from_bytes(bytes)?;
        let quantity = match hold {
            None => quantity,
            Some(h) => match product.settle(h, HoldState::Released, panal_sdk::time::unix_now()) {
                Some(quantity) => quantity,
                // Never taken, given back already, or its order paid for it.
                None => return Ok(Step::Keep(0)),
            },
        };
        product.stock = product.stock.saturating_add(quantity);
        Ok(Step::Write(product.to_bytes()?, quantity))
    })
}

pub fn reserve(bucket: &Bucket, request: &Request) -> ApiResult {
    let mut taken: Vec<(String, u64, Option<String>)> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, line) in request.lines.iter().enumerate() {
        let hold = request.hold(i);
        let step = crate::record_key(bucket, &line.product_id).and_then(|key| match key {
            None => Err(not_found(&line.product_id)),
            Some(key) => take(bucket, &key, line, hold.as_deref()).map(|p| (key, p)),
        });
        match step {
            Ok((key, product)) => {
                taken.push((key, line.quantity, hold));
                out.push(json!({
                    "product_id": line.product_id,
                    "quantity": line.quantity,
                    "price_cents": product.price_cents,
                    "name": product.name,
                }));
            }
            Err(e) => {
                undo(bucket, &taken);
                return Err(e);
            }
        }
    }
    Ok((200, json!({ "items": out })))
}

/// Best effort: a failure here leaves those units unavailable, which is the safe side
/// (nothing oversold), and is reported on stderr for the operator.
fn undo(bucket: &Bucket, taken: &[(String, u64, Option<String>)]) {
    for (key, quantity, hold) in taken {
        if let Err(e) = give_back(bucket, key, *quantity, hold.as_deref()) {
            eprintln!("product: could not put back {quantity} units of {key}: {e:?}");
        }
    }
}

/// Gives the lines back; each answered line says how many units went back (with a
/// reservation, 0 for a line whose units were not held).
pub fn release(bucket: &Bucket, request: &Request) -> ApiResult {
    // Resolve every id first, so an unknown one fails the call before anything moves.
    let mut keys = Vec::with_capacity(request.lines.len());
    for line in &request.lines {
        match crate::record_key(bucket, &line.product_id)? {
            Some(key) => keys.push(key),
            None => return Err(not_found(&line.product_id)),
        }
    }
    let mut out = Vec::with_capacity(request.lines.len());
    for (i, (line, key)) in request.lines.iter().zip(&keys).enumerate() {
        let back = give_back(bucket, key, line.quantity, request.hold(i).as_deref())?;
        out.push(json!({ "product_id": line.product_id, "quantity": back }));
    }
    Ok((200, json!({ "items": out })))
}

/// The order is paid: each line's hold is kept (its units stay sold, a release gives
/// nothing back, and a repeated reserve takes nothing) and forgotten a minute later.
/// Needs a reservation id; idempotent. Each answered line says whether this call kept it.
pub fn keep(bucket: &Bucket, request: &Request) -> ApiResult {
    if request.reservation.is_none() {
        return Err(ApiError::bad_request("keep needs a reservation"));
    }
    let mut out = Vec::with_capacity(request.lines.len());
    for (i, line) in request.lines.iter().enumerate() {
        let key = crate::record_key(bucket, &line.product_id)?
            .ok_or_else(|| not_found(&line.product_id))?;
        let hold = request.hold(i).unwrap_or_default();
        let kept = kv::update(bucket, &key, |current| {
            let Some(bytes) = current else {
                return Ok(Step::Keep(false));
            };
            let mut product = Product::from_bytes(bytes)?;
            let now = panal_sdk::time::unix_now();
            Ok(match product.settle(&hold, HoldState::Kept, now) {
                Some(_) => Step::Write(product.to_bytes()?, true),
                None => Step::Keep(false),
            })
        })
        .map_err(ApiError::from)?;
        out.push(json!({ "product_id": line.product_id, "kept": kept }));
    }
    Ok((200, json!({ "items": out })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let got = parse(br#"{"items":[{"product_id":"a","quantity":2}]}"#).expect("ok");
        assert_eq!(
            got.lines,
            [Line {
                product_id: "a".into(),
                quantity: 2
            }]
        );
        assert_eq!(got.reservation, None);
        let got = parse(br#"{"reservation":"o-1_x","items":[{"product_id":"a","quantity":1}]}"#)
            .expect("ok");
        assert_eq!(
            (got.hold(0), got.hold(1)),
            (Some("o-1_x/0".into()), Some("o-1_x/1".into()))
        );
        for bad in [r#""""#, r#""a/b""#, "7"] {
            let body =
                format!(r#"{{"reservation":{bad},"items":[{{"product_id":"a","quantity":1}}]}}"#);
            let e = parse(body.as_bytes()).expect_err(bad);
            assert!(
                e.body["fields"]["reservation"].is_string(),
                "{bad}: {:?}",
                e.body
            );
        }
        let e = parse(br#"{"items":[]}"#).expect_err("empty");
        assert_eq!(e.body["fields"], json!({"items":"must not be empty"}));
        let e = parse(br#"{"items":[{"product_id":"a","quantity":0},{"quantity":1},3]}"#)
            .expect_err("bad");
        assert_eq!(
            e.body["fields"],
            json!({"items[0].quantity":"must be an integer from 1 to 1000000000",
                   "items[1].product_id":"is required",
                   "items[2]":"must be an object"})
        );
        let e = parse(br#"{}"#).expect_err("missing");
        assert_eq!(e.body["fields"], json!({"items":"is required"}));
        // Same id rule as the order service: trimmed, and blank is a 400 rather than a 404.
        let got = parse(br#"{"items":[{"product_id":" a ","quantity":2}]}"#).expect("ok");
        assert_eq!(got.lines[0].product_id, "a");
        let e = parse(br#"{"items":[{"product_id":" ","quantity":2}]}"#).expect_err("blank");
        assert_eq!(
            e.body["fields"],
            json!({"items[0].product_id":"must not be empty"})
        );
    }
}
