"""The shop's repository: its Compose files, Kubernetes manifests, Backstage catalog and
CODEOWNERS, shipped inside the package (demo/repository/) and read as a `repository`
integration is, so the demo's graph joins what the repository declares to what the shop's
traces observe (docs/declared-graph.md, docs/demo.md).

What the repository says and the traces show differ on purpose, as in a real shop:
- declared, never called: shipping's `RATES_CACHE_URL` (a Redis fallback for carrier rates);
- observed, not declared: inventory's Redis cache (its address is a default in code);
- new today: checkout's cart cache (`CART_CACHE_URL`), added by the commit released with
  checkout 3.10.0; the reading of the commit before it, yesterday, lacks it.

The readers are in `trailmap.ingest`, a layer above the demo: whoever loads the demo (the
CLI) hands `read_repository` in."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from trailmap import clock
from trailmap.accounts import Organization
from trailmap.accounts.audit import Actor
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.graph.declared import Declared
from trailmap.graph.learn.declared import DeclaredSource, declared_sources, record_declared
from trailmap.integrations.integrations import (
    Integration,
    create_integration,
    list_integrations,
)
from trailmap.storage import Database

__all__ = [
    "INTEGRATION_NAME",
    "REPOSITORY",
    "UNKEYED_SOURCE",
    "YESTERDAY",
    "ReadRepository",
    "record_shop_repository",
]

REPOSITORY: Final = Path(__file__).parent / "repository"
INTEGRATION_NAME: Final = "acme-shop repository"
# The source's key when the server has no TRAILMAP_SECRET_KEY: an integration's secret is
# stored encrypted, so none can be made, and the declarations stand under this key instead.
UNKEYED_SOURCE: Final = "demo-repository"
_LABEL: Final = "acme/shop"
_ACTOR: Final = Actor("demo (trailmap demo)")

ReadRepository = Callable[[Path], Declared]


@dataclass(frozen=True, slots=True)
class _Commit:
    revision: str
    before_now: timedelta


# The commit read yesterday, and today's: pushed with checkout 3.10.0 (demo/traces.py's
# _HISTORY), three and a half hours before the demo was loaded.
YESTERDAY: Final = _Commit("3f9c2e1d7b40a5c8e6f1d2b3a4c5d6e7f8091a2b", timedelta(hours=30))
_TODAY: Final = _Commit("8a41d07c2e9b5f3a1d6c4e8b0f2a7d9c3e5b1f60", timedelta(hours=3.5))
# What today's commit changed, as (file, today's text, yesterday's text).
_TODAYS_CHANGE: Final = (
    ("compose.yaml", "      CART_CACHE_URL: redis://redis:6379/1\n", ""),
    (
        "compose.yaml",
        "    depends_on: [inventory, payments, orders, redis]\n",
        "    depends_on: [inventory, payments, orders]\n",
    ),
    ("deploy/kubernetes/base/checkout.yaml", '  CART_CACHE_URL: "redis://redis:6379/1"\n', ""),
)


async def record_shop_repository(
    db: Database,
    org: Organization,
    read: ReadRepository,
    *,
    now: datetime,
    secret_key: str | None,
) -> str:
    """Record what the shop's repository declares, as the organization's `repository`
    integration (made when missing). The first time, yesterday's commit is read as of
    yesterday and today's as of its push; after that, today's is read again now."""
    source = await _source(db, org, secret_key)
    first = not any(s["source"] == source.key for s in await declared_sources(db, org.id))
    if first:
        with tempfile.TemporaryDirectory(prefix="trailmap-demo-") as scratch:
            earlier = _yesterdays_tree(Path(scratch) / "shop")
            await record_declared(
                db,
                org.id,
                _at(source, YESTERDAY),
                read(earlier),
                now_us=clock.to_us(now - YESTERDAY.before_now),
            )
        at = now - _TODAY.before_now
    else:
        at = now
    recorded = await record_declared(
        db, org.id, _at(source, _TODAY), read(REPOSITORY), now_us=clock.to_us(at)
    )
    return f"its repository {_LABEL} read ({recorded.nodes} nodes, {recorded.edges} edges declared)"


def _at(source: DeclaredSource, commit: _Commit) -> DeclaredSource:
    return DeclaredSource(source.key, source.kind, source.label, commit.revision)


async def _source(db: Database, org: Organization, secret_key: str | None) -> DeclaredSource:
    integration = await _integration(db, org, secret_key)
    key = integration.id if integration is not None else UNKEYED_SOURCE
    return DeclaredSource(key=key, kind="repository", label=_LABEL)


async def _integration(
    db: Database, org: Organization, secret_key: str | None
) -> Integration | None:
    for integration in await list_integrations(db, org.id, who=OPERATOR_AUTHORITY):
        if integration.kind == "repository" and integration.name == INTEGRATION_NAME:
            return integration
    if not secret_key:
        return None
    made, _secret = await create_integration(
        db,
        org.id,
        who=OPERATOR_AUTHORITY,
        by=_ACTOR,
        kind="repository",
        name=INTEGRATION_NAME,
        settings={"url": str(REPOSITORY), "branch": "main"},
        secret_key=secret_key,
    )
    return made


def _yesterdays_tree(target: Path) -> Path:
    """The repository as yesterday's commit left it: today's tree with today's change undone."""
    shutil.copytree(REPOSITORY, target)
    for file, today, yesterday in _TODAYS_CHANGE:
        path = target / file
        text = path.read_text()
        if text.count(today) != 1:
            raise RuntimeError(f"the demo repository's {file} no longer holds {today!r} once")
        path.write_text(text.replace(today, yesterday))
    return target
