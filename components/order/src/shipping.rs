//! The order follows its shipment: `paid` → `shipped` → `delivered`, from the shipping
//! service's events on `shipments.*` (a durable subscription, so none is lost).
//!
//! Event body (JSON, members this service does not use are ignored):
//! `{"event_id", "type", "shipment_id", "order_id", "user_id", "status", "carrier",
//! "tracking_number", "at"}` where `status` is the shipment's: `preparing`
//! (`shipments.created`), `shipped` (`shipments.dispatched`) or `delivered`
//! (`shipments.delivered`).
//!
//! Events may come again (at least once) and out of order (a redelivery after a later
//! one), so the order only ever moves forward: an event that would take it back, or
//! that it has already seen, changes nothing. The order's own events are not published
//! again for these steps: the shipment events are the record of them.

use panal_sdk::keyvalue::store;
use panal_sdk::kv::{self, Step, UpdateError};
use panal_sdk::messaging::types;
use serde::Deserialize;

use crate::model::{self, Order, Shipment};

/// A shipment event, as far as the order needs it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub shipment_id: String,
    pub order_id: String,
    pub user_id: String,
    pub status: String,
    pub carrier: String,
    pub tracking_number: String,
}

/// How far along a shipment status is; `None` for one this service does not know.
fn shipment_rank(status: &str) -> Option<u8> {
    match status {
        "preparing" => Some(0),
        "shipped" => Some(1),
        "delivered" => Some(2),
        _ => None,
    }
}

/// The order status a shipment rank means.
fn order_status(rank: u8) -> &'static str {
    match rank {
        0 => model::PAID,
        1 => model::SHIPPED,
        _ => model::DELIVERED,
    }
}

/// Parses a shipment event delivered on `topic`.
pub fn parse(topic: Option<&str>, data: &[u8]) -> Result<Event, String> {
    let event: Event =
        serde_json::from_slice(data).map_err(|e| format!("malformed shipment event: {e}"))?;
    if !event.kind.starts_with("shipments.") {
        return Err(format!("`{}` is not a shipment event", event.kind));
    }
    if topic.is_some_and(|t| t != event.kind) {
        return Err(format!(
            "shipment event of type `{}` arrived on subject `{}`",
            event.kind,
            topic.unwrap_or_default()
        ));
    }
    if shipment_rank(&event.status).is_none() {
        return Err(format!("unknown shipment status `{}`", event.status));
    }
    if !panal_sdk::is_id(&event.order_id) {
        return Err(format!("`{}` is not an order id", event.order_id));
    }
    Ok(event)
}

/// `order` after `event`: `Ok(None)` when it changes nothing (seen, or behind), `Err`
/// when the event cannot apply (another user's order, one not paid).
pub fn follow(order: &Order, event: &Event) -> Result<Option<Order>, String> {
    if order.user_id != event.user_id {
        return Err(format!(
            "shipment {} names user {:?} but order {} is another user's",
            event.shipment_id, event.user_id, order.id
        ));
    }
    let have = match order.status.as_str() {
        model::PAID => 0,
        model::SHIPPED => 1,
        model::DELIVERED => 2,
        other => {
            // `pending` settles later (the delivery is retried); `payment_failed` never.
            return Err(format!(
                "order {} is {other}: it cannot be shipped",
                order.id
            ));
        }
    };
    let want = shipment_rank(&event.status).unwrap_or(0);
    let known = order
        .shipment
        .as_ref()
        .and_then(|s| shipment_rank(&s.status));
    if known.is_some_and(|k| k >= want) && have >= want {
        return Ok(None);
    }
    let mut next = order.clone();
    next.status = order_status(have.max(want)).to_string();
    if known.is_none_or(|k| k < want) {
        next.shipment = Some(Shipment {
            id: event.shipment_id.clone(),
            status: event.status.clone(),
            carrier: event.carrier.clone(),
            tracking_number: event.tracking_number.clone(),
        });
    }
    Ok(Some(next))
}

