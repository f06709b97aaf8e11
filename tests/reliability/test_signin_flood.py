"""Sixty sign-ins at once against a real `trailmap serve` (SQLite and PostgreSQL): each
password check takes argon2's 64 MiB while it runs, so only a few run at a time; the
server's peak memory (VmHWM of /proc/<pid>/status) is printed, and `/healthz` keeps
answering meanwhile (docs/operations.md, "Sign-ins at once").

Fast form: 20 sign-ins; full form (scripts/reliability): 60, and the peak must stay within
the hashes allowed at once (`TRAILMAP_PASSWORD_HASHES_AT_ONCE`) plus `SLACK_MIB`.
Alone: `scripts/reliability tests/reliability/test_signin_flood.py`.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.factories import make_org
from tests.forms import sign_in
from tests.reliability.forms import FULL, scale
from tests.reliability.healthz import probe_healthz
from tests.server import module_database, server_process
from trailmap.accounts import add_user
from trailmap.accounts.passwords import default_hashes_at_once
from trailmap.storage import Database, migrate

pytestmark = pytest.mark.anyio

SIGN_INS = int(scale(20, 60))
USERS = 3  # the others sign in as addresses nobody has: a check against a dummy hash
PASSWORD = "correct horse battery"
ARGON2_MIB = 64
SLACK_MIB = 96


@dataclass(frozen=True)
class Target:
    database: str
    url: str
    process: subprocess.Popen[bytes]


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    missing_retry_after: int = 0
    healthz_ms: list[float] = field(default_factory=list)
    healthz_failures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[Target]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_signins") as (
        url,
        directory,
    ):
        asyncio.run(_users(url))
        with server_process(url, log_path=directory / "server.log") as (base_url, process):
            yield Target(request.param, base_url, process)


async def _users(url: str) -> None:
    db = Database(url)
    try:
        migrate.upgrade(db)
        org = await make_org(db, slug="flood")
        for n in range(USERS):
            await add_user(db, f"sre{n}@flood.example", org_slug=org.slug, password=PASSWORD)
    finally:
        db.close()


def _peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def test_sign_ins_at_once_take_a_few_hashes_of_memory_and_health_checks_go_on(
    target: Target,
) -> None:
    tally = Tally()
    before_mib = _peak_rss_mib(target.process.pid)
    started, stop = threading.Event(), threading.Event()
    probe = threading.Thread(target=probe_healthz, args=(target.url, tally, started, stop))
    probe.start()
    began = time.monotonic()
    try:
        assert await asyncio.to_thread(started.wait, 10), "the probe never reached the server"
        await asyncio.gather(*(_sign_in(n, target.url, tally) for n in range(SIGN_INS)))
    finally:
        stop.set()
        probe.join(timeout=30)
    elapsed = time.monotonic() - began
    peak_mib = _peak_rss_mib(target.process.pid)

    _print_figures(target.database, tally, before_mib, peak_mib, elapsed)
    assert tally.healthz_failures == [], tally.healthz_failures[:5]
    # Signed in (303), wrong address (401), or no turn within the wait (503, Retry-After).
    assert set(tally.statuses) <= {303, 401, 503}, tally.statuses
    assert tally.missing_retry_after == 0
    assert tally.statuses[303] + tally.statuses[401] > 0
    if FULL:
        allowed = default_hashes_at_once() * ARGON2_MIB + SLACK_MIB
        assert peak_mib - before_mib < allowed


async def _sign_in(n: int, url: str, tally: Tally) -> None:
    """One browser, from an address of its own (the server trusts X-Forwarded-For from
    loopback, as behind a proxy), so that the per-address back-off does not turn it away."""
    email = f"sre{n}@flood.example" if n < USERS else f"nobody{n}@flood.example"
    headers = {"X-Forwarded-For": f"198.51.100.{n + 1}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as browser:
        answer = await sign_in(browser, email, PASSWORD)
    tally.statuses[answer.status_code] += 1
    if answer.status_code == 503 and "Retry-After" not in answer.headers:
        tally.missing_retry_after += 1


def _print_figures(
    database: str, tally: Tally, before_mib: float, peak_mib: float, elapsed: float
) -> None:
    form = "full" if FULL else "fast"
    cuts = statistics.quantiles(tally.healthz_ms, n=100, method="inclusive")
    print(
        f"\n{SIGN_INS} sign-ins at once on {database} ({form}), answered in {elapsed:.1f} s: "
        f"{dict(tally.statuses)}"
    )
    print(
        f"  server peak RSS (VmHWM): {before_mib:.0f} MiB before, {peak_mib:.0f} MiB after "
        f"(+{peak_mib - before_mib:.0f} MiB)"
    )
    print(
        f"  /healthz meanwhile: {len(tally.healthz_ms)} answers, p50 {cuts[49]:.1f} ms, "
        f"p99 {cuts[98]:.1f} ms, max {max(tally.healthz_ms):.1f} ms"
    )
