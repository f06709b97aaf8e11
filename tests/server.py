"""A real Trailmap server in its own process, for tests that need one over TCP.

Started as `python -m trailmap.cli.main --database URL serve --port N` so it runs exactly
what `trailmap serve` runs; ready when `/healthz` answers, stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests import databases
from tests.factories import make_key, make_org
from trailmap.storage import Database, migrate

__all__ = [
    "free_port",
    "module_database",
    "org_with_key",
    "running_server",
    "server_process",
    "stop",
    "wait_until_ready",
]

_READY_TIMEOUT_S = 20.0
_POLL_INTERVAL_S = 0.05
_STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def module_database(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
    prefix: str,
) -> Iterator[tuple[str, Path]]:
    """A database of its own (`request.param` is sqlite or postgres) and a folder beside it,
    for a server that lives for a whole module: `database_url`'s is emptied before each test.
    Yields (URL, folder); a PostgreSQL database is dropped afterwards.
    """
    directory = tmp_path_factory.mktemp(f"{prefix}-{request.param}")
    if request.param == "sqlite":
        yield databases.copy_sqlite(sqlite_template, directory / "trailmap.db"), directory
        return
    if request.getfixturevalue("postgres_url") is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    postgres = databases.find_postgres()
    assert postgres is not None
    name = postgres.create_database(prefix=prefix)
    try:
        yield postgres.url_for(name), directory
    finally:
        postgres.drop_database(name)


def org_with_key(database_url: str, slug: str, *, scope: str = "read-write") -> str:
    """Migrate the database, create the organization and return a key of it."""

    async def _create() -> str:
        db = Database(database_url)
        try:
            migrate.upgrade(db)
            return await make_key(db, await make_org(db, slug=slug), scope=scope)
        finally:
            db.close()

    return asyncio.run(_create())


@contextmanager
def running_server(
    database_url: str,
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run `trailmap serve` on `database_url`, with `env` added to its environment and `args`
    to its command line; yield its base URL once `/healthz` answers."""
    with server_process(database_url, log_path=log_path, env=env, args=args) as (base_url, _):
        yield base_url


@contextmanager
def server_process(
    database_url: str,
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`running_server`, yielding the process too (to read its /proc/<pid>/status, say)."""
    port = free_port()
    environment = {
        **os.environ,
        # The tests decide what is in the database; no purge runs behind their back.
        "TRAILMAP_RETENTION_PURGE_INTERVAL_SECONDS": "0",
        "TRAILMAP_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    environment.pop("TRAILMAP_DATABASE_URL", None)
    command = [
        sys.executable,
        "-m",
        "trailmap.cli.main",
        "--database",
        database_url,
        "serve",
        "--port",
        str(port),
        *args,
    ]
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        try:
            wait_until_ready(process, base_url, log_path)
            yield base_url, process
        finally:
            stop(process)


def wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    """Until `base_url/healthz` answers 200 (through a proxy too); `log_path` is the
    process's output, shown if it exits or never answers."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{process.args!r} exited with {process.returncode} before it was ready:\n"
                    + log_path.read_text(errors="replace")
                )
            try:
                if client.get(f"{base_url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_INTERVAL_S)  # polling a readiness endpoint, bounded by the deadline
    raise RuntimeError(
        f"the server did not answer {base_url}/healthz within {_READY_TIMEOUT_S:.0f} s:\n"
        + log_path.read_text(errors="replace")
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not go."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)
