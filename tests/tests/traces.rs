//! OpenTelemetry traces end to end: the shop with `[traces] otlp` naming a receiver in
//! this test that decodes the OTLP/HTTP protobuf the host exports. One order, placed
//! with the client's own `traceparent`, is one trace: the gateway, order, its calls to
//! product and payment and theirs, their keyvalue operations, the events published and
//! the notification, shipping and order handlers they start, shipping's own event
//! included. Components' log lines carry the trace id.

use std::collections::BTreeMap;
use std::time::Duration;

use panal_tests::otlp::{Receiver, Span};
use panal_tests::shop::{manifest, Shop, SECRET};
use panal_tests::{client, eventually, Panal};
use reqwest::StatusCode;
use serde_json::json;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// The spans named `name` among `spans`.
fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The one span named `name` whose parent is `parent`; panics listing the trace.
fn child<'a>(spans: &'a [Span], name: &str, parent: &Span) -> &'a Span {
    named(spans, name)
        .into_iter()
        .find(|s| s.parent == parent.span_id)
        .unwrap_or_else(|| panic!("no `{name}` under `{}`: {}", parent.name, outline(spans)))
}

/// The trace as `name <- parent name` lines, for failure messages.
fn outline(spans: &[Span]) -> String {
    let names: BTreeMap<&str, &str> = spans
        .iter()
        .map(|s| (s.span_id.as_str(), s.name.as_str()))
        .collect();
    let lines: Vec<String> = spans
        .iter()
        .map(|s| {
            let parent = names.get(s.parent.as_str()).copied().unwrap_or(&s.parent);
            format!("{} <- {parent}", s.name)
        })
        .collect();
    lines.join("\n")
}

#[tokio::test]
async fn one_order_is_one_trace_across_the_shop() {
    let receiver = Receiver::start().await;
    let manifest = format!(
        "{}\n[traces]\notlp = \"{}\"\nservice_name = \"shop-test\"\n",
        manifest(),
        receiver.url
    );
    let data = tempfile::tempdir().expect("tmp");
    let panal = Panal::with(&manifest, data.path())
        .env(&[("PANAL_TEST_JWT_SECRET", SECRET)])
        .start();
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (_, token) = shop.user("traced@example.com").await;
    let jar = shop.product("Jar", 250, 5).await;

    let resp = shop
        .c
        .post(panal.at("/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"items": [{"product_id": jar, "quantity": 1}], "card_number": "4242424242424242"}))
        .send()
        .await
        .expect("order");
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Complete once shipping's event has reached both of its handlers.
    let complete = |spans: &[Span]| {
        [
            "process shipments.created order",
            "process shipments.created notification",
        ]
        .iter()
        .all(|name| !named(spans, name).is_empty())
    };
    let spans = eventually(Duration::from_secs(30), || async {
        let spans = receiver.trace(TRACE);
        complete(&spans).then_some(spans)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the trace is incomplete:\n{}",
            outline(&receiver.trace(TRACE))
        )
    });
    let bad = receiver.bad.lock().expect("bad").clone();
    assert!(bad.is_empty(), "undecodable exports: {bad:?}");

    // The gateway's span is the child of the client's, named by the route.
    let gateway = named(&spans, "POST /orders");
    assert_eq!(gateway.len(), 1, "{}", outline(&spans));
    let gateway = gateway[0];
    assert_eq!(
        (gateway.kind, gateway.parent.as_str()),
        (SERVER, CLIENT_SPAN)
    );
    assert_eq!(gateway.attrs["http.route"], "/orders");
    assert_eq!(gateway.attrs["http.response.status_code"], "201");
    assert_eq!(gateway.service, "shop-test");

    // order, and its calls to product and payment, each answered by its component.
    let order = child(&spans, "order", gateway);
    assert_eq!(order.kind, SERVER);
    let call_product = child(&spans, "call product", order);
    assert_eq!(call_product.kind, CLIENT);
    let product = child(&spans, "product", call_product);
    let call_payment = child(&spans, "call payment", order);
    let payment = child(&spans, "payment", call_payment);
    // Their storage.
    let kv_under = |parent: &Span, bucket: &str| {
        spans.iter().any(|s| {
            s.parent == parent.span_id
                && s.name.starts_with("kv.")
                && s.attrs.get("db.namespace").map(String::as_str) == Some(bucket)
        })
    };
    assert!(kv_under(order, "orders"), "{}", outline(&spans));
    assert!(kv_under(product, "products"), "{}", outline(&spans));
    assert!(kv_under(payment, "payments"), "{}", outline(&spans));

    // The events: published under order, handled under the publish, on and on.
    let paid = child(&spans, "publish orders.paid", order);
    assert_eq!(paid.kind, PRODUCER);
    let shipping = child(&spans, "process orders.paid shipping", paid);
    assert_eq!(shipping.kind, CONSUMER);
    child(&spans, "process orders.paid notification", paid);
    assert!(kv_under(shipping, "shipments"), "{}", outline(&spans));
    let created = child(&spans, "publish shipments.created", shipping);
    child(&spans, "process shipments.created order", created);
    child(&spans, "process shipments.created notification", created);

    // One trace: every span hangs from another of it, up to the client's.
    let ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for s in &spans {
        assert!(
            s.parent == CLIENT_SPAN || ids.contains(&s.parent.as_str()),
            "`{}` is cut off:\n{}",
            s.name,
            outline(&spans)
        );
    }

    // A request without a traceparent starts a trace of its own.
    let (s, _) = shop.get(&format!("/products/{jar}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let root = eventually(Duration::from_secs(30), || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "GET /products" && s.parent.is_empty())
    })
    .await
    .expect("a root span for GET /products");
    assert_ne!(root.trace_id, TRACE);

    // Component log lines carry the trace id (shipping logs each shipment it makes).
    drop(shop);
    let log = panal.stop();
    let line = log
        .lines()
        .find(|l| l.contains("shipping: shipment"))
        .unwrap_or_else(|| panic!("no shipping line in the log:\n{log}"));
    assert!(line.contains(&format!("trace_id={TRACE}")), "{line}");
}
