"""The GitHub Action (actions/send-event) run as a runner runs it: action.yml's `run` line in
`bash -eo pipefail`, its `env:` filled from the inputs, GITHUB_* set, a GITHUB_OUTPUT file,
and a python3 that sees the standard library alone."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sdk.support import Answer, LiveServer, new_source, stand_in
from trailmap.accounts import get_org
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.guardrails.guardrails import create_freeze
from trailmap.storage import Database

ACTION = Path(__file__).resolve().parents[2] / "actions" / "send-event"
_EXPRESSION = re.compile(r"^\$\{\{ inputs\.([a-z-]+) \}\}$")


def _action() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ACTION / "action.yml").read_text())
    return loaded


def _step() -> dict[str, Any]:
    [step] = _action()["runs"]["steps"]
    return dict(step)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


def run_action(tmp_path: Path, inputs: dict[str, str], **github: str) -> Run:
    """The step as the runner runs it, with `inputs` (the rest their defaults) and GITHUB_*."""
    action = _action()
    given = {
        name: inputs.get(name, str(spec.get("default", "")))
        for name, spec in action["inputs"].items()
    }
    assert set(inputs) <= set(given), "an input action.yml does not declare"
    step = _step()
    env = {}
    for variable, expression in step["env"].items():
        match = _EXPRESSION.match(expression)
        assert match is not None, expression
        env[variable] = given[match.group(1)]
    # The runner's python3, with no site-packages: the script may use the standard library only.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    python3 = bin_dir / "python3"
    python3.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "$@"\n')
    python3.chmod(0o755)
    output = tmp_path / "github_output"
    output.write_text("")
    env.update(
        {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "GITHUB_ACTION_PATH": str(ACTION),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_REPOSITORY": "acme/shop",
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
            "GITHUB_ACTOR": "octocat",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": "987654321",
            "GITHUB_RUN_ATTEMPT": "1",
            "GITHUB_REF_NAME": "main",
            "GITHUB_WORKFLOW": "Deploy",
            "GITHUB_JOB": "deploy",
            **github,
        }
    )
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return Run(done.returncode, done.stdout, done.stderr, outputs)


def assert_key_never_shown(run: Run, key: str) -> None:
    assert key not in run.stderr
    # Once, to the runner, which masks it in every log line after: never anywhere else.
    assert [line for line in run.stdout.splitlines() if key in line] == [f"::add-mask::{key}"]


def test_a_deployment_step_stores_the_event_with_the_runs_context(
    live: LiveServer, tmp_path: Path
) -> None:
    run = run_action(
        tmp_path,
        {
            "url": live.url,
            "api-key": live.token,
            "environment": "production",
            "service": "checkout",
            "description": "checkout to production",
        },
    )
    assert run.code == 0, run.stdout + run.stderr
    assert_key_never_shown(run, live.token)
    [event] = live.events_from("//github.com/acme/shop")
    assert event["type"] == "deployment"
    assert event["subject"] == "production"
    assert event["service"] == "checkout"
    assert event["version"] == "0123456"
    assert event["description"] == "checkout to production"
    assert event["data"]["url"] == "https://github.com/acme/shop/actions/runs/987654321"
    assert event["data"]["actor"] == "octocat"
    assert event["data"]["commit"] == "0123456789abcdef0123456789abcdef01234567"
    assert event["data"]["ref"] == "main"
    assert event["data"]["workflow"] == "Deploy"
    assert run.outputs == {
        "event-id": event["id"],
        "trailmap-id": event["trailmap_id"],
        "status": "accepted",
        "violations": "0",
    }
    assert event["id"].startswith("gha-987654321-1-deploy-")


def test_429_then_503_are_retried_and_the_event_is_stored_once(
    live: LiveServer, tmp_path: Path
) -> None:
    source = new_source()
    script = [
        Answer(429, {"Retry-After": "1"}),
        Answer(503, {"Retry-After": "0"}, land_first=True),
    ]
    with stand_in(live.url, script) as proxy:
        run = run_action(
            tmp_path,
            {"url": proxy.url, "api-key": live.token, "source": source, "version": "v9"},
        )
    assert run.code == 0, run.stdout + run.stderr
    assert len(proxy.requests) == 3
    assert proxy.times[1] - proxy.times[0] >= 0.95  # Retry-After: 1 was honoured
    assert len({r["body"]["id"] for r in proxy.requests}) == 1
    assert "attempt 1 failed (429 QUOTA_EXCEEDED: try again shortly)" in run.stdout
    assert "attempt 2 failed (503 UNAVAILABLE: try again shortly)" in run.stdout
    [event] = live.events_from(source)
    assert event["version"] == "v9"
    assert run.outputs["status"] == "duplicate"
    assert run.outputs["trailmap-id"] == event["trailmap_id"]
    assert_key_never_shown(run, live.token)


@pytest.mark.parametrize(
    ("fail_on_error", "code", "level"), [("false", 0, "warning"), ("true", 1, "error")]
)
def test_a_refused_event_warns_or_fails_the_step_as_asked_and_is_not_retried(
    live: LiveServer, tmp_path: Path, fail_on_error: str, code: int, level: str
) -> None:
    with stand_in(live.url, []) as proxy:
        run = run_action(
            tmp_path,
            {
                "url": proxy.url,
                "api-key": live.token,
                "source": "not a uri",
                "fail-on-error": fail_on_error,
            },
        )
    assert run.code == code
    assert len(proxy.requests) == 1
    [annotation] = [line for line in run.stdout.splitlines() if line.startswith(f"::{level}")]
    assert annotation.startswith(f"::{level} title=Trailmap::Trailmap refused the event: 400")
    assert "source" in annotation
    assert run.outputs["status"] == "failed"
    assert run.outputs["trailmap-id"] == ""
    assert_key_never_shown(run, live.token)


def _freeze_service(live: LiveServer, service: str) -> None:
    """A freeze over every deployment of `service`, made as the instance's operator."""

    async def make() -> None:
        db = Database(live.database_url)
        try:
            org = await get_org(db, "acme")
            body = {
                "name": "Release freeze",
                "reason": "Launch week",
                "services": [service],
                "start": "2026-01-01T00:00:00Z",
                "end": "2036-01-01T00:00:00Z",
            }
            await create_freeze(db, org.id, body, who=OPERATOR_AUTHORITY, by=OPERATOR)
        finally:
            db.close()

    asyncio.run(make())


