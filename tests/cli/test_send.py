"""`trailmap send` against a real server process, directly and through a misbehaving proxy."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.server import module_database, running_server
from trailmap.accounts import create_key, create_org
from trailmap.cli.main import cli
from trailmap.cli.send import RetryPolicy, SendFailed, build_event, retry_after_seconds, send_event
from trailmap.storage import Database, migrate

# -- a real server, one per backend for the whole module ---------------------------------


@dataclass(frozen=True)
class LiveServer:
    url: str
    token: str  # READ_WRITE

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def _org_and_key(db: Database) -> str:
    await create_org(db, "acme")
    _key, token = await create_key(
        db, "acme", name="ci", scope="READ_WRITE", created_by="tests", service_account="tests"
    )
    return token


def _prepare(url: str) -> str:
    db = Database(url)
    try:
        migrate.upgrade(db)
        return asyncio.run(_org_and_key(db))
    finally:
        db.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[LiveServer]:
    """A server process with an organization and a key made before it started.

    Its own database, not `database_url`'s, because that one is emptied before every test
    while this server lives for the whole module.
    """
    with module_database(request, tmp_path_factory, sqlite_template, "trailmap_live") as (
        url,
        directory,
    ):
        token = _prepare(url)
        with running_server(url, log_path=directory / "server.log") as base_url:
            yield LiveServer(url=base_url, token=token)


def _source() -> str:
    """A source of its own per test, so tests sharing the server never see each other."""
    return f"//github.com/acme/api-{uuid.uuid4().hex[:8]}"


def _send(url: str, token: str, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["send", *args], env={"TRAILMAP_URL": url, "TRAILMAP_API_KEY": token}
    )


def _events_from(live: LiveServer, source: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{live.url}/api/v1/events",
        params={"from": "-2h", "source": source},
        headers=live.auth(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["data"]["events"]
    return events


# -- a proxy that fails on purpose before it forwards ------------------------------------


@dataclass
class Proxy:
    url: str
    posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            self.posts += 1
            return self.posts


@contextmanager
def failing_proxy(
    upstream: str,
    *,
    failures: int = 0,
    status: int = 503,
    retry_after: str = "0",
    land_first: bool = False,
) -> Iterator[Proxy]:
    """Answer the first `failures` POSTs with `status`, then forward to `upstream`.

    With `land_first`, a failed POST is forwarded before the failure is answered: the event
    was stored but the sender never heard so (a lost response).
    """
    code = "QUOTA_EXCEEDED" if status == 429 else "UNAVAILABLE"
    error_body = json.dumps(
        {"success": False, "error": "try again shortly", "code": code, "details": []}
    ).encode()

    def forward(path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(upstream + path, content=body, headers=headers, timeout=10)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {
                name: value
                for name in ("Authorization", "Content-Type")
                if (value := self.headers.get(name)) is not None
            }
            if proxy.count() <= failures:
                if land_first:
                    forward(self.path, body, headers)
                self._answer(status, error_body, {"Retry-After": retry_after})
                return
            upstream_response = forward(self.path, body, headers)
            self._answer(upstream_response.status_code, upstream_response.content, {})

        def _answer(self, answer_status: int, payload: bytes, extra: dict[str, str]) -> None:
            self.send_response(answer_status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            """Quiet: the tests assert on what the proxy counted, not on its log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    proxy = Proxy(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- against the real server --------------------------------------------------------------


def test_a_sent_deployment_comes_back_from_the_last_two_hours(live: LiveServer) -> None:
    source = _source()
    result = _send(
        live.url,
        live.token,
        "--type",
        "deployment",
        "--source",
        source,
        "--subject",
        "production",
        "--version",
        "v1",
        "--description",
        "api v1 rolled out",
    )
    assert result.exit_code == 0, result.output
    stored_id = result.stdout.strip()
    assert "stored" in result.stderr

    events = _events_from(live, source)
    assert [e["trailmap_id"] for e in events] == [stored_id]
    assert events[0]["type"] == "deployment"
    assert events[0]["subject"] == "production"
    assert events[0]["version"] == "v1"
    assert events[0]["description"] == "api v1 rolled out"
    assert events[0]["service"] == source.rsplit("/", 1)[1]


def test_a_time_without_a_zone_is_refused_once_and_not_retried(live: LiveServer) -> None:
    source = _source()
    with failing_proxy(live.url) as proxy:
        result = _send(
            proxy.url,
            live.token,
            "--type",
            "deployment",
            "--source",
            source,
            "--time",
            "2026-01-01T00:00:00",
        )
    assert result.exit_code != 0
    assert "400 VALIDATION_ERROR" in result.stderr
    assert "has no time zone" in result.stderr
    assert "retrying" not in result.stderr
    assert proxy.posts == 1
    assert _events_from(live, source) == []


def test_a_server_that_answers_503_twice_gets_the_event_on_the_third_attempt(
    live: LiveServer,
) -> None:
    source = _source()
    with failing_proxy(live.url, failures=2, status=503, retry_after="0") as proxy:
        result = _send(proxy.url, live.token, "--type", "deployment", "--source", source)
    assert result.exit_code == 0, result.output
    assert proxy.posts == 3
    assert "attempt 1 failed (503 try again shortly)" in result.stderr
    assert "attempt 2 failed (503 try again shortly)" in result.stderr
    assert [e["trailmap_id"] for e in _events_from(live, source)] == [result.stdout.strip()]


def test_a_503_after_the_event_landed_still_stores_it_once(live: LiveServer) -> None:
    source = _source()
    with failing_proxy(live.url, failures=1, status=503, land_first=True) as proxy:
        result = _send(proxy.url, live.token, "--type", "deployment", "--source", source)
    assert result.exit_code == 0, result.output
    assert proxy.posts == 2
    assert "already stored (duplicate)" in result.stderr
    assert [e["trailmap_id"] for e in _events_from(live, source)] == [result.stdout.strip()]


def test_a_429_with_retry_after_one_second_is_honoured(live: LiveServer) -> None:
    source = _source()
    with failing_proxy(live.url, failures=1, status=429, retry_after="1") as proxy:
        started = time.monotonic()
        result = _send(proxy.url, live.token, "--type", "deployment", "--source", source)
        waited = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert proxy.posts == 2
    # What is measured is the client honouring Retry-After, not how fast anything is.
    assert waited >= 0.95
    assert len(_events_from(live, source)) == 1


# -- retry_after_seconds ------------------------------------------------------------------


def test_retry_after_in_seconds_is_read_as_seconds() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 0 ") == 0.0


def test_retry_after_as_an_http_date_is_the_time_left_until_then() -> None:
    now = datetime(2026, 3, 10, 7, 27, 30, tzinfo=UTC)
    later = format_datetime(datetime(2026, 3, 10, 7, 28, 0, tzinfo=UTC), usegmt=True)
    assert later == "Tue, 10 Mar 2026 07:28:00 GMT"
    assert retry_after_seconds(later, now=now.timestamp()) == 30.0


def test_retry_after_as_a_date_already_past_means_now() -> None:
    now = datetime(2026, 3, 10, 8, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Tue, 10 Mar 2026 07:28:00 GMT", now=now.timestamp()) == 0.0


def test_a_missing_or_unreadable_retry_after_is_none() -> None:
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-5") is None


# -- send_event with a scripted transport ---------------------------------------------------


@dataclass
class Script:
    """Answers requests with the given statuses in order; the last one repeats."""

    statuses: list[int]
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
            if status < 400:
                accepted = [{"index": 0, "id": "stored-1"}]
                return httpx.Response(
                    status, json={"success": True, "data": {"accepted": accepted}}
                )
            body = {"success": False, "error": f"failure {status}", "code": "X", "details": []}
            return httpx.Response(status, json=body, headers=self.headers)

        return httpx.MockTransport(answer)

    def send(self, attempts: int) -> Any:
        return send_event(
            "http://trailmap.test/",
            "tmk_test",
            build_event(type_="deployment", source="//ci/acme"),
            policy=RetryPolicy(attempts=attempts, base_delay=0.01),
            sleep=self.sleeps.append,
            transport=self.transport(),
        )


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_send_event_retries_429_and_5xx_until_it_succeeds(status: int) -> None:
    script = Script([status, status, 201])
    result = script.send(attempts=5)
    assert result.status == 201
    assert result.attempts == 3
    assert len(script.requests) == 3
    assert len(script.sleeps) == 2
    assert str(script.requests[0].url) == "http://trailmap.test/api/v1/events"
    assert script.requests[0].headers["authorization"] == "Bearer tmk_test"
    # Every attempt carries the same event id, so a retry that did land is a duplicate.
    assert len({json.loads(r.content)["id"] for r in script.requests}) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_send_event_gives_up_after_the_policy_attempts_with_a_clear_message(status: int) -> None:
    script = Script([status])
    with pytest.raises(SendFailed) as raised:
        script.send(attempts=4)
    assert len(script.requests) == 4
    assert len(script.sleeps) == 3  # no pointless wait after the last attempt
    assert str(raised.value) == f"gave up after 4 attempts; last: {status} failure {status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
def test_send_event_never_retries_a_client_error(status: int) -> None:
    script = Script([status, 201])
    with pytest.raises(SendFailed, match=f"^{status} X: failure {status}$"):
        script.send(attempts=5)
    assert len(script.requests) == 1
    assert script.sleeps == []


def test_send_event_waits_at_least_what_retry_after_asks() -> None:
    script = Script([503, 201], headers={"Retry-After": "7"})
    script.send(attempts=3)
    assert script.sleeps == [7.0]


def test_send_event_retries_when_the_server_cannot_be_reached() -> None:
    calls: list[httpx.Request] = []
    sleeps: list[float] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(SendFailed, match=r"gave up after 3 attempts; last: could not reach"):
        send_event(
            "http://trailmap.test",
            "tmk_test",
            build_event(type_="deployment", source="//ci/acme"),
            policy=RetryPolicy(attempts=3),
            sleep=sleeps.append,
            transport=httpx.MockTransport(refuse),
        )
    assert len(calls) == 3
    assert len(sleeps) == 2
