"""Recording what a source declares: a repository's Compose, Kubernetes, Helm, Backstage and
CODEOWNERS files, a live cluster's objects, a running Backstage's catalog.

Each reading of a source replaces its previous one: declarations it makes again keep their
first-seen time, new ones appear, and those it no longer makes are marked removed (kept, so the
graph as it was can still be told). Joining declarations to the nodes traces observe happens
when a snapshot is built (graph/joined.py), so a service traced after its repository was read
joins all the same."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trailmap import clock
from trailmap.graph.declared import Declared, DeclaredEdge, DeclaredNode, Evidence
from trailmap.storage import Connection, Database
from trailmap.storage import declared as store
from trailmap.storage import graph as graph_store

__all__ = [
    "DeclaredSource",
    "Recorded",
    "declared_sources",
    "forget_source",
    "purge_removed_before",
    "record_declared",
    "record_source_error",
]

# Evidence kept per declaration and source: enough to say where, never a whole repository.
_MAX_EVIDENCE = 20
_MAX_SKIPPED = 200


@dataclass(frozen=True, slots=True)
class DeclaredSource:
    """Who declares: `key` is stable for the source (an integration's id), `kind` what it is
    (repository, kubernetes, eks, backstage), `label` how people know it (the integration's
    name), `revision` what was read (a commit, a resource version), and `environment` where
    its nodes belong (None: the organization's main environment, decided when joining)."""

    key: str
    kind: str
    label: str
    revision: str | None = None
    environment: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a reading changed: declarations added, removed, changed and kept as they were."""

    added: int
    removed: int
    changed: int
    kept: int
    nodes: int
    edges: int
    skipped: int

    def as_json(self) -> dict[str, int]:
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "kept": self.kept,
            "nodes": self.nodes,
            "edges": self.edges,
            "skipped": self.skipped,
        }


def _key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _evidence(items: list[Evidence], source: DeclaredSource) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ev in items[:_MAX_EVIDENCE]:
        item: dict[str, Any] = {"source": source.label, "reader": ev.reader, "file": ev.file}
        if ev.line is not None:
            item["line"] = ev.line
        if ev.detail:
            item["detail"] = ev.detail
        if source.revision:
            item["revision"] = source.revision
        out.append(item)
    return out


def _environment(node: DeclaredNode | None, source: DeclaredSource) -> str | None:
    if node is not None and node.attributes.get("environment"):
        return node.attributes["environment"]
    return source.environment


def declaration_rows(source: DeclaredSource, declared: Declared) -> dict[str, dict[str, Any]]:
    """The source's declarations by key: one per node and one per edge."""
    rows: dict[str, dict[str, Any]] = {}
    for node in declared.nodes.values():
        env = _environment(node, source)
        attributes = {k: v for k, v in node.attributes.items() if k != "environment"}
        body: dict[str, Any] = {
            "name": node.name,
            "kind": node.kind,
            "environment": env,
            "aliases": sorted(node.aliases),
        }
        if node.technology:
            body["technology"] = node.technology
        if attributes:
            body["attributes"] = attributes
        key = _key("node", env or "", node.name)
        rows[key] = {"subject": "node", "body": body, "evidence": _evidence(node.evidence, source)}
    for edge in declared.edges.values():
        if edge.source not in declared.nodes or edge.target not in declared.nodes:
            continue  # a reader always declares both ends; a hole is not recorded
        env = _environment(declared.nodes[edge.source], source)
        key = _key("edge", env or "", edge.source, edge.target, edge.kind)
        rows[key] = {
            "subject": "edge",
            "body": _edge_body(edge, env),
            "evidence": _evidence(edge.evidence, source),
        }
    return rows


def _edge_body(edge: DeclaredEdge, env: str | None) -> dict[str, Any]:
    return {"source": edge.source, "target": edge.target, "kind": edge.kind, "environment": env}


async def record_declared(
    db: Database,
    org_id: str,
    source: DeclaredSource,
    declared: Declared | Sequence[Declared],
    *,
    now_us: int | None = None,
) -> Recorded:
    """Replace what `source` declared before with `declared`, in one transaction. Several
    `Declared` (a cluster's, one per environment, where two may hold a node of the same
    name) are recorded together as the source's one reading."""
    now = clock.now_us() if now_us is None else now_us
    parts = [declared] if isinstance(declared, Declared) else list(declared)
    rows: dict[str, dict[str, Any]] = {}
    for part in parts:
        rows.update(declaration_rows(source, part))
    every_skipped = [s for part in parts for s in part.skipped]
    skipped = [{"file": s.file, "reason": s.reason} for s in every_skipped[:_MAX_SKIPPED]]
    return await db.write(_record, org_id, source, rows, skipped, len(every_skipped), now)


def _record(
    conn: Connection,
    org_id: str,
    source: DeclaredSource,
    rows: dict[str, dict[str, Any]],
    skipped: list[dict[str, str]],
    skipped_count: int,
    now_us: int,
) -> Recorded:
    before = {row.key: row for row in store.declarations_of(conn, org_id, source.key)}
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    unchanged: list[str] = []
    for key, row in rows.items():
        old = before.get(key)
        if old is None:
            inserts.append(
                {
                    **row,
                    "source_key": source.key,
                    "key": key,
                    "first_seen_us": now_us,
                    "last_seen_us": now_us,
                }
            )
        elif (
            old.removed_us is not None or old.body != row["body"] or old.evidence != row["evidence"]
        ):
            first = now_us if old.removed_us is not None else old.first_seen_us
            updates.append(
                {
                    **row,
                    "source_key": source.key,
                    "key": key,
                    "first_seen_us": first,
                    "last_seen_us": now_us,
                }
            )
        else:
            unchanged.append(key)
    gone = [key for key, old in before.items() if key not in rows and old.removed_us is None]
    store.insert_declarations(conn, org_id, inserts)
    store.update_declarations(conn, org_id, updates)
    store.touch_declarations(conn, org_id, source.key, unchanged, now_us)
    removed = store.mark_removed(conn, org_id, source.key, gone, now_us) if gone else 0
    nodes = sum(1 for row in rows.values() if row["subject"] == "node")
    store.put_source(
        conn,
        org_id,
        {
            "source_key": source.key,
            "kind": source.kind,
            "label": source.label[:200],
            "revision": source.revision,
            "read_us": now_us,
            "nodes": nodes,
            "edges": len(rows) - nodes,
            "skipped": skipped,
            "error": None,
            "error_us": None,
        },
    )
    if inserts or updates or removed:
        graph_store.bump_version(conn, org_id, now_us)
    return Recorded(
        added=sum(1 for row in updates if before[row["key"]].removed_us is not None) + len(inserts),
        removed=removed,
        changed=sum(1 for row in updates if before[row["key"]].removed_us is None),
        kept=len(unchanged),
        nodes=nodes,
        edges=len(rows) - nodes,
        skipped=skipped_count,
    )


async def record_source_error(
    db: Database, org_id: str, source: DeclaredSource, error: str, *, now_us: int | None = None
) -> None:
    """A reading that failed: the source's declarations stay as they were; the error is kept
    to be shown with the source."""
    now = clock.now_us() if now_us is None else now_us
    await db.write(_record_error, org_id, source, error[:2000], now)


def _record_error(
    conn: Connection, org_id: str, source: DeclaredSource, error: str, now_us: int
) -> None:
    found = store.source_row(conn, org_id, source.key)
    row = (
        dict(found._mapping)
        if found is not None
        else {
            "source_key": source.key,
            "kind": source.kind,
            "label": source.label[:200],
            "revision": None,
            "read_us": None,
            "nodes": 0,
            "edges": 0,
            "skipped": [],
        }
    )
    row.pop("org_id", None)
    row.update(error=error, error_us=now_us)
    store.put_source(conn, org_id, row)


async def forget_source(
    db: Database, org_id: str, source_key: str, *, now_us: int | None = None
) -> int:
    """The source is gone (its integration deleted): its declarations are marked removed now,
    so what it declared goes away from the graph and shows among the graph's changes."""
    now = clock.now_us() if now_us is None else now_us
    return await db.write(_forget, org_id, source_key, now)


def _forget(conn: Connection, org_id: str, source_key: str, now_us: int) -> int:
    removed = store.mark_removed(conn, org_id, source_key, None, now_us)
    store.delete_source(conn, org_id, source_key)
    if removed:
        graph_store.bump_version(conn, org_id, now_us)
    return removed


async def declared_sources(db: Database, org_id: str) -> list[dict[str, Any]]:
    """Each declaring source's last reading, for people and assistants."""
    rows = await db.read(store.source_rows, org_id)
    return [
        {
            "source": row.source_key,
            "kind": row.kind,
            "label": row.label,
            "revision": row.revision,
            "read": clock.from_us(row.read_us).isoformat().replace("+00:00", "Z")
            if row.read_us
            else None,
            "nodes": row.nodes,
            "edges": row.edges,
            "skipped": row.skipped or [],
            "error": row.error,
            "error_at": clock.from_us(row.error_us).isoformat().replace("+00:00", "Z")
            if row.error_us
            else None,
        }
        for row in rows
    ]


async def purge_removed_before(db: Database, org_id: str, cutoff_us: int) -> int:
    """Forget declarations removed before the organization's retention window."""
    return await db.write(store.purge_removed_before, org_id, cutoff_us)
