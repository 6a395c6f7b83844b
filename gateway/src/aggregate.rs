//! Composite routes: the gateway answers one request by calling several components
//! concurrently and merging their JSON. A part that fails is named in `missing` instead
//! of failing the whole answer; only the root part (without which there is nothing to
//! summarise) passes its error through.
//!
//! One kind exists so far, the order summary: the order, each item with its product's
//! name, and the payment's status.

use futures::future::join_all;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

use crate::auth::USER_ID_HEADER;
use crate::{empty, json_error, json_response, request_id, Backend, Body};

/// Largest part body the gateway reads; larger parts count as missing.
const MAX_PART: usize = 1 << 20;

/// What an aggregate fans out to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `GET .../{id}/...` → order `/orders/{id}`, then concurrently product
    /// `/products/{product_id}` per item and payment `/payments/{payment_id}`.
    OrderSummary {
        /// The order component.
        order: String,
        /// The product component.
        product: String,
        /// The payment component.
        payment: String,
    },
}

/// A composite GET route with one `{id}` in its path.
#[derive(Debug, Clone)]
pub struct Aggregate {
    pattern: String,
    before: String,
    after: String,
    protected: bool,
    kind: Kind,
}

impl Aggregate {
    /// An aggregate at `pattern` (e.g. `/orders/{id}/summary`, exactly one `{id}`).
    pub fn new(pattern: &str, protected: bool, kind: Kind) -> Result<Self, String> {
        let (before, after) = pattern
            .split_once("{id}")
            .ok_or_else(|| format!("path `{pattern}` must contain `{{id}}` once"))?;
        if !before.starts_with('/') || !before.ends_with('/') || after.contains("{id}") {
            return Err(format!(
                "path `{pattern}` must start with `/` and have `{{id}}` as one whole segment, once"
            ));
        }
        if !(after.is_empty() || after.starts_with('/')) || after.ends_with('/') {
            return Err(format!(
                "path `{pattern}` must have `{{id}}` as one whole segment"
            ));
        }
        Ok(Self {
            pattern: pattern.to_string(),
            before: before.to_string(),
            after: after.to_string(),
            protected,
            kind,
        })
    }

    /// The path pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether a bearer token is required.
    pub fn protected(&self) -> bool {
        self.protected
    }

    /// The `{id}` of a matching request.
    pub fn matches(&self, method: &Method, path: &str) -> Option<String> {
        if method != Method::GET {
            return None;
        }
        let id = path.strip_prefix(&self.before)?.strip_suffix(&self.after)?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_string())
    }

    /// Fan out and merge.
    pub async fn answer(
        &self,
        backend: &dyn Backend,
        id: &str,
        user: Option<&str>,
        request_id: Option<HeaderValue>,
    ) -> http::Response<Body> {
        let Kind::OrderSummary {
            order,
            product,
            payment,
        } = &self.kind;
        let ctx = Ctx {
            backend,
            user,
            request_id: request_id.as_ref(),
        };
        let order_doc = match ctx.get(order, format!("/orders/{id}")).await {
            Ok((StatusCode::OK, doc)) => doc,
            // No order (or not the caller's): nothing to summarise; say what order said.
            Ok((status, doc)) => return json_response(status, &doc),
            Err(why) => {
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    "order part unavailable",
                    json!({ "part": "order", "reason": why }),
                )
            }
        };
        let items: Vec<Value> = order_doc["items"].as_array().cloned().unwrap_or_default();
        let product_ids: Vec<String> = items
            .iter()
            .filter_map(|i| i["product_id"].as_str().map(str::to_string))
            .collect();
        let payment_id = order_doc["payment_id"].as_str().map(str::to_string);
        let products = join_all(
            product_ids
                .iter()
                .map(|pid| ctx.get(product, format!("/products/{pid}"))),
        );
        let pay = async {
            match &payment_id {
                Some(pid) => Some(ctx.get(payment, format!("/payments/{pid}")).await),
                None => None,
            }
        };
        let (products, pay) = futures::join!(products, pay);

        let mut missing = Vec::new();
        let mut merged_items = Vec::new();
        for (item, (pid, got)) in items.iter().zip(product_ids.iter().zip(products)) {
            let mut item = item.clone();
            match got {
                Ok((StatusCode::OK, doc)) => item["name"] = doc["name"].clone(),
                other => {
                    item["name"] = Value::Null;
                    missing.push(json!({ "part": "product", "id": pid, "reason": reason(other) }));
                }
            }
            merged_items.push(item);
        }
        let payment_doc = match (payment_id, pay) {
            (Some(_), Some(Ok((StatusCode::OK, doc)))) => {
                json!({ "id": doc["id"], "status": doc["status"] })
            }
            (Some(pid), Some(other)) => {
                missing.push(json!({ "part": "payment", "id": pid, "reason": reason(other) }));
                Value::Null
            }
            _ => Value::Null,
        };
        let mut order_summary = order_doc.clone();
        if let Some(o) = order_summary.as_object_mut() {
            o.remove("items");
        }
        json_response(
            StatusCode::OK,
            &json!({
                "order": order_summary,
                "items": merged_items,
                "payment": payment_doc,
                "complete": missing.is_empty(),
                "missing": missing,
            }),
        )
    }
}

