"""The 2025-11-25 session handshake by hand, for tests of what the server does with its ids."""

from __future__ import annotations

import httpx

__all__ = ["list_tools_in", "open_session"]

_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "tests", "version": "1"},
    },
}
_ACCEPT = "application/json, text/event-stream"


async def open_session(http: httpx.AsyncClient, url: str, key: str) -> str:
    """The 2025-11-25 handshake by hand; the session id the server issued."""
    opened = await http.post(
        url, json=_INITIALIZE, headers={"Authorization": f"Bearer {key}", "Accept": _ACCEPT}
    )
    assert opened.status_code == 200, opened.text
    session_id = opened.headers["mcp-session-id"]
    initialized = await http.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers={
            "Authorization": f"Bearer {key}",
            "Accept": _ACCEPT,
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert initialized.status_code == 202, initialized.text
    return session_id


async def list_tools_in(
    http: httpx.AsyncClient, url: str, key: str, session_id: str | bytes
) -> httpx.Response:
    """tools/list in a session; a bytes id is sent as it is (HTTP allows Latin-1 there)."""
    raw = session_id if isinstance(session_id, bytes) else session_id.encode("ascii")
    return await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        headers=[
            (b"Authorization", f"Bearer {key}".encode()),
            (b"Accept", _ACCEPT.encode()),
            (b"Mcp-Session-Id", raw),
            (b"MCP-Protocol-Version", b"2025-11-25"),
        ],
    )
