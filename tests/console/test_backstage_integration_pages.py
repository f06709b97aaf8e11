"""The Integrations pages for a Backstage: an owner adds one with its base URL and token (never
shown again) and sees its last reading into the graph, or why it failed."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.console.test_integrations_pages import _add, _browser
from tests.factories import make_org
from tests.ingest import test_backstage
from tests.ingest.test_backstage import LOOPBACK, TOKEN, _Catalog
from tests.integrations.support import SECRET_KEY
from trailmap.ingest.backstage_index import BackstageIndexer
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

backstage = test_backstage.backstage  # the loopback Backstage serving the catalog fixtures


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
        secret_key=SECRET_KEY,
        kubernetes_poll_seconds=0,
        backstage_poll_seconds=0,
    )


@pytest.fixture
async def owner(db: Database, new_browser: NewBrowser) -> httpx.AsyncClient:
    await make_org(db, slug="acme")
    return await _browser(db, new_browser, "ada@acme.example", "owner")


async def test_an_owner_adds_a_backstage_and_sees_its_reading_and_its_error(
    owner: httpx.AsyncClient, db: Database, backstage: tuple[str, type[_Catalog]]
) -> None:
    url, _handler = backstage
    made = await _add(owner, kind="backstage", name="acme-backstage", url=url, token=TOKEN)
    assert made.status_code == 303, made.text
    shown = await owner.get(made.headers["location"])
    assert shown.status_code == 200
    assert TOKEN not in shown.text
    assert "set (stored encrypted, never shown)" in shown.text
    assert "not read yet" in shown.text
    assert "Rotate secret" not in shown.text  # no webhook, no secret

    indexer = BackstageIndexer(db, secret_key=SECRET_KEY, outbound=LOOPBACK, node="node-a")
    await indexer.round()
    read = await owner.get(made.headers["location"])
    reading = re.search(r"<p id=catalog-reading>read [^<]*UTC: (\d+) nodes", read.text)
    assert reading is not None, read.text
    assert int(reading.group(1)) >= 10  # the fixtures' components, resources, APIs, teams
    assert "id=catalog-error" not in read.text

    refused = await _add(owner, kind="backstage", name="other-backstage", url=url, token="bad")
    await indexer.round()
    failed = await owner.get(refused.headers["location"])
    assert "id=catalog-error" in failed.text
    assert "401" in failed.text
