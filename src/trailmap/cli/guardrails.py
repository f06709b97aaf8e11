"""`trailmap check` (asks a server before deploying) and `trailmap guardrail` (an
organization's freezes and policies, made with the database as the instance's operator)."""

from __future__ import annotations

import json
from typing import Any, Final

import click
import httpx

__all__ = ["CHECK_EXIT_CODES", "check", "guardrail"]

# What `trailmap check` exits with, for a pipeline to branch on (docs/guardrails.md).
CLEAR: Final = 0
COULD_NOT_CHECK: Final = 1  # the server was not reached, or refused the request
VIOLATIONS: Final = 3  # (2 is click's: a bad command line)
CHECK_EXIT_CODES: Final = {
    CLEAR: "clear: no freeze or policy is against it",
    COULD_NOT_CHECK: "could not check: the server was not reached or refused the request",
    2: "bad command line",
    VIOLATIONS: "violations: the deployment would go against a freeze or a policy",
}


@click.command()
@click.option("--service", required=True, help="The service to deploy, e.g. checkout.")
@click.option("--environment", default=None, help="The environment, e.g. production.")
@click.option(
    "--time",
    "time_",
    default=None,
    help="When it would happen, ISO 8601 with its zone (default: now).",
)
@click.option(
    "--url",
    envvar="TRAILMAP_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Server URL (env TRAILMAP_URL).",
)
@click.option(
    "--api-key",
    envvar="TRAILMAP_API_KEY",
    required=True,
    help="Any key of the organization; READ_ONLY is enough (env TRAILMAP_API_KEY).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
def check(
    service: str, environment: str | None, time_: str | None, url: str, api_key: str, as_json: bool
) -> None:
    """Would deploying SERVICE to ENVIRONMENT now (or at --time) go against a change freeze or a
    deployment policy? Prints each violation. Exit codes: 0 clear, 3 violations, 1 could not
    check (server unreachable or refusing), 2 bad command line. Guardrails only warn: the
    pipeline decides whether to stop."""
    body: dict[str, Any] = {"service": service}
    if environment is not None:
        body["environment"] = environment
    if time_ is not None:
        body["time"] = time_
    try:
        response = httpx.post(
            url.rstrip("/") + "/api/v1/guardrails/check",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=10.0,
        )
    except httpx.HTTPError as error:
        click.echo(f"could not reach {url}: {error}", err=True)
        raise SystemExit(COULD_NOT_CHECK) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code != 200 or not isinstance(answer.get("data"), dict):
        message = answer.get("error") if isinstance(answer, dict) else None
        click.echo(f"the server refused the check ({response.status_code}): {message}", err=True)
        raise SystemExit(COULD_NOT_CHECK)
    data = answer["data"]
    if as_json:
        click.echo(json.dumps(data))
    where = f"{service} in {environment}" if environment else service
    if not data["violations"]:
        click.echo(f"clear: deploying {where} at {data['time']}", err=True)
        raise SystemExit(CLEAR)
    click.echo(f"{len(data['violations'])} violation(s) for {where} at {data['time']}:", err=True)
    for violation in data["violations"]:
        click.echo(f"  {violation['kind']}: {violation['message']}", err=True)
    raise SystemExit(VIOLATIONS)


# -- guardrail: the operator's side ----------------------------------------------------------


@click.group()
def guardrail() -> None:
    """An organization's change freezes and deployment policies (docs/guardrails.md): they
    flag deployments, never refuse them."""


@guardrail.group()
def freeze() -> None:
    """Change-freeze windows: one-off (--start, --end) or weekly (--days, --from, --to)."""


@guardrail.group()
def policy() -> None:
    """Deployment policies: blocked_days, allowed_hours, daily_cap, cooldown,
    max_rollback_rate, max_velocity_per_hour."""


def _operate(state: Any, org_slug: str, act: Any) -> Any:
    """Run `act(handle, org_id)` (a coroutine) as the instance's operator."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.cli.main import _run  # noqa: PLC0415 - main imports this module

    handle = state.ready_database()
    try:
        org_id = _run(get_org(handle, org_slug)).id
        return _run(act(handle, org_id))
    finally:
        handle.close()


@freeze.command("create")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--name", required=True, help="What it is, e.g. Year-end freeze.")
@click.option("--reason", default="", help="Why: shown with every violation.")
@click.option("--start", default=None, help="A one-off window's start (ISO 8601 with its zone).")
@click.option("--end", default=None, help="A one-off window's end (ISO 8601 with its zone).")
@click.option("--days", default=None, help="Weekly: the days it starts, e.g. fri or sat,sun.")
@click.option("--from", "from_", default=None, metavar="HH:MM", help="Weekly: its start time.")
@click.option("--to", default=None, metavar="HH:MM", help="Weekly: its end time.")
@click.option("--end-day", default=None, help="Weekly: the day it ends, e.g. mon.")
@click.option("--timezone", default="UTC", show_default=True, help="Weekly: an IANA zone.")
@click.option("--environment", "environments", multiple=True, help="Repeatable; none: every one.")
@click.option("--service", "services", multiple=True, help="Repeatable; none: every one.")
@click.pass_obj
def freeze_create(
    state: Any,
    org_slug: str,
    name: str,
    reason: str,
    start: str | None,
    end: str | None,
    days: str | None,
    from_: str | None,
    to: str | None,
    end_day: str | None,
    timezone: str,
    environments: tuple[str, ...],
    services: tuple[str, ...],
) -> None:
    """Make a freeze window; prints it as JSON."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.guardrails.guardrails import create_freeze  # noqa: PLC0415

    body: dict[str, Any] = {
        "name": name,
        "reason": reason,
        "environments": list(environments),
        "services": list(services),
    }
    if days is not None:
        body["recurrence"] = {
            "days": [d.strip() for d in days.split(",")],
            "start": from_,
            "end": to,
            "timezone": timezone,
        }
        if end_day is not None:
            body["recurrence"]["end_day"] = end_day
    else:
        body |= {"start": start, "end": end}
    made = _operate(
        state,
        org_slug,
        lambda h, org: create_freeze(h, org, body, who=OPERATOR_AUTHORITY, by=OPERATOR),
    )
    click.echo(json.dumps(made.as_json()))


@policy.command("create")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option(
    "--kind",
    required=True,
    type=click.Choice(
        [
            "blocked_days",
            "allowed_hours",
            "daily_cap",
            "cooldown",
            "max_rollback_rate",
            "max_velocity_per_hour",
        ]
    ),
)
@click.option("--name", required=True, help="What it is, e.g. Office hours.")
@click.option(
    "--set",
    "settings_given",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting (repeatable), e.g. start=09:00, end=17:00, timezone=Europe/Paris, max=5, "
    "minutes=30, days=sat,sun, max_percent=20, window_days=7, min_deployments=5.",
)
@click.option("--environment", "environments", multiple=True, help="Repeatable; none: every one.")
@click.option("--service", "services", multiple=True, help="Repeatable; none: every one.")
@click.pass_obj
def policy_create(
    state: Any,
    org_slug: str,
    kind: str,
    name: str,
    settings_given: tuple[str, ...],
    environments: tuple[str, ...],
    services: tuple[str, ...],
) -> None:
    """Make a deployment policy; prints it as JSON."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.guardrails.guardrails import create_policy  # noqa: PLC0415

    settings: dict[str, Any] = {}
    for pair in settings_given:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: give KEY=VALUE", param_hint="--set")
        settings[key.strip()] = _setting(key.strip(), value.strip())
    body = {
        "kind": kind,
        "name": name,
        "settings": settings,
        "environments": list(environments),
        "services": list(services),
    }
    made = _operate(
        state,
        org_slug,
        lambda h, org: create_policy(h, org, body, who=OPERATOR_AUTHORITY, by=OPERATOR),
    )
    click.echo(json.dumps(made.as_json()))


def _setting(key: str, value: str) -> Any:
    """A setting's value as the API takes it: numbers as numbers, days as a list."""
    if key == "days":
        return [d.strip() for d in value.split(",")]
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _lister(what: str) -> Any:
    @click.command("list")
    @click.option("--org", "org_slug", required=True, help="Organization slug.")
    @click.pass_obj
    def listing(state: Any, org_slug: str) -> None:
        from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
        from trailmap.guardrails import guardrails  # noqa: PLC0415

        lister = guardrails.list_freezes if what == "freeze" else guardrails.list_policies
        found = _operate(state, org_slug, lambda h, org: lister(h, org, who=OPERATOR_AUTHORITY))
        for rule in found:
            click.echo(json.dumps(rule.as_json()))

    listing.help = f"List the organization's {what} rules as JSON lines."
    return listing


def _deleter(what: str) -> Any:
    @click.command("delete")
    @click.argument("rule_id")
    @click.option("--org", "org_slug", required=True, help="Organization slug.")
    @click.pass_obj
    def deleting(state: Any, rule_id: str, org_slug: str) -> None:
        from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
        from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
        from trailmap.guardrails import guardrails  # noqa: PLC0415

        remove = guardrails.delete_freeze if what == "freeze" else guardrails.delete_policy
        gone = _operate(
            state,
            org_slug,
            lambda h, org: remove(h, org, rule_id, who=OPERATOR_AUTHORITY, by=OPERATOR),
        )
        click.echo(f"deleted {what} {gone.id} ({gone.name}) of {org_slug}", err=True)

    deleting.help = f"Remove one {what} by its id."
    return deleting


freeze.add_command(_lister("freeze"))
freeze.add_command(_deleter("freeze"))
policy.add_command(_lister("policy"))
policy.add_command(_deleter("policy"))
