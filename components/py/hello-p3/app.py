"""A WASI 0.3 service in Python (componentize-py): `hello from Python 0.3: METHOD PATH`,
the body written after the response is returned."""
import wit_world
from componentize_py_async_support import spawn
from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.wasi_http_types import Fields, Request, Response


def method_name(method) -> str:
    name = type(method).__name__.removeprefix("Method_")
    return method.value if name == "Other" else name.upper()


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        path = request.get_path_with_query() or "/"
        text = f"hello from Python 0.3: {method_name(request.get_method())} {path}"
        body_tx, body_rx = wit_world.byte_stream()
        trailers_tx, trailers_rx = (
            wit_world.result_option_wasi_http_types_fields_wasi_http_types_error_code_future(
                lambda: Ok(None)
            )
        )
        headers = Fields.from_list([("content-type", b"text/plain")])
        response, _sent = Response.new(headers, body_rx, trailers_rx)

        async def write_body():
            with body_tx:
                await body_tx.write_all(text.encode())
            with trailers_tx:
                pass

        spawn(write_body())
        return response
