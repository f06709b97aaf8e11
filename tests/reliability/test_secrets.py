"""No secret Trailmap issues is ever in its logs or its database in clear.

A real `trailmap serve`, on SQLite and on PostgreSQL (a database of the test's own), with
TRAILMAP_SECRET_KEY set and its log level at debug, issues every kind of secret through its
real interfaces: the one-time setup link (printed on first start), the owner's password and
the first API key (the setup page), console session cookies (sign-in), API keys from the
console's API Keys and Service Accounts pages and from `trailmap key create`, an OAuth client
secret (registration), a pending request id, a PKCE verifier, an authorization code, access
and refresh tokens (code exchange and refreshes), and a Prometheus auth header (stored
encrypted). Each is used at least once, and near misses of them (one character changed) are
refused. Then the server stops and its whole output, the CLI's stderr, and a text dump of
every column of every table (read with the raw driver) are searched for every secret, and
for tokens for the part after the prefix too: none may be there. Hashes may.

The setup link's token is the one secret the server prints, once, by design (an operator has
to read it): it must be in the output exactly once and nowhere else. The search is shown to
work by a marker written in clear on purpose (an event's description, and an error message a
fake Prometheus sends back), which it must find.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urljoin, urlsplit

import anyio
import httpx
import psycopg
import pytest

from tests.forms import parse, sign_in
from tests.mcp.handshake import open_session
from tests.oauth.browser import Browser
from tests.oauth.test_oauth_attacks import CALLBACK, pkce
from tests.reliability.forms import scale
from tests.server import free_port, module_database, running_server

OWNER = "owner@secrets.example"
_KEYS = int(scale(1, 8))  # API keys per way of making them (console, CLI, service account)
_REFRESHES = int(scale(1, 6))  # refresh-token rotations in the OAuth grant
_PREFIXED = re.compile(r"^tm[kar]_")
_API_KEY = re.compile(r"tmk_[0-9A-Za-z]{49}")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


# -- what was issued -------------------------------------------------------------------------


@dataclass
class Issued:
    """Every secret the run saw, by kind, and the strings each one must not show up as."""

    secrets: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, value: str) -> str:
        assert value, f"an empty {kind}"
        self.secrets.setdefault(kind, []).append(value)
        return value

    def needles(self) -> Iterator[tuple[str, str]]:
        """(kind, string) pairs to search for: each secret, and a token's part after its
        prefix; a header value's credential after "Bearer "."""
        for kind, values in self.secrets.items():
            for value in values:
                yield kind, value
                if _PREFIXED.match(value):
                    yield f"{kind} (after the prefix)", value[4:]
                scheme, _, credential = value.partition(" ")
                if scheme == "Bearer" and credential:
                    yield f"{kind} (the credential)", credential

    @property
    def count(self) -> int:
        return sum(len(values) for values in self.secrets.values())


def _near_miss_of(token: str) -> str:
    """A token one character away from `token`. A prefixed token keeps a valid checksum, so
    it gets past the offline check to the database lookup, as a real typo's fix might."""
    changed = token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]
    if not _PREFIXED.match(token):
        return changed
    body = changed[4:-6]
    number = zlib.crc32(body.encode("ascii"))
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    return changed[:4] + body + digits.rjust(6, "0")


# -- a Prometheus of the test's own ------------------------------------------------------------


@dataclass
class FakePrometheus:
    url: str
    control: str  # written in clear into its error answers, for the log search to find
    seen: list[str | None] = field(default_factory=list)  # the Authorization header of each ask


@contextmanager
def _fake_prometheus(control: str) -> Iterator[FakePrometheus]:
    """A query API that answers `sum(up)` with an empty matrix and anything else with an
    error echoing the Authorization header it was sent (as some servers do), next to
    `control`."""
    server: ThreadingHTTPServer

    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server dispatches to
            header = self.headers.get("Authorization")
            fake.seen.append(header)
            query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
            if query == "sum(up)":
                status = 200
                body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
            else:
                status = 400
                body = {
                    "status": "error",
                    "errorType": "bad_data",
                    "error": f"{control}: no such metric (Authorization: {header})",
                }
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass  # the test's own output stays readable

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    fake = FakePrometheus(url=f"http://127.0.0.1:{server.server_address[1]}", control=control)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the server and its database -----------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str  # sqlite or postgres
    database_url: str
    folder: Path


