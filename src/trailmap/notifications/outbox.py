"""The outbox's sender: any app node may run one. It claims due rows with a lease (so two
nodes never send the same row at once), sends each, and marks it sent, or due again after an
exponential backoff, or failed once its attempts are spent. A node that dies mid-send leaves
its rows leased; when the lease ends another claim sends them again, with the same key for the
receiver to tell the repeat (docs/notifications.md)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import anyio
import httpx

from trailmap import clock, ids
from trailmap.errors import TrailmapError
from trailmap.notifications.channels import open_secrets
from trailmap.notifications.senders import Delivery, SendFailed, send
from trailmap.outbound import OutboundPolicy
from trailmap.storage import Connection, Database
from trailmap.storage import notifications as store

__all__ = ["OutboxSettings", "Sender", "backoff_seconds"]

log = logging.getLogger(__name__)
_US: Final = 1_000_000
_ERROR_LIMIT: Final = 1000
_OPENED_KEPT: Final = 1000  # channels whose opened secrets a sender keeps in memory


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    poll_seconds: float = 1.0
    lease_seconds: float = 60.0
    timeout_seconds: float = 10.0
    max_attempts: int = 8
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 3600.0
    batch: int = 100
    concurrency: int = 16  # sends at once, per worker
    workers: int = 2


def backoff_seconds(attempts: int, settings: OutboxSettings) -> float:
    """How long after its `attempts`-th failed attempt a delivery is tried again: the base,
    doubled each time, at most the maximum."""
    return float(
        min(settings.retry_base_seconds * 2 ** max(attempts - 1, 0), settings.retry_max_seconds)
    )


class Sender:
    """Sends what the outbox holds, for every organization, from this node."""

    def __init__(
        self,
        db: Database,
        *,
        secret_key: str | None,
        outbound: OutboundPolicy,
        settings: OutboxSettings | None = None,
    ) -> None:
        self.db = db
        self.secret_key = secret_key
        self.outbound = outbound
        self.settings = settings or OutboxSettings()
        self.node = f"{socket.gethostname()[:40]}:{os.getpid()}"
        self._opened: dict[str, dict[str, str]] = {}

    async def run(self) -> None:
        """Send until cancelled, from `workers` loops that each claim batches of their own
        (while one batch is marked, another is being sent); a failure of the database is
        logged and tried again."""
        async with (
            httpx.AsyncClient(trust_env=False, follow_redirects=False) as client,
            anyio.create_task_group() as group,
        ):
            for _ in range(self.settings.workers):
                group.start_soon(self._loop, client)

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while True:
            try:
                sent = await self.send_due(client=client)
            except TrailmapError as error:
                log.warning("notification sender paused: %s", error.message)
                sent = 0
            except Exception:
                log.exception("notification sender failed; trying again shortly")
                sent = 0
            if sent < self.settings.batch:
                await anyio.sleep(self.settings.poll_seconds)

    async def send_all_due(self, *, client: httpx.AsyncClient | None = None) -> int:
        """Send what is due now, from `workers` loops, until none is left; returns how many
        rows were claimed (a benchmark's and a test's way to drain the outbox)."""
        claimed = 0

        async def loop() -> None:
            nonlocal claimed
            while sent := await self.send_due(client=client):
                claimed += sent

        async with anyio.create_task_group() as group:
            for _ in range(self.settings.workers):
                group.start_soon(loop)
        return claimed

    async def send_due(self, *, client: httpx.AsyncClient | None = None) -> int:
        """Claim one batch of due rows and send them; returns how many were claimed."""
        now_us = clock.now_us()
        if not await self.db.read_one(store.has_due, now_us):
            return 0
        holder = f"{self.node}:{ids.new_id()[:8]}"
        lease_us = int(self.settings.lease_seconds * _US)
        rows = await self.db.write(
            store.claim_due, holder, now_us, now_us + lease_us, self.settings.batch
        )
        if not rows:
            return 0
        limiter = anyio.CapacityLimiter(self.settings.concurrency)
        outcomes: list[tuple[Mapping[str, Any], str | None]] = []

        async def one(row: Mapping[str, Any]) -> None:
            async with limiter:
                outcomes.append((row, await self._attempt(row, client)))

        async with anyio.create_task_group() as group:
            for row in rows:
                group.start_soon(one, row)
        # One transaction marks the whole batch: a write per row cost more than the sends.
        await self.db.write(self._record, holder, outcomes, clock.now_us())
        return len(rows)

    def _secrets(self, sealed: str | None) -> dict[str, str]:
        """A channel's secrets, opened once per sealed value (a batch holds many rows of one
        channel, and opening costs an HMAC and a decryption)."""
        if sealed is None:
            return {}
        opened = self._opened.get(sealed)
        if opened is None:
            if len(self._opened) > _OPENED_KEPT:
                self._opened.clear()
            opened = self._opened[sealed] = open_secrets(sealed, self.secret_key)
        return opened

    async def _attempt(
        self, row: Mapping[str, Any], client: httpx.AsyncClient | None
    ) -> str | None:
        """Send one row; None when the receiver took it, else why not."""
        if not row["channel_enabled"]:
            return "the channel is disabled"
        secrets = self._secrets(row["channel_secrets"])
        if row["channel_secrets"] and not secrets:
            return "the server's TRAILMAP_SECRET_KEY cannot open the channel's secrets"
        delivery = Delivery(
            id=row["id"],
            kind=row["channel_kind"],
            settings=row["channel_settings"] or {},
            secrets=secrets,
            message=row["message"] or {},
            created_us=row["created_us"],
        )
        try:
            await send(
                delivery,
                policy=self.outbound,
                timeout_seconds=self.settings.timeout_seconds,
                client=client,
            )
        except SendFailed as failed:
            error = str(failed)[:_ERROR_LIMIT]
            log.warning(
                "notification %s to channel %s (%s) failed, attempt %d of %d: %s",
                row["id"],
                row["channel_id"],
                row["channel_kind"],
                row["attempts"],
                self.settings.max_attempts,
                error,
            )
            return error
        return None

    def _record(
        self,
        conn: Connection,
        holder: str,
        outcomes: list[tuple[Mapping[str, Any], str | None]],
        now_us: int,
    ) -> None:
        """Mark each row sent, or due again after its backoff, or failed once its attempts
        are spent (only rows this claim still holds)."""
        sent = [(row["org_id"], row["id"]) for row, error in outcomes if error is None]
        store.mark_sent(conn, sent, holder, now_us)
        for row, error in outcomes:
            if error is None:
                continue
            attempts = int(row["attempts"])
            spent = attempts >= self.settings.max_attempts
            delay_us = int(backoff_seconds(attempts, self.settings) * _US)
            store.mark_unsent(
                conn,
                row["org_id"],
                row["id"],
                holder,
                error=error,
                next_attempt_us=None if spent else now_us + delay_us,
                now_us=now_us,
            )
