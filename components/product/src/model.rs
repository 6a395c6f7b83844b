//! The product record, the validation of product bodies and list parameters, and the key
//! layout (pure, unit-tested natively).
//!
//! Keys in bucket `products`: `seq` (creation counter), `p:<seq, 20 digits>` → product
//! JSON, `id:<product id>` → its seq. Zero padding makes key order creation order, and the
//! seq doubles as the list cursor.

use panal_sdk::{ApiError, Obj, Validator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const SEQ_KEY: &str = "seq";
pub const MAX_NAME_CHARS: usize = 200;
/// Ten billion currency units: beyond any real price, far from overflow.
pub const MAX_PRICE_CENTS: u64 = 1_000_000_000_000;
pub const MAX_STOCK: u64 = 1_000_000_000;
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub price_cents: u64,
    pub stock: u64,
    pub created_at: String,
    /// The latest reservations that took stock from this product, so that a retried
    /// reservation takes nothing twice and a release gives back only what was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,
}

/// Stock taken by one line of one reservation (`<reservation>/<line index>`), and when
/// (unix seconds): when taken, or once settled, when settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub id: String,
    pub quantity: u64,
    #[serde(default)]
    pub at: u64,
    #[serde(default, skip_serializing_if = "HoldState::is_open")]
    pub state: HoldState,
}

/// Where a hold stands. A settled one (kept or released) takes nothing again when its
/// reservation is sent again, and gives nothing back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldState {
    /// Its order is not final: a release gives its units back.
    #[default]
    Open,
    /// Its order is paid: the units stay sold.
    Kept,
    /// Its units went back.
    Released,
}

impl HoldState {
    fn is_open(&self) -> bool {
        *self == Self::Open
    }
}

/// How long a settled hold is remembered: long enough that a reservation sent again
/// after it (a replay that raced the first attempt, a resend delayed in a partition)
/// takes nothing.
pub const SETTLED_SECS: u64 = 60;
/// How long an open hold is remembered. Its order settles it (keeps or releases it) as
/// soon as it can, also through the order service's sweep; this only bounds holds whose
/// order is gone.
pub const HOLD_SECS: u64 = 7 * 24 * 3600;
/// Most holds per product, settled ones dropped first, then the oldest (bounds the
/// record of a product with that many orders unfinished at once).
pub const MAX_HOLDS: usize = 1024;

impl Product {
    pub fn public(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "price_cents": self.price_cents,
            "stock": self.stock,
        })
    }

    /// The hold `id`, if this product still has it.
    pub fn hold(&self, id: &str) -> Option<usize> {
        self.holds.iter().position(|h| h.id == id)
    }

    /// Records that `quantity` was taken under `id` at `now`, dropping settled holds
    /// older than [`SETTLED_SECS`], open ones older than [`HOLD_SECS`], and past
    /// [`MAX_HOLDS`] the settled ones first, then the oldest.
    pub fn add_hold(&mut self, id: &str, quantity: u64, now: u64) {
        self.holds.retain(|h| {
            let age = now.saturating_sub(h.at);
            age < if h.state.is_open() {
                HOLD_SECS
            } else {
                SETTLED_SECS
            }
        });
        while self.holds.len() >= MAX_HOLDS {
            let settled = self.holds.iter().position(|h| !h.state.is_open());
            self.holds.remove(settled.unwrap_or(0));
        }
        self.holds.push(Hold {
            id: id.to_string(),
            quantity,
            at: now,
            state: HoldState::Open,
        });
    }

    /// Settles the open hold `id` as `state` at `now`: the units it took if it was open
    /// (what a release gives back), `None` if there is no such open hold.
    pub fn settle(&mut self, id: &str, state: HoldState, now: u64) -> Option<u64> {
        let hold = self
            .holds
            .iter_mut()
            .find(|h| h.id == id && h.state.is_open())?;
        hold.state = state;
        hold.at = now;
        Some(hold.quantity)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::internal("corrupt product record").with("detail", e.to_string()))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ApiError> {
        serde_json::to_vec(self).map_err(|e| ApiError::internal(e.to_string()))
    }
}

pub fn product_key(seq: u64) -> String {
    format!("p:{seq:020}")
}

pub fn seq_of_key(key: &str) -> Option<u64> {
    key.strip_prefix("p:")?.parse().ok()
}

pub fn id_key(id: &str) -> String {
    format!("id:{id}")
}

