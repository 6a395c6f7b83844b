"""Shipments, pure: the record, its life, the events it publishes and the order event it
starts from. No WIT imports, so `python3 -m unittest discover components/shipping` tests
it natively.

A shipment is created `preparing` for an order paid (`orders.paid`), is `shipped` once an
admin dispatches it and `delivered` once an admin marks it so. Each step is one event:

    shipments.created     status preparing   at = created_at
    shipments.dispatched  status shipped     at = dispatched_at
    shipments.delivered   status delivered   at = delivered_at

Event ids are derived from the shipment id and the step (`<id>-dispatched`), and `at` is
the stored time of the step, so publishing a step again (after a failed publish, a
redelivered `orders.paid`, a retried request) sends the same event, which consumers
de-duplicate by `event_id`.
"""

import json
import re

PREPARING = "preparing"
SHIPPED = "shipped"
DELIVERED = "delivered"

CREATED = "shipments.created"
DISPATCHED = "shipments.dispatched"
DELIVERED_EVENT = "shipments.delivered"

# The subject this service starts from.
ORDERS_PAID = "orders.paid"

# Each status, the order it comes in, the event that announces it and when it happened.
STEPS = {
    PREPARING: (0, CREATED, "created_at"),
    SHIPPED: (1, DISPATCHED, "dispatched_at"),
    DELIVERED: (2, DELIVERED_EVENT, "delivered_at"),
}

# The admin actions (`POST /shipments/{id}/<action>`) and the status each leads to.
ACTIONS = {"dispatch": SHIPPED, "deliver": DELIVERED}

_ID = re.compile(r"[0-9a-f]{32}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_TRACKING_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class Invalid(Exception):
    """An input this service refuses; the message says what was wrong."""


class Conflict(Exception):
    """An action the shipment's status does not allow now."""


def is_id(value):
    """A shipment id: 32 lowercase hex digits."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def is_text(value, most):
    """1 to `most` characters, none of them a control character."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= most
        and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)
    )


def parse_paid(topic, data):
    """The `orders.paid` event in `data` (bytes) delivered on `topic` (None when the host
    does not say): `{event_id, order_id, user_id}`. Raises `Invalid` naming the problem;
    members this service does not use are ignored."""
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise Invalid(f"malformed order event: not JSON ({e})") from None
    if not isinstance(event, dict):
        raise Invalid("malformed order event: not a JSON object")
    kind = event.get("type")
    if kind != ORDERS_PAID:
        raise Invalid(f"not an {ORDERS_PAID} event: type is {kind!r}")
    if topic is not None and topic != kind:
        raise Invalid(f"order event of type `{kind}` arrived on subject `{topic}`")
    if not (isinstance(event.get("event_id"), str) and _TOKEN.fullmatch(event["event_id"])):
        raise Invalid("malformed order event: event_id must be 1 to 128 letters, digits, `-` or `_`")
    for member, most in (("order_id", 128), ("user_id", 256)):
        if not is_text(event.get(member), most):
            raise Invalid(
                f"malformed order event: {member} must be 1 to {most} characters, "
                "no control characters"
            )
    if event.get("status") != "paid":
        raise Invalid(f"malformed order event: status of an {ORDERS_PAID} event is {event.get('status')!r}")
    return {"event_id": event["event_id"], "order_id": event["order_id"], "user_id": event["user_id"]}


def tracking_number(prefix, random_bytes):
    """`prefix` and 12 characters drawn from `random_bytes` (at least 12 bytes), in an
    alphabet without look-alikes (no 0/O, 1/I)."""
    if len(random_bytes) < 12:
        raise ValueError("a tracking number needs 12 random bytes")
    return prefix + "".join(_TRACKING_ALPHABET[b % len(_TRACKING_ALPHABET)] for b in random_bytes[:12])


def new_shipment(shipment_id, paid, carrier, tracking, now):
    """The record of a new shipment for the order of the parsed `orders.paid` event."""
    return {
        "id": shipment_id,
        "order_id": paid["order_id"],
        "user_id": paid["user_id"],
        "carrier": carrier,
        "tracking_number": tracking,
        "status": PREPARING,
        "created_at": now,
        "dispatched_at": None,
        "delivered_at": None,
    }


def parse_record(data):
    """A stored shipment; raises `ValueError` when it is not one."""
    record = json.loads(data)
    if not isinstance(record, dict) or record.get("status") not in STEPS or not is_id(record.get("id")):
        raise ValueError("corrupt shipment record")
    return record


def apply(record, action, now):
    """`action` (`dispatch` or `deliver`) applied to `record`: `(new record or None when
    the shipment is already there or past it, the status the action leads to)`. Raises
    `Conflict` when a step would be skipped (delivering what was never dispatched)."""
    target = ACTIONS[action]
    have, _, _ = STEPS[record["status"]]
    want, _, when = STEPS[target]
    if have >= want:
        return None, target
    if want != have + 1:
        raise Conflict(f"shipment {record['id']} is {record['status']}: dispatch it first")
    updated = dict(record)
    updated["status"] = target
    updated[when] = now
    return updated, target


def event(status, record):
    """The event announcing that `record` reached `status` (which it has reached)."""
    _, kind, when = STEPS[status]
    return {
        "event_id": f"{record['id']}-{kind.split('.', 1)[1]}",
        "type": kind,
        "shipment_id": record["id"],
        "order_id": record["order_id"],
        "user_id": record["user_id"],
        "status": status,
        "carrier": record["carrier"],
        "tracking_number": record["tracking_number"],
        "at": record[when],
    }


def add_to_index(current, shipment_id):
    """The user index `current` (bytes of a JSON array, or None) with `shipment_id`
    appended, as bytes; None when it is already there."""
    ids = [] if current is None else json.loads(current)
    if not isinstance(ids, list):
        raise ValueError("corrupt shipment index")
    if shipment_id in ids:
        return None
    ids.append(shipment_id)
    return json.dumps(ids).encode()


def view(record):
    """What clients see of a shipment: the stored record."""
    return dict(record)
