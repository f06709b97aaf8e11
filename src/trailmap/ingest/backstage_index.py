"""Backstage integrations read into the declared graph: a running Backstage's catalog
(`backstage.fetch_catalog`, through the outbound guard) recorded as the integration's
declarations, on connect, when its settings change and every `index_seconds`, by the one app
node that takes the integration's lease (the lease the cluster watches use)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import orjson

from trailmap import clock
from trailmap.errors import Unavailable
from trailmap.graph.learn.declared import (
    DeclaredSource,
    Recorded,
    declared_sources,
    record_declared,
    record_source_error,
)
from trailmap.ingest.backstage import BackstageError, fetch_catalog
from trailmap.ingest.cluster_graph import settled
from trailmap.integrations.integrations import Integration, active_integrations
from trailmap.integrations.watches import release_lease, take_lease

if TYPE_CHECKING:
    import httpx

    from trailmap.outbound import OutboundPolicy
    from trailmap.storage import Database

__all__ = ["BACKSTAGE_KINDS", "BackstageIndexer", "index_backstage"]

log = logging.getLogger(__name__)

BACKSTAGE_KINDS: Final = ("backstage",)


def _source(integration: Integration, revision: str | None = None) -> DeclaredSource:
    return DeclaredSource(
        key=integration.id,
        kind=integration.kind,
        label=integration.name,
        revision=revision,
        environment=integration.settings.texts.get("default_env"),
    )


async def index_backstage(
    db: Database,
    integration: Integration,
    *,
    secret_key: str | None,
    outbound: OutboundPolicy,
    client: httpx.AsyncClient | None = None,
) -> Recorded | None:
    """Read the integration's Backstage catalog now and record it; None when it could not be
    read (the reason is recorded on the source; what it declared before stays). What an
    on-demand `POST /api/v1/integrations/{id}/index` calls for a backstage integration."""
    url = integration.settings.texts.get("url")
    if not url:
        await record_source_error(
            db, integration.org_id, _source(integration), "no url is set (the Backstage's base URL)"
        )
        return None
    token = integration.secret_settings(secret_key).get("token")
    try:
        declared = await fetch_catalog(url, token, outbound, client=client)
    except BackstageError as error:
        await record_source_error(db, integration.org_id, _source(integration), str(error))
        return None
    shape = [
        sorted((n.name, n.kind, sorted(n.attributes.items())) for n in declared.nodes.values()),
        sorted(declared.edges),
    ]
    revision = hashlib.sha256(orjson.dumps(shape)).hexdigest()[:12]
    return await record_declared(db, integration.org_id, _source(integration, revision), declared)


class BackstageIndexer:
    """Every `poll_seconds`, the active backstage integrations are listed; one never read,
    whose settings changed since this node read it, or last read `index_seconds` ago or more
    is read by this node if it takes its lease (held while reading, then released)."""

    def __init__(
        self,
        db: Database,
        *,
        secret_key: str | None,
        outbound: OutboundPolicy,
        node: str,
        poll_seconds: float = 15.0,
        index_seconds: float = 3600.0,
        lease_seconds: float = 120.0,
    ) -> None:
        self.db = db
        self.node = node
        self._secret_key = secret_key
        self._outbound = outbound
        self._poll = poll_seconds
        self._every_us = int(index_seconds * 1_000_000)
        self._lease = lease_seconds
        self._seen: dict[str, tuple[Any, ...]] = {}
        self.readings = 0

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Unavailable as error:
                log.warning("the Backstage indexer's round: %s; trying again", error)
            except Exception:
                log.exception("the Backstage indexer's round failed; trying again")
            await asyncio.sleep(self._poll)

    async def round(self) -> None:
        """One round: read each backstage integration that is due (and whose lease this node
        takes)."""
        integrations = await active_integrations(self.db, BACKSTAGE_KINDS)
        read: dict[str, dict[str, int | None]] = {}
        for integration in integrations:
            if integration.org_id not in read:
                read[integration.org_id] = await self._last_readings(integration.org_id)
            if not self._due(integration, read[integration.org_id]):
                continue
            if not await take_lease(
                self.db, integration.org_id, integration.id, self.node, seconds=self._lease
            ):
                continue
            try:
                # Another node may have read it while this one looked: ask again.
                again = await self._last_readings(integration.org_id)
                if self._due(integration, again):
                    await settled(
                        index_backstage(
                            self.db,
                            integration,
                            secret_key=self._secret_key,
                            outbound=self._outbound,
                        )
                    )
                    self.readings += 1
                self._seen[integration.id] = _fingerprint(integration)
            finally:
                await release_lease(self.db, integration.org_id, integration.id, self.node)

    async def _last_readings(self, org_id: str) -> dict[str, int | None]:
        """Each source's last attempt (a reading or an error), in microseconds."""
        out: dict[str, int | None] = {}
        for source in await declared_sources(self.db, org_id):
            times = [
                clock.to_us(datetime.fromisoformat(t))
                for t in (source["read"], source["error_at"])
                if t
            ]
            out[source["source"]] = max(times) if times else None
        return out

    def _due(self, integration: Integration, readings: Mapping[str, int | None]) -> bool:
        last = readings.get(integration.id)
        if last is None:
            return True  # never read: on connect
        seen = self._seen.get(integration.id)
        if seen is not None and seen != _fingerprint(integration):
            return True  # its url or token changed since this node read it
        return clock.now_us() - last >= self._every_us


def _fingerprint(integration: Integration) -> tuple[Any, ...]:
    return (
        orjson.dumps(integration.settings.as_json(), option=orjson.OPT_SORT_KEYS),
        integration.sealed_settings,
    )