/// Fields of a create (all required) or a patch (any, at least one).
#[derive(Debug, Default, PartialEq)]
pub struct Fields {
    pub name: Option<String>,
    pub price_cents: Option<u64>,
    pub stock: Option<u64>,
}

const FIELD_NAMES: [&str; 3] = ["name", "price_cents", "stock"];

/// `POST /products` body: every field required.
pub fn create_fields(body: &[u8]) -> Result<Fields, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &FIELD_NAMES)?;
    let fields = Fields {
        name: name(&mut v, &obj, true),
        price_cents: v.int(&obj, "price_cents", 0, MAX_PRICE_CENTS),
        stock: v.int(&obj, "stock", 0, MAX_STOCK),
    };
    v.finish()?;
    Ok(fields)
}

/// `PATCH /products/{id}` body: any of the fields, at least one, nothing else.
pub fn patch_fields(body: &[u8]) -> Result<Fields, ApiError> {
    let mut v = Validator::new();
    let obj = v.parse_object(body, &FIELD_NAMES)?;
    if !FIELD_NAMES.iter().any(|f| obj.has(f)) {
        v.add(
            "body",
            "must contain at least one of name, price_cents, stock",
        );
    }
    let fields = Fields {
        name: name(&mut v, &obj, false),
        price_cents: v.opt_int(&obj, "price_cents", 0, MAX_PRICE_CENTS),
        stock: v.opt_int(&obj, "stock", 0, MAX_STOCK),
    };
    v.finish()?;
    Ok(fields)
}

fn name(v: &mut Validator, obj: &Obj, required: bool) -> Option<String> {
    let name = if required {
        v.string(obj, "name")
    } else {
        v.opt_string(obj, "name")
    }?;
    let name = name.trim().to_string();
    if name.is_empty() {
        v.add("name", "must not be empty");
        None
    } else if name.chars().count() > MAX_NAME_CHARS {
        v.add(
            "name",
            format!("must be at most {MAX_NAME_CHARS} characters"),
        );
        None
    } else {
        Some(name)
    }
}

impl Fields {
    /// Applies the present fields to `product`.
    pub fn apply(&self, product: &mut Product) {
        if let Some(name) = &self.name {
            product.name = name.clone();
        }
        if let Some(price) = self.price_cents {
            product.price_cents = price;
        }
        if let Some(stock) = self.stock {
            product.stock = stock;
        }
    }
}

/// `limit` and `cursor` of `GET /products`: the page size and the seq after which to start.
#[derive(Debug, PartialEq)]
pub struct ListParams {
    pub limit: usize,
    pub after: u64,
}

pub fn list_params(limit: Option<&str>, cursor: Option<&str>) -> Result<ListParams, ApiError> {
    let mut v = Validator::new();
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                v.add("limit", format!("must be an integer from 1 to {MAX_LIMIT}"));
                DEFAULT_LIMIT
            }
        },
    };
    let after = match cursor {
        None => 0,
        Some(text) => decode_cursor(text).unwrap_or_else(|| {
            v.add("cursor", "is not a cursor this service issued");
            0
        }),
    };
    v.finish()?;
    Ok(ListParams { limit, after })
}

/// Cursors are the seq of the last product of a page, in decimal. Clients should treat
/// them as opaque; only the digits-only shape is checked.
pub fn encode_cursor(seq: u64) -> String {
    seq.to_string()
}