fn reason(got: Result<(StatusCode, Value), String>) -> String {
    match got {
        Ok((status, doc)) => match doc["error"].as_str() {
            Some(e) => format!("{} {e}", status.as_u16()),
            None => format!("status {}", status.as_u16()),
        },
        Err(why) => why,
    }
}

/// The whole body, or an error past [`MAX_PART`] bytes.
async fn read_capped(mut body: Body, component: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the {component} answer failed: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > MAX_PART {
                return Err(format!("the {component} answer is over {MAX_PART} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    backend: &'a dyn Backend,
    user: Option<&'a str>,
    request_id: Option<&'a HeaderValue>,
}

impl Ctx<'_> {
    /// GET `path` from `component`, as JSON.
    async fn get(&self, component: &str, path: String) -> Result<(StatusCode, Value), String> {
        let mut req = http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(http::header::HOST, component)
            .header(http::header::ACCEPT, "application/json");
        if let Some(user) = self.user {
            req = req.header(USER_ID_HEADER, user);
        }
        if let Some(id) = self.request_id {
            req = req.header(request_id::HEADER, id);
        }
        let req = req.body(empty()).map_err(|e| e.to_string())?;
        let resp = self.backend.handle(component, req).await;
        let status = resp.status();
        let body = read_capped(resp.into_body(), component).await?;
        let doc = serde_json::from_slice(&body)
            .map_err(|_| format!("{component} answered {} without JSON", status.as_u16()))?;
        Ok((status, doc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Aggregate {
        Aggregate::new(
            "/orders/{id}/summary",
            true,
            Kind::OrderSummary {
                order: "order".into(),
                product: "product".into(),
                payment: "payment".into(),
            },
        )
        .expect("valid")
    }

    #[test]
    fn matches_only_get_with_one_whole_segment() {
        let a = summary();
        assert_eq!(
            a.matches(&Method::GET, "/orders/abc/summary"),
            Some("abc".into())
        );
        assert_eq!(a.matches(&Method::POST, "/orders/abc/summary"), None);
        assert_eq!(a.matches(&Method::GET, "/orders//summary"), None);
        assert_eq!(a.matches(&Method::GET, "/orders/a/b/summary"), None);
        assert_eq!(a.matches(&Method::GET, "/orders/abc"), None);
    }

    #[test]
    fn patterns_need_one_whole_id_segment() {
        let kind = summary().kind;
        for bad in [
            "/orders/summary",
            "/orders/x{id}/s",
            "orders/{id}",
            "/o/{id}/{id}",
            "/o/{id}x",
        ] {
            assert!(Aggregate::new(bad, false, kind.clone()).is_err(), "{bad}");
        }
        assert!(Aggregate::new("/o/{id}", false, kind).is_ok());
    }
}
