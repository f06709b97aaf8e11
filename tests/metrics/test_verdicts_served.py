"""The verdict job as `trailmap serve` runs it: two app nodes on one database, each running
the job every fraction of a second; a deployment that raised the error rate gets its
`regressed` verdict on its own, claimed and computed once."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest

from tests.factories import make_key, make_org, principal_for
from tests.metrics.test_verdicts import _deployment, _error_rate
from tests.server import running_server
from trailmap import clock
from trailmap.storage import Database
from trailmap.storage import verdicts as verdict_store

pytestmark = pytest.mark.anyio


async def test_two_served_nodes_reach_a_regressed_verdict_once_on_their_own(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    key = await make_key(db, org, scope="read-only")
    deployed = clock.now().replace(microsecond=0) - timedelta(hours=3)
    event_id = await _deployment(db, principal, deployed)
    await _error_rate(db, principal, deployed, before=0.01, after=0.08)
    env = {"TRAILMAP_VERDICT_INTERVAL_SECONDS": "0.2", "TRAILMAP_KUBERNETES_POLL_SECONDS": "0"}
    with ExitStack() as stack:
        bases = [
            stack.enter_context(
                running_server(database_url, log_path=tmp_path / f"node-{n}.log", env=env)
            )
            for n in (1, 2)
        ]
        deadline = time.monotonic() + 30
        shown: dict[str, object] = {}
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            while "verdict" not in shown:
                assert time.monotonic() < deadline, "no verdict within 30 s"
                shown = (await http.get(f"{bases[0]}/api/v1/events/{event_id}")).json()["data"]
                await anyio.sleep(0.2)  # polling a served node, bounded by the deadline
            assert shown["verdict"] == "regressed"
            listed = await http.get(f"{bases[1]}/api/v1/events?from=-1d")
            assert [e.get("verdict") for e in listed.json()["data"]["events"]] == ["regressed"]
            await anyio.sleep(1)  # both nodes run the job several more times
    row = await db.read(verdict_store.get_verdict, org.id, event_id)
    assert row is not None
    assert row["verdict"] == "regressed"
    assert row["attempts"] == 1  # one claim, by one node, ever