pub fn decode_cursor(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_in_creation_order() {
        assert_eq!(product_key(7), "p:00000000000000000007");
        assert!(product_key(9) < product_key(10));
        assert_eq!(seq_of_key(&product_key(123)), Some(123));
        assert_eq!(seq_of_key("id:x"), None);
    }

    #[test]
    fn create_validation() {
        let f = create_fields(br#"{"name":" Mug ","price_cents":1299,"stock":0}"#).expect("ok");
        assert_eq!(
            f,
            Fields {
                name: Some("Mug".into()),
                price_cents: Some(1299),
                stock: Some(0)
            }
        );
        let e = create_fields(br#"{"name":"","price_cents":-5,"stock":1.5}"#).expect_err("bad");
        assert_eq!(
            e.body["fields"],
            json!({"name":"must not be empty",
                   "price_cents":"must be an integer from 0 to 1000000000000",
                   "stock":"must be an integer"})
        );
        let e = create_fields(br#"{}"#).expect_err("missing");
        assert_eq!(
            e.body["fields"],
            json!({"name":"is required","price_cents":"is required","stock":"is required"})
        );
    }

    #[test]
    fn patch_validation() {
        let f = patch_fields(br#"{"stock":5}"#).expect("ok");
        assert_eq!(
            f,
            Fields {
                stock: Some(5),
                ..Fields::default()
            }
        );
        let e = patch_fields(br#"{"color":"red"}"#).expect_err("unknown");
        assert_eq!(
            e.body["fields"],
            json!({"color":"unknown field",
                   "body":"must contain at least one of name, price_cents, stock"})
        );
        let e = patch_fields(br#"{"name":null}"#).expect_err("null");
        assert_eq!(e.body["fields"], json!({"name":"must be a string"}));
        let mut p = Product {
            id: "a".into(),
            name: "old".into(),
            price_cents: 1,
            stock: 2,
            created_at: String::new(),
            holds: Vec::new(),
        };
        patch_fields(br#"{"name":"new","price_cents":3}"#)
            .expect("ok")
            .apply(&mut p);
        assert_eq!((p.name.as_str(), p.price_cents, p.stock), ("new", 3, 2));
    }

    #[test]
    fn holds_last_until_their_order_settles_them_and_a_minute_more() {
        let mut p = Product {
            id: "a".into(),
            name: "n".into(),
            price_cents: 1,
            stock: 2,
            created_at: String::new(),
            holds: Vec::new(),
        };
        p.add_hold("open/0", 1, 1000);
        p.add_hold("paid/0", 1, 1000);
        p.add_hold("failed/0", 3, 1000);
        assert_eq!(p.settle("paid/0", HoldState::Kept, 1000), Some(1));
        assert_eq!(p.settle("failed/0", HoldState::Released, 1000), Some(3));
        assert_eq!(
            p.settle("paid/0", HoldState::Released, 1000),
            None,
            "settled once"
        );
        assert_eq!(
            p.settle("failed/0", HoldState::Released, 1000),
            None,
            "given back once"
        );
        assert_eq!(p.settle("never/0", HoldState::Kept, 1000), None);
        p.add_hold("later/0", 1, 1000 + SETTLED_SECS - 1);
        assert!(p.hold("paid/0").is_some() && p.hold("failed/0").is_some());
        p.add_hold("later/1", 1, 1000 + SETTLED_SECS);
        assert!(p.hold("paid/0").is_none() && p.hold("failed/0").is_none());
        assert!(p.hold("open/0").is_some(), "an open hold outlives a minute");
        p.add_hold("much later/0", 1, 1000 + HOLD_SECS);
        assert!(p.hold("open/0").is_none(), "HOLD_SECS old");
        // Past MAX_HOLDS the settled ones go first, then the oldest.
        p.holds.clear();
        p.add_hold("first/0", 1, 2000);
        p.add_hold("kept/0", 1, 2000);
        p.settle("kept/0", HoldState::Kept, 2000);
        for i in 0..MAX_HOLDS - 1 {
            p.add_hold(&format!("{i}/0"), 1, 2000);
        }
        assert_eq!(p.holds.len(), MAX_HOLDS);
        assert!(p.hold("kept/0").is_none() && p.hold("first/0").is_some());
        p.add_hold("one more/0", 1, 2000);
        assert!(p.hold("first/0").is_none() && p.hold("0/0").is_some());
        let stored = serde_json::to_value(&p.holds[0]).expect("json");
        assert!(
            stored.get("state").is_none(),
            "open holds are stored as before"
        );
    }

    #[test]
    fn list_parameters() {
        assert_eq!(
            list_params(None, None).expect("ok"),
            ListParams {
                limit: 20,
                after: 0
            }
        );
        assert_eq!(
            list_params(Some("100"), Some(&encode_cursor(42))).expect("ok"),
            ListParams {
                limit: 100,
                after: 42
            }
        );
        for bad in ["0", "101", "-1", "x", ""] {
            let e = list_params(Some(bad), None).expect_err(bad);
            assert_eq!(
                e.body["fields"]["limit"],
                "must be an integer from 1 to 100"
            );
        }
        for bad in ["", "abc", "-3", "1.5", "99999999999999999999999"] {
            assert!(list_params(None, Some(bad)).is_err(), "{bad}");
        }
    }
}
