"""The Notifications page of an organization: its channels (made, tested, enabled or disabled,
deleted; their secrets never shown), its rules, and its deliveries with their last error, a
failed one retried from here. For owners and admins (docs/notifications.md)."""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused
from trailmap.console.pages import e, form_csrf, page, problem_text, see_other
from trailmap.errors import TrailmapError
from trailmap.http.context import context_of
from trailmap.integrations.notifications import (
    create_channel,
    create_rule,
    delete_channel,
    delete_rule,
    list_channels,
    list_deliveries,
    list_rules,
    retry_delivery,
    send_test_notification,
    update_channel,
    update_rule,
)
from trailmap.notifications.channels import Channel
from trailmap.notifications.rules import FILTERS, ON, Rule

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_REFUSAL: Final = "Only owners and admins see and change the organization's notifications."
_KINDS: Final = {
    "webhook": "Webhook (signed)",
    "email": "E-mail (SMTP)",
    "pagerduty": "PagerDuty",
    "opsgenie": "Opsgenie",
    "slack": "Slack",
    "google_chat": "Google Chat",
}
# The form's one secret field, by kind.
_SECRET_FIELD: Final = {
    "webhook": "secret",
    "pagerduty": "routing_key",
    "opsgenie": "api_key",
    "email": "password",
}
_SHOWN_DELIVERIES: Final = 50


def _base(m: OrgMember) -> str:
    return f"/orgs/{quote(m.slug)}/notifications"


async def _admin(request: Request, slug: str) -> OrgMember | Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    if not m.may("manage_settings"):
        return refused(m, _REFUSAL)
    return m


async def _posted_admin(request: Request, slug: str) -> tuple[OrgMember, dict[str, str]] | Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    if not m.may("manage_settings"):
        return refused(m, _REFUSAL)
    return posted


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _channel_settings(kind: str, form: dict[str, str]) -> dict[str, Any]:
    """A channel's settings from the form: what is empty is not sent."""
    settings: dict[str, Any] = {}
    if kind == "email":
        for name in ("host", "security", "username", "from"):
            if form.get(name, "").strip():
                settings[name] = form[name].strip()
        if form.get("port", "").strip():
            settings["port"] = int(form["port"]) if form["port"].strip().isdigit() else -1
        settings["to"] = _list(form.get("to", ""))
    elif form.get("url", "").strip():
        settings["url"] = form["url"].strip()
    secret = form.get("secret_value", "")
    if secret.strip() and kind in _SECRET_FIELD:
        settings[_SECRET_FIELD[kind]] = secret.strip()
    return settings


