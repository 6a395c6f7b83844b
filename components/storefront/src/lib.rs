//! `storefront`: composite views of the shop, built from the other services' answers.
//!
//! - `GET /orders/{id}/summary` (any last segment: the manifest picks the route) → the
//!   caller's order, each item with its product's `name`, and the payment's `id` and
//!   `status`, and its shipment once paid: `{order, items, payment, shipment, complete,
//!   missing}`. The order comes first (as the caller: the host passes the verified user
//!   on with every in-process call); its products, its payment and its shipment are then
//!   fetched concurrently. A part that cannot be had is `null` (its item's `name`,
//!   `payment` or `shipment`) and listed in `missing` with why, and `complete` is false;
//!   a non-200 answer of the order is passed through as it is, since there is nothing
//!   to summarise.
//!
//! Which services it asks is config: `order`, `product`, `payment`, `shipping`
//! (component names, defaulting to those), each of which must be in its `outbound`
//! grant. Calls get the host's deadline, retries and circuit breaker like any
//! in-process call.

mod merge;

use panal_sdk::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use panal_sdk::{client, ApiError, ApiResult};
use serde_json::{json, Value};

struct Storefront;

panal_sdk::wasi::http::proxy::export!(Storefront);

impl panal_sdk::wasi::exports::http::incoming_handler::Guest for Storefront {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        panal_sdk::reply(out, route(&request));
    }
}

fn route(req: &IncomingRequest) -> ApiResult {
    let (path, _) = panal_sdk::path_and_query(req);
    let segments = panal_sdk::path_segments(&path);
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (req.method(), segments.as_slice()) {
        (Method::Get, ["orders", id, _view]) => summary(id),
        (_, ["orders", _, _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::no_route()),
    }
}

/// The component that serves `role`: config `role`, else a component named `role`.
fn service(role: &str) -> String {
    panal_sdk::config::store::get(role)
        .ok()
        .flatten()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| role.to_string())
}

fn summary(id: &str) -> ApiResult {
    // What the order service answers for anything that is not an id, without asking it
    // (and without building a URL from whatever bytes the path held).
    if !panal_sdk::is_id(id) {
        return Err(ApiError::not_found("order not found"));
    }
    let order_url = format!("http://{}/orders/{id}", service("order"));
    let order = match client::get(&order_url) {
        Ok((200, body)) => serde_json::from_slice::<Value>(&body)
            .map_err(|_| part_unavailable("order answered 200 without JSON".into()))?,
        // No order (or not the caller's): nothing to summarise; say what order said.
        Ok((status, body)) => {
            let doc = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return Ok((status, doc));
        }
        Err(why) => return Err(part_unavailable(why)),
    };
    let wanted = merge::wanted(&order);
    let product = service("product");
    let mut urls: Vec<String> = wanted
        .product_ids
        .iter()
        .map(|pid| format!("http://{product}/products/{pid}"))
        .collect();
    if let Some(pid) = &wanted.payment_id {
        urls.push(format!("http://{}/payments/{pid}", service("payment")));
    }
    if let Some(oid) = &wanted.shipment_of {
        urls.push(format!(
            "http://{}/shipments?order_id={oid}",
            service("shipping")
        ));
    }
    let answers = client::get_all(&urls);
    Ok((200, merge::summary(order, &wanted, answers)))
}

fn part_unavailable(reason: String) -> ApiError {
    ApiError::new(502, "order part unavailable")
        .with("part", "order")
        .with("reason", json!(reason))
}
