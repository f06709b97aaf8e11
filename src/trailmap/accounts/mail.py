"""Sending Trailmap's few e-mails (invitations, password reset links) over SMTP."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import SplitResult, unquote, urlsplit

import anyio

from trailmap.errors import Unavailable
from trailmap.settings import Settings

__all__ = ["mail_configured", "send_mail"]

_TIMEOUT_S = 15


def mail_configured(settings: Settings) -> bool:
    return settings.smtp_url is not None


async def send_mail(settings: Settings, to: str, subject: str, body: str) -> None:
    """Send a plain-text message; `Unavailable` (503) names the server, never its password."""
    if settings.smtp_url is None:
        raise RuntimeError("no mail server is configured (TRAILMAP_SMTP_URL)")
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await anyio.to_thread.run_sync(_send, urlsplit(settings.smtp_url.get_secret_value()), message)


def _send(parts: SplitResult, message: EmailMessage) -> None:
    scheme, host, port = parts.scheme, parts.hostname or "localhost", parts.port
    try:
        if scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port or 465, timeout=_TIMEOUT_S, context=ssl.create_default_context()
            )
        else:
            client = smtplib.SMTP(host, port or 25, timeout=_TIMEOUT_S)
        with client:
            if scheme != "smtps" and client.has_extn("starttls"):
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        raise Unavailable(
            f"The mail server {host}:{port or ''} did not take the message "
            f"({type(error).__name__}); the link was not sent.",
            retry_after=30,
        ) from None