def _channels_table(m: OrgMember, channels: list[Channel]) -> str:
    if not channels:
        return "<p>No channels yet.</p>"
    rows = []
    for c in channels:
        here = f"{_base(m)}/channels/{quote(c.id)}"
        toggle, label = ("false", "Disable") if c.enabled else ("true", "Enable")
        shown = ", ".join(f"{k}: {v}" for k, v in c.public_settings.items() if k != "to")
        if "to" in c.public_settings:
            shown += (", " if shown else "") + "to: " + ", ".join(c.public_settings["to"])
        secrets = ", ".join(c.settings.get("_secrets_set", ())) or "none"
        rows.append(
            f"<tr data-channel={e(c.id)}><td data-label=Name>{e(c.name)}</td>"
            f"<td data-label=Kind>{e(_KINDS.get(c.kind, c.kind))}</td>"
            f"<td data-label=Enabled>{'yes' if c.enabled else 'no'}</td>"
            f"<td data-label=Settings>{e(shown)}</td>"
            f"<td data-label='Secrets set'>{e(secrets)}</td><td data-label=Manage>"
            f"<form class=inline method=post action={here}/test>{form_csrf(m.user)}"
            "<button type=submit>Send a test</button></form> "
            f"<form class=inline method=post action={here}/enabled>{form_csrf(m.user)}"
            f"<button type=submit name=enabled value={toggle}>{label}</button></form> "
            f"<form class=inline method=post action={here}/delete>{form_csrf(m.user)}"
            "<button type=submit name=confirm value=yes>Delete</button></form></td></tr>"
        )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Name</th><th scope=col>Kind"
        "</th><th scope=col>Enabled</th><th scope=col>Settings</th><th scope=col>Secrets set"
        "</th><th scope=col>Manage</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _channel_form(m: OrgMember, values: dict[str, str]) -> str:
    kind = values.get("kind", "webhook")
    options = "".join(
        f"<option value={v}{' selected' if v == kind else ''}>{e(label)}</option>"
        for v, label in _KINDS.items()
    )

    def text(name: str, label: str, kind_of: str = "text") -> str:
        return (
            f"<label for={name}>{e(label)}</label><input id={name} name={name} type={kind_of} "
            f"maxlength=2000 value='{e(values.get(name, '')) if kind_of != 'password' else ''}'>"
        )

    return (
        f"<h2>Add a channel</h2><form method=post action={_base(m)}/channels>"
        f"{form_csrf(m.user)}<label for=kind>Kind</label><select id=kind name=kind>{options}"
        "</select>"
        + text("name", "Name")
        + text(
            "url",
            "URL: the webhook's, Slack's or Google Chat's incoming webhook (stored encrypted, "
            "never shown); PagerDuty's or Opsgenie's API (optional: their own by default)",
        )
        + text(
            "secret_value",
            "Secret: the webhook's signing secret (optional: one is made and shown once), "
            "PagerDuty's routing key, Opsgenie's API key, or the SMTP password (stored "
            "encrypted, never shown)",
            "password",
        )
        + "<fieldset><legend>E-mail over SMTP</legend>"
        + text("host", "SMTP server")
        + text("port", "Port (587 by default)")
        + "<label for=security>Security</label><select id=security name=security>"
        "<option value=starttls>STARTTLS</option><option value=tls>TLS</option>"
        "<option value=none>none</option></select>"
        + text("username", "User name (optional)")
        + text("from", "From")
        + text("to", "To (comma-separated)")
        + "</fieldset><button type=submit>Add channel</button></form>"
    )


def _rules_table(m: OrgMember, rules: list[Rule], names: dict[str, str]) -> str:
    if not rules:
        return "<p>No rules yet: nothing is sent until a rule names a channel.</p>"
    rows = []
    for r in rules:
        here = f"{_base(m)}/rules/{quote(r.id)}"
        toggle, label = ("false", "Disable") if r.enabled else ("true", "Enable")
        filters = "; ".join(
            f"{name.replace('_', ' ')}: {', '.join(r.match.get(name) or ())}"
            for name in FILTERS
            if r.match.get(name)
        )
        rows.append(
            f"<tr data-rule={e(r.id)}><td data-label=Name>{e(r.name)}</td>"
            f"<td data-label=On>{e(', '.join(r.match.get('on') or ()))}</td>"
            f"<td data-label=Filters>{e(filters or 'any')}</td>"
            f"<td data-label=Channels>{e(', '.join(names.get(c, c) for c in r.channel_ids))}"
            f"</td><td data-label=Enabled>{'yes' if r.enabled else 'no'}</td>"
            f"<td data-label=Manage><form class=inline method=post action={here}/enabled>"
            f"{form_csrf(m.user)}<button type=submit name=enabled value={toggle}>{label}"
            f"</button></form> <form class=inline method=post action={here}/delete>"
            f"{form_csrf(m.user)}<button type=submit name=confirm value=yes>Delete</button>"
            "</form></td></tr>"
        )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Name</th><th scope=col>On"
        "</th><th scope=col>Filters</th><th scope=col>Channels</th><th scope=col>Enabled</th>"
        f"<th scope=col>Manage</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _rule_form(m: OrgMember, channels: list[Channel]) -> str:
    if not channels:
        return ""
    on = "".join(
        f"<label><input type=checkbox name=on_{r}{' checked' if r == 'event' else ''}> "
        f"{e(r)}</label>"
        for r in ON
    )
    targets = "".join(
        f"<label><input type=checkbox name=channel_{e(c.id)}> {e(c.name)}</label>" for c in channels
    )
    filters = "".join(
        f"<label for={name}>{e(name.replace('_', ' ').capitalize())} (comma-separated; "
        f"empty: any)</label><input id={name} name={name} maxlength=2000>"
        for name in FILTERS
    )
    return (
        f"<h2>Add a rule</h2><form method=post action={_base(m)}/rules>{form_csrf(m.user)}"
        "<label for=rule-name>Name</label><input id=rule-name name=name required maxlength=100>"
        f"<fieldset><legend>Sent on</legend>{on}</fieldset>{filters}"
        f"<fieldset><legend>Channels</legend>{targets}</fieldset>"
        "<button type=submit>Add rule</button></form>"
    )


