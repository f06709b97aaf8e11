"""What both benchmarks share: databases made and dropped for one run, a real server process,
its organizations and keys, rows in the exact form the server stores, and percentiles.

Benchmarks print figures beside a floor measured in the same run; they never assert timings
in tests (STYLE.md). Run them from the repository root with the project's virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
import psycopg

from trailmap.accounts import create_key, create_org
from trailmap.storage import Database, migrate
from trailmap.storage.tables import events as events_table

__all__ = [
    "ADMIN_URL",
    "COLUMNS",
    "Backend",
    "BenchDatabase",
    "Server",
    "backends",
    "bench_database",
    "create_org_with_key",
    "insert_sql",
    "machine_summary",
    "percentile",
    "postgres_version",
    "raw_sqlite",
    "read_http_response",
    "require_trailmap",
    "row_params",
    "rss_kib",
    "run_backends",
    "start_server",
    "temporary_directory",
]

Backend = Literal["sqlite", "postgres"]

# Where the benchmarks create (and drop) their PostgreSQL databases; trust auth, user postgres.
ADMIN_URL = os.environ.get(
    "TRAILMAP_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# The events table's columns in table order, so raw inserts write what the server writes.
COLUMNS: tuple[str, ...] = tuple(c.name for c in events_table.columns)
_JSON_COLUMNS = frozenset({"data", "extensions"})
_REPO = Path(__file__).resolve().parent.parent
_TRAILMAP = _REPO / ".venv" / "bin" / "trailmap"


def _json_text(value: object) -> str:
    # What the server's engine writes: orjson (Database's json_serializer), and a Python None
    # in a JSON column is the JSON `null`, not SQL NULL (SQLAlchemy's JSON none_as_null=False).
    return orjson.dumps(value).decode()


def row_params(row: dict[str, Any]) -> tuple[Any, ...]:
    """A stored row (with org_id) as driver parameters in COLUMNS order, JSON as its text; a
    nullable column the row leaves out (an older generator's row, before `violations`) is
    NULL, as the server stores it for an event without violations."""
    return tuple(_json_text(row[c]) if c in _JSON_COLUMNS else row.get(c) for c in COLUMNS)


def insert_sql(backend: Backend) -> str:
    """The plain multi-column INSERT the floors use (one row per execution)."""
    names = ", ".join(COLUMNS)
    if backend == "sqlite":
        marks = ", ".join("?" for _ in COLUMNS)
    else:
        marks = ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in COLUMNS)
    return f"INSERT INTO events ({names}) VALUES ({marks})"


# -- databases --------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    backend: Backend
    url: str  # what `trailmap --database` and `Database(...)` take
    driver_url: str  # what sqlite3.connect / psycopg.connect take
    name: str


def _pg_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def bench_database(backend: Backend, label: str, directory: Path) -> Iterator[BenchDatabase]:
    """A fresh, migrated database for one run, removed afterwards."""
    if backend == "sqlite":
        path = directory / f"{label}.db"
        db = BenchDatabase(backend, f"sqlite:///{path}", str(path), label)
        _migrate(db.url)
        try:
            yield db
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"trailmap_bench_{os.getpid()}_{label}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _pg_url(name)
    db = BenchDatabase(backend, url, url, name)
    try:
        _migrate(url)
        yield db
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    handle = Database(url)
    try:
        migrate.upgrade(handle)
    finally:
        handle.close()


def create_org_with_key(url: str, slug: str) -> tuple[str, str]:
    """An organization on the self-hosted plan and a READ_WRITE key: (org id, token)."""

    async def _create() -> tuple[str, str]:
        handle = Database(url)
        try:
            org = await create_org(handle, slug)
            _key, token = await create_key(
                handle, slug, name="benchmark", scope="READ_WRITE", created_by="benchmarks"
            )
            return org.id, token
        finally:
            handle.close()

    return asyncio.run(_create())


def raw_sqlite(path: str) -> sqlite3.Connection:
    """A sqlite3 connection set up as the server sets up its own (WAL, NORMAL, foreign keys)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


# -- the server process -----------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    _log: Any = field(repr=False, default=None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def start_server(
    url: str, directory: Path, *, timeout: float = 60.0, launcher: Path | None = None
) -> Iterator[Server]:
    """`trailmap --database URL serve --port P` as a child process, ready when /healthz is.

    With `launcher`, `python LAUNCHER --database URL --port P` runs instead: a script that
    serves Trailmap's app with something added for the benchmark.
    """
    port = _free_port()
    log_path = directory / f"server-{port}.log"
    log = log_path.open("wb")
    env = {**os.environ, "TRAILMAP_LOG_LEVEL": "warning"}
    command = [str(_TRAILMAP), "--database", url, "serve", "--port", str(port)]
    if launcher is not None:
        # -P: the launcher's folder (benchmarks/, which holds an mcp.py) stays off sys.path.
        command = [sys.executable, "-P", str(launcher), "--database", url, "--port", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = Server(process, f"http://127.0.0.1:{port}", log_path, log)
    try:
        _wait_healthy(server, timeout)
        yield server
    finally:
        server.stop()


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                break
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    server.stop()
    output = server.log_path.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"the server did not become healthy; its output:\n{output}")


async def read_http_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (what uvicorn sends for these routes)."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        elif name.strip().lower() == b"transfer-encoding":
            raise RuntimeError("a chunked response; this client reads Content-Length only")
    return status, await reader.readexactly(length)


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


# -- figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def postgres_version() -> str:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error:
        return "unreachable"
    return str(row[0]) if row else "unknown"


def machine_summary() -> str:
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"load average {load} at start; "
        f"machine: {os.cpu_count()} CPUs, {memory_kib / 1024 / 1024:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {postgres_version()}"
    )


def temporary_directory() -> contextlib.AbstractContextManager[str]:
    return tempfile.TemporaryDirectory(prefix="trailmap-bench-")


def backends(choice: str) -> list[Backend]:
    if choice == "both":
        return ["sqlite", "postgres"]
    if choice == "sqlite":
        return ["sqlite"]
    if choice == "postgres":
        return ["postgres"]
    raise SystemExit(f"--backend must be sqlite, postgres or both, not {choice!r}")


def require_trailmap() -> None:
    if not _TRAILMAP.exists() and shutil.which("trailmap") is None:
        sys.exit(f"{_TRAILMAP} is missing; run scripts/serve or pip install -e . first")


def run_backends(
    name: str, choice: str, run_backend: Callable[[Backend, Path], bool], *, quick: bool
) -> int:
    """Run one benchmark on each chosen backend and give its exit status: 1 when a full run
    missed a target. A quick run only checks that the benchmark works end to end: a small
    database is not the one the targets are about."""
    require_trailmap()
    print(machine_summary(), flush=True)
    passed = True
    with temporary_directory() as tmp:
        for backend in backends(choice):
            passed = run_backend(backend, Path(tmp)) and passed
    if quick:
        print(f"{name}: quick sanity run; the targets are judged on a full run only")
        return 0
    print(f"{name}: every target met" if passed else f"{name}: FAIL, a target was missed")
    return 0 if passed else 1