@pytest.mark.parametrize(
    ("fail_on_violation", "code", "level"), [("false", 0, "warning"), ("true", 1, "error")]
)
def test_a_deployment_during_a_freeze_is_stored_and_fails_the_step_only_when_asked(
    live: LiveServer, tmp_path: Path, fail_on_violation: str, code: int, level: str
) -> None:
    service = f"frozen-{uuid.uuid4().hex[:8]}"
    _freeze_service(live, service)
    source = new_source()
    run = run_action(
        tmp_path,
        {
            "url": live.url,
            "api-key": live.token,
            "service": service,
            "source": source,
            "environment": "production",
            "fail-on-violation": fail_on_violation,
        },
    )
    assert run.code == code, run.stdout + run.stderr
    [annotation] = [line for line in run.stdout.splitlines() if line.startswith(f"::{level}")]
    assert annotation.startswith(f"::{level} title=Trailmap guardrail::freeze: Release freeze")
    assert "Launch week" in annotation
    assert run.outputs["status"] == "accepted"
    assert run.outputs["violations"] == "1"
    [event] = live.events_from(source)
    assert [v["kind"] for v in event["violations"]] == ["freeze"]


def test_a_wrong_key_is_a_warning_that_does_not_show_the_key(
    live: LiveServer, tmp_path: Path
) -> None:
    wrong = "tmk_0000000000000000000000000000000000000000000abcdef"
    run = run_action(tmp_path, {"url": live.url, "api-key": wrong})
    assert run.code == 0
    assert "::warning title=Trailmap::Trailmap refused the event: 401 UNAUTHORIZED" in run.stdout
    assert_key_never_shown(run, wrong)