def _deliveries_table(m: OrgMember, found: list[Any]) -> str:
    if not found:
        return "<p>No deliveries yet.</p>"
    rows = []
    for d in found:
        shown = d.as_json()
        retry = (
            f"<form class=inline method=post action={_base(m)}/deliveries/"
            f"{quote(shown['id'])}/retry>{form_csrf(m.user)}<button type=submit>Retry</button>"
            "</form>"
            if shown["status"] != "sent"
            else ""
        )
        rows.append(
            f"<tr data-delivery={e(shown['id'])}><td data-label=Queued>{e(shown['created'])}</td>"
            f"<td data-label=Channel>{e(shown['channel']['name'])}</td>"
            f"<td data-label=What>{e(shown['title'] or '')}</td>"
            f"<td data-label=Status>{e(shown['status'])}</td>"
            f"<td data-label=Attempts>{shown['attempts']}</td>"
            f"<td data-label='Last error'>{e(shown['last_error'] or '')}</td>"
            f"<td data-label=Retry>{retry}</td></tr>"
        )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Queued</th><th scope=col>"
        "Channel</th><th scope=col>What</th><th scope=col>Status</th><th scope=col>Attempts"
        "</th><th scope=col>Last error</th><th scope=col>Retry</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


async def _page(
    request: Request,
    m: OrgMember,
    *,
    error: TrailmapError | None = None,
    notice: str = "",
    values: dict[str, str] | None = None,
) -> Response:
    db = context_of(request).db
    channels = await list_channels(db, m.org_id, who=m.membership)
    rules = await list_rules(db, m.org_id, who=m.membership)
    found = await list_deliveries(db, m.org_id, who=m.membership, limit=_SHOWN_DELIVERIES)
    problem = f"<p class=error role=alert>{e(problem_text(error))}</p>" if error else ""
    body = (
        f"{problem}{notice}<p class=muted>Channels are where notifications go; rules say which "
        "stored events, guardrail violations, regressed verdicts and incidents are sent to "
        "which channels. Each is sent from a durable outbox, retried with backoff.</p>"
        "<h2>Channels</h2>"
        + _channels_table(m, channels)
        + "<h2>Rules</h2>"
        + _rules_table(m, rules, {c.id: c.name for c in channels})
        + "<h2>Deliveries</h2><p class=muted>The newest first.</p>"
        + _deliveries_table(m, found)
        + _channel_form(m, values or {})
        + _rule_form(m, channels)
    )
    status = error.status if error is not None else 200
    return page(f"Notifications · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/notifications")
async def notifications_page(request: Request, slug: str) -> Response:
    m = await _admin(request, slug)
    if isinstance(m, Response):
        return m
    return await _page(request, m)


