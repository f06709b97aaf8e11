"""A reverse proxy that adds `Authorization: Bearer <key>` to every request, for clients that
cannot send one (the MCP conformance suite).

    TRAILMAP_PROXY_TOKEN=tmk_... python -m tests.mcp.auth_proxy --port P --upstream URL

Everything else passes through unchanged, Host and Origin included, so the server's own
DNS-rebinding checks judge exactly what the client sent; responses stream as they come.
"""

from __future__ import annotations

import argparse
import os

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
    def __init__(self, upstream: str, token: str) -> None:
        self._client = httpx.AsyncClient(base_url=upstream, timeout=60.0)
        self._authorization = (b"authorization", f"Bearer {token}".encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _NOT_FORWARDED]
        headers.append(self._authorization)
        upstream = self._client.build_request(
            request.method,
            request.url.path,
            params=request.url.query,
            headers=headers,
            content=await request.body(),
        )
        answer = await self._client.send(upstream, stream=True)
        passed = {
            k: v for k, v in answer.headers.items() if k.lower().encode() not in _NOT_FORWARDED
        }
        response = StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=passed,
            background=BackgroundTask(answer.aclose),
        )
        await response(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    token = os.environ["TRAILMAP_PROXY_TOKEN"]
    uvicorn.run(
        AuthProxy(args.upstream, token), host="127.0.0.1", port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
