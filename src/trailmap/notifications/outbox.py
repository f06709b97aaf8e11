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


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    poll_seconds: float = 1.0
    lease_seconds: float = 60.0
    timeout_seconds: float = 10.0
    max_attempts: int = 8
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 3600.0
    batch: int = 100
    concurrency: int = 16


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

    async def run(self) -> None:
        """Send until cancelled; a failure of the database is logged and tried again."""
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
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

    async def send_due(self, *, client: httpx.AsyncClient | None = None) -> int:
        """Claim one batch of due rows and send them; returns how many were claimed."""
        now_us = clock.now_us()
        holder = f"{self.node}:{ids.new_id()[:8]}"
        lease_us = int(self.settings.lease_seconds * _US)
        rows = await self.db.write(
            store.claim_due, holder, now_us, now_us + lease_us, self.settings.batch
        )
        if not rows:
            return 0
        limiter = anyio.CapacityLimiter(self.settings.concurrency)

        async def one(row: Mapping[str, Any]) -> None:
            async with limiter:
                await self._deliver(row, holder, client)

        async with anyio.create_task_group() as group:
            for row in rows:
                group.start_soon(one, row)
        return len(rows)

    async def _deliver(
        self, row: Mapping[str, Any], holder: str, client: httpx.AsyncClient | None
    ) -> None:
        error: str | None = None
        if not row["channel_enabled"]:
            error = "the channel is disabled"
        else:
            secrets = open_secrets(row["channel_secrets"], self.secret_key)
            if row["channel_secrets"] and not secrets:
                error = "the server's TRAILMAP_SECRET_KEY cannot open the channel's secrets"
            else:
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
        now_us = clock.now_us()
        if error is None:
            await self.db.write(store.mark_sent, row["org_id"], row["id"], holder, now_us)
            return
        attempts = int(row["attempts"])
        spent = attempts >= self.settings.max_attempts
        next_us = None if spent else now_us + int(backoff_seconds(attempts, self.settings) * _US)
        log.warning(
            "notification %s to channel %s (%s) failed, attempt %d of %d: %s",
            row["id"],
            row["channel_id"],
            row["channel_kind"],
            attempts,
            self.settings.max_attempts,
            error,
        )
        await self.db.write(_mark_unsent, row["org_id"], row["id"], holder, error, next_us, now_us)


def _mark_unsent(
    conn: Connection,
    org_id: str,
    row_id: str,
    holder: str,
    error: str,
    next_us: int | None,
    now_us: int,
) -> bool:
    return store.mark_unsent(
        conn, org_id, row_id, holder, error=error, next_attempt_us=next_us, now_us=now_us
    )
