"""Fuzzing the HTTP API from its own OpenAPI document: schemathesis generates requests for
every operation (valid and invalid ones) and sends them to the app in-process; no answer
may be a server error or break the schema the document gives for its status.

Run alone: `TRAILMAP_RELIABILITY=full .venv/bin/python -m pytest -s
tests/reliability/test_fuzz_openapi.py` (without the variable: the fast form).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Tenant
from tests.factories import event
from tests.reliability.forms import scale
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

# Examples per operation and generation mode (positive, negative).
_EXAMPLES = int(scale(8, 150))
_CHECKS = [not_a_server_error, response_schema_conformance]


@dataclass
class _Tally:
    """Cases sent per operation, printed at the end so a full run's figures can be quoted."""

    cases: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)

    def add(self, label: str, status: int) -> None:
        self.cases[label] = self.cases.get(label, 0) + 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def report(self, title: str) -> None:
        total = sum(self.cases.values())
        print(f"\n{title}: {total} cases over {len(self.cases)} operations")
        print(f"  statuses: {dict(sorted(self.statuses.items()))}")
        for label, count in sorted(self.cases.items()):
            print(f"  {count:6d}  {label}")


@pytest.fixture
def api_schema(settings: Settings, db: Database, tenant: Tenant) -> Iterator[Any]:
    app = create_app(settings, database=db)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        # schemathesis starts the app's lifespan once and keeps it; it ends with the database.
        asgi.shutdown_lifespans()


def _operations(api_schema: Any, *, methods: set[str] | None = None) -> list[Any]:
    found = [result.ok() for result in api_schema.get_all_operations()]
    return [op for op in found if methods is None or op.method.upper() in methods]


def _fuzz(operation: Any, token: str, tally: _Tally) -> None:
    """Send `_EXAMPLES` generated requests per mode to one operation and check each answer."""
    headers = {"Authorization": f"Bearer {token}"}
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=_EXAMPLES * 2,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        # Generated headers may carry their own Authorization; the key must win.
        case.headers = {**(case.headers or {}), **headers}
        response = case.call()
        tally.add(operation.label, response.status_code)
        case.validate_response(response, checks=_CHECKS)

    run()


async def _seed(settings: Settings, db: Database, tenant: Tenant) -> None:
    """Something to find, so that reads reach past the empty answers."""
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        events = [event(), event(type="rollback", subject="staging", severity="MAJOR")]
        sent = await http.post("/api/v1/events", json=events, headers=tenant.auth())
        assert sent.status_code == 201, sent.text
        point = {"name": "http.server.errors", "value": 1.5, "time": "NOW", "service": "checkout"}
        sent = await http.post("/api/v1/metrics", json=point, headers=tenant.auth())
        assert sent.status_code in (200, 201), sent.text


async def test_every_operation_with_a_read_write_key_never_answers_a_server_error_or_off_schema(
    api_schema: Any, tenant: Tenant, settings: Settings, db: Database
) -> None:
    await _seed(settings, db, tenant)
    tally = _Tally()
    operations = _operations(api_schema)
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:
        await anyio.to_thread.run_sync(_fuzz, operation, tenant.writer, tally)
    tally.report("read-write key")
    assert set(tally.cases) == {op.label for op in operations}


async def test_every_read_with_a_read_only_key_never_answers_a_server_error_or_off_schema(
    api_schema: Any, tenant: Tenant, settings: Settings, db: Database
) -> None:
    await _seed(settings, db, tenant)
    tally = _Tally()
    operations = _operations(api_schema, methods={"GET"})
    for operation in operations:
        await anyio.to_thread.run_sync(_fuzz, operation, tenant.reader, tally)
    tally.report("read-only key, GET")
    assert set(tally.cases) == {op.label for op in operations}
