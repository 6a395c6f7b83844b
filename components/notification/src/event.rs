//! The shop's events as their services publish them (pure, unit-tested natively).
//!
//! - Order events, `orders.<token>`: `{"event_id", "type", "order_id", "user_id",
//!   "status", "total_cents", "items", "at"}`.
//! - Shipment events, `shipments.<token>`: `{"event_id", "type", "shipment_id",
//!   "order_id", "user_id", "status", "carrier", "tracking_number", "at"}`.
//!
//! Members this service does not use (`items`, anything added later) are ignored; the
//! ones it uses must be present and sane, since `event_id` and `user_id` become storage
//! keys.

use serde::Deserialize;

/// Order events: `orders.<one token>`.
pub const ORDERS: &str = "orders.";
/// Shipment events: `shipments.<one token>`.
pub const SHIPMENTS: &str = "shipments.";

/// The members of an event this service uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub user_id: String,
    pub status: String,
    /// Order events only.
    #[serde(default)]
    pub total_cents: Option<u64>,
    /// Shipment events only: the shipment and how it travels (read from the wire form).
    #[serde(skip)]
    pub shipment: Option<Shipment>,
    pub at: String,
}

/// What a shipment event says of its shipment.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Shipment {
    pub shipment_id: String,
    pub carrier: String,
    pub tracking_number: String,
}

/// The wire form: shipment members sit beside the others.
#[derive(Deserialize)]
struct Wire {
    #[serde(flatten)]
    event: Event,
    shipment_id: Option<String>,
    carrier: Option<String>,
    tracking_number: Option<String>,
}

/// Parses and checks the event `data` delivered on `topic`. The `type` must be an
/// `orders.<token>` or `shipments.<token>` subject and, when the host names the topic,
/// equal it: a publisher granted only one subject cannot pass off an event as another
/// type.
pub fn parse(topic: Option<&str>, data: &[u8]) -> Result<Event, String> {
    let wire: Wire = serde_json::from_slice(data).map_err(|e| format!("malformed event: {e}"))?;
    let mut event = wire.event;
    let problem = |what: &str| Err(format!("malformed event: {what}"));
    if !is_token(&event.event_id, 128) {
        return problem("event_id must be 1 to 128 letters, digits, `-` or `_`");
    }
    let shipment_event = is_subject(&event.kind, SHIPMENTS);
    if !shipment_event && !is_subject(&event.kind, ORDERS) {
        return problem("type must be a subject `orders.<token>` or `shipments.<token>`");
    }
    if let Some(topic) = topic {
        if topic != event.kind {
            return Err(format!(
                "order event of type `{}` arrived on subject `{topic}`",
                event.kind
            ));
        }
    }
    if !is_text(&event.order_id, 128) {
        return problem("order_id must be 1 to 128 characters, no control characters");
    }
    if !is_text(&event.user_id, 256) {
        return problem("user_id must be 1 to 256 characters, no control characters");
    }
    if !is_text(&event.status, 64) {
        return problem("status must be 1 to 64 characters, no control characters");
    }
    if !looks_rfc3339(&event.at) {
        return problem("at must be an RFC 3339 timestamp");
    }
    if !shipment_event {
        if event.total_cents.is_none() {
            return problem("an order event needs total_cents");
        }
        return Ok(event);
    }
    let (Some(shipment_id), Some(carrier), Some(tracking_number)) =
        (wire.shipment_id, wire.carrier, wire.tracking_number)
    else {
        return problem("a shipment event needs shipment_id, carrier and tracking_number");
    };
    if !is_token(&shipment_id, 128) {
        return problem("shipment_id must be 1 to 128 letters, digits, `-` or `_`");
    }
    if !is_text(&carrier, 128) || !is_text(&tracking_number, 128) {
        return problem("carrier and tracking_number must be 1 to 128 characters");
    }
    event.shipment = Some(Shipment {
        shipment_id,
        carrier,
        tracking_number,
    });
    Ok(event)
}

/// `<prefix><token>`: one non-empty token, no wildcard, no whitespace or control char.
pub fn is_subject(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|token| {
        !token.is_empty()
            && token.len() <= 64
            && !token
                .chars()
                .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control())
    })
}

