"""The demo organization as a new user meets it: `trailmap demo` loads it (traces made with the
OpenTelemetry SDK, through the real ingestion path) and `trailmap serve` serves it. Loading
takes a quarter of a minute, so the tests that ask it questions share one load per session
(the `demo_server` fixture in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import CallToolResult

from tests import databases
from tests.factories import make_key
from trailmap.accounts import get_org
from trailmap.storage import Database

__all__ = ["call", "serve_demo"]


@contextmanager
def serve_demo(
    directory: Path, sqlite_template: Path, *, live: bool = False
) -> Iterator[tuple[str, str]]:
    """The demo loaded into a SQLite database in `directory` and served: (base URL, a
    read-only key of the demo organization). `live`: served by `serve --demo`, whose shop
    keeps running (its traffic and changes up to the minute), as the README has people run
    it; otherwise the demo stays as it was loaded."""
    from tests.server import running_server  # noqa: PLC0415 - keeps the module import light

    url = databases.copy_sqlite(sqlite_template, directory / "trailmap.db")
    loaded = subprocess.run(
        [sys.executable, "-m", "trailmap.cli.main", "--database", url, "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "spans of traces" in loaded.stderr
    key = _read_only_key(url)
    args = ("--demo",) if live else ()
    with running_server(url, log_path=directory / "server.log", args=args) as base:
        yield base, key


def _read_only_key(url: str) -> str:
    async def create() -> str:
        db = Database(url)
        try:
            return await make_key(db, await get_org(db, "demo"), scope="read-only")
        finally:
            db.close()

    return asyncio.run(create())


async def call(server: tuple[str, str], tool: str, args: dict[str, Any]) -> CallToolResult:
    """One tool call to the served demo through the official MCP client."""
    base, key = server
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http, Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client:
        return await client.call_tool(tool, args)
