"""The Quick start page: a first event from curl, the CLI and CI, written for this server, and
a line that waits for that event and says when it arrived (docs/console.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.console.orgs import org_member, org_nav
from trailmap.console.pages import e, page
from trailmap.console.reading import reader_of
from trailmap.http.context import context_of
from trailmap.http.errors import error_response
from trailmap.http.responses import ok
from trailmap.invocation import command
from trailmap.timeline.queries import EventQuery, query_events

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_SCRIPT: Final = (Path(__file__).parent / "static" / "quickstart.js").read_text("utf-8")
_POLL_MS: Final = 3000
_SOURCE: Final = "//github.com/acme/checkout"


def _curl(url: str) -> str:
    return (
        f'curl -sS -X POST "{url}/api/v1/events" \\\n'
        '  -H "Authorization: Bearer $TRAILMAP_API_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        '  -d \'{"specversion": "1.0", "type": "deployment", '
        f'"source": "{_SOURCE}", "time": "NOW", "subject": "production", "version": "v1.4.2", '
        '"data": {"description": "checkout v1.4.2 to production"}}\''
    )


def _cli(url: str) -> str:
    send = command(
        f"send --type deployment --source {_SOURCE} --subject production --version v1.4.2 "
        '--description "checkout v1.4.2 to production"'
    )
    return f"export TRAILMAP_URL={url}\n{send}"


def _ci(url: str) -> str:
    return (
        "- name: Tell Trailmap about the deployment\n"
        "  env:\n"
        "    TRAILMAP_API_KEY: ${{ secrets.TRAILMAP_API_KEY }}\n"
        "  run: |\n"
        f'    curl -sS --fail-with-body -X POST "{url}/api/v1/events" \\\n'
        '      -H "Authorization: Bearer $TRAILMAP_API_KEY" \\\n'
        '      -H "Content-Type: application/json" \\\n'
        '      -d "{\\"specversion\\": \\"1.0\\", \\"type\\": \\"deployment\\", '
        '\\"source\\": \\"//github.com/$GITHUB_REPOSITORY\\", \\"time\\": \\"NOW\\", '
        '\\"subject\\": \\"production\\", '
        '\\"version\\": \\"$GITHUB_SHA\\"}"'
    )


def _copyable(element_id: str, text: str, label: str) -> str:
    return (
        f"<pre id={element_id}>{e(text)}</pre>"
        f"<button type=button data-copy={element_id} hidden aria-label='Copy {e(label)}'>"
        "Copy</button>"
    )


@router.get("/orgs/{slug}/quickstart")
async def quickstart_page(request: Request, slug: str) -> Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    principal = await reader_of(request, m)
    latest = await query_events(
        context_of(request).db,
        principal,
        EventQuery(from_=f"-{principal.retention_days}d", limit=1),
    )
    url = context_of(request).settings.public_url.rstrip("/")
    slug_ = e(m.slug)
    if latest.events:
        event = latest.events[0]
        waiting = f"Received: {event['type']} from {event['source']} ({event['time_relative']})."
        received = "yes"
    else:
        waiting, received = "Waiting for your first event…", "no"
    key_hint = (
        f"make one on the <a href=/orgs/{slug_}/keys>API Keys</a> page"
        if m.may("create_write_key")
        else "ask an owner or admin of the organization for one"
    )
    body = (
        "<p>Tell Trailmap about a change (here, a deployment) and it is on the timeline for "
        "people and assistants. Sending needs a <b>READ_WRITE</b> key in "
        f"<code>TRAILMAP_API_KEY</code>: {key_hint}.</p>"
        f"<p id=first-event role=status aria-live=polite data-poll=/orgs/{slug_}/quickstart/"
        f"status data-every-ms={_POLL_MS} data-received={received}><b>{e(waiting)}</b></p>"
        "<h2>With curl</h2>"
        + _copyable("send-curl", _curl(url), "the curl command")
        + "<h2>With the CLI</h2><p>It retries 429 and 5xx answers with backoff.</p>"
        + _copyable("send-cli", _cli(url), "the CLI command")
        + "<h2>From CI</h2><p>A GitHub Actions step after the deployment, with the key in "
        "the repository's secret <code>TRAILMAP_API_KEY</code>:</p>"
        + _copyable("send-ci", _ci(url), "the GitHub Actions step")
    )
    scripts = ("/console/quickstart.js",)
    return page(f"Quick start · {m.name}", body, nav=org_nav(m), script=True, scripts=scripts)


@router.get("/orgs/{slug}/quickstart/status")
async def quickstart_status(request: Request, slug: str) -> Response:
    """Whether the organization has an event yet, and its newest: for the page's script."""
    m = await org_member(request, slug)
    if isinstance(m, Response):  # the page's answer (off to sign in, or not found) as JSON
        if m.status_code == 303:
            return error_response(401, "UNAUTHORIZED", "Sign in to the console first.")
        return error_response(404, "NOT_FOUND", "No organization of yours has that name.")
    principal = await reader_of(request, m)
    latest = await query_events(
        context_of(request).db,
        principal,
        EventQuery(from_=f"-{principal.retention_days}d", limit=1),
    )
    found = latest.events[0] if latest.events else None
    newest = None
    if found is not None:
        newest = {k: found[k] for k in ("type", "source", "time", "time_relative")}
    answer = ok({"received": found is not None, "latest": newest})
    answer.headers["Cache-Control"] = "no-store"
    return answer


@router.get("/console/quickstart.js")
async def quickstart_script() -> Response:
    return Response(
        _SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
