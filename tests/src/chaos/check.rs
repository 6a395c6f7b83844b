//! The checker: after the faults are healed, reads every record the shop stored straight
//! from PostgreSQL (not through the code under test) and holds it against what the
//! clients saw. Each invariant is counted: how many records it checked and what broke.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;
use sqlx::Row;

use super::workload::{Outcome, Seen};

/// One invariant's result.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// How many records (or answers) it looked at.
    pub checked: u64,
    /// What broke, one line each.
    pub violations: Vec<String>,
}

/// Every invariant, by name, in the order the report prints them.
pub type Verdicts = BTreeMap<&'static str, Verdict>;

/// Everything the shop stored: `(component, bucket) → key → JSON value`.
pub struct Stored {
    rows: HashMap<(String, String), BTreeMap<String, Value>>,
}

impl Stored {
    /// Read it all from `db_url`.
    pub async fn read(db_url: &str) -> Result<Self, sqlx::Error> {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db_url).await?;
        let rows = sqlx::query("SELECT component, bucket, key, value FROM panal_kv")
            .fetch_all(&mut conn)
            .await?;
        let mut out: HashMap<(String, String), BTreeMap<String, Value>> = HashMap::new();
        for row in rows {
            let value: Vec<u8> = row.get("value");
            let value = serde_json::from_slice(&value)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&value).into()));
            out.entry((row.get("component"), row.get("bucket")))
                .or_default()
                .insert(row.get("key"), value);
        }
        Ok(Self { rows: out })
    }

    /// `component`'s bucket `bucket` (the host stores it as component `panal_NAME`),
    /// the keys under `prefix`.
    fn under<'a>(
        &'a self,
        component: &str,
        bucket: &str,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.rows
            .get(&(format!("panal_{component}"), bucket.to_string()))
            .into_iter()
            .flat_map(move |b| b.range(prefix.to_string()..))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// How many records in how many buckets.
    pub fn size(&self) -> (usize, usize) {
        (self.rows.values().map(BTreeMap::len).sum(), self.rows.len())
    }

    /// Orders still `pending` (a request in flight, or waiting for the sweep).
    pub fn pending(&self) -> usize {
        self.under("order", "orders", "order:")
            .filter(|(_, o)| o["status"] == "pending")
            .count()
    }
}

/// Holds `stored` against `seen`, with `created` the stock each product started with.
pub fn check(stored: &Stored, seen: &Seen, created: &HashMap<String, u64>) -> Verdicts {
    let orders: HashMap<&str, &Value> = stored
        .under("order", "orders", "order:")
        .map(|(k, v)| (&k["order:".len()..], v))
        .collect();
    let mut verdicts = Verdicts::new();
    verdicts.insert("no oversell", stock(stored, &orders, created));
    verdicts.insert("acknowledged orders exist", acknowledged(seen, &orders));
    verdicts.insert(
        "no order no client made",
        made_by_clients(stored, seen, &orders),
    );
    verdicts.insert("one payment per paid order", payments(stored, &orders));
    verdicts.insert("one shipment per paid order", shipments(stored, &orders));
    verdicts.insert("events once in the inbox", inbox(stored, &orders));
    let mut wrong = Verdict {
        checked: seen.requests,
        ..Verdict::default()
    };
    wrong.violations = seen.wrong.clone();
    verdicts.insert("no wrong answer", wrong);
    verdicts
}

/// Whether an order's stock stays taken (paid and on, or still pending).
fn holds_stock(order: &Value) -> bool {
    order["status"] != "payment_failed"
}

/// Stock now plus units held by orders is the stock each product was created with.
fn stock(
    stored: &Stored,
    orders: &HashMap<&str, &Value>,
    created: &HashMap<String, u64>,
) -> Verdict {
    let mut held: HashMap<&str, u64> = HashMap::new();
    for order in orders.values().filter(|o| holds_stock(o)) {
        for line in order["items"].as_array().into_iter().flatten() {
            let id = line["product_id"].as_str().unwrap_or_default();
            *held.entry(id).or_default() += line["quantity"].as_u64().unwrap_or(0);
        }
    }
    let mut v = Verdict::default();
    for (_, product) in stored.under("product", "products", "p:") {
        let id = product["id"].as_str().unwrap_or_default();
        let Some(start) = created.get(id) else {
            continue;
        };
        v.checked += 1;
        let now = product["stock"].as_u64().unwrap_or(0);
        let sold = held.get(id).copied().unwrap_or(0);
        if now + sold != *start {
            v.violations.push(format!(
                "product {id}: stock {now} + units held by orders {sold} != {start} created"
            ));
        }
    }
    v
}

