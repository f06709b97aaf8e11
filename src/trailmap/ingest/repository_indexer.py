"""Repository integrations as a graph source: each one's remote fetched (ingest/clone.py), read
(ingest/repository.py) and recorded as its declarations (graph/learn/declared.py), on connect,
on a push to its default branch, on demand and on schedule, by the one app node that takes its
lease (docs/integrations/repository.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from trailmap import clock
from trailmap.errors import Unavailable
from trailmap.graph.learn.declared import (
    DeclaredSource,
    Recorded,
    declared_sources,
    record_declared,
    record_source_error,
)
from trailmap.ingest.clone import (
    CloneLimits,
    Remote,
    RepositoryRefused,
    checkout,
    resolve_remote,
)
from trailmap.ingest.kubernetes_supervisor import anyio_shield, node_id
from trailmap.ingest.repository import read_repository
from trailmap.integrations.integrations import Integration
from trailmap.integrations.repositories import (
    REPOSITORY_KIND,
    IndexRequest,
    Wakeup,
    active_repositories,
    find_repository,
    finish_index,
    index_due,
    index_status,
    start_index,
)
from trailmap.integrations.watches import release_lease, take_lease
from trailmap.outbound import OutboundPolicy

if TYPE_CHECKING:
    from trailmap.settings import Settings
    from trailmap.storage import Database

__all__ = [
    "IndexOptions",
    "IndexOutcome",
    "RepositoryIndexer",
    "index_now",
    "index_repository",
    "repository_view",
]

log = logging.getLogger(__name__)
# Beyond the clone's time limit: reading the tree and recording what it declares.
_LEASE_MARGIN = 120.0
_NO_URL = "the integration has no url setting: a git remote or a path"


@dataclass(frozen=True, slots=True)
class IndexOptions:
    local_roots: tuple[str, ...] = ()
    limits: CloneLimits = field(default_factory=CloneLimits)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    secret_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexOptions:
        return cls(
            local_roots=settings.repository_roots,
            limits=CloneLimits(
                seconds=settings.repository_clone_seconds,
                max_bytes=settings.repository_max_bytes,
                max_files=settings.repository_max_files,
                max_file_bytes=settings.repository_max_file_bytes,
            ),
            outbound=settings.outbound,
            secret_key=settings.encryption_secret,
        )


@dataclass(frozen=True, slots=True)
class IndexOutcome:
    """What one indexing did: the commit read and what was recorded, or why it failed."""

    revision: str | None = None
    recorded: Recorded | None = None
    error: str | None = None
    fetched_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "recorded": None if self.recorded is None else self.recorded.as_json(),
            "error": self.error,
        }


def _source(integration: Integration) -> DeclaredSource:
    return DeclaredSource(
        key=integration.id,
        kind=REPOSITORY_KIND,
        label=integration.name,
        environment=integration.settings.texts.get("default_env"),
    )


async def index_repository(
    db: Database, integration: Integration, options: IndexOptions
) -> IndexOutcome:
    """Fetch, read and record the repository once. A failure is recorded on the source
    (what it declared before stays) and returned; it never raises for the repository's sake."""
    source = _source(integration)
    url = integration.settings.texts.get("url")
    try:
        if not url:
            raise RepositoryRefused(_NO_URL)  # noqa: TRY301 - recorded below like any refusal
        remote = await resolve_remote(
            url, local_roots=options.local_roots, outbound=options.outbound
        )
        token = integration.secret_settings(options.secret_key).get("token")
        limits = options.limits

        async def submodule(sub_url: str) -> Remote:
            return await resolve_remote(
                sub_url, local_roots=options.local_roots, outbound=options.outbound
            )

        wanted = integration.settings.texts.get("submodules", "").lower() == "true"
        async with checkout(
            remote,
            branch=integration.settings.branch,
            token=token,
            limits=limits,
            submodules=submodule if wanted else None,
        ) as tree:
            try:
                declared = await asyncio.wait_for(
                    asyncio.to_thread(read_repository, tree.root), limits.seconds
                )
            except TimeoutError:
                raise RepositoryRefused(
                    f"reading the files took longer than {limits.seconds:g} seconds"
                ) from None
            declared.skipped[:0] = tree.skipped
            recorded = await record_declared(
                db, integration.org_id, replace(source, revision=tree.revision), declared
            )
            return IndexOutcome(tree.revision, recorded, None, tree.fetched_bytes)
    except RepositoryRefused as refused:
        error = str(refused)
    except (asyncio.CancelledError, Unavailable):
        raise
    except Exception as failure:
        log.exception("integration %s: indexing failed", integration.id)
        error = f"indexing failed: {type(failure).__name__}"
    log.warning("integration %s: not indexed: %s", integration.id, error)
    await record_source_error(db, integration.org_id, source, error)
    return IndexOutcome(error=error)


