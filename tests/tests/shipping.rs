//! The shipping service (Python, built by componentize-py) in the shop, end to end
//! through the gateway: a paid order gets a shipment with a tracking number, an admin
//! dispatches and delivers it across a host restart, the order follows it to
//! `delivered`, the inbox lists each event once and the summary shows the shipment. A
//! declined payment never gets a shipment, nor does an `orders.paid` event the order
//! service does not confirm. (Its events surviving a NATS outage and a
//! host restart: tests/durable.rs.)

use std::collections::BTreeSet;
use std::time::Duration;

use panal_tests::shop::{admin_token, start, Shop};
use panal_tests::{client, eventually, Panal};
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// The order `id` once its status is `status` (panics with the order when it is not).
async fn order_reaches(shop: &Shop<'_>, token: &str, id: &str, status: &str) -> Value {
    let reached = eventually(WAIT, || async {
        let (s, order) = shop.get(&format!("/orders/{id}"), Some(token)).await;
        (s == StatusCode::OK && order["status"] == status).then_some(order)
    })
    .await;
    match reached {
        Some(order) => order,
        None => {
            let (_, order) = shop.get(&format!("/orders/{id}"), Some(token)).await;
            panic!("order {id} never became {status}: {order}")
        }
    }
}

/// POST `/shipments/{id}/{action}` with `token` (if any).
async fn step(shop: &Shop<'_>, id: &str, action: &str, token: Option<&str>) -> (StatusCode, Value) {
    shop.post(&format!("/shipments/{id}/{action}"), token, json!(null))
        .await
}

/// The event types in the inbox of `token` for order `id`, oldest first; panics on an
/// event id seen twice.
async fn events_of(shop: &Shop<'_>, token: &str, id: &str) -> Vec<String> {
    let (s, inbox) = shop.get("/notifications", Some(token)).await;
    assert_eq!(s, StatusCode::OK, "{inbox}");
    let mut ids = BTreeSet::new();
    let mut types: Vec<String> = Vec::new();
    for e in inbox["items"].as_array().expect("items") {
        assert!(ids.insert(e["event_id"].to_string()), "duplicate: {inbox}");
        if e["order_id"] == id {
            types.push(e["type"].as_str().expect("type").to_string());
        }
    }
    types.reverse();
    types
}

/// `orders.paid` events published by another component (the probe may publish on
/// `orders.>`): for the user's declined order and for an order that does not exist.
/// The order service does not confirm them, so no shipment is made.
async fn forged_events_ship_nothing(shop: &Shop<'_>, user: &str, declined: &str, token: &str) {
    for (event, order) in [
        ("forged-1", declined),
        ("forged-2", "0123456789abcdef0123456789abcdef"),
    ] {
        let body = json!({"event_id": event, "type": "orders.paid", "order_id": order,
                          "user_id": user, "status": "paid"});
        let (s, p) = shop
            .post("/probe/msg/publish/orders.paid", None, body)
            .await;
        assert!(s.is_success(), "{p}");
    }
    let refused = eventually(WAIT, || async {
        let log = shop.panal.log();
        (log.contains("refused orders.paid forged-1")
            && log.contains("refused orders.paid forged-2"))
        .then_some(())
    });
    assert!(refused.await.is_some(), "{}", shop.panal.log());
    let (s, none) = shop
        .get(&format!("/shipments?order_id={declined}"), Some(token))
        .await;
    assert_eq!((s, none), (StatusCode::OK, json!({"items": []})));
}

#[tokio::test]
async fn a_paid_order_is_shipped_and_delivered_and_the_order_follows() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (ana, token) = shop.user("ship@example.com").await;
    let who = Who {
        admin: admin_token(&panal).await,
        bob: shop.user("bob-ship@example.com").await.1,
        ana,
        token,
    };
    let jar = shop.product("Jar", 500, 10).await;
    let (declined, paid) = a_declined_then_a_paid_order(&shop, &who, &jar).await;
    let shipment = the_paid_order_gets_a_shipment(&shop, &who, &paid).await;
    let id = shipment["id"].as_str().expect("id").to_string();
    shipments_are_their_owners_only(&shop, &who, &shipment, &paid, &declined).await;
    let shipped = steps_are_for_admins_in_order(&shop, &who, &id, &paid).await;
    // A restart: the shipment and the order are kept, and delivery goes on.
    drop(shop);
    panal.stop();
    let panal: Panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let tracking = shipped["tracking_number"].as_str().expect("tracking");
    delivery_goes_on_after_a_restart(&shop, &who, &shipped, &paid).await;
    every_event_comes_once_in_order(&shop, &who, (&paid, &declined), (&id, tracking)).await;
    the_summary_shows_the_shipment(&shop, &who, &paid, tracking).await;
    drop(shop);
    panal.stop();
}

