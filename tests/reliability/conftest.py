"""The reliability suite: its fast form runs in scripts/test, its full form in
scripts/reliability (TRAILMAP_RELIABILITY=full), each part alone with `-k` or its file.

Each test that stops, kills or starves something does it to processes of its own: its own
`trailmap serve` processes and, where PostgreSQL is involved, a PostgreSQL cluster of its
own made with initdb on a free port, never the machine's.
"""

from __future__ import annotations

import pytest

from tests.reliability.forms import FULL


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Reliability tests run for seconds to a minute each: a generous per-test timeout.
    for item in items:
        if "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.timeout(600 if FULL else 180))
