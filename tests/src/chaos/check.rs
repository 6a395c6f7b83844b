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

    /// Every record as one line `component bucket key value`, sorted, for a person to
    /// read after a failed run.
    pub fn dump(&self) -> String {
        let mut lines: Vec<String> = self
            .rows
            .iter()
            .flat_map(|((c, b), keys)| keys.iter().map(move |(k, v)| format!("{c} {b} {k} {v}")))
            .collect();
        lines.sort();
        lines.join("\n")
    }

    /// A hash of every record: equal while nothing stored changes.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut buckets: Vec<_> = self.rows.iter().collect();
        buckets.sort_by(|a, b| a.0.cmp(b.0));
        for (name, keys) in buckets {
            name.hash(&mut h);
            for (k, v) in keys {
                k.hash(&mut h);
                v.to_string().hash(&mut h);
            }
        }
        h.finish()
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
    // An abandoned record is an order that was never placed: it holds nothing.
    let orders: HashMap<&str, &Value> = stored
        .under("order", "orders", "order:")
        .filter(|(_, v)| v["status"] != "abandoned")
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
    // The same without the shop's own records: a key retried to a final answer was told
    // of its one order, so an order no client was told of can only come from a key
    // that never got a final answer.
    let told: HashSet<&str> = seen
        .orders
        .iter()
        .filter_map(|p| match &p.outcome {
            Outcome::Acked { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let open = seen
        .orders
        .iter()
        .filter(|p| p.outcome == Outcome::Unknown)
        .count();
    let untold = orders.keys().filter(|id| !told.contains(*id)).count();
    if untold > open {
        v.violations.insert(
            0,
            format!(
                "{untold} orders no client was told of, and {open} keys without a final answer: \
             a retry placed an order twice"
            ),
        );
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
#[path = "check_tests.rs"]
mod tests;
