//! The shop end to end through the gateway: the real user, product, order and payment
//! components on real SQLite files, behind the real binary.

use futures::future::join_all;
use panal_tests::{base64_url, client, sign_hs256, Panal};
use reqwest::StatusCode;
use serde_json::{json, Value};

use panal_tests::shop::{lose_payment_record, lose_user_record, manifest_on, start, Shop, SECRET};

#[tokio::test]
async fn the_whole_flow_through_the_gateway_survives_a_restart() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let ana_token = registration_is_checked(&shop).await;
    let honey = shop.product("Honey", 750, 10).await;
    let wax = shop.product("Wax", 300, 5).await;
    let paid = orders_pay_or_put_everything_back(&shop, &ana_token, &honey, &wax).await;
    order_events_reach_the_inbox(&shop, &ana_token).await;
    let paid_id = paid["id"].as_str().expect("id");
    let bob_token = orders_are_their_owners_only(&shop, &ana_token, paid_id, &honey).await;
    summaries_name_what_is_missing(&shop, &ana_token, paid_id).await;
    the_overview_fans_out(&shop, &ana_token, paid_id).await;
    let payment_id = payments_are_idempotent_and_private(&shop, &ana_token, &bob_token).await;
    drop(shop);
    panal.stop();
    everything_is_kept_across_a_restart(data.path(), &ana_token, &honey, &payment_id).await;
}

