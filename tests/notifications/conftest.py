"""What the notification tests share: a server with a secret key that may reach loopback (the
receivers listen there), the REST calls that make channels and rules, and a sender driven by
the test itself (the app's own is off: `notification_poll_seconds=0`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.notifications.receivers import HttpReceiver, SmtpReceiver
from tests.notifications.support import LOOPBACK, SECRET_KEY
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        kubernetes_poll_seconds=0,
        notification_poll_seconds=0,
        outbound_allowed_networks=LOOPBACK,
        secret_key=SECRET_KEY,
    )


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def receivers() -> Iterator[dict[str, HttpReceiver]]:
    made = {
        "pagerduty": HttpReceiver("pagerduty").start(),
        "opsgenie": HttpReceiver("opsgenie", secret="genie-key-1").start(),
        "slack": HttpReceiver("slack").start(),
        "google_chat": HttpReceiver("google_chat").start(),
        "webhook": HttpReceiver("webhook", secret="whsec-test-0123456789").start(),
    }
    try:
        yield made
    finally:
        for receiver in made.values():
            receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
