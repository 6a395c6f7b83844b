"""A WASI 0.2 proxy in Python (componentize-py): `hello from Python: METHOD PATH`."""
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
)


def method_name(method) -> str:
    name = type(method).__name__.removeprefix("Method_")
    return method.value if name == "Other" else name.upper()


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        text = f"hello from Python: {method_name(request.method())} {request.path_with_query() or '/'}"
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(text.encode())
        OutgoingBody.finish(body, None)
