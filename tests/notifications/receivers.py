"""Receivers on loopback that speak each notification API's request format and check it, as
the real service would (a malformed request is answered 400 and noted in `problems`):

- PagerDuty Events API v2 (`POST /v2/enqueue`): routing_key, event_action, dedup_key,
  payload.summary (at most 1024), payload.source, payload.severity (critical, error,
  warning, info); answered 202 `{"status": "success", "dedup_key": ...}`.
- Opsgenie's alert API (`POST /v2/alerts`): `Authorization: GenieKey <key>`, message (at most
  130), alias (at most 512), priority P1 to P5; answered 202 `{"result": ...}`.
- Slack and Google Chat incoming webhooks: a JSON object with `text`.
- Trailmap's signed webhook: `X-Trailmap-Signature` checked with the secret.
- A real SMTP server (aiosmtpd) with AUTH, recording each message.

Each HTTP receiver can be told to fail (5xx) or answer slowly for its next requests, and be
stopped and started again on the same port."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.server import free_port

__all__ = ["HttpReceiver", "SmtpReceiver", "check_signature"]

_SEVERITIES = {"critical", "error", "warning", "info"}
_PRIORITIES = {"P1", "P2", "P3", "P4", "P5"}


def check_signature(secret: str, header: str, body: bytes) -> bool:
    """Verify `X-Trailmap-Signature: t=<ts>,v1=<hex>` as docs/notifications.md tells a
    receiver to: HMAC-SHA256 of `<ts>.<body>` under the secret, compared in constant time."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    signed = parts.get("t", "").encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A sender killed mid-answer resets the connection: nothing to report."""
        del request, client_address


@dataclass
class HttpReceiver:
    """`kind` is pagerduty, opsgenie, slack, google_chat or webhook; `secret` the webhook's
    signing secret or Opsgenie's API key, when known."""

    kind: str
    secret: str | None = None
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 503
    slow_next: int = 0
    slow_seconds: float = 0.0
    delay_seconds: float = 0.0  # every answer waits this long (sends are in flight longer)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        path = {"pagerduty": "/v2/enqueue", "opsgenie": "/v2/alerts"}.get(self.kind, "/hook")
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                del format, args

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was sent
                    self.close_connection = True
                    return
                status, answer, content_type = receiver._answer(
                    self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        with self._lock:
            slow = self.slow_next > 0
            if slow:
                self.slow_next -= 1
        if slow:
            time.sleep(self.slow_seconds)  # a receiver that answers slowly, on its own thread
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        with self._lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status, b'{"error":"unavailable"}', "application/json"
            problem = _CHECKS[self.kind](self, path, headers, body)
            if problem is not None:
                self.problems.append(problem)
                return 400, json.dumps({"errors": [problem]}).encode(), "application/json"
            self.received.append(Received(path, headers, body))
            self._lock.notify_all()
            return _ANSWERS[self.kind](body)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"{self.kind} got {len(self.received)} of {count}")
            return list(self.received)

    def keys(self) -> Counter[str]:
        """How many times each idempotency key arrived."""
        with self._lock:
            return Counter(_KEY[self.kind](r) for r in self.received)


def _check_pagerduty(
    receiver: HttpReceiver, path: str, headers: dict[str, str], body: bytes
) -> str | None:
    del receiver, headers
    if path != "/v2/enqueue":
        return f"path {path}"
    event = json.loads(body)
    payload = event.get("payload") or {}
    checks = {
        "routing_key": isinstance(event.get("routing_key"), str) and event["routing_key"],
        "event_action": event.get("event_action") == "trigger",
        "dedup_key": isinstance(event.get("dedup_key"), str) and len(event["dedup_key"]) <= 255,
        "payload.summary": isinstance(payload.get("summary"), str)
        and 0 < len(payload["summary"]) <= 1024,
        "payload.source": isinstance(payload.get("source"), str) and payload["source"],
        "payload.severity": payload.get("severity") in _SEVERITIES,
    }
    wrong = [name for name, good in checks.items() if not good]
    return f"invalid: {wrong}" if wrong else None


