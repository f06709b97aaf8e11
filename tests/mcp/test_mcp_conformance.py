"""The official MCP conformance suite's generic server scenarios against `/mcp`.

The suite (`@modelcontextprotocol/conformance`, on Node 22) is installed by scripts/test into
.tools/conformance. It sends no `Authorization` header, so it talks to a real server process
through tests/mcp/auth_proxy.py, which adds the key and changes nothing else: the Host and
Origin the suite sends reach the server as sent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance_suite import suite
from tests.server import (
    free_port,
    module_database,
    org_with_key,
    running_server,
    stop,
    wait_until_ready,
)

_ROOT = Path(__file__).resolve().parents[2]
_SCENARIOS = [
    "server-initialize",
    "tools-list",
    "ping",
    "server-session-lifecycle",
    "dns-rebinding-protection",
]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def proxied_mcp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[str]:
    """The URL of `/mcp` behind the key-adding proxy."""
    suite()
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_conf") as (
        url,
        directory,
    ):
        key = org_with_key(url, "conformance", scope="read-only")
        with running_server(url, log_path=directory / "server.log") as server_url:
            port = free_port()
            command = [sys.executable, "-m", "tests.mcp.auth_proxy", "--port", str(port)]
            proxy_log = directory / "proxy.log"
            with proxy_log.open("wb") as log:
                proxy = subprocess.Popen(
                    [*command, "--upstream", server_url],
                    cwd=_ROOT,
                    env={**os.environ, "TRAILMAP_PROXY_TOKEN": key},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                try:
                    proxy_url = f"http://127.0.0.1:{port}"
                    # Through the proxy to the server's health check: both are up.
                    wait_until_ready(proxy, proxy_url, proxy_log)
                    yield f"{proxy_url}/mcp"
                finally:
                    stop(proxy)


@pytest.mark.parametrize("scenario", _SCENARIOS)
def test_the_conformance_suite_passes_the_generic_server_scenario(
    proxied_mcp: str, scenario: str, tmp_path: Path
) -> None:
    node, cli = suite()
    command = [str(node), str(cli), "server", "--url", proxied_mcp, "--scenario", scenario]
    run = subprocess.run(
        [*command, "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    (results,) = tmp_path.glob(f"server-{scenario}-*/checks.json")
    checks = json.loads(results.read_text())
    statuses = {check["id"]: check["status"] for check in checks}
    # No check may fail or warn; INFO and SKIPPED are the suite's way of saying "optional".
    bad = {k: v for k, v in statuses.items() if v in ("FAILURE", "WARNING")}
    assert not bad, output
    assert "SUCCESS" in statuses.values(), statuses
