"""`shipping`: the Panal shipping service, in Python (componentize-py), on the same
standard interfaces as the Rust services.

- Messages on `orders.paid` (a durable subscription): the order service is asked
  first (in-process, `GET /internal/paid/{id}`) whether the order is paid, by the
  event's user, with a captured payment; an event it does not confirm ships nothing
  (logged and dropped; whoever may publish on `orders.>` cannot create shipments).
  Then the order gets one shipment,
  `preparing`, with the configured carrier and a new tracking number, and
  `shipments.created` is published. A redelivered event finds the shipment and publishes
  the same event again (same `event_id`), so a publish that failed the first time is not
  lost. A malformed event is refused (the host retries, then dead-letters it).
- `GET /shipments` → `{"items": [...]}`, the caller's shipments, oldest first;
  `?order_id=ID` → only that order's (none, or its one shipment).
- `GET /shipments/{id}` → the shipment, to its owner only (anyone else gets the 404 an
  unknown id gets).
- `POST /shipments/{id}/dispatch` → `shipped`, publishes `shipments.dispatched`;
  `POST /shipments/{id}/deliver` → `delivered`, publishes `shipments.delivered`. Both
  need the `admin` role the operator granted (`x-panal-roles`, 403 otherwise), as the
  manifest's route says too. Doing it again answers the shipment as
  it is and publishes the same event again; delivering what was never dispatched is 409.

Storage, bucket `shipments`: `shipment:<id>` (the record, see `shipments.py`),
`order:<order id>` (its shipment id), `user:<user id>` (JSON array of shipment ids).
Config: `carrier` (default `Panal Post`) and `tracking_prefix` (default `PNL`).
Manifest grants: `keyvalue = ["shipments"]`, `outbound = ["order"]`, `messaging = {
publish = ["shipments.>"], subscribe = [{ subject = "orders.paid", durable = true }] }`.
"""

import json
import os
import time
import traceback
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import host
import shipments
from componentize_py_types import Err
from host import ApiError
from wit_world import exports
from wit_world.imports.wasi_messaging_types import Error_Other

BUCKET = "shipments"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def shipment_key(shipment_id: str) -> str:
    return f"shipment:{shipment_id}"


class WasiHttpIncomingHandler(exports.WasiHttpIncomingHandler):
    def handle(self, request, response_out) -> None:
        try:
            status, body = route(request)
        except ApiError as e:
            status, body = e.status, e.body
        except host.Contended:
            status, body = 503, {"error": "too much contention, retry"}
        except Exception as e:  # storage or messaging failed: say so, log the rest
            host.warn(f"shipping: {host.describe(e)}\n{traceback.format_exc()}")
            status, body = 500, {"error": "internal error", "detail": host.describe(e)}
        host.reply(response_out, status, body)


class WasiMessagingIncomingHandler(exports.WasiMessagingIncomingHandler):
    def handle(self, message) -> None:
        try:
            paid = shipments.parse_paid(message.topic(), message.data())
            if confirmed(paid):
                ship(paid)
        except shipments.Invalid as e:
            raise Err(Error_Other(str(e)))
        except Exception as e:
            # Storage and messaging errors too: the handler may only raise its own
            # interface's error type.
            raise Err(Error_Other(f"shipping: {host.describe(e)}"))


def route(request):
    method = host.method_name(request)
    target = urlsplit(request.path_with_query() or "/")
    segments = [unquote(s) for s in target.path.split("/") if s]
    if segments[:1] != ["shipments"] or len(segments) > 3:
        raise ApiError(404, "not found")
    if len(segments) == 3 and segments[2] not in shipments.ACTIONS:
        raise ApiError(404, "not found")
    wanted = "POST" if len(segments) == 3 else "GET"
    if method != wanted:
        raise ApiError(405, "method not allowed")
    if method == "POST":
        host.require_role(request, "admin")
        host.drain(request)
        return act(segments[1], segments[2])
    user = host.caller(request)
    if len(segments) == 1:
        return list_mine(user, query(target.query))
    return 200, shipments.view(owned(segments[1], user))


