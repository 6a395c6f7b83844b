//! The pure part of the summary: what to fetch for an order, and how the answers merge.
//! Kept free of host calls so it is tested natively.

use serde_json::{json, Value};

/// What an order needs fetched.
#[derive(Debug, PartialEq, Eq)]
pub struct Wanted {
    /// One per item, in item order.
    pub product_ids: Vec<String>,
    /// The payment, when the order has one.
    pub payment_id: Option<String>,
    /// The shipment, once the order is paid: the shipping service knows it by order id.
    pub shipment_of: Option<String>,
}

/// The order statuses that have (or are about to have) a shipment.
const SHIPPABLE: [&str; 3] = ["paid", "shipped", "delivered"];

/// The products of `order`'s items and its payment.
pub fn wanted(order: &Value) -> Wanted {
    let product_ids = order["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["product_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let shippable = order["status"]
        .as_str()
        .is_some_and(|s| SHIPPABLE.contains(&s));
    Wanted {
        product_ids,
        payment_id: order["payment_id"].as_str().map(str::to_string),
        shipment_of: order["id"]
            .as_str()
            .filter(|_| shippable)
            .map(str::to_string),
    }
}

use panal_sdk::client::Answer;

/// `{order, items, payment, shipment, complete, missing}` from the order and the answers
/// to [`wanted`] (products in order, then the payment when there is one, then the
/// shipment list when the order is paid: its first entry, null while there is none).
pub fn summary(mut order: Value, wanted: &Wanted, answers: Vec<Answer>) -> Value {
    let items: Vec<Value> = order["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter(|x| x["product_id"].is_string())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if let Some(o) = order.as_object_mut() {
        o.remove("items");
    }
    let mut answers = answers.into_iter();
    let mut missing = Vec::new();
    let mut merged = Vec::new();
    for (item, pid) in items.into_iter().zip(&wanted.product_ids) {
        let mut item = item;
        item["name"] = match json_ok(answers.next()) {
            Ok(doc) => doc["name"].clone(),
            Err(reason) => {
                missing.push(json!({ "part": "product", "id": pid, "reason": reason }));
                Value::Null
            }
        };
        merged.push(item);
    }
    let payment = match &wanted.payment_id {
        Some(pid) => match json_ok(answers.next()) {
            Ok(doc) => json!({ "id": doc["id"], "status": doc["status"] }),
            Err(reason) => {
                missing.push(json!({ "part": "payment", "id": pid, "reason": reason }));
                Value::Null
            }
        },
        None => Value::Null,
    };
    let shipment = match &wanted.shipment_of {
        Some(oid) => match json_ok(answers.next()) {
            Ok(doc) => doc["items"][0].clone(),
            Err(reason) => {
                missing.push(json!({ "part": "shipment", "id": oid, "reason": reason }));
                Value::Null
            }
        },
        None => Value::Null,
    };
    json!({
        "order": order,
        "items": merged,
        "payment": payment,
        "shipment": shipment,
        "complete": missing.is_empty(),
        "missing": missing,
    })
}

/// A 200 JSON answer, or why it is not one (`404 no such product`, `status 503`, ...).
fn json_ok(answer: Option<Answer>) -> Result<Value, String> {
    let (status, body) = answer.ok_or("no answer")??;
    let doc: Value =
        serde_json::from_slice(&body).map_err(|_| format!("answered {status} without JSON"))?;
    if status == 200 {
        return Ok(doc);
    }
    Err(match doc["error"].as_str() {
        Some(e) => format!("{status} {e}"),
        None => format!("status {status}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Value {
        json!({
            "id": "o1",
            "status": "paid",
            "payment_id": "p1",
            "items": [
                { "product_id": "a", "quantity": 1 },
                { "product_id": "b", "quantity": 2 },
            ],
        })
    }

    fn ok(doc: Value) -> Answer {
        Ok((200, doc.to_string().into_bytes()))
    }

    #[test]
    fn everything_answers() {
        let w = wanted(&order());
        assert_eq!(w.product_ids, ["a", "b"]);
        let s = summary(
            order(),
            &w,
            vec![
                ok(json!({"name": "Honey"})),
                ok(json!({"name": "Wax"})),
                ok(json!({"id": "p1", "status": "captured", "card": "x"})),
                ok(json!({"items": [{"id": "s1", "status": "shipped"}]})),
            ],
        );
        assert_eq!(w.shipment_of.as_deref(), Some("o1"));
        assert_eq!(s["shipment"], json!({"id": "s1", "status": "shipped"}));
        assert_eq!(s["order"]["id"], "o1");
        assert!(s["order"].get("items").is_none());
        assert_eq!(s["items"][1]["name"], "Wax");
        assert_eq!(s["items"][1]["quantity"], 2);
        assert_eq!(s["payment"], json!({"id": "p1", "status": "captured"}));
        assert_eq!(
            (s["complete"].clone(), s["missing"].clone()),
            (json!(true), json!([]))
        );
    }

    #[test]
    fn a_missing_part_is_named_and_the_rest_stays() {
        let w = wanted(&order());
        let s = summary(
            order(),
            &w,
            vec![
                ok(json!({"name": "Honey"})),
                Err("ErrorCode::ConnectionRefused".into()),
                Ok((404, br#"{"error":"no such payment"}"#.to_vec())),
                Ok((503, br#"{"error":"down"}"#.to_vec())),
            ],
        );
        assert_eq!(s["shipment"], Value::Null);
        assert_eq!(s["missing"][2]["part"], "shipment");
        assert_eq!(s["missing"][2]["id"], "o1");
        assert_eq!(s["items"][0]["name"], "Honey");
        assert_eq!(s["items"][1]["name"], Value::Null);
        assert_eq!(s["payment"], Value::Null);
        assert_eq!(s["complete"], false);
        assert_eq!(s["missing"][0]["id"], "b");
        assert_eq!(s["missing"][1]["part"], "payment");
        assert_eq!(s["missing"][1]["reason"], "404 no such payment");
    }

    #[test]
    fn an_order_without_payment_asks_for_none() {
        let w = wanted(&json!({"items": []}));
        assert_eq!(w.payment_id, None);
        assert_eq!(w.shipment_of, None);
        let s = summary(json!({"items": []}), &w, vec![]);
        assert_eq!(s["payment"], Value::Null);
        assert_eq!(s["shipment"], Value::Null);
        // Paid, but no shipment yet: an empty list is no shipment, and nothing missing.
        let paid = json!({"id": "o2", "status": "paid", "items": []});
        let w = wanted(&paid);
        let s = summary(paid, &w, vec![ok(json!({"items": []}))]);
        assert_eq!(
            (s["shipment"].clone(), s["complete"].clone()),
            (Value::Null, json!(true))
        );
        assert_eq!(s["complete"], true);
    }
}