@router.post("/orgs/{slug}/notifications/channels")
async def channel_create(request: Request, slug: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    ctx = context_of(request)
    kind = form.get("kind", "")
    try:
        _made, secret = await create_channel(
            ctx.db,
            m.org_id,
            {"kind": kind, "name": form.get("name", ""), "settings": _channel_settings(kind, form)},
            who=m.membership,
            by=m.actor(request),
            secret_key=ctx.settings.encryption_secret,
            outbound=ctx.settings.outbound,
        )
    except TrailmapError as error:
        kept = {k: v for k, v in form.items() if k not in ("secret_value", "url")}
        return await _page(request, m, error=error, values=kept)
    if secret is None:
        return see_other(_base(m))
    notice = (
        "<p class=notice role=status>The webhook's signing secret, shown only now: the "
        f"receiver checks <code>X-Trailmap-Signature</code> with it.</p><pre id=secret>"
        f"{e(secret)}</pre>"
    )
    return await _page(request, m, notice=notice)


@router.post("/orgs/{slug}/notifications/channels/{channel_id}/test")
async def channel_test(request: Request, slug: str, channel_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    ctx = context_of(request)
    try:
        outcome = await send_test_notification(
            ctx.db,
            m.org_id,
            channel_id,
            who=m.membership,
            by=m.actor(request),
            secret_key=ctx.settings.encryption_secret,
            outbound=ctx.settings.outbound,
            timeout_seconds=ctx.settings.notification_timeout_seconds,
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    notice = (
        "<p class=notice role=status id=test-outcome>The test notification was taken.</p>"
        if outcome["sent"]
        else f"<p class=error role=alert id=test-outcome>The test notification was not taken: "
        f"{e(outcome['error'])}</p>"
    )
    return await _page(request, m, notice=notice)


@router.post("/orgs/{slug}/notifications/channels/{channel_id}/enabled")
async def channel_enabled(request: Request, slug: str, channel_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    ctx = context_of(request)
    try:
        await update_channel(
            ctx.db,
            m.org_id,
            channel_id,
            {"enabled": form.get("enabled") == "true"},
            who=m.membership,
            by=m.actor(request),
            secret_key=ctx.settings.encryption_secret,
            outbound=ctx.settings.outbound,
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return see_other(_base(m))


@router.post("/orgs/{slug}/notifications/channels/{channel_id}/delete")
async def channel_delete(request: Request, slug: str, channel_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if form.get("confirm") == "yes":
        try:
            await delete_channel(
                context_of(request).db, m.org_id, channel_id, who=m.membership, by=m.actor(request)
            )
        except TrailmapError as error:
            return refused(m, error.message, error.status)
    return see_other(_base(m))


@router.post("/orgs/{slug}/notifications/rules")
async def rule_create(request: Request, slug: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    body: dict[str, Any] = {
        "name": form.get("name", ""),
        "on": [r for r in ON if form.get(f"on_{r}")] or ["event"],
        "channel_ids": [k.removeprefix("channel_") for k in form if k.startswith("channel_")],
        **{name: _list(form.get(name, "")) for name in FILTERS},
    }
    try:
        await create_rule(
            context_of(request).db, m.org_id, body, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return await _page(request, m, error=error)
    return see_other(_base(m))


@router.post("/orgs/{slug}/notifications/rules/{rule_id}/enabled")
async def rule_enabled(request: Request, slug: str, rule_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    try:
        await update_rule(
            context_of(request).db,
            m.org_id,
            rule_id,
            {"enabled": form.get("enabled") == "true"},
            who=m.membership,
            by=m.actor(request),
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return see_other(_base(m))


@router.post("/orgs/{slug}/notifications/rules/{rule_id}/delete")
async def rule_delete(request: Request, slug: str, rule_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if form.get("confirm") == "yes":
        try:
            await delete_rule(
                context_of(request).db, m.org_id, rule_id, who=m.membership, by=m.actor(request)
            )
        except TrailmapError as error:
            return refused(m, error.message, error.status)
    return see_other(_base(m))


@router.post("/orgs/{slug}/notifications/deliveries/{delivery_id}/retry")
async def delivery_retry(request: Request, slug: str, delivery_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    try:
        await retry_delivery(
            context_of(request).db, m.org_id, delivery_id, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return see_other(_base(m))
