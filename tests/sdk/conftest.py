"""One real Trailmap server per backend for every SDK and Action test: its own database, an
organization and a READ_WRITE key made before it started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sdk.support import LiveServer
from tests.server import module_database, org_with_key, running_server


@pytest.fixture(scope="package", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[LiveServer]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_sdk") as (
        url,
        directory,
    ):
        token = org_with_key(url, "acme", scope="read-write")
        with running_server(url, log_path=directory / "server.log") as base_url:
            yield LiveServer(url=base_url, token=token, database_url=url)