def test_a_server_that_cannot_be_reached_is_retried_then_a_warning(tmp_path: Path) -> None:
    with stand_in("http://127.0.0.1:9", []) as gone:
        url = gone.url  # nothing listens here once the stand-in is gone
    key = "tmk_0000000000000000000000000000000000000000000abcdef"
    run = run_action(tmp_path, {"url": url, "api-key": key})
    assert run.code == 0
    assert run.stdout.count("failed (could not reach") == 4
    assert "::warning title=Trailmap::gave up after 5 attempts; last: could not reach" in run.stdout
    assert run.outputs["status"] == "failed"
    assert_key_never_shown(run, key)


def test_action_yml_passes_exactly_the_inputs_the_script_reads() -> None:
    spec = importlib.util.spec_from_file_location("send_event", ACTION / "send_event.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    action = _action()
    step = _step()
    assert action["runs"]["using"] == "composite"
    assert set(action["inputs"]) == set(script.INPUTS)
    expected_env = {
        "INPUT_" + name.upper().replace("-", "_"): f"${{{{ inputs.{name} }}}}"
        for name in script.INPUTS
    }
    assert step["env"] == expected_env
    assert set(action["outputs"]) == {"event-id", "trailmap-id", "status", "violations"}
    for name, output in action["outputs"].items():
        assert output["value"] == f"${{{{ steps.{step['id']}.outputs.{name} }}}}"
    source = (ACTION / "send_event.py").read_text()
    # Nothing but the standard library, so nothing is installed at run time.
    imported = set(re.findall(r"^(?:import|from) ([a-z_]+)", source, flags=re.MULTILINE))
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


# -- the GitLab CI job the page documents ------------------------------------------------------

_PAGE = ACTION.parents[1] / "docs" / "integrations" / "github-actions.md"


def _gitlab_script() -> str:
    text = _PAGE.read_text()
    [block] = re.findall(r"```yaml\n(deploy:\n.*?)```", text, flags=re.DOTALL)
    job: dict[str, Any] = yaml.safe_load(block)["deploy"]
    [_deploy, send] = job["script"]
    assert isinstance(send, str)
    return send


def test_the_documented_gitlab_job_stores_its_deployment_once_through_a_503(
    live: LiveServer,
) -> None:
    project = f"acme/shop-{new_source()[-8:]}"
    with stand_in(live.url, [Answer(503, {"Retry-After": "0"}, land_first=True)]) as proxy:
        done = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", _gitlab_script()],
            env={
                "PATH": "/usr/bin:/bin",
                "TRAILMAP_URL": proxy.url,
                "TRAILMAP_API_KEY": live.token,
                "CI_PIPELINE_ID": "1234",
                "CI_JOB_ID": "5678",
                "CI_SERVER_HOST": "gitlab.example.com",
                "CI_PROJECT_PATH": project,
                "CI_ENVIRONMENT_NAME": "production",
                "CI_COMMIT_SHORT_SHA": "89abcdef",
                "CI_COMMIT_SHA": "89abcdef0123456789abcdef0123456789abcdef",
                "CI_COMMIT_REF_NAME": "main",
                "CI_JOB_URL": "https://gitlab.example.com/acme/shop/-/jobs/5678",
                "GITLAB_USER_LOGIN": "dev",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(proxy.requests) == 2
    assert '"duplicates":[{' in done.stdout.replace(" ", "")
    [event] = live.events_from(f"//gitlab.example.com/{project}")
    assert event["id"] == "gitlab-1234-5678"
    assert event["subject"] == "production"
    assert event["version"] == "89abcdef"
    assert event["data"]["url"] == "https://gitlab.example.com/acme/shop/-/jobs/5678"


def test_the_documented_workflow_uses_only_inputs_the_action_declares() -> None:
    [block] = re.findall(r"```yaml\n(jobs:\n.*?)```", _PAGE.read_text(), flags=re.DOTALL)
    steps = yaml.safe_load(block)["jobs"]["deploy"]["steps"]
    [step] = [s for s in steps if "/actions/send-event@" in s.get("uses", "")]
    declared = _action()["inputs"]
    assert set(step["with"]) <= set(declared)
    assert {name for name, spec in declared.items() if spec.get("required")} <= set(step["with"])
