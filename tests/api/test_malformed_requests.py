"""A corpus of malformed requests: odd unicode, nulls, huge numbers, deep nesting, wrong
types for every field, random JSON and random bytes. Whatever arrives, the answer is never
a 5xx, every error has the one shape, and every item of a batch is reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.api.test_error_shape import HTTPResponse, assert_error_shape
from tests.factories import make_key, make_org
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.timeline.events import CORE_ATTRIBUTES

EVENTS = "/api/v1/events"
FIELDS = tuple(sorted(CORE_ATTRIBUTES))
VALID: dict[str, Any] = {
    "specversion": "1.0",
    "type": "deployment",
    "source": "//github.com/acme/checkout",
    "time": "NOW",
    "subject": "production",
}
QUERY_NAMES = (
    "from",
    "to",
    "type",
    "source",
    "subject",
    "severity",
    "service",
    "search",
    "limit",
    "cursor",
    "timezone",
)
MEDIA_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/json; charset=latin-1",
    "text/plain",
    "",
)

fuzz = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Characters that break naive code: NUL, bidi overrides, zero-width, BOM, emoji (with joiners),
# the last code point, quotes and escapes, and lone surrogates.
_ODD = st.sampled_from(
    [
        "\x00",
        "\u202e",
        "\u200f",
        "\u200b",
        "\ufeff",
        "🚀",
        "👩\u200d👩\u200d👧",
        "\U0010ffff",
        "e\u0301",
        "\\",
        '"',
        "\n",
        "\x7f",
        "\ud800",
        "\udfff",
        "%00",
        "'; DROP TABLE events; --",
    ]
)
odd_text = st.one_of(
    st.text(max_size=20),
    st.lists(_ODD | st.characters(exclude_categories=()), max_size=12).map("".join),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 2**70]),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with some fields given the wrong type, odd text, or left out."""
    item: dict[str, Any] = dict(VALID)
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=4)):
        if draw(st.booleans()):
            item[name] = draw(json_values)
        else:
            item.pop(name, None)
    item.update(draw(st.dictionaries(odd_text, scalars, max_size=2)))
    return item


bodies = st.one_of(events(), st.lists(events(), min_size=1, max_size=6), json_values)


def encode(body: object, *, raw_surrogates: bool) -> bytes:
    if raw_surrogates:
        # Lone surrogates written as (invalid) UTF-8 bytes rather than as \ud800 escapes.
        return json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return json.dumps(body).encode()


