//! Reading a JSON request body while collecting every problem at once, so that a client
//! learns all of its bad fields from one 400 instead of one per round trip.
//!
//! ```ignore
//! let mut v = Validator::new();
//! let obj = v.parse_object(&bytes, &["name", "price_cents"])?; // Err: not a JSON object
//! let name = v.string(&obj, "name");
//! let price = v.int(&obj, "price_cents", 0, MAX_PRICE);
//! v.finish()?;                                // Err: 400 listing every field
//! let (name, price) = (name.unwrap_or_default(), price.unwrap_or_default());
//! ```
//!
//! Field names in errors are paths: `items[2].quantity` for nested objects.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::api::{invalid_json, ApiError};

/// A JSON object plus the path it was found at (empty for the body itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Obj {
    pub map: Map<String, Value>,
    prefix: String,
}

impl Obj {
    /// Wraps a top-level object (no path prefix).
    pub fn root(map: Map<String, Value>) -> Self {
        Self {
            map,
            prefix: String::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// The error path of member `key`: `key`, or `prefix.key` when nested.
    pub fn field(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }
}

/// Collects field problems; the first problem reported for a field is kept.
#[derive(Debug, Default)]
pub struct Validator {
    errors: BTreeMap<String, String>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` for `field` unless that field already has one.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors
            .entry(field.into())
            .or_insert_with(|| message.into());
    }

    pub fn has_error(&self, field: &str) -> bool {
        self.errors.contains_key(field)
    }

    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when nothing was recorded, else 400 "validation failed" listing the fields.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }

    /// Parses a request body that must be a JSON object. Members outside `allowed` are
    /// recorded as "unknown field". Fails at once (400) only when the body is not JSON or
    /// not an object, since then there are no fields to list.
    pub fn parse_object(&mut self, bytes: &[u8], allowed: &[&str]) -> Result<Obj, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(invalid_json)?;
        match value {
            Value::Object(map) => {
                let obj = Obj::root(map);
                self.check_unknown(&obj, allowed);
                Ok(obj)
            }
            _ => Err(ApiError::bad_request("body must be a JSON object")),
        }
    }

    /// A nested object at error path `field` (e.g. "items[0]"), with its unknown members
    /// recorded; `None` (and an error) when `value` is not an object.
    pub fn object(&mut self, value: &Value, field: &str, allowed: &[&str]) -> Option<Obj> {
        match value {
            Value::Object(map) => {
                let obj = Obj {
                    map: map.clone(),
                    prefix: field.to_string(),
                };
                self.check_unknown(&obj, allowed);
                Some(obj)
            }
            _ => {
                self.add(field, "must be an object");
                None
            }
        }
    }

    fn check_unknown(&mut self, obj: &Obj, allowed: &[&str]) {
        for key in obj.map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.add(obj.field(key), "unknown field");
            }
        }
    }

    /// A required string member.
    pub fn string(&mut self, obj: &Obj, key: &str) -> Option<String> {
        match obj.get(key) {
            None => {
                self.add(obj.field(key), "is required");
                None
            }
            Some(value) => self.as_string(obj, key, value),
        }
    }

    /// An optional string member (absent → `None` without error; `null` is an error).
    pub fn opt_string(&mut self, obj: &Obj, key: &str) -> Option<String> {
        obj.get(key).and_then(|v| self.as_string(obj, key, v))
    }

    fn as_string(&mut self, obj: &Obj, key: &str, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.add(obj.field(key), "must be a string");
                None
            }
        }
    }

    /// A required integer member within `min..=max`.
    pub fn int(&mut self, obj: &Obj, key: &str, min: u64, max: u64) -> Option<u64> {
        match obj.get(key) {
            None => {
                self.add(obj.field(key), "is required");
                None
            }
            Some(value) => self.as_int(obj, key, value, min, max),
        }
    }

    /// An optional integer member within `min..=max`.
    pub fn opt_int(&mut self, obj: &Obj, key: &str, min: u64, max: u64) -> Option<u64> {
        obj.get(key)
            .and_then(|v| self.as_int(obj, key, v, min, max))
    }

    fn as_int(&mut self, obj: &Obj, key: &str, value: &Value, min: u64, max: u64) -> Option<u64> {
        let field = obj.field(key);
        match int_value(value) {
            Some(n) if n >= i128::from(min) && n <= i128::from(max) => u64::try_from(n).ok(),
            Some(_) if max == u64::MAX => {
                self.add(field, format!("must be an integer >= {min}"));
                None
            }
            Some(_) => {
                self.add(field, format!("must be an integer from {min} to {max}"));
                None
            }
            None => {
                self.add(field, "must be an integer");
                None
            }
        }
    }

    /// A required array member (possibly empty).
    pub fn array(&mut self, obj: &Obj, key: &str) -> Option<Vec<Value>> {
        match obj.get(key) {
            None => {
                self.add(obj.field(key), "is required");
                None
            }
            Some(Value::Array(items)) => Some(items.clone()),
            Some(_) => {
                self.add(obj.field(key), "must be an array");
                None
            }
        }
    }

    /// The required `items: [{product_id, quantity}]` member shared by an order and a
    /// stock reservation, as `(product_id, quantity)` pairs. Both services parse it the
    /// same way so that no order passes here and is then refused by the product service.
    ///
    /// `product_id` is trimmed and must not be empty; `quantity` is `1..=max_quantity`.
    /// Past `max_items` only the list length is reported: a client that sends too many
    /// lines learns nothing more from errors on the extra ones, and they are not walked.
    pub fn item_lines(
        &mut self,
        obj: &Obj,
        max_items: usize,
        max_quantity: u64,
    ) -> Vec<(String, u64)> {
        let items = self.array(obj, "items").unwrap_or_default();
        let field = obj.field("items");
        // Only judge the length of an array that is there; otherwise "is required" or
        // "must be an array" already says what is wrong.
        if obj.has("items") && !self.has_error(&field) {
            if items.is_empty() {
                self.add(field.as_str(), "must not be empty");
            } else if items.len() > max_items {
                self.add(
                    field.as_str(),
                    format!("must have at most {max_items} entries"),
                );
            }
        }
        let mut lines = Vec::new();
        for (i, item) in items.iter().take(max_items).enumerate() {
            let path = format!("{field}[{i}]");
            let Some(item) = self.object(item, &path, &["product_id", "quantity"]) else {
                continue;
            };
            let product_id = self
                .string(&item, "product_id")
                .map(|p| p.trim().to_string());
            if product_id.as_deref() == Some("") {
                self.add(item.field("product_id"), "must not be empty");
            }
            let quantity = self.int(&item, "quantity", 1, max_quantity);
            if let (Some(product_id), Some(quantity)) = (product_id, quantity) {
                lines.push((product_id, quantity));
            }
        }
        lines
    }
}

/// The integer a JSON number stands for. Only integer literals count: `2.0` is a float
/// to serde_json and is refused, as a price of `9.99` must be.
fn int_value(value: &Value) -> Option<i128> {
    let n = match value {
        Value::Number(n) => n,
        _ => return None,
    };
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(e: ApiError) -> Value {
        assert_eq!(e.status, 400);
        e.body.get("fields").cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn collects_every_problem() {
        let mut v = Validator::new();
        let body = br#"{"name": 3, "price_cents": -1, "extra": true, "items": [{"q": 1.5}, 7]}"#;
        let obj = v
            .parse_object(body, &["name", "price_cents", "stock", "items"])
            .expect("object");
        assert_eq!(v.string(&obj, "name"), None);
        assert_eq!(v.int(&obj, "price_cents", 0, u64::MAX), None);
        assert_eq!(v.int(&obj, "stock", 0, 10), None);
        let items = v.array(&obj, "items").expect("array");
        let first = v.object(&items[0], "items[0]", &["q"]).expect("object");
        assert_eq!(v.int(&first, "q", 1, 10), None);
        assert!(v.object(&items[1], "items[1]", &["q"]).is_none());
        let err = v.finish().expect_err("invalid");
        assert_eq!(
            fields(err),
            json!({
                "name": "must be a string",
                "price_cents": "must be an integer >= 0",
                "stock": "is required",
                "extra": "unknown field",
                "items[0].q": "must be an integer",
                "items[1]": "must be an object",
            })
        );
    }

    #[test]
    fn accepts_good_input() {
        let mut v = Validator::new();
        let obj = v
            .parse_object(
                br#"{"name":"x","n":5,"f":2,"g":2.0}"#,
                &["name", "n", "f", "g"],
            )
            .expect("object");
        assert_eq!(v.string(&obj, "name").as_deref(), Some("x"));
        assert_eq!(v.int(&obj, "n", 1, 5), Some(5));
        assert_eq!(v.opt_int(&obj, "f", 0, 9), Some(2));
        assert_eq!(v.opt_string(&obj, "missing"), None);
        assert!(v.is_ok());
        assert_eq!(v.opt_int(&obj, "g", 0, 9), None);
        assert!(v.has_error("g"));
    }

    fn lines(body: &[u8]) -> Result<Vec<(String, u64)>, ApiError> {
        let mut v = Validator::new();
        let obj = v.parse_object(body, &["items"])?;
        let lines = v.item_lines(&obj, 2, 10);
        v.finish()?;
        Ok(lines)
    }

    #[test]
    fn item_lines() {
        assert_eq!(
            lines(br#"{"items":[{"product_id":" a ","quantity":1},{"product_id":"b","quantity":10}]}"#)
                .expect("ok"),
            vec![("a".to_string(), 1), ("b".to_string(), 10)]
        );
        let e = lines(br#"{"items":[]}"#).expect_err("empty");
        assert_eq!(fields(e), json!({"items": "must not be empty"}));
        let e = lines(br#"{}"#).expect_err("absent");
        assert_eq!(fields(e), json!({"items": "is required"}));
        let e = lines(br#"{"items":{}}"#).expect_err("not an array");
        assert_eq!(fields(e), json!({"items": "must be an array"}));
        // The third line is bad too, but past the limit only the length is reported.
        let three =
            br#"{"items":[{"product_id":"a","quantity":1},{"product_id":"b","quantity":1},7]}"#;
        let e = lines(three).expect_err("too many");
        assert_eq!(fields(e), json!({"items": "must have at most 2 entries"}));
        let e = lines(
            br#"{"items":[{"product_id":"a","quantity":0},{"product_id":"b","quantity":1.5}]}"#,
        )
        .expect_err("bad quantity");
        assert_eq!(
            fields(e),
            json!({
                "items[0].quantity": "must be an integer from 1 to 10",
                "items[1].quantity": "must be an integer",
            })
        );
        let e = lines(br#"{"items":[{"product_id":"a","quantity":1,"price":3},{"product_id":"  ","quantity":1}]}"#)
            .expect_err("unknown field, blank id");
        assert_eq!(
            fields(e),
            json!({
                "items[0].price": "unknown field",
                "items[1].product_id": "must not be empty",
            })
        );
        let e = lines(br#"{"items":[{"quantity":1},3]}"#).expect_err("bad lines");
        assert_eq!(
            fields(e),
            json!({
                "items[0].product_id": "is required",
                "items[1]": "must be an object",
            })
        );
        let e = lines(br#"{"items":[{"product_id":5,"quantity":1}]}"#).expect_err("id type");
        assert_eq!(
            fields(e),
            json!({"items[0].product_id": "must be a string"})
        );
    }

    #[test]
    fn range_and_not_json() {
        let mut v = Validator::new();
        let obj = v.parse_object(br#"{"n":11}"#, &["n"]).expect("object");
        assert_eq!(v.int(&obj, "n", 1, 10), None);
        assert_eq!(
            fields(v.finish().expect_err("range")),
            json!({"n": "must be an integer from 1 to 10"})
        );
        let mut v = Validator::new();
        let e = v.parse_object(b"{nope", &[]).expect_err("not json");
        assert_eq!((e.status, e.message()), (400, "invalid JSON body"));
        let e = v.parse_object(b"[1]", &[]).expect_err("not object");
        assert_eq!((e.status, e.message()), (400, "body must be a JSON object"));
        let e = v.parse_object(b"", &[]).expect_err("empty");
        assert_eq!(e.status, 400);
    }
}
