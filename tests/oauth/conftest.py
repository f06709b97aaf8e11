"""The OAuth tests' server stack: two `trailmap serve` processes on one database behind a
round-robin balancer whose address is the public URL (so consecutive steps of a flow land on
different processes), and an https server for Client ID Metadata Documents."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import make_org
from tests.https_server import HttpsServer, https_server
from tests.server import free_port, module_database, running_server, stop, wait_until_ready
from trailmap.accounts import add_user
from trailmap.storage import Database, migrate

OWNER = "owner@acme.example"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class Stack:
    public: str  # the balancer: the issuer and the MCP resource's base
    database_url: str
    metadata: HttpsServer  # serves Client ID Metadata Documents
    owner_id: str


def _seed(database_url: str) -> str:
    """Organizations acme (the owner's) and globex (not theirs); returns the owner's id."""

    async def _run() -> str:
        db = Database(database_url)
        try:
            migrate.upgrade(db)
            await make_org(db, slug="acme")
            await make_org(db, slug="globex")
            owner = await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
            return owner.id
        finally:
            db.close()

    return asyncio.run(_run())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[Stack]:
    with (
        module_database(request, tmp_path_factory, sqlite_template, "oauth") as (url, folder),
        https_server(folder, HttpsServer) as metadata,
    ):
        owner_id = _seed(url)
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        env = {
            "TRAILMAP_PUBLIC_URL": public,
            # The metadata server listens on loopback, which only a listed network opens.
            "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
            "TRAILMAP_CLIENT_METADATA_ALLOW_PRIVATE": "true",
            "TRAILMAP_CLIENT_METADATA_CA_FILE": metadata.ca_file,
            # One stack serves a whole module of tests from one address: no rate limits here
            # (tests/oauth/test_rate_limits.py shows them).
            "TRAILMAP_OAUTH_REGISTRATIONS_PER_HOUR": "0",
            "TRAILMAP_UNAUTHENTICATED_REQUESTS_PER_MINUTE": "0",
        }
        with (
            running_server(url, log_path=folder / "a.log", env=env) as node_a,
            running_server(url, log_path=folder / "b.log", env=env) as node_b,
        ):
            log = folder / "balancer.log"
            command = [
                sys.executable,
                "-m",
                "tests.mcp.auth_proxy",
                "--port",
                str(port),
                "--upstream",
                node_a,
                "--upstream",
                node_b,
            ]
            with log.open("wb") as out:
                balancer = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_until_ready(balancer, public, log)
                yield Stack(public=public, database_url=url, metadata=metadata, owner_id=owner_id)
            finally:
                stop(balancer)
