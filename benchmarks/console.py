"""The console's Timeline page against the REST events query it draws.

    .venv/bin/python benchmarks/console.py [--backend sqlite|postgres|both] [--events N]
                                           [--orgs K] [--requests R] [--quick]

Setup (not measured): N events (default 1,000,000) over K organizations (default 20) and the
last seven days, loaded as benchmarks/query.py loads them; a member of the first organization
signs in to a real `trailmap serve`. Measured, R times each and interleaved, one request at a
time on one keep-alive connection:

- `GET /orgs/org-00/timeline?from=-2h&environment=production` as the signed-in member (the
  whole page: the member, the filters' suggestions, the query, the HTML);
- `GET /api/v1/events?from=-2h&subject=production` with a key of the same organization.

Target (issue 19): p50(page) <= 2 x p50(REST). `--quick` (100,000 events, 100 requests) is a
sanity check that never fails on a figure. Graph page figures are not measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

import httpx
from _common import (
    Backend,
    bench_database,
    create_org_with_key,
    percentile,
    run_backends,
    start_server,
)
from query import generate_rows, load_postgres, load_sqlite

from trailmap.accounts import add_user
from trailmap.storage import Database

_EMAIL = "bench@example.com"
_PASSWORD = "correct horse battery"  # noqa: S105 - a benchmark user on a throwaway database
_PAGE = "/orgs/org-00/timeline?from=-2h&environment=production"
_REST = "/api/v1/events?from=-2h&subject=production"


def _add_member(url: str) -> None:
    async def add() -> None:
        db = Database(url)
        try:
            await add_user(db, _EMAIL, org_slug="org-00", role="member", password=_PASSWORD)
        finally:
            db.close()

    asyncio.run(add())


def _sign_in(client: httpx.Client) -> None:
    opened = client.get("/login")
    found = re.search(r"name=csrf value='([^']+)'", opened.text)
    if found is None:
        raise RuntimeError("the sign-in page has no CSRF field")
    done = client.post(
        "/login", data={"csrf": found.group(1), "email": _EMAIL, "password": _PASSWORD}
    )
    if done.status_code != 303:
        raise RuntimeError(f"sign-in failed: {done.status_code}")


def measure(base_url: str, token: str, requests: int) -> tuple[list[float], list[float]]:
    page_ms: list[float] = []
    rest_ms: list[float] = []
    headers = {"authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=base_url, timeout=30.0) as browser,
        httpx.Client(base_url=base_url, timeout=30.0) as api,
    ):
        _sign_in(browser)
        for _ in range(30):  # warm: connections, caches
            browser.get(_PAGE).raise_for_status()
            api.get(_REST, headers=headers).raise_for_status()
        for _ in range(requests):
            started = time.perf_counter()
            page = browser.get(_PAGE)
            page_ms.append((time.perf_counter() - started) * 1000)
            if page.status_code != 200 or "data-id=" not in page.text:
                raise RuntimeError(f"unexpected page: {page.status_code} {page.text[:300]}")
            started = time.perf_counter()
            rest = api.get(_REST, headers=headers)
            rest_ms.append((time.perf_counter() - started) * 1000)
            if rest.status_code != 200 or not rest.json()["data"]["events"]:
                raise RuntimeError(f"unexpected answer: {rest.status_code} {rest.text[:300]}")
    return page_ms, rest_ms


def run_backend(backend: Backend, count: int, orgs: int, requests: int, directory: Path) -> bool:
    with bench_database(backend, "console", directory) as db:
        keys = [create_org_with_key(db.url, f"org-{n:02d}") for n in range(orgs)]
        rows = generate_rows(count, [org_id for org_id, _ in keys], time.time_ns() // 1000)
        (load_sqlite if backend == "sqlite" else load_postgres)(db, rows)
        _add_member(db.url)
        with start_server(db.url, directory) as server:
            page_ms, rest_ms = measure(server.base_url, keys[0][1], requests)
    p50_page, p50_rest = percentile(page_ms, 50), percentile(rest_ms, 50)
    met = p50_page <= 2 * p50_rest
    print(f"{backend:<8} {count:,} events over {orgs} orgs; {requests} requests each")
    for label, values in (("Timeline page " + _PAGE, page_ms), ("REST " + _REST, rest_ms)):
        print(
            f"{'':<8} {label:<70} p50 {percentile(values, 50):7.2f} ms   "
            f"p99 {percentile(values, 99):7.2f} ms"
        )
    print(
        f"{'':<8} target p50(page) <= 2 x p50(REST) = {2 * p50_rest:.2f} ms: {p50_page:.2f} ms "
        f"{'OK' if met else 'MISSED'}",
        flush=True,
    )
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--events", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument("--orgs", type=int, default=20, help="organizations (default 20)")
    parser.add_argument("--requests", type=int, default=300, help="of each kind (default 300)")
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (100,000 events)")
    args = parser.parse_args(argv)
    count, requests = (100_000, 100) if args.quick else (args.events, args.requests)
    return run_backends(
        "console",
        args.backend,
        lambda backend, directory: run_backend(backend, count, args.orgs, requests, directory),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
