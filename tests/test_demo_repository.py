"""The demo shop's repository (src/trailmap/demo/repository/), recorded when the demo loads as
the organization's `repository` integration: its services are the traced ones (one node each,
with every source), its owners answer "who owns payments?", one dependency is declared and
never called, one is called and never declared, and the reading of yesterday's commit lacks
the dependency today's added, so the graph of yesterday and of now differ by it."""

from __future__ import annotations

import glob
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from tests.integrations.support import SECRET_KEY
from trailmap import clock
from trailmap.accounts import Organization, get_org
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.demo import load, traces
from trailmap.demo.repository import INTEGRATION_NAME, REPOSITORY, UNKEYED_SOURCE, YESTERDAY
from trailmap.demo.traces import SERVICES
from trailmap.graph.ask.snapshots import snapshot_for
from trailmap.graph.learn.declared import declared_sources
from trailmap.graph.memory import GraphSnapshot
from trailmap.graph.model import Edge, Node
from trailmap.ingest.repository import read_repository
from trailmap.integrations.integrations import list_integrations
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_STALE_US = 7 * 24 * 3_600_000_000
_DEPENDENCIES = frozenset({"calls", "reads_writes", "publishes", "consumes"})
_REPOSITORY = load.Repository(read=read_repository, secret_key=SECRET_KEY)


@dataclass
class Demo:
    db: Database
    org: Organization
    report: str


@pytest.fixture
async def demo(db: Database, monkeypatch: pytest.MonkeyPatch) -> Demo:
    """The demo loaded with its repository, its traffic shortened to the last 28 hours (so
    that yesterday is traced too) to load in seconds."""
    monkeypatch.setattr(load, "_WEEK", timedelta(hours=28))
    monkeypatch.setattr(traces, "RECENT", timedelta(minutes=20))
    report = await load.load_demo(db, "demo", repository=_REPOSITORY)
    return Demo(db, await get_org(db, "demo"), report)


async def _graph(demo: Demo, at_us: int | None = None) -> GraphSnapshot:
    return await snapshot_for(demo.db, demo.org.id, at_us=at_us, stale_after_us=_STALE_US)


def _named(graph: GraphSnapshot, name: str) -> Node:
    found = [n for n in graph.nodes if n.name == name]
    assert len(found) == 1, sorted(n.name for n in graph.nodes)
    return found[0]


def _edges(graph: GraphSnapshot, source: str, target: str) -> list[Edge]:
    ids = {n.name: n.id for n in graph.nodes}
    return [
        e
        for e in graph.edges
        if (e.source_id, e.target_id) == (ids.get(source), ids.get(target))
        and e.kind in _DEPENDENCIES
    ]


def _dependencies(graph: GraphSnapshot, *, declared: bool) -> set[tuple[str, str]]:
    names = {n.id: n.name for n in graph.nodes}
    return {
        (names[e.source_id], names[e.target_id])
        for e in graph.edges
        if e.kind in _DEPENDENCIES and (not declared or set(e.sources) - {"otel"})
    }


async def test_the_repository_is_an_integration_whose_services_are_the_traced_ones(
    demo: Demo,
) -> None:
    assert "its repository acme/shop read" in demo.report
    [integration] = [
        i
        for i in await list_integrations(demo.db, demo.org.id, who=OPERATOR_AUTHORITY)
        if i.kind == "repository"
    ]
    assert integration.name == INTEGRATION_NAME
    assert integration.settings.texts["url"] == str(REPOSITORY)
    assert (REPOSITORY / "compose.yaml").is_file()  # shipped in the package
    [source] = await declared_sources(demo.db, demo.org.id)
    assert (source["source"], source["label"]) == (integration.id, "acme/shop")
    assert source["revision"] != YESTERDAY.revision
    assert source["skipped"] == []

    graph = await _graph(demo)
    for service in SERVICES:
        node = _named(graph, service)  # one node: the traced one, joined
        assert node.kind == "service"
        assert set(node.sources) == {"otel", "compose", "kubernetes", "backstage"}, service
    assert _named(graph, "postgresql").kind == "database"
    assert {"otel", "compose", "kubernetes"} <= set(_named(graph, "postgresql").sources)
    assert {"otel", "compose", "kubernetes"} <= set(_named(graph, "redis").sources)
    # Declared by the repository alone: the broker (traces show its topic) and the namespace.
    assert _named(graph, "kafka").sources == ("backstage", "compose", "kubernetes")
    # A dependency both traced and declared is one edge with every source.
    [edge] = _edges(graph, "checkout", "payments")
    assert set(edge.sources) == {"otel", "compose", "kubernetes", "backstage"}
    files = {ev["file"] for ev in edge.attributes["declared"]["evidence"]}
    assert {"compose.yaml", "deploy/kubernetes/base/checkout.yaml"} <= files


