//! Stock reservation for the order service: `POST /internal/reserve` and
//! `POST /internal/release`, both `{items:[{product_id, quantity}]}`.
//!
//! Reserve is all-or-nothing. Each product's stock is changed by a compare-and-swap loop
//! on its record, so no interleaving of reservations and PATCHes can take stock below
//! zero or lose an update; when a later item fails, the items already taken are put back
//! before answering.

use panal_sdk::keyvalue::store::Bucket;
use panal_sdk::kv::{self, Step, UpdateError};
use panal_sdk::{ApiError, ApiResult, Validator};
use serde_json::{json, Value};

use crate::model::{Product, MAX_STOCK};

/// Most lines one reservation may carry.
pub const MAX_ITEMS: usize = 100;

/// One requested line.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub product_id: String,
    pub quantity: u64,
}

/// Parses `{items:[{product_id, quantity}]}` with the same rules as the order service
/// (`Validator::item_lines`), so that every order it accepts is parsed alike here.
pub fn parse_lines(body: &[u8]) -> Result<Vec<Line>, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &["items"])?;
    let lines = v
        .item_lines(&obj, MAX_ITEMS, MAX_STOCK)
        .into_iter()
        .map(|(product_id, quantity)| Line {
            product_id,
            quantity,
        })
        .collect();
    v.finish()?;
    Ok(lines)
}

fn not_found(product_id: &str) -> ApiError {
    ApiError::not_found("product not found").with("product_id", product_id)
}

/// Takes `quantity` units of the product stored at `key`.
fn take(bucket: &Bucket, key: &str, line: &Line) -> Result<Product, ApiError> {
    let result = kv::update(bucket, key, |current| {
        let bytes = current.ok_or_else(|| not_found(&line.product_id))?;
        let mut product = Product::from_bytes(bytes)?;
        product.stock = product.stock.checked_sub(line.quantity).ok_or_else(|| {
            ApiError::conflict("insufficient stock").with("product_id", line.product_id.as_str())
        })?;
        Ok(Step::Write(product.to_bytes()?, product))
    });
    result.map_err(ApiError::from)
}

/// Puts `quantity` units back into the product stored at `key`.
fn give_back(bucket: &Bucket, key: &str, quantity: u64) -> Result<(), UpdateError<ApiError>> {
    kv::update(bucket, key, |current| {
        let Some(bytes) = current else {
            // Products are never deleted; nothing to give back to.
            return Ok(Step::Keep(()));
        };
        let mut product = Product::from_bytes(bytes)?;
        product.stock = product.stock.saturating_add(quantity);
        Ok(Step::Write(product.to_bytes()?, ()))
    })
}

pub fn reserve(bucket: &Bucket, lines: &[Line]) -> ApiResult {
    let mut taken: Vec<(String, u64)> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for line in lines {
        let step = crate::record_key(bucket, &line.product_id).and_then(|key| match key {
            None => Err(not_found(&line.product_id)),
            Some(key) => take(bucket, &key, line).map(|product| (key, product)),
        });
        match step {
            Ok((key, product)) => {
                taken.push((key, line.quantity));
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
fn undo(bucket: &Bucket, taken: &[(String, u64)]) {
    for (key, quantity) in taken {
        if let Err(e) = give_back(bucket, key, *quantity) {
            eprintln!("product: could not put back {quantity} units of {key}: {e:?}");
        }
    }
}

pub fn release(bucket: &Bucket, lines: &[Line]) -> ApiResult {
    // Resolve every id first, so an unknown one fails the call before anything moves.
    let mut keys = Vec::with_capacity(lines.len());
    for line in lines {
        match crate::record_key(bucket, &line.product_id)? {
            Some(key) => keys.push(key),
            None => return Err(not_found(&line.product_id)),
        }
    }
    let mut out = Vec::with_capacity(lines.len());
    for (line, key) in lines.iter().zip(&keys) {
        give_back(bucket, key, line.quantity)?;
        out.push(json!({ "product_id": line.product_id, "quantity": line.quantity }));
    }
    Ok((200, json!({ "items": out })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let got = parse_lines(br#"{"items":[{"product_id":"a","quantity":2}]}"#).expect("ok");
        assert_eq!(
            got,
            [Line {
                product_id: "a".into(),
                quantity: 2
            }]
        );
        let e = parse_lines(br#"{"items":[]}"#).expect_err("empty");
        assert_eq!(e.body["fields"], json!({"items":"must not be empty"}));
        let e = parse_lines(br#"{"items":[{"product_id":"a","quantity":0},{"quantity":1},3]}"#)
            .expect_err("bad");
        assert_eq!(
            e.body["fields"],
            json!({"items[0].quantity":"must be an integer from 1 to 1000000000",
                   "items[1].product_id":"is required",
                   "items[2]":"must be an object"})
        );
        let e = parse_lines(br#"{}"#).expect_err("missing");
        assert_eq!(e.body["fields"], json!({"items":"is required"}));
        // Same id rule as the order service: trimmed, and blank is a 400 rather than a 404.
        let got = parse_lines(br#"{"items":[{"product_id":" a ","quantity":2}]}"#).expect("ok");
        assert_eq!(got[0].product_id, "a");
        let e = parse_lines(br#"{"items":[{"product_id":" ","quantity":2}]}"#).expect_err("blank");
        assert_eq!(
            e.body["fields"],
            json!({"items[0].product_id":"must not be empty"})
        );
    }
}
