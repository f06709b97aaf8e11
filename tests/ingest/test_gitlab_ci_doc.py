"""docs/integrations/gitlab-ci.md's jobs, their `after_script` run as written by `sh` with the
variables GitLab sets, against a real server: a deployment that worked and one that failed
land on the timeline as the doc says, and a report sent twice is stored once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import module_database, org_with_key, running_server

_DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "gitlab-ci.md"
SHA = "279484c09fbe69ededfced8c1bb6e6d24616b468"
# What GitLab sets in a deployment job of https://gitlab.example.com/acme/checkout.
CI_VARIABLES = {
    "CI_PROJECT_URL": "https://gitlab.example.com/acme/checkout",
    "CI_PROJECT_PATH": "acme/checkout",
    "CI_ENVIRONMENT_NAME": "production",
    "CI_COMMIT_SHA": SHA,
    "CI_COMMIT_SHORT_SHA": SHA[:8],
    "CI_PIPELINE_URL": "https://gitlab.example.com/acme/checkout/-/pipelines/31",
    "GITLAB_USER_LOGIN": "jsmith",
}


def after_scripts() -> dict[str, list[str]]:
    """Each section's job's `after_script`, by the section's heading (read as GitLab's YAML
    would: the one `- |` item's lines, dedented)."""
    text = _DOC.read_text(encoding="utf-8")
    found = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = section.split("\n", 1)[0]
        for block in re.findall(r"```yaml\n(.*?)```", section, re.S):
            found[heading] = [_literal_item(block, "after_script")]
    return found


def _literal_item(block: str, key: str) -> str:
    """The text of `key:`'s one `- |` item in a YAML block (its indented lines, dedented)."""
    start = re.search(rf"^( *){key}:\n\1  - \|\n", block, re.M)
    assert start is not None, f"no {key} with a `- |` item"
    lines = []
    for line in block[start.end() :].splitlines():
        if line.strip() and not line.startswith(start[1] + "    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines))


@pytest.fixture(scope="module", params=["sqlite"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str]]:
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_ci_doc") as (
        url,
        directory,
    ):
        key = org_with_key(url, "acme", scope="read-write")
        with running_server(url, log_path=directory / "server.log") as base_url:
            yield base_url, key


def run_job(
    script: list[str], base_url: str, key: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    """The `after_script` as a runner runs it: each item in turn, in a POSIX shell."""
    bin_dir = str(Path(sys.executable).parent)  # where `trailmap` is installed
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TRAILMAP_URL": base_url,
        "TRAILMAP_API_KEY": key,
        **CI_VARIABLES,
        **variables,
    }
    env.pop("CI_COMMIT_TAG", None)
    env.update({k: v for k, v in variables.items() if k == "CI_COMMIT_TAG"})
    return subprocess.run(
        ["sh", "-ec", "\n".join(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def the_event(base_url: str, key: str, event_id: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{base_url}/api/v1/events",
        params={"from": "-1h", "source": "//gitlab.example.com/acme/checkout", "limit": 100},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 200, answer.text
    (found,) = [e for e in answer.json()["data"]["events"] if e["id"] == event_id]
    event: dict[str, Any] = found
    return event


def test_the_doc_shows_a_job_for_trailmap_send_and_one_for_curl() -> None:
    assert sorted(after_scripts()) == ["With `trailmap send`", "With curl"]


@pytest.mark.parametrize("section", ["With `trailmap send`", "With curl"])
def test_a_deployment_job_that_worked_reports_a_deployment(
    served: tuple[str, str], section: str
) -> None:
    base_url, key = served
    job_id = "7961" if section == "With curl" else "7962"
    script = after_scripts()[section]

    ran = run_job(script, base_url, key, CI_JOB_STATUS="success", CI_JOB_ID=job_id)
    again = run_job(script, base_url, key, CI_JOB_STATUS="success", CI_JOB_ID=job_id)

    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert again.returncode == 0, (again.stdout, again.stderr)
    if section == "With curl":
        assert json.loads(again.stdout)["data"]["counts"] == {
            "accepted": 0,
            "duplicates": 1,
            "rejected": 0,
        }
    else:
        assert "(duplicate)" in again.stderr
    event = the_event(base_url, key, f"gitlab-ci-{job_id}")
    assert (event["type"], event["subject"], event["version"], event["service"]) == (
        "deployment",
        "production",
        SHA[:8],
        "checkout",
    )
    assert event.get("severity") is None
    assert event["data"] == {
        "description": f"Deployment of {SHA[:8]} to production succeeded",
        "status": "succeeded",
        "sha": SHA,
        "url": CI_VARIABLES["CI_PIPELINE_URL"],
        "actor": "jsmith",
        "repository": "acme/checkout",
    }


@pytest.mark.parametrize("section", ["With `trailmap send`", "With curl"])
def test_a_deployment_job_that_failed_reports_a_major_failed_deployment_of_its_tag(
    served: tuple[str, str], section: str
) -> None:
    base_url, key = served
    job_id = "8011" if section == "With curl" else "8012"

    ran = run_job(
        after_scripts()[section],
        base_url,
        key,
        CI_JOB_STATUS="failed",
        CI_JOB_ID=job_id,
        CI_COMMIT_TAG="v1.4.2",
    )

    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    event = the_event(base_url, key, f"gitlab-ci-{job_id}")
    assert (event["severity"], event["version"], event["data"]["status"]) == (
        "MAJOR",
        "v1.4.2",
        "failed",
    )
    assert event["data"]["description"] == "Deployment of v1.4.2 to production failed"


@pytest.mark.parametrize("section", ["With `trailmap send`", "With curl"])
def test_a_canceled_deployment_job_reports_nothing(served: tuple[str, str], section: str) -> None:
    base_url, key = served

    ran = run_job(
        after_scripts()[section], base_url, key, CI_JOB_STATUS="canceled", CI_JOB_ID="9000"
    )

    assert (ran.returncode, ran.stdout) == (0, "")
    answer = httpx.get(
        f"{base_url}/api/v1/events",
        params={"from": "-1h", "limit": 100},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert "gitlab-ci-9000" not in {e["id"] for e in answer.json()["data"]["events"]}
