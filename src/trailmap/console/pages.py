"""What every console page shares: the layout, headers, links and forms (docs/internals.md)."""

from __future__ import annotations

import html
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from trailmap.errors import TrailmapError
from trailmap.http.sessions import SignedInUser

__all__ = [
    "e",
    "form_csrf",
    "local_path",
    "page",
    "problem_text",
    "see_other",
    "to_login",
]

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
label{display:block;margin-top:1rem;font-weight:600}
input,select{width:100%;max-width:30rem;padding:.5rem;font:inherit;box-sizing:border-box}
button{margin-top:1rem;margin-right:.5rem;padding:.6rem 1.2rem;font:inherit}
.error{color:#a00}.muted{color:#666}nav{margin-bottom:1rem}nav a{margin-right:1rem}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;font-size:.92rem}
code,pre{background:#f4f4f4;padding:.2rem .4rem;word-break:break-all;white-space:pre-wrap}
.inline{display:inline}.inline button{margin:0}.inline select{width:auto}
.notice{color:#060}.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
label input[type=checkbox]{width:auto;margin-right:.5rem}
"""
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
)


def e(text: object) -> str:
    """Text escaped for HTML, quotes included."""
    return html.escape(str(text), quote=True)


def page(
    title: str,
    body: str,
    *,
    status: int = 200,
    nav: str = "",
    script: bool = False,
    form_targets: str = "",
    scripts: tuple[str, ...] = (),
) -> HTMLResponse:
    """A whole page. `form_targets` widens form-action for a page whose form redirects on;
    `scripts` are more of this server's script files (paths), besides the copy button's."""
    sources = (["/console/copy.js"] if script else []) + list(scripts)
    scripts_html = "".join(f"<script src={e(src)} defer></script>" for src in sources)
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        f"<title>{e(title)} · Trailmap</title><style>{_STYLE}</style>{scripts_html}</head>"
        f"<body>{nav}<h1>{e(title)}</h1>{body}</body></html>"
    )
    response = HTMLResponse(document, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    form_action = " ".join(["'self'", *form_targets.split()])
    response.headers["Content-Security-Policy"] = _CSP.format(form_action=form_action)
    return response


def see_other(location: str) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def local_path(target: str | None, default: str = "/console") -> str:
    """`target` if it is a path on this server, else `default`: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 or c == "\\" for c in target):
        return default
    return target


def to_login(request: Request) -> RedirectResponse:
    """Off to sign in, coming back here afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other("/login?next=" + quote(here, safe=""))


def problem_text(error: TrailmapError) -> str:
    """What a form's page says of a refusal: each field's problem, or the message."""
    return "; ".join(f"{d.field}: {d.message}" for d in error.details) or error.message


def form_csrf(user: SignedInUser) -> str:
    return f"<input type=hidden name=csrf value='{e(user.csrf)}'>"