fn acknowledged(seen: &Seen, orders: &HashMap<&str, &Value>) -> Verdict {
    let mut v = Verdict::default();
    for placed in &seen.orders {
        let Outcome::Acked { id, status } = &placed.outcome else {
            continue;
        };
        v.checked += 1;
        match orders.get(id.as_str()) {
            None => v.violations.push(format!(
                "order {id} ({}) was acknowledged {status} and is gone",
                placed.key
            )),
            Some(o) if status != "pending" && o["status"] != status.as_str() => {
                v.violations.push(format!(
                    "order {id} was acknowledged {status} and is stored {}",
                    o["status"]
                ))
            }
            Some(_) => {}
        }
    }
    v
}

/// Every stored order is one a client's Idempotency-Key claimed, and every key it
/// claimed made at most that one order.
fn made_by_clients(stored: &Stored, seen: &Seen, orders: &HashMap<&str, &Value>) -> Verdict {
    let keys: HashSet<&str> = seen.orders.iter().map(|p| p.key.as_str()).collect();
    let mut claimed: HashSet<&str> = HashSet::new();
    for (key, record) in stored.under("order", "orders", "idem:") {
        let client_key = key.rsplit(':').next().unwrap_or_default();
        if keys.contains(client_key) {
            if let Some(id) = record["order_id"].as_str() {
                claimed.insert(id);
            }
        }
    }
    let mut v = Verdict::default();
    for id in orders.keys() {
        v.checked += 1;
        if !claimed.contains(id) {
            v.violations
                .push(format!("order {id} exists, and no client's key made it"));
        }
    }
    v
}

fn is_paid(order: &Value) -> bool {
    matches!(
        order["status"].as_str(),
        Some("paid" | "shipped" | "delivered")
    )
}

/// One captured payment for each paid order, none for an order that does not exist.
fn payments(stored: &Stored, orders: &HashMap<&str, &Value>) -> Verdict {
    let mut per_order: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut v = Verdict::default();
    for (_, payment) in stored.under("payment", "payments", "payment:") {
        let order = payment["order_id"].as_str().unwrap_or_default();
        v.checked += 1;
        if !orders.contains_key(order) {
            v.violations.push(format!(
                "payment {} for order {order}, which does not exist",
                payment["id"]
            ));
        }
        per_order.entry(order).or_default().push(payment);
    }
    for (id, order) in orders {
        let captured = per_order.get(id).map_or(0, |ps| {
            ps.iter().filter(|p| p["status"] == "captured").count()
        });
        let want = usize::from(is_paid(order) && order["total_cents"].as_u64() != Some(0));
        if captured != want {
            v.violations.push(format!(
                "order {id} is {} with {captured} captured payments",
                order["status"]
            ));
        }
    }
    v
}

