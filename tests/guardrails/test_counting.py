"""How the guardrails count a service's earlier deployments: through the partial index of
deployments (migration 0016), whatever else the environment holds. Without it SQLite, which
keeps no statistics, walked every service's events of the environment (docs/performance.md,
"The busy shape")."""

from __future__ import annotations

import pytest

from trailmap.storage import Connection, Database
from trailmap.storage import guardrails as store

_DAY_US = 86_400_000_000
_NOW_US = 1_800_000_000_000_000


def _plan(conn: Connection, environment: str | None) -> list[str]:
    asks = [
        store.Ask("count", _NOW_US - _DAY_US, 10_000),
        store.Ask("latest", _NOW_US - 3_600_000_000),
        store.Ask("rate", _NOW_US - 7 * _DAY_US, 100_000, max_percent=50, min_deployments=5),
    ]
    seen: list[str] = []
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.set_trace_callback(seen.append)  # each statement run, its parameters written in
    try:
        store.answer_asks(
            conn,
            "org",
            service="checkout",
            environment=environment,
            to_us=_NOW_US,
            detected_prefix="otel://",
            own_key=("//ci", "d-1"),
            asks=asks,
            with_rule_ids=True,
        )
    finally:
        raw.set_trace_callback(None)
    [statement] = [s for s in seen if "FROM events" in s]
    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement).all()
    return [str(row[-1]) for row in rows if " events " in f" {row[-1]} "]


@pytest.mark.parametrize("environment", ["production", None])
def test_the_counts_of_a_deployments_service_read_the_index_of_deployments_alone(
    db: Database, environment: str | None
) -> None:
    if not db.is_sqlite:
        pytest.skip("PostgreSQL chooses by its statistics; SQLite keeps none")
    searches = db.read_sync(_plan, environment)
    # The count, the latest, the rate's rollbacks and its deployments: each a search.
    assert len(searches) == 4, "\n".join(searches)
    for search in searches:
        assert "ix_events_deployments" in search, "\n".join(searches)