/// The shop's users in this scenario: ana (her id and token), bob's token, an admin's.
struct Who {
    ana: String,
    token: String,
    bob: String,
    admin: String,
}

/// A declined payment first, then a paid order: their ids.
async fn a_declined_then_a_paid_order(shop: &Shop<'_>, who: &Who, jar: &str) -> (String, String) {
    let (s, declined) = shop
        .order(
            &who.token,
            json!([{"product_id": jar, "quantity": 1}]),
            "4000000000000002",
        )
        .await;
    assert_eq!(
        (s, declined["status"].as_str()),
        (StatusCode::CREATED, Some("payment_failed"))
    );
    let declined = declined["id"].as_str().expect("id").to_string();
    let (s, paid) = shop
        .order(
            &who.token,
            json!([{"product_id": jar, "quantity": 2}]),
            "4242424242424242",
        )
        .await;
    assert_eq!(
        (s, paid["status"].as_str()),
        (StatusCode::CREATED, Some("paid"))
    );
    let paid = paid["id"].as_str().expect("id").to_string();

    (declined, paid)
}

/// The shipment appears, made from `orders.paid`, preparing, with a tracking number.
async fn the_paid_order_gets_a_shipment(shop: &Shop<'_>, who: &Who, paid: &str) -> Value {
    let by_order = format!("/shipments?order_id={paid}");
    let shipment = eventually(WAIT, || async {
        let (s, list) = shop.get(&by_order, Some(&who.token)).await;
        (s == StatusCode::OK).then_some(())?;
        list["items"].as_array()?.first().cloned()
    })
    .await
    .expect("a shipment for the paid order");
    assert_eq!(shipment["order_id"], paid);
    assert_eq!(shipment["user_id"], who.ana.as_str());
    assert_eq!(shipment["status"], "preparing");
    assert_eq!(shipment["carrier"], "Test Post");
    let tracking = shipment["tracking_number"].as_str().expect("tracking");
    assert!(
        tracking.starts_with("TST") && tracking.len() == 15,
        "{tracking}"
    );
    assert_eq!(shipment["dispatched_at"], Value::Null);

    shipment
}