fn shipments(stored: &Stored, orders: &HashMap<&str, &Value>) -> Verdict {
    let mut per_order: HashMap<&str, u64> = HashMap::new();
    for (_, shipment) in stored.under("shipping", "shipments", "shipment:") {
        *per_order
            .entry(shipment["order_id"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let mut v = Verdict::default();
    for (id, order) in orders {
        v.checked += 1;
        let n = per_order.get(id).copied().unwrap_or(0);
        let want = u64::from(is_paid(order));
        if n != want {
            v.violations.push(format!(
                "order {id} is {} with {n} shipments",
                order["status"]
            ));
        }
    }
    v
}

/// Each order's events in its user's inbox exactly once: created, then paid or failed,
/// and a paid order's shipment created; no event id twice.
fn inbox(stored: &Stored, orders: &HashMap<&str, &Value>) -> Verdict {
    let mut per_order: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut v = Verdict::default();
    for (key, entries) in stored.under("notification", "notifications", "inbox:") {
        let mut ids = HashSet::new();
        for entry in entries.as_array().into_iter().flatten() {
            let event = entry["event_id"].as_str().unwrap_or_default();
            if !ids.insert(event) {
                v.violations.push(format!("{key}: event {event} twice"));
            }
            let order = entry["order_id"].as_str().unwrap_or_default();
            per_order
                .entry(order)
                .or_default()
                .push(entry["type"].as_str().unwrap_or_default());
        }
    }
    for (id, order) in orders {
        v.checked += 1;
        let want: &[&str] = match order["status"].as_str() {
            Some("payment_failed") => &["orders.created", "orders.payment_failed"],
            Some("pending") => &["orders.created"],
            _ => &["orders.created", "orders.paid", "shipments.created"],
        };
        let mut got = per_order.get(id).cloned().unwrap_or_default();
        got.sort_unstable();
        let mut want = want.to_vec();
        want.sort_unstable();
        if got != want {
            v.violations.push(format!(
                "order {id} ({}): inbox has {got:?}, wants {want:?}",
                order["status"]
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chaos::workload::Placed;

    /// Rows as `(component, bucket, key, value)`.
    type Rows = Vec<(&'static str, &'static str, String, Value)>;

    /// A shop of one product (10 created) and one paid order of 2 units, complete.
    fn shop() -> Rows {
        let order = json!({"id": "o1", "status": "paid", "total_cents": 500,
            "items": [{"product_id": "p1", "quantity": 2, "price_cents": 250}]});
        let inbox = json!([
            {"event_id": "o1-created", "type": "orders.created", "order_id": "o1"},
            {"event_id": "o1-paid", "type": "orders.paid", "order_id": "o1"},
            {"event_id": "s1-created", "type": "shipments.created", "order_id": "o1"},
        ]);
        vec![
            (
                "product",
                "products",
                "p:1".into(),
                json!({"id": "p1", "stock": 8}),
            ),
            ("order", "orders", "order:o1".into(), order),
            (
                "order",
                "orders",
                "idem:u1:k1".into(),
                json!({"order_id": "o1"}),
            ),
            (
                "payment",
                "payments",
                "payment:x".into(),
                json!({"id": "x", "order_id": "o1", "status": "captured"}),
            ),
            (
                "shipping",
                "shipments",
                "shipment:s1".into(),
                json!({"order_id": "o1"}),
            ),
            ("notification", "notifications", "inbox:u1".into(), inbox),
        ]
    }

    fn stored(rows: Rows) -> Stored {
        let mut out: HashMap<(String, String), BTreeMap<String, Value>> = HashMap::new();
        for (c, b, k, v) in rows {
            out.entry((format!("panal_{c}"), b.to_string()))
                .or_default()
                .insert(k, v);
        }
        Stored { rows: out }
    }

    fn seen(outcome: Outcome) -> Seen {
        let placed = Placed {
            key: "k1".into(),
            product: "p1".into(),
            quantity: 2,
            declined: false,
            outcome,
        };
        Seen {
            orders: vec![placed],
            ..Seen::default()
        }
    }

    fn broken(rows: Rows, outcome: Outcome) -> Vec<&'static str> {
        let created = HashMap::from([("p1".to_string(), 10)]);
        let verdicts = check(&stored(rows), &seen(outcome), &created);
        verdicts
            .into_iter()
            .filter(|(_, v)| !v.violations.is_empty())
            .map(|(name, _)| name)
            .collect()
    }

    fn acked() -> Outcome {
        Outcome::Acked {
            id: "o1".into(),
            status: "paid".into(),
        }
    }

    #[test]
    fn a_whole_shop_passes() {
        assert_eq!(broken(shop(), acked()), Vec::<&str>::new());
    }

    #[test]
    fn each_broken_promise_is_named() {
        let with = |f: &dyn Fn(&mut Rows)| {
            let mut rows = shop();
            f(&mut rows);
            rows
        };
        // Stock given back for a paid order: oversold.
        let oversold = with(&|r| r[0].3["stock"] = json!(10));
        assert_eq!(broken(oversold, acked()), ["no oversell"]);
        // The acknowledged order lost (and its stock and records with it).
        let lost = with(&|r| r.retain(|(c, ..)| *c == "product"));
        assert!(broken(lost, acked()).contains(&"acknowledged orders exist"));
        // A second order under no client's key: a retry placed twice.
        let twice = with(&|r| {
            let mut second = r[1].clone();
            second.2 = "order:o2".into();
            second.3["id"] = json!("o2");
            r.push(second);
        });
        assert!(broken(twice, acked()).contains(&"no order no client made"));
        // Charged twice.
        let charged = with(&|r| {
            r.push((
                "payment",
                "payments",
                "payment:y".into(),
                json!({"id": "y", "order_id": "o1", "status": "captured"}),
            ))
        });
        assert_eq!(broken(charged, acked()), ["one payment per paid order"]);
        // Shipped twice, or an event delivered twice.
        let shipped = with(&|r| {
            r.push((
                "shipping",
                "shipments",
                "shipment:s2".into(),
                json!({"order_id": "o1"}),
            ))
        });
        assert_eq!(broken(shipped, acked()), ["one shipment per paid order"]);
        let echoed = with(&|r| {
            let again = r[5].3[1].clone();
            r[5].3.as_array_mut().expect("inbox").push(again);
        });
        assert_eq!(broken(echoed, acked()), ["events once in the inbox"]);
        // Acknowledged paid, stored failed.
        let flipped = with(&|r| r[1].3["status"] = json!("payment_failed"));
        assert!(broken(flipped, acked()).contains(&"acknowledged orders exist"));
    }
}
