"""The Connect page: the MCP URL as clients must write it, each client's steps, a read-only
key made in place, and when each assistant's key was last used (docs/console.md)."""

from __future__ import annotations

import json
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap import clock
from trailmap.accounts import ApiKey, create_key, list_keys
from trailmap.console.home import CARD, mcp_keys
from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused, when
from trailmap.console.pages import e, form_csrf, page, problem_text, see_other
from trailmap.errors import TrailmapError
from trailmap.http.context import context_of
from trailmap.http.sessions import clear_cookie, cookie_name, set_cookie
from trailmap.timeline.times import format_relative

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

# The new key's token rides from the POST to the page that shows it in this cookie (HttpOnly,
# SameSite=Strict, five minutes), which that page clears: reloading it shows no token and
# makes no key.
_NEW_KEY_COOKIE: Final = "trailmap_new_key"
_NEW_KEY_SECONDS: Final = 300


def mcp_url(request: Request) -> str:
    """The endpoint exactly as clients must write it: the public URL, then /mcp."""
    return context_of(request).settings.public_url.rstrip("/") + "/mcp"


def _copyable(element_id: str, text: str, label: str) -> str:
    return (
        f"<pre id={element_id}>{e(text)}</pre>"
        f"<button type=button data-copy={element_id} hidden aria-label='Copy {e(label)}'>"
        "Copy</button>"
    )


def _oauth_command(url: str) -> str:
    return f"claude mcp add --transport http trailmap {url}"


_FROM_ENVIRONMENT: Final = "${TRAILMAP_API_KEY}"


def _key_command(url: str, bearer: str = _FROM_ENVIRONMENT) -> str:
    return f'{_oauth_command(url)} --header "Authorization: Bearer {bearer}"'


def _project_file(url: str) -> str:
    server = {"type": "http", "url": url}
    return json.dumps({"mcpServers": {"trailmap": server}}, indent=2)


def _last_call(key: ApiKey) -> str:
    if key.last_mcp_call is None:
        return "no MCP call yet"
    ago = format_relative(key.last_mcp_call, now=clock.now())
    return f"connected {ago}"