/// Handles one delivery: the order record moved forward by compare-and-swap.
pub fn handle(message: &types::Message) -> Result<(), types::Error> {
    let topic = message.topic();
    let event = parse(topic.as_deref(), &message.data()).map_err(types::Error::Other)?;
    let bucket = store::open(crate::BUCKET).map_err(|e| types::Error::Other(format!("{e:?}")))?;
    let key = model::order_key(&event.order_id);
    kv::update(&bucket, &key, |current| {
        let Some(bytes) = current else {
            return Err(format!("order {} not found", event.order_id));
        };
        let order = Order::from_bytes(bytes).map_err(|e| format!("{:?}", e.body))?;
        Ok(match follow(&order, &event)? {
            Some(next) => Step::Write(serde_json::to_vec(&next).map_err(|e| e.to_string())?, ()),
            None => Step::Keep(()),
        })
    })
    .map_err(|e| {
        types::Error::Other(match e {
            UpdateError::Abort(why) => why,
            UpdateError::Store(e) => format!("orders storage: {e:?}"),
            UpdateError::Contended => format!("order {} too contended", event.order_id),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OID: &str = "0123456789abcdef0123456789abcdef";

    fn order(status: &str) -> Order {
        Order {
            id: OID.into(),
            user_id: "u1".into(),
            status: status.into(),
            total_cents: 600,
            items: Vec::new(),
            payment_id: Some("pay".into()),
            created_at: "2024-01-01T00:00:00Z".into(),
            payment_unknown: false,
            reservation: None,
            shipment: None,
            refusal: None,
        }
    }

    fn event(kind: &str, status: &str) -> Event {
        let body = json!({
            "event_id": "e", "type": kind, "shipment_id": "s1", "order_id": OID,
            "user_id": "u1", "status": status, "carrier": "Panal Post",
            "tracking_number": "PNLX", "at": "2024-01-02T00:00:00Z",
        });
        parse(Some(kind), body.to_string().as_bytes()).expect("valid")
    }

    #[test]
    fn paid_shipped_delivered() {
        let created = follow(&order("paid"), &event("shipments.created", "preparing"))
            .expect("ok")
            .expect("changed");
        assert_eq!(created.status, "paid");
        assert_eq!(
            created
                .shipment
                .as_ref()
                .map(|s| s.tracking_number.as_str()),
            Some("PNLX")
        );
        let shipped = follow(&created, &event("shipments.dispatched", "shipped"))
            .expect("ok")
            .expect("changed");
        assert_eq!(shipped.status, "shipped");
        assert_eq!(shipped.view()["shipment"]["status"], "shipped");
        let delivered = follow(&shipped, &event("shipments.delivered", "delivered"))
            .expect("ok")
            .expect("changed");
        assert_eq!(delivered.status, "delivered");
        // Again, or an older event late: nothing changes.
        for (kind, status) in [
            ("shipments.delivered", "delivered"),
            ("shipments.dispatched", "shipped"),
            ("shipments.created", "preparing"),
        ] {
            assert_eq!(follow(&delivered, &event(kind, status)), Ok(None));
        }
        // Straight to delivered (the dispatch event is still on its way).
        let jumped = follow(&order("paid"), &event("shipments.delivered", "delivered"))
            .expect("ok")
            .expect("changed");
        assert_eq!(jumped.status, "delivered");
    }

    #[test]
    fn refused() {
        let mut other = order("paid");
        other.user_id = "u2".into();
        assert!(follow(&other, &event("shipments.created", "preparing")).is_err());
        for status in ["pending", "payment_failed"] {
            let e =
                follow(&order(status), &event("shipments.created", "preparing")).expect_err(status);
            assert!(e.contains(status), "{e}");
        }
        let bad = |body: serde_json::Value, topic| parse(topic, body.to_string().as_bytes());
        let mut body = json!({
            "type": "shipments.created", "shipment_id": "s1", "order_id": OID,
            "user_id": "u1", "status": "preparing", "carrier": "c", "tracking_number": "t",
        });
        assert!(bad(body.clone(), Some("shipments.created")).is_ok());
        assert!(bad(body.clone(), Some("shipments.delivered")).is_err());
        body["status"] = json!("lost");
        assert!(bad(body.clone(), None).is_err());
        body["status"] = json!("preparing");
        body["order_id"] = json!("../x");
        assert!(bad(body.clone(), None).is_err());
        body["order_id"] = json!(OID);
        body["type"] = json!("orders.paid");
        assert!(bad(body, None).is_err());
        assert!(parse(None, b"{").is_err());
    }
}
