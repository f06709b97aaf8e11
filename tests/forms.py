"""Reading console pages as a browser would: forms, links, key rows, and the Set-Cookie header.

The parser is the standard library's `html.parser`, so the tests depend on what the HTML says
(a form's action, its hidden fields, a select's options), not on how the markup is spelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Final

import httpx

__all__ = [
    "Cookie",
    "Form",
    "Link",
    "Option",
    "Page",
    "parse",
    "set_cookies",
    "sign_in",
]

_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Option:
    value: str
    label: str
    selected: bool


@dataclass
class Button:
    name: str | None
    value: str
    label: str


@dataclass
class Form:
    method: str
    action: str
    hidden: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # every named non-hidden input
    selects: dict[str, list[Option]] = field(default_factory=dict)
    buttons: list[Button] = field(default_factory=list)

    def data(self, **values: str) -> dict[str, str]:
        """What submitting the form sends: its hidden fields, overridden or added to."""
        return {**self.hidden, **values}


@dataclass
class Link:
    href: str
    text: str


@dataclass
class Page:
    forms: list[Form] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    by_id: dict[str, str] = field(default_factory=dict)  # the text of each element with an id
    errors: list[str] = field(default_factory=list)  # the text of each class=error element
    rows: dict[str, list[str]] = field(default_factory=dict)  # <tr data-key-id>: its cells
    scripts: list[str] = field(default_factory=list)  # <script src>

    def form(self, action: str) -> Form:
        found = [f for f in self.forms if f.action == action]
        assert len(found) == 1, f"{len(found)} forms post to {action}: {self.forms}"
        return found[0]

    def has_form(self, action: str) -> bool:
        return any(f.action == action for f in self.forms)

    @property
    def csrf(self) -> str:
        """The CSRF token the page's forms carry (the same in each)."""
        tokens = {f.hidden["csrf"] for f in self.forms if "csrf" in f.hidden}
        assert len(tokens) == 1, f"expected one CSRF token in the page's forms, got {tokens}"
        return tokens.pop()

    def hrefs(self) -> list[str]:
        return [link.href for link in self.links]


@dataclass
class _Open:
    tag: str
    id: str | None
    error: bool
    text: list[str] = field(default_factory=list)


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._stack: list[_Open] = []
        self._form: Form | None = None
        self._select: str | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._form = Form(method=a.get("method", "get").lower(), action=a.get("action", ""))
            self.page.forms.append(self._form)
        elif tag == "input" and self._form is not None and "name" in a:
            kind = a.get("type", "text").lower()
            target = self._form.hidden if kind == "hidden" else self._form.inputs
            target[a["name"]] = a.get("value", "")
        elif tag == "select" and self._form is not None and "name" in a:
            self._select = a["name"]
            self._form.selects[a["name"]] = []
        elif tag == "option" and self._form is not None and self._select is not None:
            self._form.selects[self._select].append(
                Option(value=a.get("value", ""), label="", selected="selected" in a)
            )
        elif tag == "button" and self._form is not None:
            self._form.buttons.append(Button(a.get("name"), a.get("value", ""), ""))
        elif tag == "a" and "href" in a:
            self.page.links.append(Link(a["href"], ""))
        elif tag == "script" and "src" in a:
            self.page.scripts.append(a["src"])
        elif tag == "tr" and "data-key-id" in a:
            self._row = []
            self.page.rows[a["data-key-id"]] = self._row
        if tag not in _VOID:
            classes = a.get("class", "").split()
            self._stack.append(_Open(tag, a.get("id"), "error" in classes))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "tr":
            self._row = None
        while self._stack:
            closed = self._stack.pop()
            self._close(closed)
            if closed.tag == tag:
                break

    def _close(self, element: _Open) -> None:
        text = "".join(element.text).strip()
        if element.id is not None:
            self.page.by_id[element.id] = text
        if element.error:
            self.page.errors.append(text)
        if element.tag == "td" and self._row is not None:
            self._row.append(text)
        elif element.tag == "a" and self.page.links:
            self.page.links[-1].text = text
        elif element.tag == "option" and self._form is not None and self._select is not None:
            self._form.selects[self._select][-1].label = text
        elif element.tag == "button" and self._form is not None and self._form.buttons:
            self._form.buttons[-1].label = text

    def handle_data(self, data: str) -> None:
        for element in self._stack:
            element.text.append(data)

    def close(self) -> None:
        super().close()
        while self._stack:
            self._close(self._stack.pop())


def parse(document: str) -> Page:
    parser = _Parser()
    parser.feed(document)
    parser.close()
    return parser.page


@dataclass(frozen=True)
class Cookie:
    """One Set-Cookie header: the name, value and attributes (names lower-cased)."""

    name: str
    value: str
    attributes: dict[str, str]

    def has(self, attribute: str) -> bool:
        return attribute.lower() in self.attributes

    def get(self, attribute: str) -> str | None:
        return self.attributes.get(attribute.lower())

    @property
    def deletes(self) -> bool:
        return self.get("max-age") == "0"


def set_cookies(response: httpx.Response) -> dict[str, Cookie]:
    """The cookies a response sets (or clears), by name."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        first, *rest = header.split(";")
        name, _, value = first.strip().partition("=")
        attributes = {}
        for part in rest:
            key, _, val = part.strip().partition("=")
            attributes[key.lower()] = val
        found[name] = Cookie(name, value.strip('"'), attributes)
    return found


async def sign_in(
    client: httpx.AsyncClient, email: str, password: str, *, next_path: str | None = None
) -> httpx.Response:
    """Drive the real sign-in form: open /login, read its CSRF field, post the form."""
    opened = await client.get("/login", params={} if next_path is None else {"next": next_path})
    assert opened.status_code == 200, opened.text
    form = parse(opened.text).form("/login")
    return await client.post("/login", data=form.data(email=email, password=password))
