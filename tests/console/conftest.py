"""What the console's tests share: browsers with cookie jars of their own, on one app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import httpx
import pytest

from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

NewBrowser = Callable[[], httpx.AsyncClient]


@pytest.fixture
async def new_browser(settings: Settings, db: Database) -> AsyncIterator[NewBrowser]:
    """Browsers with cookie jars of their own, all on one app."""
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with AsyncExitStack() as stack:

        def new() -> httpx.AsyncClient:
            browser = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            stack.push_async_callback(browser.aclose)
            return browser

        yield new
