"""What every console page shares: the layout, headers, links and forms (docs/internals.md)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from trailmap.errors import TrailmapError
from trailmap.http.sessions import SignedInUser

__all__ = [
    "FAVICON_SVG",
    "e",
    "field_error",
    "form_csrf",
    "form_error",
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
header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:baseline;margin-bottom:1rem}
header nav{margin:0;display:flex;flex-wrap:wrap;gap:.25rem 1rem;align-items:baseline}
header nav a{margin:0}header nav button{margin:0}
.switcher summary{cursor:pointer;font-weight:600}.switcher ul{margin:.25rem 0;padding-left:1.2rem}
.wide{overflow-x:auto;max-width:100%}
a:focus-visible,button:focus-visible,summary:focus-visible{outline:3px solid #1a5fb4}
@media (max-width:40rem){
body{margin:1rem auto}
.stack table,.stack tbody,.stack tr,.stack td{display:block;width:auto}
.stack thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
.stack tr{border-bottom:2px solid #bbb;padding:.35rem 0}
.stack td{border:0;padding:.1rem 0}
.stack td[data-label]::before{content:attr(data-label) ": ";font-weight:600}
}
"""
# The server's icon (/favicon.ico and /favicon.svg): a trail of three linked points.
FAVICON_SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'>"
    "<rect width='32' height='32' rx='6' fill='#1a5fb4'/>"
    "<path d='M7 24 L16 9 L25 20' stroke='#fff' stroke-width='3' fill='none'/>"
    "<circle cx='7' cy='24' r='3' fill='#fff'/><circle cx='16' cy='9' r='3' fill='#fff'/>"
    "<circle cx='25' cy='20' r='3' fill='#fff'/></svg>"
)
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; connect-src 'self'; "
    "img-src 'self'; "
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
    """A whole page: a header holding `nav`, then the title and `body` in the `<main>`
    landmark. `form_targets` widens form-action for a page whose form redirects on;
    `scripts` are more of this server's script files (paths), besides the copy button's."""
    sources = (["/console/copy.js"] if script else []) + list(scripts)
    scripts_html = "".join(f"<script src={e(src)} defer></script>" for src in sources)
    header = f"<header>{nav}</header>" if nav else ""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width'>"
        "<link rel=icon href=/favicon.svg type='image/svg+xml'>"
        f"<title>{e(title)} · Trailmap</title><style>{_STYLE}</style>{scripts_html}</head>"
        f"<body>{header}<main><h1>{e(title)}</h1>{body}</main></body></html>"
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


def field_error(
    field: str, error: TrailmapError | None, *, aliases: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """For a form's `field`: the attributes tying it to the refusal's message about it
    (`aria-invalid`, `aria-describedby`) and that message's element; both empty when the
    refusal is not about this field. The message's id is `<field>-error`; `aliases` maps
    the domain's name of a field to the form's where they differ."""
    if error is None:
        return "", ""
    names = aliases or {}
    messages = [d.message for d in error.details if names.get(d.field or "", d.field) == field]
    if not messages:
        return "", ""
    attributes = f" aria-invalid=true aria-describedby={field}-error"
    return attributes, f"<p class=error id={field}-error>{e('; '.join(messages))}</p>"


def form_error(markup: str, message: str, fields: Iterable[str]) -> str:
    """A form's refusal as an alert (id `form-error`) before `markup`, with the inputs of
    `fields` in it marked invalid and described by the alert."""
    if not message:
        return markup
    for name in fields:
        markup = markup.replace(
            f"<input id={name} ",
            f"<input id={name} aria-invalid=true aria-describedby=form-error ",
        )
    return f"<p class=error role=alert id=form-error>{e(message)}</p>{markup}"


def form_csrf(user: SignedInUser) -> str:
    return f"<input type=hidden name=csrf value='{e(user.csrf)}'>"
