"""The Guardrails page of an organization: its change freezes and deployment policies, listed
for every member (they deploy under them), made and removed by owners and admins."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused
from trailmap.console.pages import e, form_csrf, page, problem_text, see_other
from trailmap.errors import TrailmapError
from trailmap.guardrails.guardrails import (
    create_freeze,
    create_policy,
    delete_freeze,
    delete_policy,
    list_freezes,
    list_policies,
)
from trailmap.guardrails.rules import POLICY_KINDS, WEEKDAYS, Freeze, Policy
from trailmap.http.context import context_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_REFUSAL: Final = "Only owners and admins make and remove the organization's guardrails."
_KIND_NAMES: Final = {
    "blocked_days": "Blocked days",
    "allowed_hours": "Allowed hours",
    "daily_cap": "Daily cap",
    "cooldown": "Cooldown",
    "max_rollback_rate": "Maximum rollback rate",
    "max_velocity_per_hour": "Maximum deployments per hour",
}
# The policy form's fields, each sent as a setting when filled in and the kind takes it.
_SETTING_FIELDS: Final = (
    ("days", "Days (blocked_days: e.g. sat,sun)"),
    ("start", "From HH:MM (allowed_hours)"),
    ("end", "To HH:MM (allowed_hours)"),
    ("timezone", "Time zone (blocked_days, allowed_hours, daily_cap; default UTC)"),
    ("max", "Maximum (daily_cap, max_velocity_per_hour)"),
    ("minutes", "Minutes (cooldown)"),
    ("max_percent", "Maximum % of rollbacks (max_rollback_rate)"),
    ("window_days", "Over days (max_rollback_rate; default 7)"),
    ("min_deployments", "Judged from this many deployments (max_rollback_rate; default 5)"),
)
_SETTINGS_OF: Final = {
    "blocked_days": ("days", "timezone"),
    "allowed_hours": ("start", "end", "timezone"),
    "daily_cap": ("max", "timezone"),
    "cooldown": ("minutes",),
    "max_rollback_rate": ("max_percent", "window_days", "min_deployments"),
    "max_velocity_per_hour": ("max",),
}


def _base(m: OrgMember) -> str:
    return f"/orgs/{quote(m.slug)}/guardrails"


def _scope(rule: Freeze | Policy) -> str:
    envs = ", ".join(rule.scope.environments) or "every environment"
    services = ", ".join(rule.scope.services) or "every service"
    return f"{e(envs)} · {e(services)}"


def _delete_button(m: OrgMember, what: str, rule_id: str, name: str) -> str:
    if not m.may("manage_settings"):
        return ""
    return (
        f"<form class=inline method=post action={_base(m)}/{what}/{quote(rule_id)}/delete>"
        f"{form_csrf(m.user)}<button type=submit aria-label='Delete {e(name)}'>Delete</button>"
        "</form>"
    )


def _when(freeze: Freeze) -> str:
    if freeze.recurrence is None:
        shown = freeze.as_json()
        return f"from {e(shown['start'])} to {e(shown['end'])}"
    rec = freeze.recurrence.as_json()
    days = ", ".join(rec["days"])
    end = f"{rec['end_day']} {rec['end']}" if "end_day" in rec else rec["end"]
    return f"every {e(days)} {e(rec['start'])} to {e(end)} ({e(rec['timezone'])})"


def _freezes_table(m: OrgMember, found: list[Freeze]) -> str:
    if not found:
        return "<p>No freeze windows.</p>"
    rows = "".join(
        f"<tr data-freeze={e(f.id)}><td data-label=Name>{e(f.name)}</td>"
        f"<td data-label=When>{_when(f)}</td><td data-label=Scope>{_scope(f)}</td>"
        f"<td data-label=Reason>{e(f.reason)}</td>"
        f"<td data-label=Enabled>{'yes' if f.enabled else 'no'}</td>"
        f"<td>{_delete_button(m, 'freezes', f.id, f.name)}</td></tr>"
        for f in found
    )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Name</th><th scope=col>When"
        "</th><th scope=col>Scope</th><th scope=col>Reason</th><th scope=col>Enabled</th>"
        f"<th scope=col><span class=muted>Actions</span></th></tr></thead><tbody>{rows}</tbody>"
        "</table></div>"
    )


def _policies_table(m: OrgMember, found: list[Policy]) -> str:
    if not found:
        return "<p>No deployment policies.</p>"
    rows = "".join(
        f"<tr data-policy={e(p.id)}><td data-label=Name>{e(p.name)}</td>"
        f"<td data-label=Kind>{e(_KIND_NAMES.get(p.kind, p.kind))}</td>"
        f"<td data-label=Settings><code>"
        f"{e(', '.join(f'{k}={v}' for k, v in p.settings.items()))}</code></td>"
        f"<td data-label=Scope>{_scope(p)}</td>"
        f"<td data-label=Enabled>{'yes' if p.enabled else 'no'}</td>"
        f"<td>{_delete_button(m, 'policies', p.id, p.name)}</td></tr>"
        for p in found
    )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Name</th><th scope=col>Kind"
        "</th><th scope=col>Settings</th><th scope=col>Scope</th><th scope=col>Enabled</th>"
        f"<th scope=col><span class=muted>Actions</span></th></tr></thead><tbody>{rows}</tbody>"
        "</table></div>"
    )


def _input(name: str, label: str, values: dict[str, str], *, required: bool = False) -> str:
    need = " required" if required else ""
    return (
        f"<label for={name}>{e(label)}</label>"
        f"<input id={name} name={name}{need} value='{e(values.get(name, ''))}'>"
    )


def _freeze_form(m: OrgMember, values: dict[str, str]) -> str:
    return (
        f"<h2>Add a freeze window</h2><form method=post action={_base(m)}/freezes>"
        f"{form_csrf(m.user)}"
        + _input("freeze_name", "Name", values, required=True)
        + _input("reason", "Reason (shown with every violation)", values)
        + _input("freeze_environments", "Environments (comma-separated; empty: every one)", values)
        + _input("freeze_services", "Services (comma-separated; empty: every one)", values)
        + "<fieldset><legend>One-off: from and to, ISO 8601 with the zone "
        "(2026-12-20T00:00:00+01:00)</legend>"
        + _input("start", "Start", values)
        + _input("end", "End", values)
        + "</fieldset><fieldset><legend>Or weekly: the days it starts, from, to</legend>"
        + _input("days", f"Days it starts (comma-separated: {', '.join(WEEKDAYS)})", values)
        + _input("from_time", "From HH:MM", values)
        + _input("to_time", "To HH:MM (the next day when not after From)", values)
        + _input("end_day", "Ending on (optional weekday, e.g. mon)", values)
        + _input("freeze_timezone", "Time zone (e.g. Europe/Paris; default UTC)", values)
        + "</fieldset><button type=submit>Add freeze</button></form>"
    )


def _policy_form(m: OrgMember, values: dict[str, str]) -> str:
    kind = values.get("kind", POLICY_KINDS[0])
    options = "".join(
        f"<option value={k}{' selected' if k == kind else ''}>{e(_KIND_NAMES[k])}</option>"
        for k in POLICY_KINDS
    )
    return (
        f"<h2>Add a deployment policy</h2><form method=post action={_base(m)}/policies>"
        f"{form_csrf(m.user)}<label for=kind>Kind</label>"
        f"<select id=kind name=kind>{options}</select>"
        + _input("policy_name", "Name", values, required=True)
        + _input("policy_environments", "Environments (comma-separated; empty: every one)", values)
        + _input("policy_services", "Services (comma-separated; empty: every one)", values)
        + "<fieldset><legend>Settings (those of the kind chosen)</legend>"
        + "".join(_input(f"setting_{name}", label, values) for name, label in _SETTING_FIELDS)
        + "</fieldset><button type=submit>Add policy</button></form>"
    )


async def _page(
    request: Request,
    m: OrgMember,
    *,
    error: TrailmapError | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    db = context_of(request).db
    freezes = await list_freezes(db, m.org_id, who=m.membership)
    policies = await list_policies(db, m.org_id, who=m.membership)
    problem = f"<p class=error role=alert>{e(problem_text(error))}</p>" if error else ""
    forms = (
        _freeze_form(m, values or {}) + _policy_form(m, values or {})
        if m.may("manage_settings")
        else "<p class=muted>Owners and admins add and remove guardrails.</p>"
    )
    body = (
        f"{problem}<p class=muted>Guardrails warn and never block: a deployment during a freeze "
        "or against a policy is stored all the same, flagged on the timeline. Ask before "
        "deploying with <code>trailmap check</code> or <code>POST /api/v1/guardrails/check"
        "</code>.</p><h2>Freeze windows</h2>"
        + _freezes_table(m, freezes)
        + "<h2>Deployment policies</h2>"
        + _policies_table(m, policies)
        + forms
    )
    status = error.status if error is not None else 200
    return page(f"Guardrails · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/guardrails")
async def guardrails_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    return await _page(request, m)


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


async def _posted_admin(request: Request, slug: str) -> tuple[OrgMember, dict[str, Any]] | Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    if not m.may("manage_settings"):
        return refused(m, _REFUSAL)
    return posted


@router.post("/orgs/{slug}/guardrails/freezes")
async def freeze_create(request: Request, slug: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    days = _list(form.get("days", ""))
    body: dict[str, Any] = {
        "name": form.get("freeze_name", ""),
        "reason": form.get("reason", ""),
        "environments": _list(form.get("freeze_environments", "")),
        "services": _list(form.get("freeze_services", "")),
    }
    if days:
        body["recurrence"] = {
            "days": days,
            "start": form.get("from_time", "").strip(),
            "end": form.get("to_time", "").strip(),
            "timezone": form.get("freeze_timezone", "").strip() or "UTC",
        }
        if form.get("end_day", "").strip():
            body["recurrence"]["end_day"] = form["end_day"].strip()
    else:
        body["start"] = form.get("start", "").strip() or None
        body["end"] = form.get("end", "").strip() or None
    try:
        await create_freeze(
            context_of(request).db, m.org_id, body, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return await _page(request, m, error=error, values=form)
    return see_other(_base(m))


def _setting(name: str, text: str) -> Any:
    if name == "days":
        return _list(text)
    if name in ("max", "minutes", "window_days", "min_deployments"):
        return int(text) if text.isdigit() else text
    if name == "max_percent":
        try:
            return float(text)
        except ValueError:
            return text
    return text


@router.post("/orgs/{slug}/guardrails/policies")
async def policy_create(request: Request, slug: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    kind = form.get("kind", "")
    settings = {
        name: _setting(name, form[f"setting_{name}"].strip())
        for name in _SETTINGS_OF.get(kind, ())
        if form.get(f"setting_{name}", "").strip()
    }
    body = {
        "kind": kind,
        "name": form.get("policy_name", ""),
        "settings": settings,
        "environments": _list(form.get("policy_environments", "")),
        "services": _list(form.get("policy_services", "")),
    }
    try:
        await create_policy(
            context_of(request).db, m.org_id, body, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return await _page(request, m, error=error, values=form)
    return see_other(_base(m))


@router.post("/orgs/{slug}/guardrails/{what}/{rule_id}/delete")
async def rule_delete(request: Request, slug: str, what: str, rule_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    remove = {"freezes": delete_freeze, "policies": delete_policy}.get(what)
    if remove is None:
        return refused(m, "No such kind of guardrail.", 404)
    try:
        await remove(
            context_of(request).db, m.org_id, rule_id, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return see_other(_base(m))
