"""How each kind of channel sends a notification, in the receiver's own format, with the key
its API takes to tell a repeat from a new one (docs/notifications.md):

- webhook: a JSON POST, `X-Trailmap-Delivery` (and `Idempotency-Key`) the delivery's id,
  `X-Trailmap-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`;
- PagerDuty Events API v2: `dedup_key`; Opsgenie's alert API: `alias`;
- e-mail over SMTP: `Message-ID`; Slack and Google Chat incoming webhooks: `text` (neither
  takes a key: a repeat shows twice).

Every connection goes through the outbound guard: a URL's host, or the SMTP server's, is
resolved once, each address checked, and the connection made to a checked address."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Final

import anyio
import httpx

from trailmap import __version__
from trailmap.outbound import OutboundError, OutboundPolicy, origin

__all__ = ["Delivery", "SendFailed", "send", "signature"]

_USER_AGENT: Final = f"Trailmap/{__version__} (notifications)"
# Opsgenie's priorities for PagerDuty's severities.
_PRIORITY: Final = {"critical": "P1", "error": "P2", "warning": "P3", "info": "P5"}
_ANSWER_SHOWN: Final = 200


class SendFailed(Exception):
    """Why a send did not succeed, in words safe to show (never a secret or a full URL)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One notification to one channel: `id` is the outbox row's, the same on every retry."""

    id: str
    kind: str
    settings: Mapping[str, Any]
    secrets: Mapping[str, str]
    message: Mapping[str, Any]
    created_us: int


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Trailmap-Signature` header's value for `body` sent at `timestamp`."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _text(message: Mapping[str, Any]) -> str:
    lines = [str(message.get("title") or "Trailmap notification")]
    summary = message.get("summary")
    if summary and summary != message.get("title"):
        lines.append(str(summary))
    event = message.get("event") or {}
    facts = [
        f"{k}: {event[k]}" for k in ("service", "environment", "version", "time") if k in event
    ]
    if facts:
        lines.append(" · ".join(facts))
    if event.get("id"):
        lines.append(f"event {event['id']}")
    return "\n".join(lines)


def _webhook_body(delivery: Delivery) -> dict[str, Any]:
    return {"id": delivery.id, "type": "trailmap.notification", **delivery.message}


def _pagerduty_body(delivery: Delivery) -> dict[str, Any]:
    message = delivery.message
    event = message.get("event") or {}
    payload: dict[str, Any] = {
        "summary": str(message.get("title") or "Trailmap notification")[:1024],
        "source": str(event.get("service") or event.get("source") or "trailmap")[:255],
        "severity": message.get("severity") or "info",
        "custom_details": {
            "summary": message.get("summary"),
            "reason": message.get("reason"),
            "event": event,
            "violations": message.get("violations") or [],
            "verdict": message.get("verdict"),
        },
    }
    if event.get("time"):
        payload["timestamp"] = event["time"]
    if event.get("service"):
        payload["component"] = event["service"]
    if event.get("environment"):
        payload["group"] = event["environment"]
    if event.get("type"):
        payload["class"] = event["type"]
    return {
        "routing_key": delivery.secrets.get("routing_key", ""),
        "event_action": "trigger",
        "dedup_key": f"trailmap-{delivery.id}",
        "payload": payload,
        "client": "Trailmap",
    }


def _opsgenie_body(delivery: Delivery) -> dict[str, Any]:
    message = delivery.message
    event = message.get("event") or {}
    body: dict[str, Any] = {
        "message": str(message.get("title") or "Trailmap notification")[:130],
        "alias": f"trailmap-{delivery.id}",
        "description": _text(message)[:15000],
        "priority": _PRIORITY.get(str(message.get("severity")), "P3"),
        "source": "Trailmap",
        "tags": [t for t in ("trailmap", message.get("reason")) if t],
        "details": {k: str(v)[:8000] for k, v in event.items() if isinstance(v, str | int | float)},
    }
    if event.get("service"):
        body["entity"] = str(event["service"])[:512]
    return body


async def send(
    delivery: Delivery,
    *,
    policy: OutboundPolicy,
    timeout_seconds: float,
    client: httpx.AsyncClient | None = None,
) -> None:
    """Send the delivery once; raise SendFailed saying why it was not taken."""
    kind = delivery.kind
    try:
        with anyio.fail_after(timeout_seconds):
            if kind == "email":
                await _send_email(delivery, policy, timeout_seconds)
                return
            url, body, headers = _request(delivery)
            await _post(policy, url, body, headers, timeout_seconds, client)
    except TimeoutError:
        raise SendFailed(f"no answer within {timeout_seconds:g} s") from None
    except OutboundError as error:
        raise SendFailed(f"refused by the outbound guard: {error}") from None


def _request(delivery: Delivery) -> tuple[str, bytes, dict[str, str]]:
    kind = delivery.kind
    headers = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
    if kind == "webhook":
        body = json.dumps(_webhook_body(delivery), separators=(",", ":")).encode()
        timestamp = int(time.time())  # the receiver compares it with its own clock
        headers |= {
            "X-Trailmap-Delivery": delivery.id,
            "Idempotency-Key": delivery.id,
            "X-Trailmap-Signature": signature(delivery.secrets.get("secret", ""), timestamp, body),
        }
        return delivery.secrets["url"], body, headers
    if kind == "pagerduty":
        url = str(delivery.settings.get("url") or "")
        return url, json.dumps(_pagerduty_body(delivery)).encode(), headers
    if kind == "opsgenie":
        url = str(delivery.settings.get("url") or "")
        headers["Authorization"] = f"GenieKey {delivery.secrets.get('api_key', '')}"
        return url, json.dumps(_opsgenie_body(delivery)).encode(), headers
    if kind in ("slack", "google_chat"):
        if kind == "google_chat":
            headers["Content-Type"] = "application/json; charset=UTF-8"
        body = json.dumps({"text": _text(delivery.message)}).encode()
        return delivery.secrets["url"], body, headers
    raise SendFailed(f"{kind} is not a kind of channel this server knows")


def _host(url: str) -> str:
    try:
        return origin(url)[1]
    except ValueError:
        return "the channel's URL"


async def _post(
    policy: OutboundPolicy,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    client: httpx.AsyncClient | None,
) -> None:
    host = _host(url)
    try:
        async with policy.request(
            "POST",
            url,
            io_timeout_seconds=timeout_seconds,
            headers=headers,
            content=body,
            client=client,
        ) as response:
            answer = (await response.aread())[:_ANSWER_SHOWN]
    except httpx.TimeoutException:
        raise SendFailed(f"{host} did not answer within {timeout_seconds:g} s") from None
    except httpx.HTTPError as error:
        # The URL (which may hold a token) is left out: the host says where.
        raise SendFailed(f"could not reach {host}: {type(error).__name__}") from None
    if not 200 <= response.status_code < 300:
        said = answer.decode("utf-8", "replace").strip()
        raise SendFailed(
            f"{host} answered HTTP {response.status_code}" + (f": {said}" if said else "")
        )


def _email(delivery: Delivery) -> EmailMessage:
    settings = delivery.settings
    message = EmailMessage()
    message["Subject"] = str(delivery.message.get("title") or "Trailmap notification")[:200]
    message["From"] = str(settings["from"])
    message["To"] = ", ".join(settings["to"])
    message["Date"] = formatdate(delivery.created_us / 1_000_000, usegmt=True)
    message["Message-ID"] = f"<{delivery.id}@trailmap.notifications>"
    message.set_content(_text(delivery.message) + "\n")
    return message


async def _send_email(delivery: Delivery, policy: OutboundPolicy, timeout_seconds: float) -> None:
    settings = delivery.settings
    host = str(settings["host"])
    port = int(settings.get("port") or 587)
    addresses = await policy.resolve(host, port)
    message = _email(delivery)

    def _exchange() -> None:
        context = ssl.create_default_context()
        security = settings.get("security", "starttls")
        last: Exception | None = None
        for address in addresses:
            smtp: smtplib.SMTP = (
                smtplib.SMTP_SSL(timeout=timeout_seconds, context=context)
                if security == "tls"
                else smtplib.SMTP(timeout=timeout_seconds)
            )
            # The connection goes to the address the guard checked; the host name is kept
            # for TLS (its certificate) and the greeting.
            smtp._host = host  # type: ignore[attr-defined]  # smtplib's TLS server_hostname
            try:
                smtp.connect(str(address), port)
            except OSError as error:
                last = error
                smtp.close()
                continue
            try:
                smtp.ehlo_or_helo_if_needed()
                if security == "starttls":
                    smtp.starttls(context=context)
                    smtp.ehlo()
                password = delivery.secrets.get("password")
                if settings.get("username") and password:
                    smtp.login(str(settings["username"]), password)
                smtp.send_message(message)
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
            return
        raise last or OSError("no address")

    try:
        await anyio.to_thread.run_sync(_exchange, abandon_on_cancel=True)
    except smtplib.SMTPResponseException as error:
        said = (
            error.smtp_error.decode("utf-8", "replace")
            if isinstance(error.smtp_error, bytes)
            else str(error.smtp_error)
        )
        raise SendFailed(
            f"{host} answered SMTP {error.smtp_code}: {said[:_ANSWER_SHOWN]}"
        ) from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as error:
        raise SendFailed(f"could not send through {host}: {type(error).__name__}") from None
