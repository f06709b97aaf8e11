"""The rows DORA's figures are computed from: an organization's deployments, rollbacks,
incidents and their resolutions, and the forge's merges and pushes, in a range, each reduced
to the few columns the computation reads (timeline/dora.py)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, or_, select
from sqlalchemy.engine import Dialect

from trailmap.storage.dialect import DriverSelect, compile_for_driver, fetch_on_driver
from trailmap.storage.tables import deploy_verdicts, events

__all__ = ["OPERATIONS", "SOURCE_CHANGES", "DoraRow", "dora_rows"]

# What happens to a service (filtered by environment) and what the forge says was changed
# (merges and pushes carry no environment).
OPERATIONS = ("deployment", "rollback", "incident", "incident-resolved")
SOURCE_CHANGES = ("change-merged", "push")


class DoraRow(NamedTuple):
    id: str
    type: str
    time_us: int
    service: str | None
    subject: str | None
    version: str | None
    sha: str | None  # data.sha: the deployed, merged or pushed commit
    status: str | None  # data.status: "failed" for a failed deployment
    verdict: str | None  # the deployment's automatic verdict, when reached
    commits: Any  # data.commits of a push (each with its time); None for the others


@lru_cache(maxsize=64)
def _statement(
    dialect: Dialect, kinds: str, services: int, environment: bool
) -> tuple[DriverSelect, Any]:
    t = events.c
    types = OPERATIONS if kinds == "operations" else SOURCE_CHANGES
    commits = t.data["commits"] if kinds == "changes" else None
    clauses: list[Any] = [
        t.org_id == bindparam("org_id"),
        # One bound parameter per type: an expanding IN cannot go straight to the driver.
        t.type.in_([bindparam(f"type_{i}") for i in range(len(types))]),
        t.time_us >= bindparam("from_us"),
        t.time_us < bindparam("to_us"),
    ]
    if services:
        clauses.append(t.service.in_([bindparam(f"service_{i}") for i in range(services)]))
    if environment and kinds == "operations":
        # An operation with no environment is about the service wherever it runs.
        clauses.append(or_(t.subject == bindparam("environment"), t.subject.is_(None)))
    stmt = select(
        t.id,
        t.type,
        t.time_us,
        t.service,
        t.subject,
        t.version,
        t.data["sha"].as_string(),
        t.data["status"].as_string(),
        *([commits] if commits is not None else []),
    ).where(*clauses)
    return compile_for_driver(stmt, dialect), stmt


def dora_rows(
    conn: Connection,
    org_id: str,
    kinds: str,
    *,
    from_us: int,
    to_us: int,
    services: Sequence[str] = (),
    environment: str | None = None,
) -> list[DoraRow]:
    """`kinds` "operations" (deployments, rollbacks, incidents, resolutions; in the
    environment, or with none) or "changes" (merges and pushes), in [from_us, to_us), oldest
    first (by time, then id). Read straight on the driver: a year of a busy organization is
    100,000 rows."""
    driver, stmt = _statement(conn.dialect, kinds, len(services), environment is not None)
    params: dict[str, Any] = {"org_id": org_id, "from_us": from_us, "to_us": to_us}
    types = OPERATIONS if kinds == "operations" else SOURCE_CHANGES
    params.update({f"type_{i}": t for i, t in enumerate(types)})
    params.update({f"service_{i}": s for i, s in enumerate(services)})
    if environment is not None:
        params["environment"] = environment
    rows = fetch_on_driver(conn, driver, params)
    if rows is None:
        rows = list(conn.execute(stmt, params))
    # Sorted here: in SQL, the types' index ranges would be merged through a temporary
    # B-tree of every row.
    rows.sort(key=itemgetter(2, 0))
    if kinds == "changes":
        return [DoraRow._make((*row[:8], None, row[8])) for row in rows]
    # The regressed verdicts apart, not joined: an organization has few, and a join's plan
    # hangs on the planner's statistics of a table that may have none yet.
    regressed = {
        r[0]
        for r in conn.execute(
            select(deploy_verdicts.c.event_id).where(
                deploy_verdicts.c.org_id == org_id, deploy_verdicts.c.verdict == "regressed"
            )
        )
    }
    return [
        DoraRow._make((*row, "regressed" if row[0] in regressed else None, None)) for row in rows
    ]