@pytest.fixture
def http(database_url: str, db: Database) -> Iterator[TestClient]:
    app = create_app(
        Settings(database_url=database_url, retention_purge_interval_seconds=0), database=db
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def auth(db: Database) -> dict[str, dict[str, str]]:
    async def make() -> dict[str, dict[str, str]]:
        org = await make_org(db)
        writer = await make_key(db, org)
        reader = await make_key(db, org, scope="read-only")
        return {
            "writer": {"Authorization": f"Bearer {writer}"},
            "reader": {"Authorization": f"Bearer {reader}"},
        }

    return anyio.run(make)


def check(response: HTTPResponse) -> dict[str, Any]:
    """Never a 5xx; an error has the one shape, a success says so."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        return assert_error_shape(response)
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) == {"success", "data"}, body
    assert body["success"] is True, body
    return body


def check_every_item_reported(body: object, response: HTTPResponse) -> None:
    items = body if isinstance(body, list) else [body]
    if response.status_code in (200, 201):
        data = response.json()["data"]
        reported = {
            e["index"] for part in ("accepted", "duplicates", "rejected") for e in data[part]
        }
        assert reported == set(range(len(items))), data
        counted = data["counts"]
        assert counted["accepted"] == len(data["accepted"])
        assert counted["duplicates"] == len(data["duplicates"])
    elif response.status_code == 400:
        details = response.json()["details"]
        if details and "index" in details[0]:
            # Nothing was stored: each item's problems are listed, and every item has some.
            assert {d["index"] for d in details} == set(range(len(items)))


def post(
    http: TestClient, content: bytes, headers: dict[str, str], media: str = "application/json"
) -> HTTPResponse:
    if media:
        headers = {**headers, "Content-Type": media}
    # TestClient answers with httpx's or httpx2's response depending on what is installed;
    # both fit HTTPResponse.
    response: HTTPResponse = http.post(EVENTS, content=content, headers=headers)
    return response


# -- a fixed corpus of known troublemakers -----------------------------------------------

_EVENT = b'{"specversion": "1.0", "type": "t", "source": "//s", "time": "NOW"'
_CORPUS: dict[str, bytes] = {
    "raw surrogate bytes in data": _EVENT + b', "data": "\xed\xa0\x80"}',
    "escaped lone surrogate in type": _EVENT.replace(b'"t"', b'"\\ud800"') + b"}",
    "escaped lone low surrogate key": _EVENT + b', "data": {"\\udfff": 1}}',
    "a bare lone surrogate": b'"\\ud800"',
    "invalid utf-8": _EVENT + b', "data": "\xff\xfe"}',
    "nul escape": _EVENT + b', "data": "\\u0000"}',
    "raw nul byte": _EVENT + b', "data": "\x00"}',
    "rtl override and emoji": _EVENT.replace(b'"t"', '"\u202e🚀\u200f"'.encode()) + b"}",
    "bom": b"\xef\xbb\xbf" + _EVENT + b"}",
    "2**70": _EVENT + b', "data": {"n": 1180591620717411303424}}',
    "2**70 as an extension": _EVENT + b', "big": 1180591620717411303424}',
    "1e400": _EVENT + b', "data": 1e400}',
    "-1e400 in a batch": b"[" + _EVENT + b', "data": -1e400}]',
    "NaN": _EVENT + b', "data": NaN}',
    "Infinity": _EVENT + b', "data": [Infinity, -Infinity]}',
    "depth 5000 arrays": b"[" * 5000 + b"]" * 5000,
    "depth 5000 objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "depth 5000 inside data": _EVENT + b', "data": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "depth 300 inside data": _EVENT + b', "data": ' + b"[" * 300 + b"]" * 300 + b"}",
    "depth 300 in a batch": b"[" + _EVENT + b', "data": ' + b"[" * 300 + b"]" * 300 + b"}]",
    "null": b"null",
    "batch of nulls": b"[null, null]",
    "every field null": b"{" + b", ".join(b'"%s": null' % name.encode() for name in FIELDS) + b"}",
    "true": b"true",
    "a number": b"12",
    "a string": b'"deployment"',
    "nested batch": b"[[" + _EVENT + b"}]]",
    "trailing garbage": _EVENT + b"} x",
    "two documents": _EVENT + b"}" + _EVENT + b"}",
    "truncated": _EVENT,
    "single quotes": b"{'specversion': '1.0'}",
    "duplicate keys": _EVENT + b', "type": 5}',
    "a 1 MB string": _EVENT + b', "data": "' + b"x" * 1_000_000 + b'"}',
    "a huge key": _EVENT + b', "' + b"k" * 100_000 + b'": 1}',
    "utf-16": (_EVENT + b"}").decode().encode("utf-16"),
    "only a NUL byte": b"\x00",
}


def test_every_known_troublemaker_is_answered_without_a_server_error(
    http: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    for name, content in _CORPUS.items():
        for media in ("application/json", "application/cloudevents-batch+json"):
            response = post(http, content, auth["writer"], media)
            # 413: an event over 10 KB (the 1 MB string) is too large, not malformed.
            assert response.status_code in (200, 201, 400, 413), (name, response.text[:300])
            check(response)


def test_the_troublemakers_that_cannot_be_stored_say_why(
    http: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    expected = {
        "raw surrogate bytes in data": "not valid Unicode",
        "escaped lone surrogate in type": "not valid Unicode",
        "nul escape": "NUL character",
        "depth 300 inside data": "nested too deeply",
        "depth 5000 arrays": "not valid JSON",
    }
    for name, message in expected.items():
        response = post(http, _CORPUS[name], auth["writer"])
        assert response.status_code == 400, (name, response.text)
        assert message in check(response)["error"], name


def test_an_item_the_fast_parser_refuses_costs_only_its_own_event(
    http: TestClient, auth: dict[str, dict[str, str]]
) -> None:
    batch = b"[" + _EVENT + b', "data": "\\ud800"}, ' + _EVENT + b"}]"
    response = post(http, batch, auth["writer"])
    assert response.status_code == 200, response.text
    data = check(response)["data"]
    assert [a["index"] for a in data["accepted"]] == [1]
    assert [r["index"] for r in data["rejected"]] == [0]


# -- generated bodies --------------------------------------------------------------------


@fuzz
@given(body=bodies, media=st.sampled_from(MEDIA_TYPES[:3]), raw_surrogates=st.booleans())
def test_random_json_bodies_never_get_a_server_error_and_every_item_is_reported(
    http: TestClient,
    auth: dict[str, dict[str, str]],
    body: object,
    media: str,
    raw_surrogates: bool,
) -> None:
    response = post(http, encode(body, raw_surrogates=raw_surrogates), auth["writer"], media)
    check(response)
    check_every_item_reported(body, response)


@fuzz
@given(content=st.binary(max_size=300), media=st.sampled_from(MEDIA_TYPES))
def test_random_bytes_never_get_a_server_error(
    http: TestClient, auth: dict[str, dict[str, str]], content: bytes, media: str
) -> None:
    check(post(http, content, auth["writer"], media))


@fuzz
@given(body=bodies, who=st.sampled_from(["reader", "nobody", "garbage"]))
def test_random_bodies_without_write_access_are_refused_in_the_one_shape(
    http: TestClient, auth: dict[str, dict[str, str]], body: object, who: str
) -> None:
    headers = {
        "reader": auth["reader"],
        "nobody": {},
        "garbage": {"Authorization": "Bearer tmk_nope"},
    }[who]
    response = post(http, encode(body, raw_surrogates=False), headers)
    assert response.status_code == (403 if who == "reader" else 401)
    check(response)


# -- generated queries -------------------------------------------------------------------

_query_pairs = st.lists(
    st.tuples(st.sampled_from(QUERY_NAMES) | odd_text, odd_text | st.integers().map(str)),
    max_size=5,
)
_percent_bytes = st.binary(max_size=40).map(lambda raw: "".join(f"%{b:02X}" for b in raw))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    choice = draw(st.integers(min_value=0, max_value=3))
    if choice == 0:
        # One filter with an odd value: what reaches the database's query parameters.
        name = draw(st.sampled_from(("type", "source", "subject", "service", "search")))
        value = draw(st.lists(_ODD | st.characters(exclude_categories=()), min_size=1).map("".join))
        return urlencode([(name, _utf8(value))])
    if choice == 1:
        return f"{draw(st.sampled_from(QUERY_NAMES))}={draw(_percent_bytes)}"
    if choice == 2:
        return urlencode([(_utf8(k), _utf8(v)) for k, v in draw(_query_pairs)])
    return quote(draw(st.text(max_size=40)), safe="=&")


@settings(parent=fuzz, max_examples=100)
@given(
    path=st.sampled_from([EVENTS, f"{EVENTS}/summary"])
    | odd_text.map(lambda t: f"{EVENTS}/{quote(t.encode('utf-8', 'surrogatepass'), safe='')}"),
    query=query_strings(),
)
def test_random_queries_never_get_a_server_error(
    http: TestClient, auth: dict[str, dict[str, str]], path: str, query: str
) -> None:
    check(http.get(f"{path}?{query}", headers=auth["reader"]))