def _activity(m: OrgMember, keys: list[ApiKey]) -> str:
    visible = [k for k in mcp_keys(keys) if k.status == "active" and m.may_manage(k)]
    if not visible:
        return (
            "<h2>Connected assistants</h2><p id=key-activity>No assistant has a key yet: "
            "approve one through OAuth, or make a read-only key below.</p>"
        )
    rows = "".join(
        f"<tr data-key-id='{e(k.id)}'><td>{e(k.name)}</td><td>{e(k.kind)}</td>"
        f"<td class=last-call title='{when(k.last_mcp_call)}'>{e(_last_call(k))}</td></tr>"
        for k in sorted(visible, key=lambda k: k.last_mcp_call or k.created, reverse=True)
    )
    return (
        "<h2>Connected assistants</h2><p class=muted>When each assistant's key last reached "
        "the MCP endpoint (an API query with the same key does not count), to the minute."
        f"</p><table id=key-activity><thead><tr><th>Key</th>"
        f"<th>Kind</th><th>Last call</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _key_form(m: OrgMember) -> str:
    if not m.may("create_key"):
        return ""
    return (
        f"<section style='{CARD}' aria-labelledby=make-key-title>"
        "<h2 id=make-key-title>A key for a client without OAuth</h2>"
        "<p>A READ_ONLY key of this organization, in your name: it can ask, never change. "
        "The token is shown once.</p>"
        f"<form method=post action=/orgs/{e(m.slug)}/connect/key>{form_csrf(m.user)}"
        "<label for=key-name>Name</label>"
        "<input id=key-name name=name required maxlength=200 value='assistant'>"
        "<button type=submit>Make a read-only key</button></form></section>"
    )


def _internet_note(url: str) -> str:
    if url.startswith("https://"):
        return ""
    return (
        "<p class=muted>Claude.ai and ChatGPT connect from the internet, over https: this "
        f"server's public URL is <code>{e(url)}</code>, so they cannot reach it until Trailmap "
        "is behind an https address and <code>TRAILMAP_PUBLIC_URL</code> names it.</p>"
    )


def _connect_body(m: OrgMember, url: str, keys: list[ApiKey], error: str = "") -> str:
    problem = f"<p class=error role=alert>{e(error)}</p>" if error else ""
    return (
        f"{problem}<p>Assistants call Trailmap's read-only tools over MCP (Streamable HTTP). "
        "They sign in with OAuth (you approve in this browser and choose the organization), "
        "or send a read-only key.</p>"
        "<h2>The MCP URL</h2>"
        + _copyable("mcp-url", url, "the MCP URL")
        + _activity(m, keys)
        + "<h2>Claude Code</h2><p>With OAuth: add the server, then in Claude Code run "
        "<code>/mcp</code>, choose <code>trailmap</code> and <b>Authenticate</b>.</p>"
        + _copyable("cmd-oauth", _oauth_command(url), "the claude mcp add command")
        + "<p>With a key (no browser), from <code>TRAILMAP_API_KEY</code>:</p>"
        + _copyable("cmd-key", _key_command(url), "the claude mcp add command with a key")
        + "<p>For everyone working in a repository, a project <code>.mcp.json</code> (each "
        "person signs in with OAuth on first use):</p>"
        + _copyable("mcp-json", _project_file(url), "the .mcp.json file")
        + "<h2>Claude.ai</h2>"
        + _internet_note(url)
        + "<ol><li>Open <b>Settings → Connectors → Add custom connector</b>.</li>"
        f"<li>Name it <code>Trailmap</code> and paste <code>{e(url)}</code>; leave the OAuth "
        "client fields empty.</li><li>Click <b>Connect</b>, sign in to Trailmap, choose "
        f"<b>{e(m.name)}</b> and <b>Approve</b>.</li>"
        "<li>Ask: “What was deployed today?”</li></ol>"
        "<h2>Other clients</h2><ul>"
        "<li><b>ChatGPT</b> (developer mode): <b>Settings → Apps → Create app</b>, MCP server "
        f"URL <code>{e(url)}</code>, authentication OAuth.</li>"
        "<li><b>VS Code and GitHub Copilot</b>: in <code>.vscode/mcp.json</code>, "
        f"<code>{e(json.dumps({'servers': {'trailmap': {'type': 'http', 'url': url}}}))}"
        "</code>; VS Code asks to sign in on first use.</li>"
        "<li><b>Cursor</b>: in <code>.cursor/mcp.json</code>, "
        f"<code>{e(json.dumps({'mcpServers': {'trailmap': {'url': url}}}))}</code>.</li></ul>"
        "<p class=muted>Keys for these clients, stdio and the MCP Inspector: "
        "<code>docs/connect.md</code> in Trailmap's repository.</p>" + _key_form(m)
    )


async def _connect_page(
    request: Request, m: OrgMember, *, error: str = "", status: int = 200
) -> Response:
    keys = await list_keys(context_of(request).db, m.slug)
    body = _connect_body(m, mcp_url(request), keys, error)
    return page(f"Connect · {m.name}", body, nav=org_nav(m), script=True, status=status)


@router.get("/orgs/{slug}/connect")
async def connect_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    return await _connect_page(request, m)


@router.post("/orgs/{slug}/connect/key")
async def connect_key(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    try:
        m.membership.require_key_scope("READ_ONLY")
        key, token = await create_key(
            context_of(request).db,
            m.slug,
            name=form.get("name", ""),
            scope="READ_ONLY",
            created_by=m.user.email,
            user_id=m.user.id,
            actor=m.actor(request),
        )
    except TrailmapError as error:
        return await _connect_page(request, m, error=problem_text(error), status=error.status)
    response = see_other(f"/orgs/{m.slug}/connect/key/{key.id}")
    set_cookie(
        request,
        response,
        _NEW_KEY_COOKIE,
        f"{key.id}.{token}",
        max_age=_NEW_KEY_SECONDS,
        samesite="strict",
    )
    return response


@router.get("/orgs/{slug}/connect/key/{key_id}")
async def connect_key_made(request: Request, slug: str, key_id: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    keys = await list_keys(context_of(request).db, m.slug)
    key = next((k for k in keys if k.id == key_id and m.may_manage(k)), None)
    if key is None:
        return refused(m, "No key of yours has that id.", 404)
    carried = request.cookies.get(cookie_name(request, _NEW_KEY_COOKIE), "")
    carried_id, _, token = carried.partition(".")
    back = f"<p><a href=/orgs/{e(m.slug)}/connect>Back to Connect</a></p>"
    if carried_id != key.id or not token:
        body = (
            f"<p id=token-gone>The token of <b>{e(key.name)}</b> was shown once and is not "
            "shown again; Trailmap keeps only its hash. If it was not copied, make another "
            f"key and revoke this one on the <a href=/orgs/{e(m.slug)}/keys>API Keys</a> "
            f"page.</p>{back}"
        )
        return page("Key made", body, nav=org_nav(m))
    url = mcp_url(request)
    body = (
        f"<p class=notice role=status>The READ_ONLY key <b>{e(key.name)}</b> is made. Its "
        "token is shown only now: copy it somewhere safe.</p>"
        + _copyable("token", token, "the token")
        + "<p>Claude Code, with this key:</p>"
        + _copyable("cmd-with-token", _key_command(url, token), "the claude mcp add command")
        + back
    )
    response = page("Key made", body, nav=org_nav(m), script=True)
    clear_cookie(request, response, _NEW_KEY_COOKIE, samesite="strict")
    return response
