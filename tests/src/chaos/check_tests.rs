//! The checker's own tests: a whole shop passes, and each broken promise is named.

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

#[test]
fn an_order_no_client_was_told_of_is_caught_without_the_shops_records() {
    let mut rows = shop();
    let mut second = rows[1].clone();
    second.2 = "order:o2".into();
    second.3["id"] = json!("o2");
    rows.push(second);
    // The shop's own record even claims it for the key: only the clients can tell.
    rows.push((
        "order",
        "orders",
        "idem:u2:k1".into(),
        json!({"order_id": "o2"}),
    ));
    let created = HashMap::from([("p1".to_string(), 10)]);
    let verdicts = check(&stored(rows), &seen(acked()), &created);
    let twice = &verdicts["no order no client made"].violations;
    assert_eq!(twice.len(), 1, "{twice:?}");
    assert!(
        twice[0].contains("a retry placed an order twice"),
        "{twice:?}"
    );
    // Unless a key never got its final answer: that order may be its.
    let verdicts = check(&stored(shop()), &seen(Outcome::Unknown), &created);
    assert!(verdicts["no order no client made"].violations.is_empty());
}

#[test]
fn abandoned_records_hold_nothing() {
    let abandoned = |stock: u64| {
        let mut rows = shop();
        rows[0].3["stock"] = json!(stock);
        rows.push((
            "order",
            "orders",
            "order:o9".into(),
            json!({"id": "o9", "status": "abandoned", "total_cents": 0,
                "items": [{"product_id": "p1", "quantity": 3, "price_cents": 0}]}),
        ));
        rows
    };
    // Its stock given back: nothing broken, and it is no order of anyone's.
    assert_eq!(broken(abandoned(8), acked()), Vec::<&str>::new());
    // Its stock still held: units missing.
    assert_eq!(broken(abandoned(5), acked()), ["no oversell"]);
}
