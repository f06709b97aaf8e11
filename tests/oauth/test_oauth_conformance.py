"""The MCP conformance suite's authorization-server scenarios against Trailmap's issuer.

`conformance authorization` checks the RFC 8414 metadata, then prints an authorization URL
for a person to open and waits for the redirect on its own callback listener. Here the
scripted browser plays the person: it opens the URL, signs in, approves, and follows the
redirect to the suite's listener; the suite then exchanges the code itself. Runs against the
two-process stack, so the steps alternate between processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.streams.text import TextReceiveStream

from tests.conformance_suite import suite
from tests.oauth.browser import Browser
from tests.oauth.conftest import OWNER, PASSWORD, Stack
from tests.server import free_port

pytestmark = pytest.mark.anyio

_SCENARIOS = {"authorization-server-metadata-endpoint", "authorization-code-grant"}


def _results(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Each scenario's checks.json, by its folder's name."""
    return {path.parent.name: json.loads(path.read_text()) for path in folder.glob("*/checks.json")}


async def test_the_conformance_suite_passes_the_authorization_server_scenarios(
    stack: Stack, tmp_path: Path
) -> None:
    node, cli = suite()
    port = free_port()
    callback = f"http://127.0.0.1:{port}/callback"
    async with httpx.AsyncClient() as http:
        registered = await http.post(
            stack.public + "/register",
            json={
                "client_name": "MCP conformance suite",
                "redirect_uris": [callback],
                "token_endpoint_auth_method": "none",
            },
        )
    assert registered.status_code == 201, registered.text
    command = [
        str(node),
        str(cli),
        "authorization",
        "--url",
        stack.public,
        "--client-id",
        registered.json()["client_id"],
        "--resource",
        stack.public + "/mcp",
        "--port",
        str(port),
        "-o",
        str(tmp_path),
    ]
    output: list[str] = []
    browser = Browser()
    try:
        with anyio.move_on_after(120) as waited:
            process = await anyio.open_process(command)
            try:
                assert process.stdout is not None
                pending = ""
                async for chunk in TextReceiveStream(process.stdout):
                    output.append(chunk)
                    *lines, pending = (pending + chunk).split("\n")
                    for line in lines:
                        if line.startswith(stack.public + "/authorize?"):
                            back = await browser.redirect_back(
                                line.strip(), email=OWNER, password=PASSWORD, organization="acme"
                            )
                            assert back.startswith(callback + "?")
                            await browser.get(back)  # the suite's listener takes the code
                await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()  # the suite would wait minutes for a callback
                await process.aclose()
    finally:
        await browser.aclose()
    text = "".join(output)
    assert not waited.cancelled_caught, f"the suite did not finish within 120 s:\n{text}"
    assert process.returncode == 0, text
    results = _results(tmp_path)
    seen = {check["id"]: check["status"] for checks in results.values() for check in checks}
    for scenario in _SCENARIOS:
        assert any(scenario in folder for folder in results), (scenario, text)
    assert seen["authorization-code-grant"] == "SUCCESS"
    assert seen["authorization-server-metadata-cimd"] == "SUCCESS"
    bad = {k: v for k, v in seen.items() if v in ("FAILURE", "WARNING", "SKIPPED")}
    assert not bad, text