@pytest.fixture(params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[Backend]:
    with module_database(request, tmp_path_factory, sqlite_template, "secrets") as (url, folder):
        yield Backend(name=request.param, database_url=url, folder=folder)


@dataclass
class Dump:
    """Where each piece of stored text came from, and the text."""

    cells: list[tuple[str, str]] = field(default_factory=list)  # (table.column, text)
    files: list[tuple[str, str]] = field(default_factory=list)  # (file name, its bytes)
    rows: int = 0
    tables: int = 0

    @property
    def size(self) -> int:
        """Characters of text in the cells (the files not counted)."""
        return sum(len(text) for _, text in self.cells)

    @property
    def file_size(self) -> int:
        return sum(len(text) for _, text in self.files)

    def where(self, needle: str) -> list[str]:
        return sorted({place for place, text in self.cells + self.files if needle in text})


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")  # byte for byte: an ASCII secret stays whole
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _add_rows(dump: Dump, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    dump.tables += 1
    dump.rows += len(rows)
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            dump.cells.append((f"{table}.{column}", _text(value)))


def _dump_database(database_url: str) -> Dump:
    """Every column of every table as text, through the raw driver (no SQLAlchemy)."""
    if database_url.startswith("sqlite:///"):
        return _dump_sqlite(Path(database_url.removeprefix("sqlite:///")))
    return _dump_postgres(database_url)


def _dump_sqlite(path: Path) -> Dump:
    dump = Dump()
    conn = sqlite3.connect(path)
    try:
        listed = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for (name,) in listed.fetchall():
            quoted = '"' + name.replace('"', '""') + '"'
            cursor = conn.execute(f"SELECT * FROM {quoted}")  # noqa: S608 - a name it listed
            columns = [d[0] for d in cursor.description]
            _add_rows(dump, name, columns, cursor.fetchall())
    finally:
        conn.close()
    # The files themselves too, free pages and any WAL left included: a row deleted does
    # not make a secret forgotten.
    for raw in (path, path.with_name(path.name + "-wal")):
        if raw.exists():
            dump.files.append((f"file {raw.name}", raw.read_bytes().decode("latin-1")))
    return dump


def _dump_postgres(database_url: str) -> Dump:
    dump = Dump()
    with psycopg.connect(database_url) as conn:
        listed = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        for schema, name in listed.fetchall():
            cursor = conn.execute(
                f'SELECT * FROM "{schema}"."{name}"'  # noqa: S608 - names the catalog listed
            )
            columns = [d.name for d in cursor.description or []]
            _add_rows(dump, f"{schema}.{name}", columns, cursor.fetchall())
    return dump


# -- the person's and the client's steps -----------------------------------------------------------


def _on(node: str, url: str, public: str) -> str:
    """A URL the server wrote for its public address, sent to the node itself."""
    if url.startswith(public):
        return node + url.removeprefix(public)
    return urljoin(node + "/", url)


async def _set_up(http: httpx.AsyncClient, token: str, password: str) -> str:
    """The setup link's page, filled in: organization acme and its owner. Returns the first
    API key, shown on the page once."""
    opened = await http.get("/setup", params={"token": token})
    assert opened.status_code == 200, opened.text
    form = parse(opened.text).form("/setup")
    done = await http.post(
        "/setup",
        data=form.data(organization="acme", name="Acme", email=OWNER, password=password),
    )
    assert done.status_code == 201, done.text
    found = _API_KEY.search(done.text)
    assert found is not None, done.text
    return found[0]


async def _console_key(http: httpx.AsyncClient, name: str, scope: str = "read-write") -> str:
    """A key made with the API Keys page's form; the token the page shows once."""
    opened = await http.get("/orgs/acme/keys")
    assert opened.status_code == 200, opened.text
    form = parse(opened.text).form("/orgs/acme/keys")
    created = await http.post(form.action, data=form.data(name=name, scope=scope))
    assert created.status_code == 303, created.text  # post, redirect, get
    shown = await http.get(created.headers["Location"])
    return parse(shown.text).by_id["token"]


async def _service_account_keys(http: httpx.AsyncClient, count: int) -> list[str]:
    accounts = "/orgs/acme/service-accounts"
    opened = await http.get(accounts)
    form = parse(opened.text).form(accounts)
    created = await http.post(accounts, data=form.data(name="deploys"))
    assert created.status_code == 303, created.text
    page = parse((await http.get(accounts)).text)
    [tokens] = [f for f in page.forms if f.action.endswith("/tokens")]
    made = []
    for _ in range(count):
        generated = await http.post(tokens.action, data=tokens.data(scope="read-write"))
        assert generated.status_code == 303, generated.text
        shown = await http.get(generated.headers["Location"])
        made.append(parse(shown.text).by_id["token"])
    return made


async def _cli_key(backend: Backend, name: str, errors: list[str]) -> str:
    """`trailmap key create`: the token alone on stdout; stderr joins the searched output."""
    environment = {k: v for k, v in os.environ.items() if k != "TRAILMAP_DATABASE_URL"}
    done = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "trailmap.cli.main",
            "--database",
            backend.database_url,
            "key",
            "create",
            "--org",
            "acme",
            "--name",
            name,
            "--scope",
            "read-write",
        ],
        env=environment,
    )
    errors.append(done.stderr.decode("utf-8", "replace"))
    token = done.stdout.decode().strip()
    assert _API_KEY.fullmatch(token), done.stdout
    return token


