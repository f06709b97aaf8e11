"""A repository integration's indexing: asked for (on connect, on a push, on demand), due on
schedule, and done by the one app node holding its lease. The request and the last attempt
live in the integration's `integration_watches` row, as a cluster's watch does: `state` holds
`{"requested_us", "reason"}`, `last_event_us` when the last indexing started, `last_error`
why it failed."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

from trailmap import clock
from trailmap.accounts.team import Authority
from trailmap.errors import NotFound, ValidationFailed
from trailmap.integrations.integrations import Integration, get_integration
from trailmap.storage import Connection, Database
from trailmap.storage import integrations as store

__all__ = [
    "REPOSITORY_KIND",
    "IndexRequest",
    "Wakeup",
    "active_repositories",
    "find_repository",
    "finish_index",
    "index_due",
    "index_status",
    "remote_key",
    "request_index",
    "request_index_for_push",
    "start_index",
]

REPOSITORY_KIND: Final = "repository"
_MAX_REASON: Final = 200


class Wakeup:
    """The app node's indexers, woken when this process asks for an index (another node's
    indexer finds the request at its next poll)."""

    _events: ClassVar[weakref.WeakSet[asyncio.Event]] = weakref.WeakSet()

    @classmethod
    def register(cls, event: asyncio.Event) -> None:
        cls._events.add(event)

    @classmethod
    def ring(cls) -> None:
        for event in list(cls._events):
            event.set()


@dataclass(frozen=True, slots=True)
class IndexRequest:
    """A repository integration with what its watch row says: when an index was asked for
    and why, and when the last one started."""

    integration: Integration
    requested_us: int | None
    reason: str | None
    last_started_us: int | None
    holder: str | None
    lease_expires_us: int | None


def _request_of(row: Mapping[str, Any]) -> tuple[int | None, str | None]:
    try:
        state = json.loads(row.get("watch_state") or "{}")
    except ValueError:
        return None, None
    if not isinstance(state, dict):
        return None, None
    requested = state.get("requested_us")
    reason = state.get("reason")
    return (
        requested if isinstance(requested, int) else None,
        reason if isinstance(reason, str) else None,
    )


def _index_request(row: Mapping[str, Any]) -> IndexRequest:
    requested, reason = _request_of(row)
    return IndexRequest(
        integration=Integration.from_row(row),
        requested_us=requested,
        reason=reason,
        last_started_us=row.get("watch_last_event_us"),
        holder=row.get("watch_holder"),
        lease_expires_us=row.get("watch_lease_expires_us"),
    )


def _put_request(conn: Connection, org_id: str, integration_id: str, reason: str) -> None:
    state = json.dumps({"requested_us": clock.now_us(), "reason": reason[:_MAX_REASON]})
    store.record_watch(conn, org_id, integration_id, {"state": state})


async def request_index(
    db: Database, org_id: str, integration_id: str, *, who: Authority | None, reason: str
) -> Integration:
    """Ask for the repository integration to be indexed soon (by whichever app node takes its
    lease). `who` None: the server asks (a push, a connect it made)."""
    if who is not None:
        integration = await get_integration(db, org_id, integration_id, who=who)
    else:
        row = await db.read_one(store.get_integration, org_id, integration_id)
        if row is None:
            raise NotFound("No integration of this organization has that id.")
        integration = Integration.from_row(row)
    if integration.kind != REPOSITORY_KIND:
        raise ValidationFailed.field(
            "kind", f"only a repository integration is indexed; this one is {integration.kind}"
        )
    if integration.status != "active":
        raise ValidationFailed.field("status", "the integration is disabled; enable it first")
    await db.write(_put_request, org_id, integration.id, reason)
    Wakeup.ring()
    return integration


def remote_key(url: str) -> str | None:
    """A remote's host and path, lower case, without `.git` or credentials, so the URLs a
    forge's push names (clone, web, ssh) match the integration's: `github.com/acme/shop`."""
    text = url.strip()
    if "://" not in text and "@" in text and ":" in text.split("@", 1)[1]:
        host, _, path = text.split("@", 1)[1].partition(":")  # scp form: git@host:owner/name
    else:
        parts = urlsplit(text)
        if not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
        if parts.port and parts.scheme in ("http", "https"):
            host = f"{host}:{parts.port}"
    path = path.strip("/").removesuffix(".git").strip("/")
    return f"{host.lower()}/{path.lower()}" if path else None


async def request_index_for_push(
    db: Database, org_id: str, urls: Sequence[str], *, reason: str
) -> list[str]:
    """A forge reported a push to a repository's default branch: index the organization's
    active repository integrations whose remote is that repository. Their ids."""
    wanted = {k for u in urls if (k := remote_key(u))}
    if not wanted:
        return []
    rows = await db.read_one(store.list_integrations, org_id)
    matched = [
        r["id"]
        for r in rows
        if r["kind"] == REPOSITORY_KIND
        and r["status"] == "active"
        and remote_key(str((r["settings"] or {}).get("url") or "")) in wanted
    ]

    def _ask(conn: Connection) -> None:
        for integration_id in matched:
            _put_request(conn, org_id, integration_id, reason)

    if matched:
        await db.write(_ask)
        Wakeup.ring()
    return matched


async def active_repositories(db: Database) -> list[IndexRequest]:
    """Every organization's active repository integrations with their index requests (the
    indexer runs for the whole server)."""
    rows = await db.read_one(store.active_integrations_with_watch, (REPOSITORY_KIND,))
    return [_index_request(r) for r in rows]


async def find_repository(db: Database, org_id: str, integration_id: str) -> IndexRequest | None:
    """The active repository integration with its index request, or None."""
    rows = await db.read_one(
        store.active_integrations_with_watch,
        (REPOSITORY_KIND,),
        org_id=org_id,
        integration_id=integration_id,
    )
    return _index_request(rows[0]) if rows else None


def index_due(found: IndexRequest, now_us: int, every_us: int | None) -> str | None:
    """Why `found` should be indexed now (None: it need not be)."""
    started = found.last_started_us
    if found.requested_us is not None and (started is None or found.requested_us >= started):
        return found.reason or "asked for"
    if started is None:
        return "never indexed"
    if every_us is not None and now_us - started >= every_us:
        return "on schedule"
    return None


async def start_index(db: Database, org_id: str, integration_id: str, started_us: int) -> None:
    """Mark the indexing begun: a request made from now on asks for another one."""
    await db.write(store.record_watch, org_id, integration_id, {"last_event_us": started_us})


async def finish_index(db: Database, org_id: str, integration_id: str, error: str | None) -> None:
    values: dict[str, Any] = {
        "last_error": None if error is None else error[:1000],
        "last_error_us": None if error is None else clock.now_us(),
    }
    await db.write(store.record_watch, org_id, integration_id, values)


async def index_status(found: Integration, db: Database) -> dict[str, Any]:
    """What the integration's page shows of its indexing besides its last reading: asked for
    when and why, indexing now (on which node), the last attempt and its error."""
    rows = await db.read_one(
        store.active_integrations_with_watch,
        (REPOSITORY_KIND,),
        org_id=found.org_id,
        integration_id=found.id,
    )
    if not rows:
        return {"pending": False, "indexing": False}
    row = rows[0]
    now = clock.now_us()
    request = _index_request(row)

    def iso(us: int | None) -> str | None:
        return None if us is None else clock.from_us(us).isoformat().replace("+00:00", "Z")

    held = (
        request.holder is not None
        and request.lease_expires_us is not None
        and request.lease_expires_us >= now
    )
    pending = request.requested_us is not None and (
        request.last_started_us is None or request.requested_us >= request.last_started_us
    )
    return {
        "requested": iso(request.requested_us),
        "reason": request.reason,
        "pending": pending,
        "indexing": held,
        "node": request.holder if held else None,
        "last_started": iso(request.last_started_us),
        "last_error": row.get("watch_last_error"),
        "last_error_at": iso(row.get("watch_last_error_us")),
    }
