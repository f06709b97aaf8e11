"""The least an OTLP/HTTP trace receiver written in Python can do, served as `trailmap serve`
serves Trailmap (uvicorn, one process, default settings): read the body, parse it into an
`ExportTraceServiceRequest`, answer an empty `ExportTraceServiceResponse`. No key, no
routing, no storage. `benchmarks/otlp.py --ceiling` posts the same requests to it, to show
how much of the decode floor any receiver on this stack can reach.

    python benchmarks/_bare_otlp_receiver.py --database URL --port P   (the URL is ignored)
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

Message = MutableMapping[str, Any]
_EMPTY_ANSWER = ExportTraceServiceResponse().SerializeToString()


async def app(
    scope: Message,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    answer = b""
    if scope["method"] == "POST":
        ExportTraceServiceRequest.FromString(b"".join(chunks))
        answer = _EMPTY_ANSWER
    headers = [
        (b"content-type", b"application/x-protobuf"),
        (b"content-length", str(len(answer)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True, help="ignored: nothing is stored")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
