"""`trailmap guardrail` (the operator's freezes and policies, over the database) and
`trailmap check` (a real server asked over HTTP; its exit code says clear or not), on both
databases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.cli.test_commands import invoke
from tests.server import module_database, org_with_key, running_server
from trailmap.cli.main import cli


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[str, str, str]]:
    """(database URL, server URL, a READ_ONLY key) of an organization `acme`."""
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_check") as (
        url,
        directory,
    ):
        key = org_with_key(url, "acme", scope="read-only")
        with running_server(url, log_path=directory / "server.log") as base_url:
            yield url, base_url, key


def _check(base_url: str, key: str, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["check", *args], env={"TRAILMAP_URL": base_url, "TRAILMAP_API_KEY": key}
    )


def _ok(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_rules_made_on_the_command_line_are_listed_checked_and_removed(
    live: tuple[str, str, str],
) -> None:
    db_url, base_url, key = live
    [line] = _ok(
        invoke(
            db_url,
            "guardrail", "freeze", "create", "--org", "acme", "--name", "Weekend",
            "--reason", "Nobody on call", "--days", "fri", "--from", "16:00", "--to", "08:00",
            "--end-day", "mon", "--timezone", "Europe/Paris", "--environment", "production",
        )
    )  # fmt: skip
    freeze = json.loads(line)
    assert freeze["recurrence"]["end_day"] == "mon"
    [line] = _ok(
        invoke(
            db_url,
            "guardrail", "policy", "create", "--org", "acme", "--kind", "blocked_days",
            "--name", "No Sundays", "--set", "days=sun", "--set", "timezone=America/New_York",
        )
    )  # fmt: skip
    policy = json.loads(line)
    assert policy["settings"] == {"days": ["sun"], "timezone": "America/New_York"}
    listed = _ok(invoke(db_url, "guardrail", "freeze", "list", "--org", "acme"))
    assert [json.loads(x)["id"] for x in listed] == [freeze["id"]]

    during = _check(
        base_url, key, "--service", "checkout", "--environment", "production",
        "--time", "2026-11-28T12:00:00+01:00",
    )  # fmt: skip
    assert during.exit_code == 3, during.output
    assert "freeze" in during.stderr
    assert "Nobody on call" in during.stderr
    sunday = _check(
        base_url, key, "--service", "checkout", "--time", "2026-11-29T12:00:00-05:00", "--json"
    )
    assert sunday.exit_code == 3
    assert [v["kind"] for v in json.loads(sunday.stdout)["violations"]] == ["blocked_days"]
    clear = _check(
        base_url, key, "--service", "checkout", "--environment", "staging",
        "--time", "2026-12-01T12:00:00Z",
    )  # fmt: skip
    assert clear.exit_code == 0, clear.output
    assert "clear" in clear.stderr

    for what, rule in (("freeze", freeze), ("policy", policy)):
        gone = invoke(db_url, "guardrail", what, "delete", rule["id"], "--org", "acme")
        assert gone.exit_code == 0, gone.output
    assert _ok(invoke(db_url, "guardrail", "policy", "list", "--org", "acme")) == []


def test_a_bad_rule_is_refused_with_a_sentence(live: tuple[str, str, str]) -> None:
    db_url, _base_url, _key = live
    refused = invoke(
        db_url, "guardrail", "policy", "create", "--org", "acme", "--kind", "allowed_hours",
        "--name", "x", "--set", "start=09:00", "--set", "end=17:00", "--set", "timezone=Paris",
    )  # fmt: skip
    assert refused.exit_code == 1
    assert "timezone" in refused.output


def test_a_check_that_cannot_reach_its_server_exits_1(live: tuple[str, str, str]) -> None:
    _db_url, base_url, key = live
    refused = _check(base_url, "tmk_not-a-key", "--service", "checkout")
    assert refused.exit_code == 1
    assert "401" in refused.stderr
    gone = _check("http://127.0.0.1:9", key, "--service", "checkout")
    assert gone.exit_code == 1
