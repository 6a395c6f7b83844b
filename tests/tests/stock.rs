//! The product service's stock reservations, which only other components may make:
//! a reservation id makes reserve, release and keep idempotent, all or nothing.

use panal_tests::shop::{Shop, SECRET};
use panal_tests::{client, Panal};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// POST `body` to product's `/internal/ACTION` through the probe (in-process): the
/// product's status and JSON answer.
async fn internal(shop: &Shop<'_>, action: &str, body: Value) -> (StatusCode, Value) {
    let path = format!("/probe/call?url=http://product/internal/{action}");
    let (s, called) = shop.post(&path, None, body).await;
    assert_eq!(s, StatusCode::OK, "{called}");
    let status = called["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .expect("status");
    let answer =
        serde_json::from_str(called["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (StatusCode::from_u16(status).expect("status"), answer)
}

/// A reservation with an id takes stock once however often it is sent, and its release
/// gives back once what it took and nothing for a line it never took: the order service
/// sends both again when an answer was lost (a product host died holding the call).
#[tokio::test]
async fn a_reservation_id_makes_reserve_and_release_idempotent() {
    // Reserve and release answer only other components: the probe's calls.
    let manifest = format!(
        r#"version = 1
[auth]
jwt_secret = "${{PANAL_TEST_JWT_SECRET}}"

[components.product]
source = "{product}"
routes = [
  {{ prefix = "/products", methods = ["GET"] }},
  {{ prefix = "/products", methods = ["POST"], roles = ["admin"] }},
]
keyvalue = ["products"]

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["p"]
outbound = ["product"]
"#,
        product = panal_tests::component("product"),
        probe = panal_tests::component("probe"),
    );
    let data = tempfile::tempdir().expect("tmp");
    let env = [("PANAL_TEST_JWT_SECRET", SECRET)];
    let panal = Panal::with(&manifest, data.path()).env(&env).start();
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (a, b) = (
        shop.product("A", 100, 10).await,
        shop.product("B", 100, 1).await,
    );
    let both = json!({"reservation": "order-1", "items": [
        {"product_id": a, "quantity": 3}, {"product_id": a, "quantity": 2}]});
    for _ in 0..3 {
        let (s, body) = internal(&shop, "reserve", both.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    assert_eq!(shop.stock(&a).await, 5, "two lines of 3 and 2, taken once");
    // All or nothing: B has 1, so nothing of this reservation stays taken.
    let too_many = json!({"reservation": "order-2", "items": [
        {"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 2}]});
    let (s, _) = internal(&shop, "reserve", too_many.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!((shop.stock(&a).await, shop.stock(&b).await), (5, 1));
    // Releasing order-2 gives nothing back: it holds nothing.
    let (s, body) = internal(&shop, "release", too_many).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["quantity"], 0, "{body}");
    for _ in 0..2 {
        let (s, body) = internal(&shop, "release", both.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    assert_eq!(shop.stock(&a).await, 10, "given back once");
    // Sent again after its release (a replay that raced the first attempt, a resend
    // held up in a partition), the reservation takes nothing.
    let (s, body) = internal(&shop, "reserve", both.clone()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        shop.stock(&a).await,
        10,
        "a released reservation takes nothing again"
    );
    // A paid order keeps its holds: a release then gives nothing back, and the same
    // reservation sent again takes nothing. A keep needs a reservation.
    let paid = json!({"reservation": "order-3", "items": [{"product_id": a, "quantity": 4}]});
    internal(&shop, "reserve", paid.clone()).await;
    for _ in 0..2 {
        let (s, body) = internal(&shop, "keep", paid.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let (_, body) = internal(&shop, "release", paid.clone()).await;
    assert_eq!(body["items"][0]["quantity"], 0, "{body}");
    internal(&shop, "reserve", paid.clone()).await;
    assert_eq!(shop.stock(&a).await, 6, "kept: sold once, never given back");
    let (s, _) = internal(
        &shop,
        "keep",
        json!({"items": [{"product_id": a, "quantity": 1}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, body) = internal(
        &shop,
        "reserve",
        json!({"reservation": "no/slash", "items": [{"product_id": a, "quantity": 1}]}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["fields"]["reservation"].is_string(), "{body}");
    drop(shop);
    panal.stop();
}
