"""`{{name}}`: a berth module (a `wasi:http` handler) in Python.

Build: `berth build` · Run: `berth deploy` · Iterate: `berth dev`
The base's capabilities (`berth:base` config, kv, log) and `wasi:http` come
from `wit_world`, generated from wit/ at build time; for your editor, write
them out with `componentize-py -d wit -w berth:module/module bindings .`
"""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import config, kv, log
from wit_world.imports.log import Level
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    """Answers every request under the module's route."""

    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        # The module's own durable counter in the base's key-value store.
        hits = kv.increment("hits", 1)
        greeting = config.get("greeting") or "Hello"
        log.log(Level.INFO, f"hit {hits} on {path}")
        body = f"{greeting} from {{name}} (Python)! You asked for {path}; hits: {hits}\n"
        send(response_out, 200, "text/plain; charset=utf-8", body.encode())


def send(response_out: ResponseOutparam, status: int, content_type: str, body: bytes) -> None:
    """Sends a complete response."""
    response = OutgoingResponse(Fields.from_list([("content-type", content_type.encode())]))
    response.set_status_code(status)
    outgoing = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with outgoing.write() as stream:
        # A blocking write takes at most 4096 bytes at a time.
        for start in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[start : start + 4096])
    OutgoingBody.finish(outgoing, None)
