//! `Idempotency-Key` on `POST /orders`: a client that lost an answer sends the same
//! request again and gets the same order, never a second one; the chaos workload
//! relies on it.

use panal_tests::client;
use panal_tests::shop::{self, Shop};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// POST an order for `quantity` of `product` with `key`, as the holder of `token`.
async fn order(
    shop: &Shop<'_>,
    token: &str,
    key: &str,
    product: &str,
    quantity: u64,
) -> (StatusCode, Value) {
    let body = json!({"items": [{"product_id": product, "quantity": quantity}], "card_number": "4242424242424242"});
    let req = shop
        .c
        .post(shop.panal.at("/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body);
    shop.send(req).await
}

/// A replay is the same order (200) and takes stock and money once, also when ten
/// replays race; another body under the key is 422; a bad key is 400; keys are per
/// user; and the order's events reach the inbox once.
#[tokio::test]
async fn a_replayed_key_is_the_same_order() {
    let dir = tempfile::tempdir().expect("dir");
    let panal = shop::start(dir.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let jar = shop.product("Keyed jars", 300, 50).await;
    let (_, token) = shop.user("keys@example.com").await;

    let (s, first) = order(&shop, &token, "k-1", &jar, 2).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "paid");
    let (s, again) = order(&shop, &token, "k-1", &jar, 2).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(
        (&again["id"], &again["payment_id"]),
        (&first["id"], &first["payment_id"])
    );
    assert_eq!(shop.stock(&jar).await, 48);

    let racing = (0..10).map(|_| order(&shop, &token, "k-2", &jar, 1));
    let answers = futures::future::join_all(racing).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(s, o)| {
            assert!(matches!(s.as_u16(), 200 | 201), "{s} {o}");
            o["id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "ten replays of one key made {ids:?}");
    assert_eq!(shop.stock(&jar).await, 47);

    let (s, other) = order(&shop, &token, "k-1", &jar, 3).await;
    assert_eq!(s.as_u16(), 422, "{other}");
    assert!(
        other["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency-Key"),
        "{other}"
    );
    let (s, bad) = order(&shop, &token, &"k".repeat(256), &jar, 1).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(shop.stock(&jar).await, 47);

    // Another user's equal key is another key.
    let (_, other_token) = shop.user("keys2@example.com").await;
    let (s, theirs) = order(&shop, &other_token, "k-1", &jar, 2).await;
    assert_eq!(s, StatusCode::CREATED, "{theirs}");
    assert_ne!(theirs["id"], first["id"]);

    let (_, mine) = shop.get("/orders", Some(&token)).await;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(2), "{mine}");
    let id = first["id"].as_str().expect("id");
    let inbox = panal_tests::eventually(std::time::Duration::from_secs(10), || async {
        let (_, inbox) = shop.get("/notifications", Some(&token)).await;
        let of_first: Vec<Value> = inbox["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["order_id"] == id && e["type"].as_str().is_some_and(|t| t.starts_with("orders."))
            })
            .cloned()
            .collect();
        (of_first.len() >= 2).then_some(of_first)
    })
    .await
    .expect("the first order's events in the inbox");
    let ids: Vec<&str> = inbox
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{inbox:?}");
    assert!(ids.contains(&format!("{id}-paid").as_str()), "{ids:?}");
}
