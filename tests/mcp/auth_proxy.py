"""A reverse proxy for tests: a load balancer over server processes, and the key's bearer.

    [TRAILMAP_PROXY_TOKEN=tmk_...] python -m tests.mcp.auth_proxy --port P --upstream URL...

Requests go to the upstreams in turn (round robin), so consecutive steps of a flow land on
different processes; each answer says which one served it in `X-Trailmap-Node` (0, 1, ...).
With `TRAILMAP_PROXY_TOKEN` set, it adds `Authorization: Bearer <key>` to every request, for
clients that cannot send one (the MCP conformance suite); otherwise the client's own
Authorization passes. Everything else passes through unchanged, Host and Origin included, so
the server's own DNS-rebinding checks judge exactly what the client sent; responses stream.
"""

from __future__ import annotations

import argparse
import itertools
import os
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import uvicorn
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

# Per connection, not end to end (RFC 9110, section 7.6.1), plus what the proxy sets itself.
_NOT_FORWARDED = {
    b"authorization",
    b"connection",
    b"content-length",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}


class AuthProxy:
    def __init__(self, upstreams: list[str], token: str | None) -> None:
        # A jar that keeps nothing: a proxy must not replay one client's cookies for another.
        jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
        self._clients = [
            httpx.AsyncClient(base_url=u, timeout=60.0, cookies=jar) for u in upstreams
        ]
        self._turns = itertools.cycle(range(len(upstreams)))
        self._authorization = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        node = next(self._turns)
        client = self._clients[node]
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _NOT_FORWARDED]
        if self._authorization is not None:
            headers.append((b"authorization", self._authorization))
        elif "authorization" in request.headers:
            headers.append((b"authorization", request.headers["authorization"].encode()))
        upstream = client.build_request(
            request.method,
            request.url.path,
            params=request.url.query,
            headers=headers,
            content=await request.body(),
        )
        answer = await client.send(upstream, stream=True)
        passed = [
            (k, v)
            for k, v in answer.headers.multi_items()
            if k.lower().encode() not in _NOT_FORWARDED
        ]
        response = StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            background=BackgroundTask(answer.aclose),
        )
        # Raw headers keep repeated ones (several Set-Cookie) intact.
        response.raw_headers = [
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in passed),
            (b"x-trailmap-node", str(node).encode()),
        ]
        await response(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", action="append", required=True, help="e.g. http://127.0.0.1:8000"
    )
    args = parser.parse_args()
    token = os.environ.get("TRAILMAP_PROXY_TOKEN")
    uvicorn.run(
        AuthProxy(args.upstream, token), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
