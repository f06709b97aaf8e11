"""`/api/v1/graph`: the architecture graph's questions over REST, answered by graph/ask/queries.py
exactly as the MCP tools answer them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from trailmap.accounts import Principal
from trailmap.graph.ask import changes, compare, near, queries
from trailmap.graph.ask.algorithms import Direction, RankBy
from trailmap.graph.ask.evidence import Evidence as EvidenceKind
from trailmap.graph.model import EdgeKind, NodeKind
from trailmap.http.auth import CurrentPrincipal
from trailmap.http.context import context_of
from trailmap.http.openapi import error_responses
from trailmap.http.responses import ok

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/graph", tags=["graph"])


class GraphAnswer(BaseModel):
    success: bool
    data: dict[str, Any]


_ERRORS = error_responses(
    400, 401, 404, 503, saying={404: "No node by that name (the message suggests close names)"}
)

At = Annotated[
    str | None,
    Query(description="The graph as it was at this time: -2h, -7d, ISO 8601 (default now)"),
]
Format = Annotated[
    queries.Format,
    Query(description="json, or mermaid to add a Mermaid flowchart of the answer"),
]
Environment = Annotated[
    str | None,
    Query(description="Only this environment (deployment.environment.name), e.g. production"),
]

Evidence = Annotated[
    EvidenceKind,
    Query(
        description="The edges followed: observed (seen in traces), declared (by a "
        "repository, cluster or catalog) or all"
    ),
]


def _query(
    request: Request, principal: Principal, at: str | None, fmt: queries.Format
) -> tuple[Database, queries.GraphQuery]:
    ctx = context_of(request)
    return ctx.db, queries.GraphQuery(
        principal=principal,
        at=at,
        format=fmt,
        stale_after_days=ctx.settings.graph_stale_after_days,
        default_timezone=ctx.settings.default_timezone,
    )


@router.get(
    "/nodes",
    summary="Find nodes by name, or list them",
    description=(
        "Nodes whose name matches `query`, best first; without `query`, every node, services "
        "first, busiest first. A capped answer says how many `more` there are and the "
        "`offset` of the next page."
    ),
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def search_nodes(
    request: Request,
    principal: CurrentPrincipal,
    query: Annotated[str, Query(max_length=200, description="A name or part; empty lists")] = "",
    kind: Annotated[list[NodeKind] | None, Query(description="Node kinds")] = None,
    environment: Environment = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    offset: Annotated[int, Query(ge=0, description="Skip this many (paging)")] = 0,
    at: At = None,
    format: Format = "json",  # noqa: A002 - the parameter is called format in the interface
) -> Response:
    db, q = _query(request, principal, at, format)
    return ok(
        await queries.search_nodes(
            db, q, query, kinds=kind, environment=environment, limit=limit, offset=offset
        )
    )


@router.get(
    "/nodes/{node}",
    summary="One node: attributes, upstream and downstream edges with statistics, changes",
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def get_node(
    request: Request,
    principal: CurrentPrincipal,
    node: str,
    environment: Environment = None,
    at: At = None,
    format: Format = "json",  # noqa: A002
) -> Response:
    db, q = _query(request, principal, at, format)
    return ok(await queries.get_node(db, q, node, environment=environment))


@router.get(
    "/nodes/{node}/dependencies",
    summary="Walk the dependencies of a node, downstream, upstream or both",
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def traverse_dependencies(
    request: Request,
    principal: CurrentPrincipal,
    node: str,
    direction: Direction = "downstream",
    max_depth: Annotated[int, Query(ge=1, le=10)] = 3,
    edge_kind: Annotated[
        list[EdgeKind] | None,
        Query(description="Edge kinds to walk; by default the dependency kinds, not owned_by"),
    ] = None,
    node_kind: Annotated[list[NodeKind] | None, Query(description="Node kinds shown")] = None,
    environment: Environment = None,
    evidence: Evidence = "all",
    at: At = None,
    format: Format = "json",  # noqa: A002
) -> Response:
    db, q = _query(request, principal, at, format)
    return ok(
        await queries.traverse_dependencies(
            db,
            q,
            node,
            direction=direction,
            max_depth=max_depth,
            edge_kinds=edge_kind,
            node_kinds=node_kind,
            environment=environment,
            evidence=evidence,
        )
    )


@router.get(
    "/nodes/{node}/impact",
    summary="The blast radius: everything that depends on the node, transitively",
    description=(
        "How many nodes, and services, depend on the node at each depth, and the nearest "
        "`limit` of them one by one: depth, the next hop toward it, and the share of each "
        "one's calls that go into the blast radius."
    ),
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def get_impact(
    request: Request,
    principal: CurrentPrincipal,
    node: str,
    environment: Environment = None,
    limit: Annotated[
        int, Query(ge=1, le=100, description="How many of the nearest to list (all are counted)")
    ] = 50,
    evidence: Evidence = "all",
    at: At = None,
    format: Format = "json",  # noqa: A002
) -> Response:
    db, q = _query(request, principal, at, format)
    return ok(
        await queries.get_impact(
            db, q, node, environment=environment, limit=limit, evidence=evidence
        )
    )


@router.get(
    "/paths",
    summary="The paths requests and messages take from one node to another",
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def find_path(
    request: Request,
    principal: CurrentPrincipal,
    from_: Annotated[str, Query(alias="from", min_length=1, max_length=300)],
    to: Annotated[str, Query(min_length=1, max_length=300)],
    max_paths: Annotated[int, Query(ge=1, le=10)] = 3,
    environment: Environment = None,
    evidence: Evidence = "all",
    at: At = None,
    format: Format = "json",  # noqa: A002
) -> Response:
    db, q = _query(request, principal, at, format)
    return ok(
        await queries.find_path(
            db, q, from_, to, max_paths=max_paths, environment=environment, evidence=evidence
        )
    )


@router.get(
    "/critical",
    summary="The most critical services, by dependents, betweenness, PageRank or traffic",
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def rank_critical_services(
    request: Request,
    principal: CurrentPrincipal,
    by: RankBy = "dependents",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    environment: Environment = None,
    at: At = None,
    format: Format = "json",  # noqa: A002
) -> Response:
    db, q = _query(request, principal, at, format)
    return ok(
        await queries.rank_critical_services(db, q, by=by, limit=limit, environment=environment)
    )


@router.get(
    "/nodes/{node}/changes-near",
    summary="The changes near a node: in its dependency neighbourhood, nearest first",
    description=(
        "Changes (deployments, config changes, incidents...) of the node and of what is within "
        "max_depth hops of it, ranked by graph distance and closeness in time, each with the "
        "reason it is listed."
    ),
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def find_changes_near(
    request: Request,
    principal: CurrentPrincipal,
    node: str,
    from_: Annotated[str, Query(alias="from", max_length=100, description="-1h, ISO 8601")] = "-1h",
    to: Annotated[str, Query(max_length=100, description="now, -5m, ISO 8601")] = "now",
    max_depth: Annotated[int, Query(ge=0, le=5)] = 2,
    direction: Direction = "both",
    environment: Environment = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    evidence: Evidence = "all",
) -> Response:
    db, q = _query(request, principal, None, "json")
    return ok(
        await near.find_changes_near(
            db,
            q,
            node,
            from_=from_,
            to=to,
            max_depth=max_depth,
            direction=direction,
            environment=environment,
            limit=limit,
            evidence=evidence,
        )
    )


@router.get(
    "/compare",
    summary="Declared against observed: dependencies never called, and hidden ones",
    description=(
        "For a service, or the whole graph: the dependencies a repository, cluster or catalog "
        "declares with no call measured between `from` and `to` (unused, or not "
        "instrumented), and the dependencies traces observe from declared nodes that no "
        "source declares (hidden). Each list gives its first `limit` and its total."
    ),
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def compare_declared_and_observed(
    request: Request,
    principal: CurrentPrincipal,
    service: Annotated[
        str | None, Query(max_length=300, description="A service; default the whole graph")
    ] = None,
    from_: Annotated[str, Query(alias="from", max_length=100, description="-7d, ISO 8601")] = "-7d",
    to: Annotated[str, Query(max_length=100, description="now, -1d, ISO 8601")] = "now",
    environment: Environment = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response:
    db, q = _query(request, principal, None, "json")
    return ok(
        await compare.compare_declared_and_observed(
            db, q, service=service, from_=from_, to=to, environment=environment, limit=limit
        )
    )


@router.get(
    "/changes",
    summary="The graph's own changes: nodes and edges that appeared or went away",
    description=(
        "The graph at `from` compared with the graph at `to`, over every source: what "
        "appeared, what went away (and why), and what changed sources (declared, then seen "
        "in traces too); dependencies first, newest first. Paged by `offset`."
    ),
    response_model=GraphAnswer,
    responses=_ERRORS,
)
async def get_graph_changes(
    request: Request,
    principal: CurrentPrincipal,
    from_: Annotated[
        str, Query(alias="from", max_length=100, description="-1d, yesterday, ISO 8601")
    ] = "-1d",
    to: Annotated[str, Query(max_length=100, description="now, -1h, ISO 8601")] = "now",
    environment: Environment = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, description="Skip this many (paging)")] = 0,
) -> Response:
    db, q = _query(request, principal, None, "json")
    return ok(
        await changes.get_graph_changes(
            db, q, from_=from_, to=to, environment=environment, limit=limit, offset=offset
        )
    )