async def _grant(
    node: str, public: str, password: str, issued: Issued
) -> tuple[str, str, str, str]:
    """Registration (a confidential client), sign-in and consent in a browser of its own,
    the code exchanged, then refreshes. Returns the client id and secret and the latest
    access and refresh tokens."""
    resource = f"{public}/mcp"
    browser = Browser()
    try:
        async with httpx.AsyncClient(base_url=node, timeout=30.0) as http:
            registered = await http.post(
                "/register",
                json={
                    "client_name": "Secrets test",
                    "redirect_uris": [CALLBACK],
                    "token_endpoint_auth_method": "client_secret_post",
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                },
            )
            assert registered.status_code == 201, registered.text
            client_id = registered.json()["client_id"]
            client_secret = issued.add("OAuth client secret", registered.json()["client_secret"])

            verifier, challenge = pkce()
            issued.add("PKCE code verifier", verifier)
            query = {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": CALLBACK,
                "state": "secrets",
                "resource": resource,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
            started = await browser.get(f"{node}/authorize?{urlencode(query)}")
            assert started.status_code == 302, started.text
            consent_url = _on(node, started.headers["location"], public)
            issued.add(
                "OAuth pending request id",
                dict(parse_qsl(urlsplit(consent_url).query))["request"],
            )
            page = await browser.get(consent_url)
            assert page.status_code == 303, page.text  # not signed in yet
            login = await browser.get(_on(node, page.headers["location"], public))
            signed = await browser.submit(login, {"email": OWNER, "password": password})
            assert signed.status_code == 303, signed.text
            issued.add("console session cookie", browser.http.cookies["trailmap_session"])
            page = await browser.get(_on(node, signed.headers["location"], public))
            assert page.status_code == 200, page.text
            answered = await browser.submit(
                page, {"organization": "acme", "action": "approve"}, action_contains="consent"
            )
            assert answered.status_code == 303, answered.text
            code = issued.add(
                "OAuth authorization code",
                dict(parse_qsl(urlsplit(answered.headers["location"]).query))["code"],
            )

            wrong_secret = await http.post(
                "/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": client_id,
                    "client_secret": issued.add(
                        "near miss of a client secret", _near_miss_of(client_secret)
                    ),
                    "code": code,
                    "code_verifier": verifier,
                    "redirect_uri": CALLBACK,
                    "resource": resource,
                },
            )
            assert wrong_secret.status_code == 401, wrong_secret.text
            tokens = await http.post(
                "/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": client_id,
                    "client_secret": client_secret,
                    "code": code,
                    "code_verifier": verifier,
                    "redirect_uri": CALLBACK,
                    "resource": resource,
                },
            )
            assert tokens.status_code == 200, tokens.text
            access = issued.add("OAuth access token", tokens.json()["access_token"])
            refresh = issued.add("OAuth refresh token", tokens.json()["refresh_token"])
            for _ in range(_REFRESHES):
                near = await http.post(
                    "/token",
                    data={
                        "grant_type": "refresh_token",
                        "client_id": client_id,
                        "client_secret": client_secret,
                        "refresh_token": issued.add(
                            "near miss of a refresh token", _near_miss_of(refresh)
                        ),
                    },
                )
                assert near.status_code == 400, near.text
                rotated = await http.post(
                    "/token",
                    data={
                        "grant_type": "refresh_token",
                        "client_id": client_id,
                        "client_secret": client_secret,
                        "refresh_token": refresh,
                    },
                )
                assert rotated.status_code == 200, rotated.text
                access = issued.add("OAuth access token", rotated.json()["access_token"])
                refresh = issued.add("OAuth refresh token", rotated.json()["refresh_token"])
            return client_id, client_secret, access, refresh
    finally:
        await browser.aclose()


