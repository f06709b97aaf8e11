"""A real Prometheus per test, started from OpenMetrics text (tests/metrics/prometheus_server.py).

    def test_something(start_prometheus: StartPrometheus) -> None:
        server = start_prometheus(to_openmetrics([...]), basic_auth=True)
        config = server.config({"error_rate": 'error_rate{service="$service"}'})

Without ``prometheus`` and ``promtool`` these tests are skipped, or fail under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Protocol

import pytest

from tests.metrics.prometheus_server import PrometheusServer, binaries_missing, running_prometheus


class StartPrometheus(Protocol):
    def __call__(
        self, openmetrics: str, *, basic_auth: bool = False, lookback_delta: str | None = None
    ) -> PrometheusServer: ...


@pytest.fixture(scope="session")
def prometheus_binaries() -> None:
    missing = binaries_missing()
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {missing}")
    pytest.skip(missing)


@pytest.fixture
def start_prometheus(
    prometheus_binaries: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartPrometheus]:
    """Starts Prometheus over the given OpenMetrics text; each is stopped after the test."""
    with ExitStack() as stack:

        def start(
            openmetrics: str, *, basic_auth: bool = False, lookback_delta: str | None = None
        ) -> PrometheusServer:
            workdir = tmp_path_factory.mktemp("prometheus")
            return stack.enter_context(
                running_prometheus(
                    openmetrics, workdir, basic_auth=basic_auth, lookback_delta=lookback_delta
                )
            )

        yield start
