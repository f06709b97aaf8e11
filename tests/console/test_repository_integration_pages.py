"""A repository integration's page in the console: its last reading (commit, counts, files
skipped and why), an "Index now" button that asks for an index, and deletion taking what it
declared away from the graph."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.console.test_integrations_pages import _browser
from tests.factories import make_org
from tests.forms import parse
from tests.git_server import make_repository, publish
from tests.ingest.test_repository_indexing import BOMB, COMPOSE, options
from tests.integrations.support import SECRET_KEY, make_integration
from trailmap.graph.learn.declared import declared_sources
from trailmap.ingest.repository_indexer import RepositoryIndexer
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        repository_poll_seconds=0,
        repository_paths=str(tmp_path),
        public_url="http://testserver",
        secret_key=SECRET_KEY,
    )


async def test_an_owner_sees_the_last_reading_and_asks_for_an_index(
    db: Database, new_browser: NewBrowser, tmp_path: Path
) -> None:
    org = await make_org(db, slug="acme")
    owner: httpx.AsyncClient = await _browser(db, new_browser, "ada@acme.example", "owner")
    head = make_repository(tmp_path / "work", {"app/compose.yaml": COMPOSE, "x/compose.yaml": BOMB})
    bare = publish(tmp_path / "work", tmp_path / "shop.git")
    made, _secret = await make_integration(
        db, org, kind="repository", name="shop", settings={"url": bare.as_uri()}
    )
    page_path = f"/orgs/acme/integrations/{made.id}"
    first = await owner.get(page_path)
    assert first.status_code == 200, first.text
    assert "Not read yet." in first.text

    form = parse(first.text).form(f"{page_path}/index")
    asked = await owner.post(f"{page_path}/index", data=form.data())
    assert asked.status_code == 303, asked.text
    assert "an index is asked for" in (await owner.get(page_path)).text

    await RepositoryIndexer(db, options(tmp_path), node="n").round()
    shown = (await owner.get(page_path)).text
    assert f"<code id=revision>{head}</code>" in shown
    assert "<b id=declared-edges>1</b>" in shown
    assert "<code>x/compose.yaml</code>" in shown

    confirm = await owner.get(f"{page_path}/delete")
    deleted = await owner.post(
        f"{page_path}/delete",
        data=parse(confirm.text).form(f"{page_path}/delete").data(confirm="yes"),
    )
    assert deleted.status_code == 303
    assert await declared_sources(db, org.id) == []


async def test_an_owner_connects_a_repository_from_the_form_and_it_is_indexed(
    db: Database, new_browser: NewBrowser, tmp_path: Path
) -> None:
    org = await make_org(db, slug="acme")
    owner: httpx.AsyncClient = await _browser(db, new_browser, "ada@acme.example", "owner")
    head = make_repository(tmp_path / "work", {"app/compose.yaml": COMPOSE})
    bare = publish(tmp_path / "work", tmp_path / "shop.git")
    listing = await owner.get("/orgs/acme/integrations")
    form = parse(listing.text).form("/orgs/acme/integrations")

    # A transport the server does not read is refused on its field, the token not echoed.
    refused = await owner.post(
        "/orgs/acme/integrations",
        data=form.data(
            kind="repository",
            name="shop",
            repo_url="ssh://git@example.com/shop.git",
            repo_token="t0ken-never-shown",
        ),
    )
    assert refused.status_code == 400, refused.text
    assert "id=repo_url-error" in refused.text
    assert "t0ken-never-shown" not in refused.text

    made = await owner.post(
        "/orgs/acme/integrations",
        data=form.data(kind="repository", name="shop", repo_url=bare.as_uri(), repo_env="prod"),
    )
    assert made.status_code == 303, made.text
    page_path = made.headers["location"]
    assert "an index is asked for" in (await owner.get(page_path)).text

    await RepositoryIndexer(db, options(tmp_path), node="n").round()
    shown = (await owner.get(page_path)).text
    assert f"<code id=revision>{head}</code>" in shown
    [source] = await declared_sources(db, org.id)
    assert (source["kind"], source["revision"]) == ("repository", head)
