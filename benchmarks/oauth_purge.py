"""OAuth's purge at volume: left-over registrations found among many live tokens.

    .venv/bin/python benchmarks/oauth_purge.py [--backend sqlite|postgres|both]
                                               [--clients C] [--tokens T] [--quick]

Anyone may register clients without signing in, so a flood leaves C registrations (default
50,000) that nobody approved, each with one authorization request that expired awaiting
consent, beside 100 approved clients holding T live tokens (default 200,000: a few months
of hourly refreshes, whose spent refresh tokens are kept until they expire). The purge must
tell the two apart without an index on client_id (none of api_keys, oauth_tokens or
oauth_requests has one, and the schema is not this benchmark's to change).

Timed: `oauth.retention.purge_oauth`, as the retention job runs it, on that database. The
floor, on an identical database: the same rows deleted by a plain chunked delete that
checks nothing (every registration of kind and age, then every request). Printed: rows
deleted, seconds, and the ratio to the floor. There is no target: the figure says what the
usage checks cost, and that it grows with the rows rather than with their product.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

# Python puts this folder first on sys.path, where benchmarks/mcp.py would stand in for the
# `mcp` SDK that trailmap.oauth imports: the SDK is imported first, with the folder off it.
_HERE = Path(__file__).resolve().parent
_PATH = list(sys.path)
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
import mcp.server.auth.provider  # noqa: E402, F401

sys.path[:] = _PATH

import psycopg  # noqa: E402
from _common import (  # noqa: E402
    Backend,
    BenchDatabase,
    bench_database,
    raw_sqlite,
    run_backends,
)

from trailmap.oauth.retention import purge_oauth  # noqa: E402
from trailmap.storage import Database  # noqa: E402

_APPROVED = 100
_DAY_US = 86_400_000_000
_NOW_US = 1_800_000_000_000_000  # 2027-01-15: every row below is older than a day
_FAR_US = _NOW_US + 365 * _DAY_US
_INFO = '{"redirect_uris": ["https://app.example/callback"]}'


def _token(n: int, client_id: str) -> tuple[Any, ...]:
    key = n % _APPROVED
    return (f"t-{n}", "refresh", client_id, "o", f"k-{key}", "u", f"f-{key}", "read", 0, _FAR_US)


def _rows(clients: int, tokens: int) -> dict[str, list[tuple[Any, ...]]]:
    approved = [f"approved-{n}" for n in range(_APPROVED)]
    return {
        "organizations": [("o", "acme", "Acme", "self-hosted", 365, 0)],
        "api_keys": [
            ("o", f"k-{n}", f"MCP — {c}", "tmk_", f"h-{n}", "READ_ONLY", "x", 0, c)
            for n, c in enumerate(approved)
        ],
        "oauth_clients": [(c, "registered", _INFO, 0) for c in approved]
        + [(f"left-over-{n}", "registered", _INFO, 0) for n in range(clients)],
        "oauth_requests": [
            (f"r-{n}", f"left-over-{n}", '{"state": "x"}', 0, 900_000_000) for n in range(clients)
        ],
        "oauth_tokens": [_token(n, approved[n % _APPROVED]) for n in range(tokens)],
    }


_COLUMNS = {
    "organizations": "id, slug, name, plan, retention_days, created_us",
    "api_keys": "org_id, id, name, prefix, token_hash, scope, created_by, created_us, "
    "oauth_client_id",
    "oauth_clients": "client_id, kind, info, created_us",
    "oauth_requests": "request_hash, client_id, params, created_us, expires_us",
    "oauth_tokens": "token_hash, kind, client_id, org_id, key_id, user_id, family_id, scopes, "
    "created_us, expires_us",
}


def _fill(db: BenchDatabase, rows: dict[str, list[tuple[Any, ...]]]) -> None:
    if db.backend == "sqlite":
        lite = raw_sqlite(db.driver_url)
        lite.execute("BEGIN")
        for table, values in rows.items():
            marks = ", ".join("?" * len(values[0]))
            lite.executemany(f"INSERT INTO {table} ({_COLUMNS[table]}) VALUES ({marks})", values)
        lite.execute("COMMIT")
        lite.close()
        return
    with psycopg.connect(db.driver_url) as pg:  # one transaction, committed on leaving
        for table, values in rows.items():
            marks = ", ".join(["%s"] * len(values[0]))
            pg.cursor().executemany(
                f"INSERT INTO {table} ({_COLUMNS[table]}) VALUES ({marks})", values
            )
        pg.execute("ANALYZE")


def _plain_delete(db: BenchDatabase) -> int:
    """The floor: the same rows, deleted in chunks of 5,000 with nothing checked."""
    statements = (
        (
            "DELETE FROM oauth_requests WHERE request_hash IN "
            "(SELECT request_hash FROM oauth_requests WHERE expires_us <= {now} LIMIT 5000)"
        ),
        (
            "DELETE FROM oauth_clients WHERE client_id IN (SELECT client_id FROM oauth_clients "
            "WHERE kind = 'registered' AND client_id LIKE 'left-over-%' LIMIT 5000)"
        ),
    )
    conn: Any = (
        raw_sqlite(db.driver_url)
        if db.backend == "sqlite"
        else psycopg.connect(db.driver_url, autocommit=True)
    )
    total = 0
    try:
        for statement in statements:
            # Each chunk its own transaction, as Database.write_in_chunks does.
            while deleted := conn.execute(statement.format(now=_NOW_US)).rowcount:
                total += deleted
    finally:
        conn.close()
    return total


def run_backend(backend: Backend, clients: int, tokens: int, tmp: Path) -> bool:
    rows = _rows(clients, tokens)
    with bench_database(backend, "oauth_floor", tmp) as floor_db:
        _fill(floor_db, rows)
        started = time.perf_counter()
        floor_rows = _plain_delete(floor_db)
        floor_s = time.perf_counter() - started
    with bench_database(backend, "oauth_purge", tmp) as bench_db:
        _fill(bench_db, rows)
        db = Database(bench_db.url)
        try:
            started = time.perf_counter()
            purged = asyncio.run(purge_oauth(db, _NOW_US))
            purge_s = time.perf_counter() - started
        finally:
            db.close()
    ok = purged.clients == clients and purged.requests == clients and purged.tokens == 0
    print(
        f"{backend}: {clients:,} left-over registrations and their {clients:,} expired requests "
        f"among {tokens:,} live tokens: purged {purged.clients + purged.requests:,} rows in "
        f"{purge_s:.2f} s; floor (nothing checked) {floor_rows:,} rows in {floor_s:.2f} s; "
        f"ratio {purge_s / floor_s:.1f}" + ("" if ok else f"; WRONG COUNTS {purged}"),
        flush=True,
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", default="both", choices=["sqlite", "postgres", "both"])
    parser.add_argument("--clients", type=int, default=50_000)
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="a fast sanity run (5,000 / 20,000)")
    args = parser.parse_args(argv)
    clients = 5_000 if args.quick else args.clients
    tokens = 20_000 if args.quick else args.tokens
    return run_backends(
        "oauth_purge",
        args.backend,
        lambda backend, tmp: run_backend(backend, clients, tokens, tmp),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