/// Registration rules: bad fields named, one account per email, logins checked;
/// ana's token.
async fn registration_is_checked(shop: &Shop<'_>) -> String {
    let (s, bad) = shop
        .post(
            "/users",
            None,
            json!({"email": "nope", "name": "X", "password": "short"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        bad["fields"]["email"].is_string() && bad["fields"]["password"].is_string(),
        "{bad}"
    );
    let (ana, ana_token) = shop.user("ana@example.com").await;
    let (s, _) = shop
        .post(
            "/users",
            None,
            json!({"email": "ANA@example.com", "name": "A", "password": "12345678"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = shop
        .post(
            "/users/login",
            None,
            json!({"email": "ana@example.com", "password": "wrong pass"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, me) = shop.get("/users/me", Some(&ana_token)).await;
    assert_eq!((s, me["id"].as_str()), (StatusCode::OK, Some(ana.as_str())));
    let (s, by_id) = shop.get(&format!("/users/{ana}"), None).await;
    assert_eq!(
        (s, by_id["email"].as_str()),
        (StatusCode::OK, Some("ana@example.com"))
    );

    ana_token
}

/// A paid order, a declined card whose compensation puts every reserved unit back,
/// and orders refused for stock or an unknown product; the paid order.
async fn orders_pay_or_put_everything_back(
    shop: &Shop<'_>,
    ana_token: &str,
    honey: &str,
    wax: &str,
) -> Value {
    // Paid order.
    let items = json!([{"product_id": honey, "quantity": 2}, {"product_id": wax, "quantity": 1}]);
    let (s, paid) = shop.order(ana_token, items, "4242424242424242").await;
    assert_eq!(s, StatusCode::CREATED, "{paid}");
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["total_cents"], 1800);
    assert_eq!(paid["items"][0]["price_cents"], 750);
    assert!(paid["payment_id"].is_string());
    assert_eq!((shop.stock(honey).await, shop.stock(wax).await), (8, 4));

    // Declined card: compensation puts every reserved unit back.
    let items = json!([{"product_id": honey, "quantity": 3}, {"product_id": wax, "quantity": 2}]);
    let (s, declined) = shop.order(ana_token, items, "4000000000000002").await;
    assert_eq!(s, StatusCode::CREATED, "{declined}");
    assert_eq!(declined["status"], "payment_failed");
    assert_eq!((shop.stock(honey).await, shop.stock(wax).await), (8, 4));

    // Not enough stock or an unknown product: named, nothing reserved.
    let items = json!([{"product_id": honey, "quantity": 1}, {"product_id": wax, "quantity": 50}]);
    let (s, short) = shop.order(ana_token, items, "4242424242424242").await;
    assert_eq!(s, StatusCode::CONFLICT, "{short}");
    assert_eq!(short["product_id"], wax);
    assert_eq!(shop.stock(honey).await, 8);
    let items = json!([{"product_id": "0123456789abcdef0123456789abcdef", "quantity": 1}]);
    let (s, unknown) = shop.order(ana_token, items, "4242424242424242").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{unknown}");
    assert_eq!(unknown["product_id"], "0123456789abcdef0123456789abcdef");

    paid
}

/// The order events reach the notification service: ana's inbox, newest first (the
/// shipment's events are there too, see tests/shipping.rs).
async fn order_events_reach_the_inbox(shop: &Shop<'_>, ana_token: &str) {
    let inbox = panal_tests::eventually(std::time::Duration::from_secs(10), || async {
        let (s, inbox) = shop.get("/notifications", Some(ana_token)).await;
        let types: Vec<String> = inbox["items"]
            .as_array()?
            .iter()
            .filter_map(|e| e["type"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("orders."))
            .collect();
        (s == StatusCode::OK && types.len() >= 4).then_some(types)
    })
    .await;
    assert_eq!(
        inbox,
        Some(vec![
            "orders.payment_failed".to_string(),
            "orders.created".to_string(),
            "orders.paid".to_string(),
            "orders.created".to_string(),
        ])
    );
}

/// Orders are the owner's only; no token is 401. Bob's token.
async fn orders_are_their_owners_only(
    shop: &Shop<'_>,
    ana_token: &str,
    paid_id: &str,
    honey: &str,
) -> String {
    let (s, mine) = shop
        .get(&format!("/orders/{paid_id}"), Some(ana_token))
        .await;
    assert_eq!((s, mine["status"].as_str()), (StatusCode::OK, Some("paid")));
    let (_, bob_token) = shop.user("bob@example.com").await;
    let (s, _) = shop
        .get(&format!("/orders/{paid_id}"), Some(&bob_token))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = shop
        .get(&format!("/orders/{paid_id}/summary"), Some(&bob_token))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, bobs) = shop.get("/orders", Some(&bob_token)).await;
    assert_eq!(
        (s, bobs["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    // No Authorization header at all.
    let body =
        json!({"items": [{"product_id": honey, "quantity": 1}], "card_number": "4242424242424242"});
    let (s, _) = shop.post("/orders", None, body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    bob_token
}

/// The summary: order, product names and payment status in one document; with one
/// part down it says which, and the rest is still there.
async fn summaries_name_what_is_missing(shop: &Shop<'_>, ana_token: &str, paid_id: &str) {
    let (s, summary) = shop
        .get(&format!("/orders/{paid_id}/summary"), Some(ana_token))
        .await;
    assert_eq!(s, StatusCode::OK, "{summary}");
    assert_eq!(summary["order"]["id"], paid_id);
    assert_eq!(summary["items"][0]["name"], "Honey");
    assert_eq!(summary["items"][1]["name"], "Wax");
    assert_eq!(summary["payment"]["status"], "captured");
    assert_eq!(summary["missing"], json!([]));
    // One part down: the summary says which, the rest is still there.
    let (s, broken) = shop
        .get(
            &format!("/orders/{paid_id}/broken-summary"),
            Some(ana_token),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{broken}");
    assert_eq!(broken["items"][0]["name"], "Honey");
    assert_eq!(broken["payment"], Value::Null);
    assert_eq!(broken["missing"][0]["part"], "payment");
    assert_eq!(broken["complete"], false);
    let (s, _) = shop.get(&format!("/orders/{paid_id}/summary"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// The gateway's own fan-out: profile, orders and inbox in one document.
async fn the_overview_fans_out(shop: &Shop<'_>, ana_token: &str, paid_id: &str) {
    let (s, me) = shop.get("/me/overview", Some(ana_token)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["profile"]["email"], "ana@example.com", "{me}");
    assert!(
        me["orders"]["items"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["id"] == paid_id)),
        "{me}"
    );
    assert!(me["inbox"].is_object(), "{me}");
    assert_eq!(
        (me["complete"].clone(), me["missing"].clone()),
        (json!(true), json!([]))
    );
    let (s, _) = shop.get("/me/overview", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Idempotent payments: same key, same payment; another body, 422; payments are their
/// owner's. The payment's id.
async fn payments_are_idempotent_and_private(
    shop: &Shop<'_>,
    ana_token: &str,
    bob_token: &str,
) -> String {
    let panal = shop.panal;
    let pay = |key: &'static str, amount: i64| {
        shop.c
            .post(panal.at("/payments"))
            .bearer_auth(ana_token)
            .header("idempotency-key", key)
            .json(&json!({"order_id": "o-1", "amount_cents": amount, "card_number": "4242424242424242"}))
    };
    let (s, first) = shop.send(pay("key-1", 500)).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    assert_eq!(first["status"], "captured");
    assert!(!first.to_string().contains("4242424242424242"), "{first}");
    let (s, again) = shop.send(pay("key-1", 500)).await;
    assert!(s.is_success());
    assert_eq!(again["id"], first["id"]);
    let (s, _) = shop.send(pay("key-1", 999)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // A charge of nothing is refused, naming the field.
    let (s, zero) = shop.send(pay("key-zero", 0)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{zero}");
    assert_eq!(zero["fields"]["amount_cents"], "must be an integer >= 1");
    let payment_id = first["id"].as_str().expect("id").to_string();
    // Payments are their owner's: another user neither reads them nor shares their keys.
    let (s, _) = shop
        .get(&format!("/payments/{payment_id}"), Some(bob_token))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let bob_pay = shop
        .c
        .post(panal.at("/payments"))
        .bearer_auth(bob_token)
        .header("idempotency-key", "key-1")
        .json(&json!({"order_id": "o-1", "amount_cents": 500, "card_number": "4242424242424242"}));
    let (s, bobs) = shop.send(bob_pay).await;
    assert_eq!(s, StatusCode::CREATED, "{bobs}");
    assert_ne!(bobs["id"], first["id"]);
    payment_id
}

/// Everything is still there after a restart, old tokens still work, and card numbers
/// never reach storage whole. A payment whose record was lost after its key was claimed
/// is written again as soon as its key is looked up (as the order service's sweep does),
/// so the id an order holds always reads; a user whose record was lost after the email
/// was claimed logs in from the claim, which writes the record back.
async fn everything_is_kept_across_a_restart(
    data: &std::path::Path,
    ana_token: &str,
    honey: &str,
    payment_id: &str,
) {
    lose_payment_record(data, payment_id).await;
    lose_user_record(data, "ana@example.com").await;
    let panal = start(data);
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (s, by_key) = shop.get("/payments/by-key/key-1", Some(ana_token)).await;
    assert_eq!((s, &by_key["id"]), (StatusCode::OK, &json!(payment_id)));
    let (s, mine) = shop.get("/orders", Some(ana_token)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(shop.stock(honey).await, 8);
    let (s, p) = shop
        .get(&format!("/payments/{payment_id}"), Some(ana_token))
        .await;
    assert_eq!(
        (s, p["status"].as_str()),
        (StatusCode::OK, Some("captured"))
    );
    let (s, _) = shop
        .post(
            "/users/login",
            None,
            json!({"email": "ana@example.com", "password": "long enough"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, me) = shop.get("/users/me", Some(ana_token)).await;
    assert_eq!(
        (s, &me["email"]),
        (StatusCode::OK, &json!("ana@example.com"))
    );
    drop(shop);
    panal.stop();
    // Card numbers never reach storage whole.
    for entry in std::fs::read_dir(data.join("kv")).expect("kv dir") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        assert!(!bytes.windows(16).any(|w| w == b"4242424242424242"));
    }
}

#[tokio::test]
async fn orders_can_pay_over_request_reply() {
    let nats = panal_tests::NatsServer::start();
    let data = tempfile::tempdir().expect("tmp");
    let manifest = manifest_on(
        "messaging",
        false,
        &format!("backend = \"nats\"\nurl = \"{}\"", nats.url),
    );
    let panal = Panal::with(&manifest, data.path())
        .env(&[("PANAL_TEST_JWT_SECRET", SECRET)])
        .start();
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (_, token) = shop.user("msg@example.com").await;
    let jar = shop.product("Jar", 400, 3).await;
    let (s, paid) = shop
        .order(
            &token,
            json!([{"product_id": jar, "quantity": 2}]),
            "4242424242424242",
        )
        .await;
    assert_eq!(
        (s, paid["status"].as_str()),
        (StatusCode::CREATED, Some("paid")),
        "{paid}"
    );
    let (s, declined) = shop
        .order(
            &token,
            json!([{"product_id": jar, "quantity": 1}]),
            "4000000000000002",
        )
        .await;
    assert_eq!(
        (s, declined["status"].as_str()),
        (StatusCode::CREATED, Some("payment_failed")),
        "{declined}"
    );
    assert_eq!(shop.stock(&jar).await, 1);
    // The payment made over messaging is the caller's, as over HTTP.
    let pid = paid["payment_id"].as_str().expect("payment id");
    let (s, p) = shop.get(&format!("/payments/{pid}"), Some(&token)).await;
    assert_eq!(
        (s, p["status"].as_str()),
        (StatusCode::OK, Some("captured"))
    );
    drop(shop);
    panal.stop();
}

#[tokio::test]
async fn fifty_racing_orders_never_oversell_ten_units() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (_, token) = shop.user("racer@example.com").await;
    let last = shop.product("Last jars", 1200, 10).await;
    let orders = (0..50).map(|_| {
        shop.order(
            &token,
            json!([{"product_id": last, "quantity": 1}]),
            "4242424242424242",
        )
    });
    let results = join_all(orders).await;
    let ok = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let conflict = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!((ok, conflict), (10, 40), "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .all(|(_, o)| o["status"] == "paid"));
    let stock = shop.stock(&last).await;
    assert_eq!(stock, 0);
    let ordered = shop.paid_units(&token).await;
    assert_eq!(ordered + stock, 10);
    drop(shop);
    panal.stop();
}

#[tokio::test]
async fn forged_identities_and_foreign_tokens_are_refused() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (ana, ana_token) = shop.user("ana@example.com").await;
    let (bob, _) = shop.user("bob@example.com").await;

    // The client's own x-panal-user-id is stripped: the token decides who you are.
    let resp = shop
        .c
        .get(panal.at("/users/me"))
        .bearer_auth(&ana_token)
        .header("x-panal-user-id", &bob)
        .send()
        .await
        .expect("me");
    let me: Value = resp.json().await.expect("json");
    assert_eq!(me["id"], ana.as_str());
    let forged = shop
        .c
        .get(panal.at("/users/me"))
        .header("x-panal-user-id", &bob)
        .send()
        .await
        .expect("me");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let exp = 4_000_000_000i64;
    let other = sign_hs256(
        b"some-other-secret-entirely",
        &json!({"sub": ana, "exp": exp}),
    );
    let b64 = |v: Value| base64_url(v.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"sub": ana, "exp": exp}))
    );
    let expired = sign_hs256(SECRET.as_bytes(), &json!({"sub": ana, "exp": 1}));
    let good = sign_hs256(SECRET.as_bytes(), &json!({"sub": ana, "exp": exp}));
    for (what, token) in [
        ("other secret", &other),
        ("alg none", &none),
        ("expired", &expired),
    ] {
        let (s, body) = shop.get("/users/me", Some(token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let (s, _) = shop.get("/orders", Some(token)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}");
    }
    let (s, _) = shop.get("/users/me", Some(&good)).await;
    assert_eq!(s, StatusCode::OK);

    // Paths a component would read differently from the route table are refused, so
    // `/users//me` cannot slip past the protected `/users/me` route.
    // (Dot segments are covered by the gateway unit tests: HTTP clients resolve them.)
    for path in ["/users//me", "/users/%6De", "/users/me%2F"] {
        let resp = shop
            .c
            .get(panal.at(path))
            .header("x-panal-user-id", &bob)
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
    }

    // Reserve and release are not reachable through the gateway.
    let (s, _) = shop
        .post("/internal/reserve", None, json!({"items": []}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    drop(shop);
    panal.stop();
}
