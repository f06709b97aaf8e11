"""Shared fixtures: a real database per test (SQLite always, PostgreSQL when it answers),
the app over an in-process ASGI transport, and an organization with keys."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import databases
from tests.factories import make_key, make_org
from trailmap.accounts import Organization
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database, migrate

_BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.migrated_sqlite_template(tmp_path_factory.mktemp("schema"))


@pytest.fixture(scope="session")
def demo_server(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str]]:
    """The demo organization, loaded and served once for every test that asks it (tests/demo.py):
    (base URL, read-only key). SQLite only: the demo takes a quarter of a minute to load."""
    from tests.demo import serve_demo  # noqa: PLC0415 - only the tests that ask the demo load it

    with serve_demo(tmp_path_factory.mktemp("demo"), sqlite_template) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A migrated PostgreSQL database for the whole run, or None when there is no server."""
    server = databases.find_postgres()
    if server is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no PostgreSQL answers (set TRAILMAP_TEST_DATABASE_URL)")
        yield None
        return
    name = server.create_database()
    url = server.url_for(name)
    db = Database(url)
    try:
        migrate.upgrade(db)
    finally:
        db.close()
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture(params=_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        return databases.copy_sqlite(sqlite_template, tmp_path / "trailmap.db")
    url: str | None = request.getfixturevalue("postgres_url")
    if url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    databases.truncate_all(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, retention_purge_interval_seconds=0)


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass(frozen=True)
class Tenant:
    org: Organization
    writer: str  # READ_WRITE token
    reader: str  # READ_ONLY token
    admin: str  # ADMIN token of a service account: the organization's settings

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.writer}"}

    def admin_auth(self) -> dict[str, str]:
        return self.auth(self.admin)


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    org = await make_org(db)
    return Tenant(
        org=org,
        writer=await make_key(db, org, scope="read-write"),
        reader=await make_key(db, org, scope="read-only"),
        admin=await make_key(db, org, scope="admin"),
    )