fn is_token(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_text(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && !s.chars().any(char::is_control)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, checked by shape only.
pub fn looks_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || b.len() > 40 {
        return false;
    }
    let date_time = digits(0, 4)
        && b[4] == b'-'
        && digits(5, 7)
        && b[7] == b'-'
        && digits(8, 10)
        && matches!(b[10], b'T' | b't')
        && digits(11, 13)
        && b[13] == b':'
        && digits(14, 16)
        && b[16] == b':'
        && digits(17, 19);
    if !date_time {
        return false;
    }
    // Bytes 0..19 are ASCII, so 19 is a char boundary.
    let mut rest = &s[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let after = fraction.trim_start_matches(|c: char| c.is_ascii_digit());
        if after.len() == fraction.len() {
            return false;
        }
        rest = after;
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn body() -> Value {
        json!({
            "event_id": "0123456789abcdef0123456789abcdef",
            "type": "orders.paid",
            "order_id": "o1",
            "user_id": "u1",
            "status": "paid",
            "total_cents": 600,
            "items": [{"product_id": "p1", "quantity": 2, "price_cents": 300}],
            "at": "2024-01-01T00:00:05Z",
        })
    }

    fn parse_value(topic: Option<&str>, v: &Value) -> Result<Event, String> {
        parse(topic, &serde_json::to_vec(v).expect("json"))
    }

    #[test]
    fn valid_event() {
        let e = parse_value(Some("orders.paid"), &body()).expect("valid");
        assert_eq!(
            e,
            Event {
                event_id: "0123456789abcdef0123456789abcdef".into(),
                kind: "orders.paid".into(),
                order_id: "o1".into(),
                user_id: "u1".into(),
                status: "paid".into(),
                total_cents: Some(600),
                shipment: None,
                at: "2024-01-01T00:00:05Z".into(),
            }
        );
        // No topic from the host: the type alone decides. Unknown members are ignored.
        let mut v = body();
        v["extra"] = json!({"x": 1});
        v.as_object_mut().expect("object").remove("items");
        assert!(parse_value(None, &v).is_ok());
    }

    #[test]
    fn malformed_events() {
        assert!(parse(Some("orders.paid"), b"not json").is_err());
        assert!(parse(Some("orders.paid"), b"[]").is_err());
        assert!(parse(Some("orders.paid"), b"").is_err());
        let bad = |member: &str, value: Value| {
            let mut v = body();
            v[member] = value;
            parse_value(Some("orders.paid"), &v)
        };
        assert!(bad("event_id", json!("")).is_err());
        assert!(bad("event_id", json!("a:b")).is_err());
        assert!(bad("event_id", json!("x".repeat(129))).is_err());
        assert!(bad("event_id", json!(7)).is_err());
        assert!(bad("total_cents", json!(-1)).is_err());
        assert!(bad("total_cents", json!("600")).is_err());
        assert!(bad("user_id", json!("")).is_err());
        assert!(bad("user_id", json!("u\n1")).is_err());
        assert!(bad("user_id", Value::Null).is_err());
        assert!(bad("order_id", json!("")).is_err());
        assert!(bad("status", json!("")).is_err());
        assert!(bad("at", json!("yesterday")).is_err());
        let mut missing = body();
        missing.as_object_mut().expect("object").remove("user_id");
        assert!(parse_value(Some("orders.paid"), &missing).is_err());
    }

    #[test]
    fn type_and_subject() {
        let with_type = |t: &str| {
            let mut v = body();
            v["type"] = json!(t);
            v
        };
        for t in ["orders.created", "orders.payment_failed", "orders.shipped"] {
            assert!(parse_value(Some(t), &with_type(t)).is_ok(), "{t}");
        }
        for t in [
            "orders",
            "orders.",
            "orders.*",
            "orders.a.b",
            "users.created",
            "",
        ] {
            assert!(parse_value(None, &with_type(t)).is_err(), "{t}");
        }
        // A body that claims another type than its subject.
        let e = parse_value(Some("orders.created"), &body()).expect_err("mismatch");
        assert!(e.contains("orders.created"), "{e}");
    }

    fn shipment_body() -> Value {
        json!({
            "event_id": "0123456789abcdef0123456789abcdef-dispatched",
            "type": "shipments.dispatched",
            "shipment_id": "0123456789abcdef0123456789abcdef",
            "order_id": "o1",
            "user_id": "u1",
            "status": "shipped",
            "carrier": "Panal Post",
            "tracking_number": "PNLABC",
            "at": "2024-01-02T00:00:00Z",
        })
    }

    #[test]
    fn shipment_events() {
        let e = parse_value(Some("shipments.dispatched"), &shipment_body()).expect("valid");
        assert_eq!(e.total_cents, None);
        assert_eq!(
            e.shipment,
            Some(Shipment {
                shipment_id: "0123456789abcdef0123456789abcdef".into(),
                carrier: "Panal Post".into(),
                tracking_number: "PNLABC".into(),
            })
        );
        for member in ["shipment_id", "carrier", "tracking_number"] {
            let mut v = shipment_body();
            v.as_object_mut().expect("object").remove(member);
            let e = parse_value(None, &v).expect_err(member);
            assert!(
                e.contains("shipment_id, carrier and tracking_number"),
                "{e}"
            );
        }
        let mut v = shipment_body();
        v["shipment_id"] = json!("a/b");
        assert!(parse_value(None, &v).is_err());
        v = shipment_body();
        v["carrier"] = json!("");
        assert!(parse_value(None, &v).is_err());
        // An order event must say its total; a shipment member on it is not read.
        let mut order = body();
        order.as_object_mut().expect("object").remove("total_cents");
        assert!(parse_value(None, &order)
            .expect_err("no total")
            .contains("total_cents"));
        let mut order = body();
        order["shipment_id"] = json!("x");
        assert_eq!(parse_value(None, &order).expect("order").shipment, None);
    }

    #[test]
    fn timestamps() {
        for ok in [
            "2024-01-01T00:00:05Z",
            "2024-01-01t00:00:05z",
            "2024-01-01T00:00:05.123Z",
            "2024-01-01T00:00:05+02:00",
            "2024-01-01T00:00:05.5-07:30",
        ] {
            assert!(looks_rfc3339(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-01-01",
            "2024-01-01 00:00:05Z",
            "2024-01-01T00:00:05",
            "2024-01-01T00:00:05.Z",
            "2024-01-01T00:00:05+0200",
            "2024-1-01T00:00:05Z",
            "2024-01-01T00:00:05Zjunk",
            "2024-01-01T00:00:05ZÉ",
        ] {
            assert!(!looks_rfc3339(bad), "{bad}");
        }
    }
}
