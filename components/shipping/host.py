"""The standard interfaces as this service uses them: JSON over wasi:http, compare-and-swap
over wasi:keyvalue/atomics, events over wasi:messaging, settings from wasi:config. Nothing
here knows about shipments."""

import json
import sys

from componentize_py_types import Err, Ok
from wit_world.imports import (
    atomics,
    outgoing_handler,
    producer,
    wasi_config_store,
    wasi_keyvalue_store,
)
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingRequest,
    Method_Get,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
)
from wit_world.imports.wasi_messaging_types import Client, Message

# The header the gateway sets to the verified caller (never what a client sent).
USER_ID_HEADER = "x-panal-user-id"

# The roles the operator granted that caller, comma-separated (set by the host only).
ROLES_HEADER = "x-panal-roles"

# Most bytes one blocking write may carry (wasi:io's limit for blocking-write-and-flush).
WRITE_CHUNK = 4096

# Lost swaps in a row an update tolerates before giving up.
MAX_ATTEMPTS = 1000


class ApiError(Exception):
    """An answer other than success: status and a JSON body with at least `error`."""

    def __init__(self, code, message, **extra):
        super().__init__(message)
        # `code`, not `status`: a body may carry a member named `status`.
        self.status = code
        self.body = {"error": message, **extra}


class Contended(Exception):
    """Every compare-and-swap attempt lost to another writer."""


def method_name(request: IncomingRequest) -> str:
    method = request.method()
    name = type(method).__name__.removeprefix("Method_")
    return method.value if name == "Other" else name.upper()


def header(request: IncomingRequest, name: str):
    """The first value of header `name` as text, or None."""
    with request.headers() as fields:
        values = fields.get(name)
    if not values:
        return None
    try:
        return values[0].decode()
    except UnicodeDecodeError:
        return None


def caller(request: IncomingRequest) -> str:
    """The verified user id the gateway passed on; 401 without one."""
    user = header(request, USER_ID_HEADER)
    if not user:
        raise ApiError(401, "authentication required")
    return user


def require_role(request: IncomingRequest, role: str) -> str:
    """The caller, when the operator granted it `role`: a check that holds even if the
    route's `roles` were left out. 401 without a caller, 403 without the role."""
    user = caller(request)
    roles = [r.strip() for r in (header(request, ROLES_HEADER) or "").split(",")]
    if role not in roles:
        raise ApiError(403, "forbidden", reason=f"this needs the role `{role}`")
    return user


def reply(out: ResponseOutparam, status: int, body) -> None:
    """Answer `status` with `body` as JSON."""
    data = json.dumps(body).encode()
    response = OutgoingResponse(
        Fields.from_list([("content-type", b"application/json")])
    )
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(out, Ok(response))
    with outgoing.write() as stream:
        for start in range(0, len(data), WRITE_CHUNK):
            stream.blocking_write_and_flush(data[start : start + WRITE_CHUNK])
    OutgoingBody.finish(outgoing, None)


def drain(request: IncomingRequest) -> None:
    """Read and drop the request body, so a client that sent one gets its answer."""
    read_all(request.consume())


def read_all(body) -> bytes:
    """The whole of an incoming body (of a request or a response)."""
    data = bytearray()
    with body.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
    # The body resource must go after its stream.
    del body
    return bytes(data)


def get_json(component: str, path: str):
    """`GET path` of another component (in-process: it must be in the manifest's
    `outbound`), as this service, never as a user: `(status, JSON body or None)`.
    Raises RuntimeError when no answer came."""
    request = OutgoingRequest(Fields.from_list([("accept", b"application/json")]))
    request.set_method(Method_Get())
    request.set_scheme(Scheme_Http())
    request.set_authority(component)
    request.set_path_with_query(path)
    future = outgoing_handler.handle(request, None)
    while (got := future.get()) is None:
        with future.subscribe() as ready:
            ready.block()
    if isinstance(got, Err) or isinstance(got.value, Err):
        raise RuntimeError(f"GET {component}{path}: no answer ({describe(got)})")
    response = got.value.value
    status = response.status()
    data = read_all(response.consume())
    del response
    try:
        return status, json.loads(data)
    except ValueError:
        return status, None


def open_bucket(name: str):
    return wasi_keyvalue_store.open(name)


def update(bucket, key: str, step):
    """Read-modify-write of `key`: `step(current bytes or None)` returns `(bytes to write
    or None to keep, result)`; runs again on the fresh value when another writer won, so it
    must have no side effects. Returns the result."""
    cas = atomics.Cas.new(bucket, key)
    for _ in range(MAX_ATTEMPTS):
        write, result = step(cas.current())
        if write is None:
            return result
        try:
            atomics.swap(cas, write)
            return result
        except Err as e:
            if isinstance(e.value, atomics.CasError_CasFailed):
                cas = e.value.value
                continue
            raise
    raise Contended(key)


def claim(bucket, key: str, value: bytes):
    """Sets `key` to `value` if absent: None when this caller set it, else what was there."""
    return update(bucket, key, lambda current: (value, None) if current is None else (None, current))


def config(key: str, default: str) -> str:
    value = wasi_config_store.get(key)
    return default if value is None or value == "" else value


def publish(subject: str, body: dict) -> None:
    """Publish `body` as JSON on `subject`; raises the messaging error on failure."""
    message = Message(json.dumps(body).encode())
    message.set_content_type("application/json")
    with Client.connect("default") as client:
        producer.send(client, subject, message)


def describe(error) -> str:
    """A readable line for an exception, unwrapping a WIT error variant."""
    if isinstance(error, Err):
        inner = error.value
        value = getattr(inner, "value", None)
        if isinstance(value, str):
            return f"{type(inner).__name__}: {value}"
        return type(inner).__name__
    return f"{type(error).__name__}: {error}"


def log(line: str) -> None:
    """A line in the host's log (stdout: level info), tagged with the request and trace."""
    print(line, flush=True)


def warn(line: str) -> None:
    """A line in the host's log at level warn (stderr)."""
    print(line, file=sys.stderr, flush=True)