async def _mcp_tool(
    http: httpx.AsyncClient, node: str, token: str, tool: str, args: dict[str, Any]
) -> dict[str, Any]:
    session_id = await open_session(http, f"{node}/mcp", token)
    response = await http.post(
        f"{node}/mcp",
        json={
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": tool, "arguments": args},
        },
        headers={
            **_MCP_HEADERS,
            "Authorization": f"Bearer {token}",
            "Mcp-Session-Id": session_id,
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["result"]
    assert not result.get("isError"), result
    return result


def _event(event_id: str, description: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": "deployment",
        "source": "//reliability.example/secrets",
        "subject": "production",
        "service": "checkout",
        "time": "NOW",
        "data": {"description": description},
    }


# -- the test ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_no_secret_issued_is_in_the_logs_or_the_database_in_clear(
    backend: Backend,
) -> None:
    issued = Issued()
    control = f"written-in-clear-{secrets.token_hex(12)}"  # the search must find this one
    password = issued.add("owner password", f"pw-{secrets.token_urlsafe(18)}")
    secret_key = issued.add("TRAILMAP_SECRET_KEY", secrets.token_urlsafe(32))
    prometheus_header = issued.add(
        "Prometheus auth header", f"Bearer prom-{secrets.token_urlsafe(24)}"
    )
    cli_errors: list[str] = []
    log_path = backend.folder / "server.log"
    # Nothing listens at the public address: every request goes to the node itself (_on).
    public = f"http://127.0.0.1:{free_port()}"
    env = {
        "TRAILMAP_PUBLIC_URL": public,
        "TRAILMAP_SECRET_KEY": secret_key,
        "TRAILMAP_LOG_LEVEL": "debug",
        # The fake Prometheus listens on loopback, which only a listed network opens.
        "TRAILMAP_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.0/8",
        # The MCP SDK logs through rich, which wraps at 80 columns when it cannot ask a
        # terminal: a secret would be cut in two. Wide lines keep each record on one line
        # (and the search below also reads the output with all white space taken out).
        "COLUMNS": "1000",
    }
    with (
        _fake_prometheus(control) as prometheus,
        running_server(backend.database_url, log_path=log_path, env=env) as node,
    ):
        # First start: the banner, printed before the server answers, holds the link.
        link = re.search(r"/setup\?token=(\S+)", log_path.read_text())
        assert link is not None, log_path.read_text()
        setup_token = issued.add("setup link token", link[1])

        async with httpx.AsyncClient(base_url=node, timeout=30.0) as owner:
            near_link = issued.add("near miss of the setup link", _near_miss_of(setup_token))
            assert (await owner.get("/setup", params={"token": near_link})).status_code == 403
            first_key = issued.add(
                "API key (setup page)", await _set_up(owner, setup_token, password)
            )
            signed = await sign_in(owner, OWNER, password)
            assert signed.status_code == 303, signed.text
            session = issued.add("console session cookie", owner.cookies["trailmap_session"])
            admin_key = issued.add(
                "API key (console, admin)", await _console_key(owner, "admin", "admin")
            )
            keys = [
                first_key,
                *[
                    issued.add("API key (console)", await _console_key(owner, f"c{n}"))
                    for n in range(_KEYS)
                ],
                *[
                    issued.add("API key (service account)", token)
                    for token in await _service_account_keys(owner, _KEYS)
                ],
                *[
                    issued.add(
                        "API key (trailmap key create)",
                        await _cli_key(backend, f"k{n}", cli_errors),
                    )
                    for n in range(_KEYS)
                ],
            ]

            # Every key sends an event; the first event carries the marker in clear.
            stored: list[str] = []
            for n, key in enumerate(keys):
                sent = await owner.post(
                    "/api/v1/events",
                    json=_event(f"secrets-{n}", control if n == 0 else "a deployment"),
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert sent.status_code == 201, sent.text
                stored.append(sent.json()["data"]["accepted"][0]["id"])
            # Near misses of a key (one with a valid checksum, one without) and of the
            # session are refused.
            bad_checksum = first_key[:-1] + ("1" if first_key.endswith("0") else "0")
            for near in (_near_miss_of(first_key), bad_checksum):
                refused = await owner.get(
                    "/api/v1/events",
                    headers={
                        "Authorization": f"Bearer {issued.add('near miss of an API key', near)}"
                    },
                )
                assert refused.status_code == 401, refused.text
            async with httpx.AsyncClient(base_url=node, timeout=30.0) as stranger:
                stranger.cookies.set(
                    "trailmap_session", issued.add("near miss of a session", _near_miss_of(session))
                )
                assert (await stranger.get("/console")).headers["location"].startswith("/login")

            # The Prometheus auth header: set, then sent by the server for a metric query.
            put = await owner.put(
                "/api/v1/metrics/settings",
                json={
                    "sources": {"error_rate": "prometheus", "throughput": "prometheus"},
                    "prometheus": {
                        "base_url": prometheus.url,
                        "auth_header": {"name": "Authorization", "value": prometheus_header},
                        "queries": {"error_rate": "sum(up)", "throughput": "sum(echo)"},
                    },
                },
                headers={"Authorization": f"Bearer {admin_key}"},
            )
            assert put.status_code == 200, put.text
            assert put.json()["data"]["prometheus"]["auth_header_set"] is True
            around = await owner.get(
                f"/api/v1/events/{stored[0]}/metrics",
                params=[("metric", "error_rate"), ("metric", "throughput")],
                headers={"Authorization": f"Bearer {keys[-1]}"},
            )
            assert around.status_code == 200, around.text
            assert control in around.text  # the echoed error ...
            assert prometheus_header.split()[1] not in around.text  # ... without the header

        # The OAuth grant, and its access token on MCP (a tool that asks Prometheus too).
        client_id, client_secret, access, refresh = await _grant(node, public, password, issued)
        async with httpx.AsyncClient(timeout=30.0) as http:
            result = await _mcp_tool(
                http, node, access, "get_metrics_around_event", {"event_id": stored[0]}
            )
            assert result["content"], result
            near = issued.add("near miss of an access token", _near_miss_of(access))
            ping = await http.post(
                f"{node}/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                headers={**_MCP_HEADERS, "Authorization": f"Bearer {near}"},
            )
            assert ping.status_code == 401, ping.text
            revoked = await http.post(
                f"{node}/revoke",
                data={"client_id": client_id, "client_secret": client_secret, "token": refresh},
            )
            assert revoked.status_code == 200, revoked.text
        assert prometheus.seen.count(prometheus_header) == len(prometheus.seen) >= 3

    # The server has stopped: what it wrote, and what it stored.
    output = log_path.read_text(errors="replace") + "".join(cli_errors)
    unwrapped = "".join(output.split())
    dump = _dump_database(backend.database_url)

    # The positive controls: the search finds what is there in clear.
    assert dump.where(control), "the marker written in clear was not found in the database"
    assert control in output, "the marker the fake Prometheus sent was not found in the logs"
    # ... and the dump reads the tables the hashes are in: every key, session, client secret,
    # code and token is found there as its SHA-256 (a pending request is deleted once
    # answered, and a password is hashed with argon2).
    for kind, values in issued.secrets.items():
        if kind.startswith(("API key", "console", "OAuth")) and "request" not in kind:
            for value in values:
                digest = hashlib.sha256(value.encode()).hexdigest()
                assert dump.where(digest), f"the hash of a {kind} is not in the dump"
    assert output.count(setup_token) == unwrapped.count(setup_token) == 1, (
        "the setup link is printed once, on first start"
    )

    in_output: list[str] = []
    in_database: list[str] = []
    for kind, needle in issued.needles():
        allowed = 1 if needle == setup_token else 0
        if max(output.count(needle), unwrapped.count(needle)) > allowed:
            lines = [line for line in output.splitlines() if needle in line]
            in_output.append(f"{kind}: {lines[:3] or 'across lines'}")
        if places := dump.where(needle):
            in_database.append(f"{kind}: {places}")
    assert not in_output, "secrets in the server's output:\n" + "\n".join(in_output)
    assert not in_database, "secrets in the database:\n" + "\n".join(in_database)
    misses = sum(len(v) for k, v in issued.secrets.items() if k.startswith("near miss"))
    kinds = sum(1 for k in issued.secrets if not k.startswith("near miss"))
    print(
        f"\nsecrets ({backend.name}): {issued.count - misses} secrets of {kinds} kinds issued "
        f"and {misses} near misses tried; {sum(1 for _ in issued.needles())} strings searched in "
        f"{len(output):,} bytes of output and {dump.rows:,} rows of {dump.tables} tables "
        f"({dump.size:,} characters of text"
        + (f"; and {dump.file_size:,} bytes of database files" if dump.files else "")
        + "): none in clear"
    )
