"""Unit tests of shipments.py, natively: `python3 -m unittest discover components/shipping`."""

import json
import unittest

import shipments as s

PAID = {
    "event_id": "0123456789abcdef0123456789abcdef",
    "type": "orders.paid",
    "order_id": "o1",
    "user_id": "u1",
    "status": "paid",
    "total_cents": 600,
    "items": [],
    "at": "2024-01-01T00:00:05Z",
}


def paid_bytes(**changes):
    event = dict(PAID)
    for k, v in changes.items():
        if v is None:
            event.pop(k, None)
        else:
            event[k] = v
    return json.dumps(event).encode()


def record(status="preparing"):
    r = s.new_shipment("a" * 32, s.parse_paid("orders.paid", paid_bytes()), "Post", "PNLX", "T0")
    r["status"] = status
    return r


class ParsePaid(unittest.TestCase):
    def test_valid(self):
        self.assertEqual(
            s.parse_paid("orders.paid", paid_bytes()),
            {"event_id": PAID["event_id"], "order_id": "o1", "user_id": "u1"},
        )
        # No topic from the host: the type alone decides; unknown members are ignored.
        self.assertEqual(s.parse_paid(None, paid_bytes(extra=1))["order_id"], "o1")

    def test_refused(self):
        for data in [b"not json", b"[]", b"", b"\xff"]:
            with self.assertRaises(s.Invalid):
                s.parse_paid("orders.paid", data)
        bad = [
            {"type": "orders.payment_failed"},
            {"status": "payment_failed"},
            {"event_id": ""},
            {"event_id": "a:b"},
            {"event_id": "x" * 129},
            {"order_id": ""},
            {"order_id": 7},
            {"user_id": "u\n1"},
            {"user_id": None},
        ]
        for changes in bad:
            with self.assertRaises(s.Invalid, msg=str(changes)):
                s.parse_paid("orders.paid", paid_bytes(**changes))
        with self.assertRaisesRegex(s.Invalid, "arrived on subject `orders.created`"):
            s.parse_paid("orders.created", paid_bytes())


class Life(unittest.TestCase):
    def test_steps_in_order(self):
        r = record()
        dispatched, status = s.apply(r, "dispatch", "T1")
        self.assertEqual((dispatched["status"], dispatched["dispatched_at"], status), ("shipped", "T1", "shipped"))
        self.assertEqual(r["status"], "preparing", "apply does not change its input")
        delivered, status = s.apply(dispatched, "deliver", "T2")
        self.assertEqual((delivered["status"], delivered["delivered_at"], status), ("delivered", "T2", "delivered"))

    def test_again_changes_nothing(self):
        self.assertEqual(s.apply(record("shipped"), "dispatch", "T9"), (None, "shipped"))
        self.assertEqual(s.apply(record("delivered"), "dispatch", "T9"), (None, "shipped"))
        self.assertEqual(s.apply(record("delivered"), "deliver", "T9"), (None, "delivered"))

    def test_no_skipping(self):
        with self.assertRaisesRegex(s.Conflict, "dispatch it first"):
            s.apply(record(), "deliver", "T1")


class Events(unittest.TestCase):
    def test_same_step_same_event(self):
        r, _ = s.apply(record(), "dispatch", "T1")
        e = s.event("shipped", r)
        self.assertEqual(
            e,
            {
                "event_id": "a" * 32 + "-dispatched",
                "type": "shipments.dispatched",
                "shipment_id": "a" * 32,
                "order_id": "o1",
                "user_id": "u1",
                "status": "shipped",
                "carrier": "Post",
                "tracking_number": "PNLX",
                "at": "T1",
            },
        )
        later, _ = s.apply(r, "deliver", "T2")
        self.assertEqual(s.event("shipped", later), e)
        self.assertEqual(s.event("preparing", later)["type"], "shipments.created")
        self.assertEqual(s.event("preparing", later)["at"], "T0")


class Helpers(unittest.TestCase):
    def test_tracking_number(self):
        t = s.tracking_number("PNL", bytes(range(12)))
        self.assertTrue(t.startswith("PNL") and len(t) == 15)
        self.assertNotIn("0", t[3:])
        with self.assertRaises(ValueError):
            s.tracking_number("PNL", b"short")

    def test_index(self):
        first = s.add_to_index(None, "a")
        self.assertEqual(json.loads(first), ["a"])
        self.assertIsNone(s.add_to_index(first, "a"))
        self.assertEqual(json.loads(s.add_to_index(first, "b")), ["a", "b"])
        with self.assertRaises(ValueError):
            s.add_to_index(b"{}", "a")

    def test_ids_and_records(self):
        self.assertTrue(s.is_id("0123456789abcdef" * 2))
        self.assertFalse(s.is_id("0123456789ABCDEF" * 2))
        self.assertFalse(s.is_id("../x"))
        self.assertEqual(s.parse_record(json.dumps(record()).encode())["status"], "preparing")
        for bad in [b"[]", b'{"id": "x", "status": "preparing"}', json.dumps(record("lost")).encode()]:
            with self.assertRaises(ValueError):
                s.parse_record(bad)


if __name__ == "__main__":
    unittest.main()
