"""The Event page's chart of a metric: an inline SVG drawn on the server, before and after the
change on either side of its line, every label escaped."""

from __future__ import annotations

import re

from trailmap.console.event import metric_chart


def _xs(svg: str, side: str) -> list[float]:
    return [float(x) for x in re.findall(rf"<circle class={side} cx=([\d.]+)", svg)]


def test_points_before_the_change_are_left_of_its_line_and_after_it_right() -> None:
    svg = metric_chart(
        {
            "name": "error_rate",
            "unit": "ratio",
            "before": {"mean": 0.01},
            "after": {"mean": 0.05},
            "points": [[-600, 0.01], [-300, 0.012], [0, 0.04], [300, 0.06]],
        }
    )
    line = re.search(r"<line class=change x1=([\d.]+)", svg)
    assert line is not None
    change_x = float(line.group(1))
    assert len(_xs(svg, "before")) == 2
    assert len(_xs(svg, "after")) == 2
    assert all(x < change_x for x in _xs(svg, "before"))
    assert all(x >= change_x for x in _xs(svg, "after"))
    # The value axis says the range as a person reads a ratio; the time axis the offsets.
    assert ">6%</text>" in svg
    assert ">1%</text>" in svg
    assert ">-10m</text>" in svg
    assert ">+5m</text>" in svg


def test_a_metric_without_points_draws_nothing() -> None:
    assert metric_chart({"name": "throughput", "verdict": "not enough data"}) == ""


def test_a_metric_name_is_escaped_in_the_chart() -> None:
    svg = metric_chart({"name": "<b>x</b>", "unit": None, "points": [[-60, 1.0], [60, 2.0]]})
    assert "<b>" not in svg
    assert "&lt;b&gt;x&lt;/b&gt;" in svg