def _check_opsgenie(
    receiver: HttpReceiver, path: str, headers: dict[str, str], body: bytes
) -> str | None:
    if path != "/v2/alerts":
        return f"path {path}"
    if headers.get("authorization") != f"GenieKey {receiver.secret}":
        return "authorization"
    alert = json.loads(body)
    checks = {
        "message": isinstance(alert.get("message"), str) and 0 < len(alert["message"]) <= 130,
        "alias": isinstance(alert.get("alias"), str) and 0 < len(alert["alias"]) <= 512,
        "priority": alert.get("priority") in _PRIORITIES,
    }
    wrong = [name for name, good in checks.items() if not good]
    return f"invalid: {wrong}" if wrong else None


def _check_text(
    receiver: HttpReceiver, path: str, headers: dict[str, str], body: bytes
) -> str | None:
    del receiver, path
    if not headers.get("content-type", "").startswith("application/json"):
        return "content type"
    message = json.loads(body)
    return None if isinstance(message.get("text"), str) and message["text"] else "no text"


def _check_webhook(
    receiver: HttpReceiver, path: str, headers: dict[str, str], body: bytes
) -> str | None:
    del path
    header = headers.get("x-trailmap-signature", "")
    if receiver.secret is None or not check_signature(receiver.secret, header, body):
        return "signature"
    if headers.get("x-trailmap-delivery") != json.loads(body).get("id"):
        return "delivery id"
    return None


_CHECKS: dict[str, Callable[[HttpReceiver, str, dict[str, str], bytes], str | None]] = {
    "pagerduty": _check_pagerduty,
    "opsgenie": _check_opsgenie,
    "slack": _check_text,
    "google_chat": _check_text,
    "webhook": _check_webhook,
}


def _pagerduty_answer(body: bytes) -> tuple[int, bytes, str]:
    key = json.loads(body)["dedup_key"]
    answer = {"status": "success", "message": "Event processed", "dedup_key": key}
    return 202, json.dumps(answer).encode(), "application/json"


def _opsgenie_answer(body: bytes) -> tuple[int, bytes, str]:
    del body
    answer = {"result": "Request will be processed", "took": 0.01, "requestId": "r-1"}
    return 202, json.dumps(answer).encode(), "application/json"


_ANSWERS: dict[str, Callable[[bytes], tuple[int, bytes, str]]] = {
    "pagerduty": _pagerduty_answer,
    "opsgenie": _opsgenie_answer,
    "slack": lambda _body: (200, b"ok", "text/plain"),
    "google_chat": lambda body: (
        200,
        json.dumps({"name": "spaces/A/messages/B", "text": json.loads(body)["text"]}).encode(),
        "application/json",
    ),
    "webhook": lambda _body: (204, b"", "text/plain"),
}
_KEY: dict[str, Callable[[Received], str]] = {
    "pagerduty": lambda r: str(r.json()["dedup_key"]),
    "opsgenie": lambda r: str(r.json()["alias"]),
    "webhook": lambda r: r.headers["x-trailmap-delivery"],
    "slack": lambda r: str(r.json()["text"]),
    "google_chat": lambda r: str(r.json()["text"]),
}


class _Recorder:
    def __init__(self, owner: SmtpReceiver) -> None:
        self.owner = owner

    async def handle_DATA(  # noqa: N802 - aiosmtpd's name
        self, server: object, session: Session, envelope: Envelope
    ) -> str:
        del server, session
        content = envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        with self.owner.lock:
            self.owner.messages.append((list(envelope.rcpt_tos), message_from_bytes(raw)))
            self.owner.lock.notify_all()
        return "250 OK"


@dataclass
class SmtpReceiver:
    """A real SMTP server (aiosmtpd) that takes AUTH LOGIN/PLAIN with one user's password."""

    username: str = "trailmap"
    password: str = "smtp-password"
    port: int = field(default_factory=free_port)
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)
    _controller: Controller | None = None

    def start(self) -> SmtpReceiver:
        def authenticate(
            server: object, session: object, envelope: object, mechanism: str, data: object
        ) -> AuthResult:
            del server, session, envelope, mechanism
            good = (
                isinstance(data, LoginPassword)
                and data.login.decode() == self.username
                and data.password.decode() == self.password
            )
            return AuthResult(success=good, handled=False)  # aiosmtpd answers 535 itself

        self._controller = Controller(
            _Recorder(self),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=authenticate,
            auth_require_tls=False,
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[list[str], Message]]:
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"smtp got {len(self.messages)} of {count}")
            return list(self.messages)

    def keys(self) -> Counter[str]:
        with self.lock:
            return Counter(str(m["Message-ID"]) for _, m in self.messages)
