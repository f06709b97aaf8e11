"""An organization's Settings page: plan, retention, usage of each quota, API key rules and
the metrics source (owners and admins)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.accounts.organizations import Organization, get_org
from trailmap.accounts.principal import Principal
from trailmap.accounts.quotas import Usage, usage_report
from trailmap.accounts.team import set_org_key_rules, set_org_retention
from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused
from trailmap.console.pages import e, field_error, form_csrf, page, problem_text, see_other
from trailmap.errors import TrailmapError, ValidationFailed
from trailmap.http.context import context_of
from trailmap.metrics.settings import MetricSettings, read_settings, update_settings

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_STYLE = (
    "<style>.usage{list-style:none;padding:0}.usage li{margin:.6rem 0}"
    ".usage label{margin:0;font-weight:600}.usage meter{width:100%;max-width:30rem;height:1.2rem;"
    "display:block}.over{color:#a00;font-weight:600}section{margin-top:2rem}</style>"
)


def _acting(m: OrgMember, org: Organization) -> Principal:
    """The member acting in the console: their role decides, as for an ADMIN key of theirs."""
    return Principal(
        org_id=org.id,
        org_slug=org.slug,
        plan=org.plan,
        retention_days=org.retention_days,
        scope="ADMIN",
        key_name=f"console session of {m.user.email}",
        user_id=m.user.id,
        role=m.membership.role,
    )


def _number(n: int) -> str:
    return f"{n:,}"


def _usage_item(u: Usage) -> str:
    label = e(u.what[0].upper() + u.what[1:])
    if u.limit is None:
        shown = "not counted" if u.used is None else _number(u.used)
        return f"<li><span class=label>{label}</span>: {shown} <span class=muted>· no limit</span>"
    used = u.used or 0
    share = u.share or 0.0
    over = " class=over" if share >= 1 else ""
    return (
        f"<li><label for=quota-{e(u.name)}>{label}</label>"
        f"<meter id=quota-{e(u.name)} min=0 max={u.limit} value={min(used, u.limit)} "
        f"low={u.limit * 0.75:g} high={u.limit * 0.9:g} optimum=0></meter>"
        f"<span{over}>{_number(used)} of {_number(u.limit)} ({share:.0%})</span></li>"
    )


def _retention_section(m: OrgMember, org: Organization, error: TrailmapError | None) -> str:
    slug = e(m.slug)
    head = (
        f"<section aria-labelledby=plan-h><h2 id=plan-h>Plan and retention</h2>"
        f"<p>Plan: <strong>{e(org.plan.name)}</strong>. Events, metric points and the "
        f"graph's observations are kept <strong>{org.retention_days} days</strong>.</p>"
    )
    if not org.plan.retention_configurable:
        return head + (
            f"<p class=muted>The {e(org.plan.name)} plan sets the retention window.</p></section>"
        )
    attrs, message = field_error("retention_days", error)
    return head + (
        f"<form method=post action=/orgs/{slug}/settings/retention>{form_csrf(m.user)}"
        "<label for=retention_days>Keep for, in days</label>"
        f"<input id=retention_days name=retention_days inputmode=numeric required "
        f"value='{org.retention_days}'{attrs}>{message}"
        "<button type=submit>Save retention</button></form></section>"
    )


def _usage_section(lines: list[Usage]) -> str:
    items = "".join(_usage_item(u) for u in lines)
    return (
        "<section aria-labelledby=usage-h><h2 id=usage-h>Usage</h2>"
        "<p class=muted>Days and months are counted in UTC. The same figures: "
        "GET /api/v1/organization/usage.</p>"
        f"<ul class=usage>{items}</ul></section>"
    )


def _keys_section(m: OrgMember, org: Organization, error: TrailmapError | None) -> str:
    checked = " checked" if org.members_write_keys else ""
    days = "" if org.max_key_days is None else str(org.max_key_days)
    attrs, message = field_error("max_key_days", error)
    return (
        "<section aria-labelledby=keys-h><h2 id=keys-h>API keys</h2>"
        f"<form method=post action=/orgs/{e(m.slug)}/settings>{form_csrf(m.user)}"
        f"<label><input type=checkbox name=members_write_keys value=yes{checked}> Members "
        "may create read-write keys (owners and admins always may)</label>"
        "<label for=max_key_days>Longest a key may live, in days (empty: keys may never "
        "expire)</label>"
        f"<input id=max_key_days name=max_key_days inputmode=numeric value='{e(days)}'{attrs}>"
        f"{message}<button type=submit>Save key rules</button></form></section>"
    )


def _metrics_section(m: OrgMember, current: MetricSettings, error: TrailmapError | None) -> str:
    slug = e(m.slug)
    prom = current.prometheus
    if prom is None:
        now = (
            "<p>No Prometheus source: a deployment's metrics come from points pushed to "
            "/api/v1/metrics and from the spans Trailmap receives.</p>"
        )
    else:
        header = (
            f"an auth header <code>{e(prom.auth_header_name)}</code> is stored (encrypted)"
            if current.has_auth_header
            else "no auth header"
        )
        now = (
            f"<p>Prometheus at <code>{e(prom.base_url)}</code>, {header}, a "
            f"{prom.timeout_seconds:g} s timeout.</p>"
        )
    url_attrs, url_message = field_error(
        "base_url", error, aliases={"prometheus.base_url": "base_url"}
    )
    header_attrs, header_message = field_error(
        "auth_value", error, aliases={"prometheus.auth_header": "auth_value"}
    )
    timeout_attrs, timeout_message = field_error(
        "timeout_seconds", error, aliases={"prometheus.timeout_seconds": "timeout_seconds"}
    )
    unplaced = ""
    if error is not None and not (url_message or header_message or timeout_message):
        unplaced = f"<p class=error role=alert>{e(problem_text(error))}</p>"
    base = "" if prom is None else prom.base_url
    name = (prom.auth_header_name if prom else None) or "Authorization"
    timeout = "10" if prom is None else f"{prom.timeout_seconds:g}"
    remove = (
        ""
        if prom is None
        else f"<form method=post action=/orgs/{slug}/settings/metrics/remove>{form_csrf(m.user)}"
        "<button type=submit>Remove the Prometheus source</button></form>"
    )
    keep = (
        " (leave empty to keep the stored one; it is dropped if the URL moves to another server)"
        if current.has_auth_header
        else ""
    )
    clear = (
        "<label><input type=checkbox name=clear_auth value=yes> Remove the stored auth header"
        "</label>"
        if current.has_auth_header
        else ""
    )
    return (
        "<section aria-labelledby=metrics-h><h2 id=metrics-h>Metrics source</h2>"
        f"{now}{unplaced}"
        f"<form method=post action=/orgs/{slug}/settings/metrics>{form_csrf(m.user)}"
        "<label for=base_url>Prometheus-compatible API URL</label>"
        f"<input id=base_url name=base_url type=url required placeholder='http://prometheus:9090' "
        f"value='{e(base)}'{url_attrs}>{url_message}"
        "<label for=auth_name>Auth header name</label>"
        f"<input id=auth_name name=auth_name value='{e(name)}'>"
        f"<label for=auth_value>Auth header value{e(keep)}</label>"
        f"<input id=auth_value name=auth_value type=password autocomplete=off{header_attrs}>"
        f"{header_message}"
        f"{clear}"
        "<label for=timeout_seconds>Timeout, in seconds</label>"
        f"<input id=timeout_seconds name=timeout_seconds inputmode=decimal value='{timeout}'"
        f"{timeout_attrs}>{timeout_message}"
        "<button type=submit>Save metrics source</button></form>"
        f"{remove}<p class=muted>Which source each metric uses, and PromQL templates: "
        "PUT /api/v1/metrics/settings (docs/metrics.md).</p></section>"
    )


async def _settings_page(
    request: Request,
    m: OrgMember,
    *,
    error: TrailmapError | None = None,
    section: str = "",
    status: int = 200,
) -> Response:
    db = context_of(request).db
    org = await get_org(db, m.slug)
    lines = await usage_report(db, org.id, org.plan)
    metrics = await read_settings(db, org.id, secret_key=None)
    mine = {section: error} if error is not None else {}
    body = (
        _STYLE
        + _retention_section(m, org, mine.get("retention"))
        + _usage_section(lines)
        + _keys_section(m, org, mine.get("keys"))
        + _metrics_section(m, metrics, mine.get("metrics"))
    )
    return page(f"Settings · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/settings")
async def settings_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    if not m.may("manage_settings"):
        return refused(m, "Only owners and admins change the organization's settings.")
    return await _settings_page(request, m)


async def _posted(request: Request, slug: str) -> tuple[OrgMember, dict[str, str]] | Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _ = posted
    if not m.may("manage_settings"):
        return refused(m, "Only owners and admins change the organization's settings.")
    return posted


@router.post("/orgs/{slug}/settings")
async def settings_submit(request: Request, slug: str) -> Response:
    posted = await _posted(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    try:
        days_text = form.get("max_key_days", "").strip()
        if days_text and not days_text.isdigit():
            raise ValidationFailed.field("max_key_days", "give a whole number of days")
        await set_org_key_rules(
            context_of(request).db,
            m.slug,
            who=m.membership,
            by=m.actor(request),
            members_write_keys=form.get("members_write_keys") == "yes",
            max_key_days=int(days_text) if days_text else None,
        )
    except TrailmapError as error:
        return await _settings_page(request, m, error=error, section="keys", status=error.status)
    return see_other(f"/orgs/{m.slug}/settings")


@router.post("/orgs/{slug}/settings/retention")
async def retention_submit(request: Request, slug: str) -> Response:
    posted = await _posted(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    text = form.get("retention_days", "").strip()
    try:
        if not text.isdigit():
            raise ValidationFailed.field("retention_days", "give a whole number of days")
        await set_org_retention(
            context_of(request).db, m.slug, int(text), who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return await _settings_page(
            request, m, error=error, section="retention", status=error.status
        )
    return see_other(f"/orgs/{m.slug}/settings")


def _metrics_body(form: dict[str, str]) -> dict[str, Any]:
    """The settings update a submitted metrics form asks for (the API's own shape)."""
    prom: dict[str, Any] = {"base_url": form.get("base_url", "").strip()}
    timeout = form.get("timeout_seconds", "").strip()
    if timeout:
        try:
            prom["timeout_seconds"] = float(timeout)
        except ValueError:
            prom["timeout_seconds"] = timeout  # refused by the domain, with its wording
    value = form.get("auth_value", "")
    if form.get("clear_auth") == "yes":
        prom["auth_header"] = None
    elif value:
        prom["auth_header"] = {"name": form.get("auth_name", "").strip(), "value": value}
    return {"prometheus": prom}


@router.post("/orgs/{slug}/settings/metrics")
async def metrics_submit(request: Request, slug: str) -> Response:
    return await _update_metrics(request, slug, remove=False)


@router.post("/orgs/{slug}/settings/metrics/remove")
async def metrics_remove(request: Request, slug: str) -> Response:
    return await _update_metrics(request, slug, remove=True)


async def _update_metrics(request: Request, slug: str, *, remove: bool) -> Response:
    posted = await _posted(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    ctx = context_of(request)
    org = await get_org(ctx.db, m.slug)
    try:
        await update_settings(
            ctx.db,
            _acting(m, org),
            {"prometheus": None} if remove else _metrics_body(form),
            secret_key=ctx.settings.encryption_secret,
            outbound=ctx.settings.outbound,
            actor=m.actor(request),
        )
    except TrailmapError as error:
        return await _settings_page(request, m, error=error, section="metrics", status=error.status)
    return see_other(f"/orgs/{m.slug}/settings")
