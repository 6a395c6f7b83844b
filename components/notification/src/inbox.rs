//! A user's inbox (pure, unit-tested natively): key `inbox:<user id>` in bucket
//! `notifications`, a JSON array of [`Entry`], oldest first, at most [`CAP`] entries
//! (the oldest are dropped). `GET /notifications` shows it newest first.
//!
//! Entries are in arrival order. The order service publishes an order's events one after
//! the other, so they arrive in that order; events of different orders may interleave.

use serde::{Deserialize, Serialize};

use crate::event::{Event, Shipment};

/// Most entries an inbox keeps.
pub const CAP: usize = 1000;

/// One notification: what the inbox keeps of an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub status: String,
    /// Order events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<u64>,
    /// Shipment events: `shipment_id`, `carrier` and `tracking_number`.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<Shipment>,
    pub at: String,
}

impl From<&Event> for Entry {
    fn from(e: &Event) -> Self {
        Entry {
            event_id: e.event_id.clone(),
            kind: e.kind.clone(),
            order_id: e.order_id.clone(),
            status: e.status.clone(),
            total_cents: e.total_cents,
            shipment: e.shipment.clone(),
            at: e.at.clone(),
        }
    }
}

pub fn key(user_id: &str) -> String {
    format!("inbox:{user_id}")
}

/// The entries of a stored inbox, oldest first (absent: none).
pub fn parse(value: Option<&[u8]>) -> Result<Vec<Entry>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(bytes).map_err(|e| format!("corrupt inbox: {e}")),
    }
}

/// The inbox `current` with `entry` appended and trimmed to the newest `cap`, as the
/// bytes to store; `None` when an entry with the same `event_id` is already there (a
/// redelivery: nothing to write). Idempotent, so safe to run again after any failure.
pub fn append(
    current: Option<&[u8]>,
    entry: &Entry,
    cap: usize,
) -> Result<Option<Vec<u8>>, String> {
    let mut entries = parse(current)?;
    if entries.iter().any(|e| e.event_id == entry.event_id) {
        return Ok(None);
    }
    entries.push(entry.clone());
    if entries.len() > cap {
        entries.drain(..entries.len() - cap);
    }
    serde_json::to_vec(&entries)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The entries newest first, for `GET /notifications`.
pub fn newest_first(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.reverse();
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Entry {
        Entry {
            event_id: id.into(),
            kind: "orders.created".into(),
            order_id: "o1".into(),
            status: "pending".into(),
            total_cents: Some(600),
            shipment: None,
            at: "2024-01-01T00:00:00Z".into(),
        }
    }

    fn ids(bytes: &[u8]) -> Vec<String> {
        parse(Some(bytes))
            .expect("inbox")
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    }

    #[test]
    fn appends_once() {
        let one = append(None, &entry("a"), CAP).expect("ok").expect("new");
        assert_eq!(ids(&one), ["a"]);
        let two = append(Some(&one), &entry("b"), CAP)
            .expect("ok")
            .expect("new");
        assert_eq!(ids(&two), ["a", "b"]);
        // A redelivery of either event changes nothing.
        assert_eq!(append(Some(&two), &entry("a"), CAP).expect("ok"), None);
        assert_eq!(append(Some(&two), &entry("b"), CAP).expect("ok"), None);
        let newest: Vec<String> = newest_first(parse(Some(&two)).expect("inbox"))
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(newest, ["b", "a"]);
    }

    #[test]
    fn keeps_the_newest() {
        let mut inbox: Option<Vec<u8>> = None;
        for i in 0..5 {
            inbox = Some(
                append(inbox.as_deref(), &entry(&format!("e{i}")), 3)
                    .expect("ok")
                    .expect("new"),
            );
        }
        assert_eq!(ids(inbox.as_deref().expect("stored")), ["e2", "e3", "e4"]);
    }

    #[test]
    fn entry_shape_and_corruption() {
        let stored = append(None, &entry("a"), CAP).expect("ok").expect("new");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&stored).expect("json"),
            serde_json::json!([{"event_id": "a", "type": "orders.created", "order_id": "o1",
                                "status": "pending", "total_cents": 600,
                                "at": "2024-01-01T00:00:00Z"}])
        );
        let mut shipped = entry("b");
        shipped.kind = "shipments.dispatched".into();
        shipped.total_cents = None;
        shipped.shipment = Some(Shipment {
            shipment_id: "s1".into(),
            carrier: "Panal Post".into(),
            tracking_number: "PNLX".into(),
        });
        let stored = append(Some(&stored), &shipped, CAP)
            .expect("ok")
            .expect("new");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&stored).expect("json")[1],
            serde_json::json!({"event_id": "b", "type": "shipments.dispatched", "order_id": "o1",
                               "status": "pending", "shipment_id": "s1", "carrier": "Panal Post",
                               "tracking_number": "PNLX", "at": "2024-01-01T00:00:00Z"})
        );
        assert_eq!(parse(Some(&stored)).expect("inbox")[1], shipped);
        assert!(append(Some(b"{"), &entry("a"), CAP).is_err());
        assert!(parse(Some(b"{}")).is_err());
        assert_eq!(parse(None).expect("empty"), Vec::new());
        assert_eq!(key("u1"), "inbox:u1");
    }
}