async def test_who_owns_payments_is_answered_by_its_owned_by_edges(demo: Demo) -> None:
    graph = await _graph(demo)
    payments = _named(graph, "payments")
    owners = {
        graph.node(e.target_id).name: e
        for e in graph.out_edges(payments.id)
        if e.kind == "owned_by"
    }
    # The catalog's Group and the CODEOWNERS team `@acme/payments-team` are one team, with
    # one edge that both files declare.
    assert set(owners) == {"payments-team"}
    team = graph.node(owners["payments-team"].target_id)
    assert team.kind == "team"
    assert "@acme/payments-team" in team.attributes["declared"]["names"]
    assert owners["payments-team"].sources == ("backstage", "codeowners")


async def test_a_declared_dependency_is_never_called_and_a_called_one_never_declared(
    demo: Demo,
) -> None:
    graph = await _graph(demo)
    # shipping's Redis fallback for carrier rates: declared, no traffic.
    [fallback] = _edges(graph, "shipping", "redis")
    assert set(fallback.sources) == {"compose", "kubernetes"}
    assert not graph.traffic(fallback.id)
    # inventory's stock cache: its address is a default in code, so only traces know it.
    [hidden] = _edges(graph, "inventory", "redis")
    assert hidden.sources == ("otel",)
    assert graph.traffic(hidden.id)


async def test_the_graph_of_yesterday_lacks_the_dependency_added_today(demo: Demo) -> None:
    now = await _graph(demo)
    yesterday = await _graph(demo, clock.now_us() - 24 * 3_600_000_000)
    added = _dependencies(now, declared=True) - _dependencies(yesterday, declared=True)
    assert added == {("checkout", "redis")}
    assert _dependencies(yesterday, declared=True) - _dependencies(now, declared=True) == set()
    [cache] = _edges(now, "checkout", "redis")
    evidence = cache.attributes["declared"]["evidence"]
    assert {ev["revision"] for ev in evidence} != {YESTERDAY.revision}
    assert "CART_CACHE_URL" in " ".join(str(ev.get("detail")) for ev in evidence)
    # Yesterday the traced services were the same nodes, already joined.
    for service in SERVICES:
        assert "compose" in _named(yesterday, service).sources


async def test_loading_again_rereads_the_repository_and_keeps_its_history(demo: Demo) -> None:
    again = await load.load_demo(demo.db, "demo", repository=_REPOSITORY)
    assert "its repository acme/shop read" in again
    assert len(await declared_sources(demo.db, demo.org.id)) == 1
    yesterday = await _graph(demo, clock.now_us() - 24 * 3_600_000_000)
    assert not _edges(yesterday, "checkout", "redis")
    # A reset clears what the repository declared with the rest of the graph, then reads
    # its history afresh (the integration stays, as settings do).
    await load.reset_demo(demo.db, "demo", repository=_REPOSITORY)
    assert len(await declared_sources(demo.db, demo.org.id)) == 1
    assert not _edges(await _graph(demo, clock.now_us() - 24 * 3_600_000_000), "checkout", "redis")
    assert _edges(await _graph(demo), "checkout", "redis")


async def test_without_a_secret_key_the_repository_is_recorded_without_an_integration(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "_WEEK", timedelta(hours=2))
    monkeypatch.setattr(traces, "RECENT", timedelta(minutes=10))
    await load.load_demo(db, "demo", repository=load.Repository(read=read_repository))
    org = await get_org(db, "demo")
    assert not await list_integrations(db, org.id, who=OPERATOR_AUTHORITY)
    [source] = await declared_sources(db, org.id)
    assert source["source"] == UNKEYED_SOURCE


def test_every_file_of_the_demo_repository_is_installed_with_the_package() -> None:
    """pyproject's package-data patterns (as setuptools globs them: `**/*` skips dotfiles)
    cover every file of the repository, `.env` included."""

    package = REPOSITORY.parent.parent
    pyproject = tomllib.loads((package.parent.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["trailmap"]
    installed = {
        Path(found)
        for pattern in patterns
        for found in glob.glob(pattern, root_dir=package, recursive=True)  # noqa: PTH207 - setuptools' own globbing
    }
    files = {p.relative_to(package) for p in REPOSITORY.rglob("*") if p.is_file()}
    assert Path("demo/repository/.env") in files
    assert files <= installed, sorted(map(str, files - installed))