/// Its owner only; the list and the filter agree; a bad query is named; the declined
/// order has none, and events forged for it ship nothing.
async fn shipments_are_their_owners_only(
    shop: &Shop<'_>,
    who: &Who,
    shipment: &Value,
    paid: &str,
    declined: &str,
) {
    let id = shipment["id"].as_str().expect("id");
    let by_order = format!("/shipments?order_id={paid}");
    let (s, one) = shop
        .get(&format!("/shipments/{id}"), Some(&who.token))
        .await;
    assert_eq!((s, &one), (StatusCode::OK, shipment));
    let (s, _) = shop.get(&format!("/shipments/{id}"), Some(&who.bob)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = shop.get(&format!("/shipments/{id}"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, theirs) = shop.get(&by_order, Some(&who.bob)).await;
    assert_eq!((s, theirs), (StatusCode::OK, json!({"items": []})));
    let (s, mine) = shop.get("/shipments", Some(&who.token)).await;
    assert_eq!(
        (s, mine),
        (StatusCode::OK, json!({"items": [shipment.clone()]}))
    );
    let (s, bad) = shop.get("/shipments?carrier=x", Some(&who.token)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("`carrier`")),
        "{bad}"
    );
    // The paid order's shipment exists, so `orders.paid` has been handled; the declined
    // order never published one and has none.
    let (s, none) = shop
        .get(&format!("/shipments?order_id={declined}"), Some(&who.token))
        .await;
    assert_eq!((s, none), (StatusCode::OK, json!({"items": []})));
    forged_events_ship_nothing(shop, &who.ana, declined, &who.token).await;
    let (_, summary) = shop
        .get(&format!("/orders/{declined}/summary"), Some(&who.token))
        .await;
    assert_eq!(
        (summary["shipment"].clone(), summary["complete"].clone()),
        (Value::Null, json!(true))
    );
}

/// Steps are for admins, in order; dispatching again changes nothing; the order
/// follows. The shipped shipment.
async fn steps_are_for_admins_in_order(shop: &Shop<'_>, who: &Who, id: &str, paid: &str) -> Value {
    let (s, _) = step(shop, id, "dispatch", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = step(shop, id, "dispatch", Some(&who.token)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, early) = step(shop, id, "deliver", Some(&who.admin)).await;
    assert_eq!(
        (s, early["status"].as_str()),
        (StatusCode::CONFLICT, Some("preparing")),
        "{early}"
    );
    let (s, _) = step(
        shop,
        "0123456789abcdef0123456789abcdef",
        "dispatch",
        Some(&who.admin),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = step(shop, id, "lose", Some(&who.admin)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, shipped) = step(shop, id, "dispatch", Some(&who.admin)).await;
    assert_eq!(
        (s, shipped["status"].as_str()),
        (StatusCode::OK, Some("shipped")),
        "{shipped}"
    );
    assert!(shipped["dispatched_at"].is_string());
    // Again: the same shipment, the same event published again (the inbox shows it once).
    let (s, again) = step(shop, id, "dispatch", Some(&who.admin)).await;
    assert_eq!((s, &again), (StatusCode::OK, &shipped));
    let order = order_reaches(shop, &who.token, paid, "shipped").await;
    assert_eq!(order["shipment"]["status"], "shipped");

    shipped
}

/// After a restart the shipment is kept, and delivery goes on; the order follows.
async fn delivery_goes_on_after_a_restart(shop: &Shop<'_>, who: &Who, shipped: &Value, paid: &str) {
    let id = shipped["id"].as_str().expect("id");
    let tracking = shipped["tracking_number"].as_str().expect("tracking");
    let (s, kept) = shop
        .get(&format!("/shipments/{id}"), Some(&who.token))
        .await;
    assert_eq!((s, kept), (StatusCode::OK, shipped.clone()));
    let (s, delivered) = step(shop, id, "deliver", Some(&who.admin)).await;
    assert_eq!(
        (s, delivered["status"].as_str()),
        (StatusCode::OK, Some("delivered")),
        "{delivered}"
    );
    let order = order_reaches(shop, &who.token, paid, "delivered").await;
    assert_eq!(
        order["shipment"],
        json!({"id": id, "status": "delivered", "carrier": "Test Post", "tracking_number": tracking})
    );
}

/// Every event once, in order; the declined order has no shipment event; the newest in
/// the inbox is the delivery.
async fn every_event_comes_once_in_order(
    shop: &Shop<'_>,
    who: &Who,
    (paid, declined): (&str, &str),
    (id, tracking): (&str, &str),
) {
    let want = [
        "orders.created",
        "orders.paid",
        "shipments.created",
        "shipments.dispatched",
        "shipments.delivered",
    ];
    let all_in = eventually(WAIT, || async {
        (events_of(shop, &who.token, paid).await.len() >= want.len()).then_some(())
    })
    .await;
    assert!(
        all_in.is_some(),
        "{:?}",
        events_of(shop, &who.token, paid).await
    );
    assert_eq!(events_of(shop, &who.token, paid).await, want);
    assert_eq!(
        events_of(shop, &who.token, declined).await,
        ["orders.created", "orders.payment_failed"]
    );
    let (_, inbox) = shop.get("/notifications", Some(&who.token)).await;
    let newest = &inbox["items"][0];
    assert_eq!(
        (
            newest["type"].as_str(),
            newest["tracking_number"].as_str(),
            newest["shipment_id"].as_str()
        ),
        (Some("shipments.delivered"), Some(tracking), Some(id)),
        "{inbox}"
    );
}

/// The summary shows the shipment beside the order, its products and its payment.
async fn the_summary_shows_the_shipment(shop: &Shop<'_>, who: &Who, paid: &str, tracking: &str) {
    let (s, summary) = shop
        .get(&format!("/orders/{paid}/summary"), Some(&who.token))
        .await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    assert_eq!(summary["order"]["status"], "delivered");
    assert_eq!(summary["shipment"]["status"], "delivered");
    assert_eq!(summary["shipment"]["tracking_number"], tracking);
    assert_eq!(summary["payment"]["status"], "captured");
    assert_eq!(
        (summary["complete"].clone(), summary["missing"].clone()),
        (json!(true), json!([]))
    );
}