async def index_now(
    db: Database, integration: Integration, options: IndexOptions, *, node: str | None = None
) -> IndexOutcome | None:
    """Index the repository here and now, under its lease (None: another node holds it and
    is indexing it)."""
    node = node or node_id()
    org_id, integration_id = integration.org_id, integration.id
    seconds = options.limits.seconds + _LEASE_MARGIN
    if not await take_lease(db, org_id, integration_id, node, seconds=seconds):
        return None
    try:
        await start_index(db, org_id, integration_id, clock.now_us())
        outcome = await index_repository(db, integration, options)
        await finish_index(db, org_id, integration_id, outcome.error)
        return outcome
    finally:
        with anyio_shield():
            await release_lease(db, org_id, integration_id, node)


class RepositoryIndexer:
    """Every `poll_seconds` (at once when this process asks for an index), the repository
    integrations asked for or due on schedule are indexed, each by the node taking its lease;
    after taking it the node looks again, so one indexed meanwhile elsewhere is not redone."""

    def __init__(
        self,
        db: Database,
        options: IndexOptions,
        *,
        poll_seconds: float = 10.0,
        every_seconds: float = 3600.0,
        node: str | None = None,
    ) -> None:
        self.db = db
        self.options = options
        self.node = node or node_id()
        self._poll = poll_seconds
        self._every_us = int(every_seconds * 1_000_000) if every_seconds > 0 else None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        Wakeup.register(self._wake)
        while True:
            self._wake.clear()
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Unavailable as error:
                log.warning("the repository indexer's round: %s; trying again", error)
            except Exception:
                log.exception("the repository indexer's round failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)

    async def round(self) -> list[str]:
        """One round: the ids of the integrations this node indexed."""
        done: list[str] = []
        for found in await active_repositories(self.db):
            if index_due(found, clock.now_us(), self._every_us) is None:
                continue
            if await self._index(found):
                done.append(found.integration.id)
        return done

    async def _index(self, found: IndexRequest) -> bool:
        integration = found.integration
        org_id, integration_id = integration.org_id, integration.id
        seconds = self.options.limits.seconds + _LEASE_MARGIN
        if not await take_lease(self.db, org_id, integration_id, self.node, seconds=seconds):
            return False
        try:
            again = await find_repository(self.db, org_id, integration_id)
            reason = index_due(again, clock.now_us(), self._every_us) if again else None
            if again is None or reason is None:
                return False  # indexed meanwhile by another node, or gone
            log.info("integration %s: indexing (%s) on node %s", integration_id, reason, self.node)
            await start_index(self.db, org_id, integration_id, clock.now_us())
            outcome = await index_repository(self.db, again.integration, self.options)
            await finish_index(self.db, org_id, integration_id, outcome.error)
            return True
        finally:
            with anyio_shield():
                await release_lease(self.db, org_id, integration_id, self.node)


async def repository_view(db: Database, integration: Integration) -> dict[str, Any]:
    """What a repository integration's page shows of its indexing: the last reading (commit,
    time, nodes and edges, skipped files and why, last error) and whether one is asked for or
    running now."""
    reading = next(
        (
            s
            for s in await declared_sources(db, integration.org_id)
            if s["source"] == integration.id
        ),
        None,
    )
    status = await index_status(integration, db)
    return {
        "reading": None
        if reading is None
        else {k: v for k, v in reading.items() if k not in ("source", "kind", "label")},
        **status,
    }
