"""The DORA page over plain HTTP, on SQLite and PostgreSQL: the four figures with their
levels, a chart per figure by week drawn on the server, links to the events behind them;
nothing of it for anyone outside the organization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import make_org, principal_for
from tests.forms import sign_in
from trailmap.accounts import add_user
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
    )


async def _browser(new_browser: NewBrowser, email: str) -> httpx.AsyncClient:
    browser = new_browser()
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


async def test_the_dora_page_shows_each_figure_its_level_and_a_chart_by_week(
    db: Database, new_browser: NewBrowser
) -> None:
    org = await make_org(db, slug="acme")
    await add_user(db, "ada@acme.example", org_slug="acme", role="member", password=PASSWORD)
    await make_org(db, slug="other")
    await add_user(db, "eve@other.example", org_slug="other", role="owner", password=PASSWORD)
    now = datetime.now(UTC).replace(microsecond=0)
    sha = "ab" * 20
    events: list[dict[str, Any]] = [
        {"type": "change-merged", "at": now - timedelta(days=3, hours=5), "data": {"sha": sha}},
        {"type": "deployment", "at": now - timedelta(days=3), "data": {"sha": sha}},
        {"type": "rollback", "at": now - timedelta(days=3) + timedelta(minutes=20), "data": {}},
        {"type": "incident", "at": now - timedelta(days=2), "data": {}},
        {"type": "incident-resolved", "at": now - timedelta(days=2, minutes=-30), "data": {}},
    ]
    result = await ingest_events(
        db,
        principal_for(org),
        [
            {
                "specversion": "1.0",
                "id": f"e{i}",
                "type": e["type"],
                "source": "//github.com/acme/checkout",
                "time": e["at"].isoformat(),
                "data": e["data"],
                **({"subject": "production"} if e["type"] != "change-merged" else {}),
            }
            for i, e in enumerate(events)
        ],
        max_event_bytes=10_000,
    )
    assert not result.rejected
    browser = await _browser(new_browser, "ada@acme.example")
    shown = await browser.get("/orgs/acme/dora?from=-30d&environment=production")
    assert shown.status_code == 200, shown.text
    text = shown.text
    for figure in (
        "Deployment frequency",
        "Lead time for changes",
        "Change failure rate",
        "Time to restore",
    ):
        assert figure in text
    assert "1 of 1 deployments" in text  # the rollback within the day
    assert "100.0%" in text
    assert text.count("<svg") == 4
    assert "2023 Accelerate State of DevOps" in text
    assert "/orgs/acme/events/" in text
    assert "<script" not in text.lower()
    bad = await browser.get("/orgs/acme/dora?from=whenever")
    assert bad.status_code == 400
    outsider = await _browser(new_browser, "eve@other.example")
    refused = await outsider.get("/orgs/acme/dora")
    assert refused.status_code == 404
