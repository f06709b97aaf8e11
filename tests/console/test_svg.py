"""The graph picture's layout: layers left to right the way edges point, cycles broken."""

from __future__ import annotations

from trailmap.console.svg import Box, graph_svg, layers


def test_layers_follow_the_edges_and_a_cycle_does_not_loop_forever() -> None:
    edges = [("gateway", "web"), ("web", "api"), ("api", "db"), ("api", "web")]
    assert layers(["gateway", "web", "api", "db"], edges) == {
        "gateway": 0,
        "web": 1,
        "api": 2,
        "db": 3,
    }


def test_a_node_nothing_points_to_sits_just_before_what_it_points_to() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "topic"), ("worker", "topic")]
    assert layers(["a", "b", "c", "topic", "worker"], edges)["worker"] == 2


def test_each_edge_is_drawn_with_its_figures_in_a_title_and_each_node_as_a_link() -> None:
    boxes = [Box("1", "web", "service", "prod", "/w"), Box("2", "db<1>", "database", "prod", "/d")]
    edge = {"from_id": "1", "to_id": "2", "kind": "reads_writes", "calls_per_minute": 12.5,
            "error_rate": 0.1, "p95_ms": 40.0}  # fmt: skip
    svg, width = graph_svg(boxes, [edge], {"1": 0, "2": 1})
    assert (
        "<title>web → db&lt;1&gt; (reads_writes): 12.5 calls/min, 10.00% errors, p95 40 ms" in svg
    )
    assert "stroke='#b91c1c'" in svg  # failing one call in ten: red
    assert svg.count("<a href=") == 2
    assert width > 2 * 170
