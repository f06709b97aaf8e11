"""docs/connect.md's MCP Inspector commands, run as written (but for the server's address and
the Inspector installed by scripts/test instead of `npx`) against a real server: a newcomer
who copies them gets answers, not errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conformance_suite import INSPECTOR_VERSION, inspector
from tests.server import module_database, org_with_key, running_server

_DOC = Path(__file__).resolve().parents[2] / "docs" / "connect.md"
_NPX = f"npx -y @modelcontextprotocol/inspector@{INSPECTOR_VERSION}"


def _inspector_block() -> str:
    text = _DOC.read_text()
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "mcp() {" in b]
    return block


def _commands(block: str) -> list[str]:
    """The `mcp ...` lines, each with its continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line for line in joined.splitlines() if line.startswith("mcp --")]


@pytest.fixture(scope="module", params=["sqlite"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str]]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_doc") as (
        url,
        directory,
    ):
        key = org_with_key(url, "acme", scope="read-write")
        with running_server(url, log_path=directory / "server.log") as base_url:
            body = {
                "specversion": "1.0",
                "id": "doc-1",
                "type": "deployment",
                "source": "//github.com/acme/checkout",
                "time": "NOW",
                "subject": "production",
                "version": "v1.4.2",
            }
            sent = httpx.post(
                f"{base_url}/api/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            assert sent.status_code == 201, sent.text
            yield base_url, key


def test_the_inspector_version_the_doc_names_is_the_one_the_tests_run() -> None:
    block = _inspector_block()
    assert _NPX in block
    assert "22.19" in _DOC.read_text()  # the Node.js it needs is said


def test_every_inspector_command_in_connect_md_gets_an_answer(served: tuple[str, str]) -> None:
    base_url, key = served
    node_bin, launcher = inspector()
    block = _inspector_block().replace(_NPX, str(launcher))
    block = block.replace("http://127.0.0.1:8000", base_url)
    function = block[: block.index("\n}\n") + 3]
    commands = _commands(block)
    assert len(commands) >= 5
    env = {**os.environ, "PATH": f"{node_bin}:{os.environ['PATH']}", "TRAILMAP_API_KEY": key}
    answers = []
    for command in commands:
        ran = subprocess.run(
            ["bash", "-c", f"{function}\n{command}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, (command, ran.stdout[-2000:], ran.stderr[-2000:])
        answer = json.loads(ran.stdout)
        assert not answer.get("isError"), (command, answer)
        answers.append(answer)
    assert any(t["name"] == "query_events" for t in answers[0]["tools"])
    deployed_today = answers[2]["structuredContent"]["events"]
    assert [e["version"] for e in deployed_today] == ["v1.4.2"]