def query(text: str) -> dict:
    """The query parameters; only `order_id`, once, is known."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        raise ApiError(400, "malformed query string") from None
    params = {}
    for name, value in pairs:
        if name != "order_id":
            raise ApiError(400, f"unknown query parameter `{name}`")
        if name in params:
            raise ApiError(400, "query parameter `order_id` given twice")
        if not shipments.is_text(value, 128):
            raise ApiError(400, "query parameter `order_id` must be 1 to 128 characters")
        params[name] = value
    return params


def load(bucket, shipment_id: str):
    data = bucket.get(shipment_key(shipment_id))
    return None if data is None else shipments.parse_record(data)


def owned(shipment_id: str, user: str):
    """The caller's shipment `shipment_id`; 404 for unknown ids and other users' alike."""
    record = None
    if shipments.is_id(shipment_id):
        record = load(host.open_bucket(BUCKET), shipment_id)
    if record is None or record["user_id"] != user:
        raise ApiError(404, "shipment not found")
    return record


def list_mine(user: str, params: dict):
    bucket = host.open_bucket(BUCKET)
    if "order_id" in params:
        found = bucket.get(f"order:{params['order_id']}")
        ids = [] if found is None else [found.decode()]
    else:
        index = bucket.get(f"user:{user}")
        ids = [] if index is None else json.loads(index)
    items = []
    for shipment_id in ids:
        record = load(bucket, shipment_id)
        if record is not None and record["user_id"] == user:
            items.append(shipments.view(record))
    return 200, {"items": items}


def act(shipment_id: str, action: str):
    """An admin's `dispatch` or `deliver`: stored, then announced."""
    if not shipments.is_id(shipment_id):
        raise ApiError(404, "shipment not found")
    bucket = host.open_bucket(BUCKET)

    def step(current):
        if current is None:
            raise ApiError(404, "shipment not found")
        record = shipments.parse_record(current)
        try:
            updated, status = shipments.apply(record, action, now())
        except shipments.Conflict as e:
            raise ApiError(409, str(e), status=record["status"]) from None
        if updated is None:
            return None, (record, status)
        return json.dumps(updated).encode(), (updated, status)

    record, status = host.update(bucket, shipment_key(shipment_id), step)
    host.log(f"shipping: shipment {shipment_id} is {record['status']} ({action})")
    try:
        host.publish(shipments.STEPS[status][1], shipments.event(status, record))
    except Err as e:
        # Stored but not announced: the same request again publishes the same event.
        raise ApiError(
            503,
            f"shipment is {record['status']} but its event could not be published; retry",
            detail=host.describe(e),
        ) from None
    return 200, shipments.view(record)


def confirmed(paid: dict) -> bool:
    """Whether the order service confirms the order of the `orders.paid` event `paid`:
    paid, with a captured payment, by the event's user. Raises when it cannot say now
    (the host redelivers the event)."""
    status, body = host.get_json("order", f"/internal/paid/{quote(paid['order_id'], safe='')}")
    if status == 200 and isinstance(body, dict) and body.get("user_id") == paid["user_id"]:
        return True
    if status in (200, 404, 409):
        host.warn(
            f"shipping: refused orders.paid {paid['event_id']} for order {paid['order_id']}: "
            f"the order service does not confirm it ({status} {json.dumps(body)})"
        )
        return False
    raise RuntimeError(f"the order service cannot confirm order {paid['order_id']} now: {status}")


def ship(paid: dict) -> None:
    """The shipment of a paid order: created once, announced (again) every time."""
    bucket = host.open_bucket(BUCKET)
    fresh_id = os.urandom(16).hex()
    existing = host.claim(bucket, f"order:{paid['order_id']}", fresh_id.encode())
    shipment_id = fresh_id if existing is None else existing.decode()
    record = load(bucket, shipment_id)
    if record is None:
        tracking = shipments.tracking_number(
            host.config("tracking_prefix", "PNL"), os.urandom(12)
        )
        record = shipments.new_shipment(
            shipment_id, paid, host.config("carrier", "Panal Post"), tracking, now()
        )
        earlier = host.claim(bucket, shipment_key(shipment_id), json.dumps(record).encode())
        if earlier is not None:
            record = shipments.parse_record(earlier)
        else:
            host.log(
                f"shipping: shipment {shipment_id} for order {paid['order_id']}, "
                f"{record['carrier']} {record['tracking_number']}"
            )
    if record["user_id"] != paid["user_id"]:
        raise shipments.Invalid(
            f"order {paid['order_id']} was paid by {paid['user_id']!r} but its shipment "
            f"{shipment_id} belongs to {record['user_id']!r}"
        )
    host.update(
        bucket,
        f"user:{paid['user_id']}",
        lambda current: (shipments.add_to_index(current, shipment_id), None),
    )
    host.publish(shipments.CREATED, shipments.event(shipments.PREPARING, record))
