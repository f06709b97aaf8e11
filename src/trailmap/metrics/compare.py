"""Did a metric change around an event? Its points before and after, given a verdict by a
Mann-Whitney U test (docs/metrics.md: how the verdict is reached, when to distrust it)."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Literal

__all__ = [
    "Comparison",
    "MannWhitney",
    "Method",
    "Summary",
    "Verdict",
    "compare",
    "mann_whitney_u",
]

Verdict = Literal["increased", "decreased", "no significant change", "not enough data"]
Method = Literal["exact", "asymptotic"]

# scipy.stats.mannwhitneyu(method="auto"): the exact distribution when either sample has at
# most this many points and no value occurs twice in the two together; else the normal one.
_EXACT_MAX_SIZE = 8
_TEST_NAME = "Mann-Whitney U, two-sided"


@dataclass(frozen=True, slots=True)
class Summary:
    """The points of one side: how many, their mean, median and 95th percentile (linear
    interpolation between closest ranks, as numpy's default). Figures are None when n == 0."""

    n: int
    mean: float | None
    median: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class MannWhitney:
    """The two-sided Mann-Whitney U test of samples x and y.

    ``u`` is the statistic of y: the number of (x, y) pairs in which the y value is the larger,
    a tie counting half. It runs from 0 to len(x) * len(y); above half of that, y tends to be
    larger. (``scipy.stats.mannwhitneyu`` reports the statistic of x, len(x) * len(y) - u.)
    """

    u: float
    p_value: float
    method: Method


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict on a metric's points before and after an event, and the figures behind it.

    ``absolute_change`` is after.mean - before.mean and ``relative_change`` is that over
    |before.mean| (so +0.5 means "half as much again" even for a negative metric); both are
    None when a side has no points, and ``relative_change`` is None when before.mean == 0
    (or so near it that the ratio overflows).
    ``p_value``, ``u`` and ``method`` are those of the test, None when it was not run (not
    enough data). ``reason`` is one sentence to quote.
    """

    verdict: Verdict
    before: Summary
    after: Summary
    absolute_change: float | None
    relative_change: float | None
    p_value: float | None
    u: float | None
    method: Method | None
    reason: str


def mann_whitney_u(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    """The two-sided Mann-Whitney U test of x against y, as ``scipy.stats.mannwhitneyu``
    with ``method="auto"`` and the continuity correction: exact when either sample has at most
    8 points and there are no ties, otherwise the normal approximation with the tie
    correction. When every value is the same, p is 1.

    Raises ValueError when a sample is empty or holds NaN; the caller checks sizes.
    """
    if len(x) == 0 or len(y) == 0:
        raise ValueError("the Mann-Whitney U test needs at least one point in each sample")
    if any(map(math.isnan, x)) or any(map(math.isnan, y)):
        raise ValueError("the Mann-Whitney U test cannot rank NaN")
    return _mann_whitney_sorted(sorted(x), sorted(y))


def compare(
    before: Sequence[float],
    after: Sequence[float],
    *,
    alpha: float = 0.01,
    min_points: int = 10,
    min_relative_change: float = 0.05,
    event_age_seconds: float | None = None,
) -> Comparison:
    """Whether a metric increased, decreased or did not change significantly after an event,
    from its points before and after it. The inputs are not modified.

    "not enough data" when either side has fewer than ``min_points`` points. Otherwise
    "increased" or "decreased" when p < ``alpha`` and the change is not negligible:
    |relative change| >= ``min_relative_change``, or, when before.mean == 0 (no relative
    change exists), after.mean != 0. The direction is the test's (after tends to be larger
    than before: increased), not the means'. Anything else is "no significant change".

    Points that are NaN or infinite (a source's 0/0 for a minute without traffic) are left
    out, and the reason says how many. ``event_age_seconds``, when given, is quoted in the
    reason when the after side is too short ("the event is 4 minutes old").
    """
    _check_settings(alpha, min_points, min_relative_change, event_age_seconds)
    before_sorted = _finite_sorted(before)
    after_sorted = _finite_sorted(after)
    left_out = len(before) - len(before_sorted) + len(after) - len(after_sorted)
    before_summary = _summarize_sorted(before_sorted)
    after_summary = _summarize_sorted(after_sorted)
    before_mean, after_mean = before_summary.mean, after_summary.mean

    absolute: float | None = None
    relative: float | None = None
    if before_mean is not None and after_mean is not None:
        absolute = after_mean - before_mean
        if before_mean != 0:
            relative = absolute / abs(before_mean)
            if not math.isfinite(relative):  # a mean so near zero that the ratio overflows
                relative = None

    if (
        before_mean is None
        or after_mean is None
        or before_summary.n < min_points
        or after_summary.n < min_points
    ):
        reason = _not_enough_reason(
            before_summary.n, after_summary.n, min_points, event_age_seconds
        )
        return Comparison(
            verdict="not enough data",
            before=before_summary,
            after=after_summary,
            absolute_change=absolute,
            relative_change=relative,
            p_value=None,
            u=None,
            method=None,
            reason=reason + _left_out_clause(left_out),
        )

    test = _mann_whitney_sorted(before_sorted, after_sorted)
    half = before_summary.n * after_summary.n / 2
    large = after_mean != 0 if relative is None else abs(relative) >= min_relative_change
    verdict: Verdict = "no significant change"
    if test.p_value < alpha and large and test.u != half:
        verdict = "increased" if test.u > half else "decreased"
    every_point_equal = before_sorted[0] == before_sorted[-1] == after_sorted[0] == after_sorted[-1]
    reason = _tested_reason(
        verdict,
        before_summary,
        after_summary,
        relative,
        test,
        alpha=alpha,
        min_relative_change=min_relative_change,
        every_point_equal=every_point_equal,
    )
    return Comparison(
        verdict=verdict,
        before=before_summary,
        after=after_summary,
        absolute_change=absolute,
        relative_change=relative,
        p_value=test.p_value,
        u=test.u,
        method=test.method,
        reason=reason + _left_out_clause(left_out),
    )


def _check_settings(
    alpha: float, min_points: int, min_relative_change: float, event_age_seconds: float | None
) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    if min_points < 1:
        raise ValueError(f"min_points must be at least 1, not {min_points}")
    if min_relative_change < 0:
        raise ValueError(f"min_relative_change must not be negative, not {min_relative_change}")
    if event_age_seconds is not None and event_age_seconds < 0:
        raise ValueError(f"event_age_seconds must not be negative, not {event_age_seconds}")


def _finite_sorted(values: Sequence[float]) -> list[float]:
    if all(map(math.isfinite, values)):
        return sorted(values)
    return sorted(value for value in values if math.isfinite(value))


def _summarize_sorted(ordered: list[float]) -> Summary:
    n = len(ordered)
    if n == 0:
        return Summary(n=0, mean=None, median=None, p95=None)
    middle = n // 2
    median = ordered[middle] if n % 2 else _midpoint(ordered[middle - 1], ordered[middle])
    return Summary(
        n=n,
        mean=_mean(ordered),
        median=float(median),
        p95=_quantile(ordered, 0.95),
    )


def _midpoint(a: float, b: float) -> float:
    middle = (a + b) / 2
    return middle if math.isfinite(middle) else a / 2 + b / 2  # a + b overflowed


def _mean(values: list[float]) -> float:
    try:
        return math.fsum(values) / len(values)
    except OverflowError:  # the sum of values near the float limit; their mean is not
        return math.fsum(value / len(values) for value in values)


def _quantile(ordered: list[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    fraction = position - low
    if fraction == 0:
        return float(ordered[low])
    a, b = ordered[low], ordered[low + 1]
    # As numpy does: interpolate from the nearer end, so the result stays within [a, b].
    if fraction >= 0.5:
        return b - (b - a) * (1 - fraction)
    return a + (b - a) * fraction


def _mann_whitney_sorted(xs: list[float], ys: list[float]) -> MannWhitney:
    """The test on two non-empty sorted samples without NaN."""
    n1, n2 = len(xs), len(ys)
    # U of y counts, for each y, the x values below it and half those equal to it: with xs
    # sorted, bisect finds both in C, several times faster than a rank-by-rank pass. So does
    # Counter the groups of equal values that the tie correction needs.
    below = sum(map(bisect_left, repeat(xs, n2), ys))
    counts = Counter(xs)
    counts.update(ys)
    if len(counts) == n1 + n2:
        twice_u, tie_term = 2 * below, 0
    else:
        twice_u = below + sum(map(bisect_right, repeat(xs, n2), ys))
        tie_term = sum(t * t * t - t for t in counts.values() if t > 1)

    pairs = n1 * n2
    twice_smaller = min(twice_u, 2 * pairs - twice_u)
    if (n1 > _EXACT_MAX_SIZE and n2 > _EXACT_MAX_SIZE) or tie_term:
        p_value = _asymptotic_p(n1, n2, pairs - twice_smaller / 2, tie_term)
        return MannWhitney(u=twice_u / 2, p_value=p_value, method="asymptotic")
    # Without ties every U is a whole number.
    return MannWhitney(u=twice_u / 2, p_value=_exact_p(n1, n2, twice_smaller // 2), method="exact")


def _asymptotic_p(n1: int, n2: int, larger_u: float, tie_term: int) -> float:
    n = n1 + n2
    # Var(U) = n1 n2 / 12 * ((n + 1) - tie_term / (n (n - 1))), in integers up to the last
    # step so that "every value the same" is an exact zero.
    spread = (n + 1) * n * (n - 1) - tie_term
    if spread == 0:
        return 1.0
    variance = n1 * n2 * spread / (12 * n * (n - 1))
    # The continuity correction moves U half a step towards the mean.
    z = (larger_u - n1 * n2 / 2 - 0.5) / math.sqrt(variance)
    # Two-sided: twice the normal upper tail, 2 * erfc(z / sqrt 2) / 2.
    return min(1.0, math.erfc(z / math.sqrt(2)))


def _exact_p(n1: int, n2: int, smaller_u: int) -> float:
    """Twice P(U <= smaller_u) when both samples come from one distribution.

    The number of orderings of the two samples with each value of U is a coefficient of the
    Gaussian binomial [m + n choose m]_q = prod over i = 1..m of (1 - q^(n + i)) / (1 - q^i),
    m the smaller size. Only the coefficients up to smaller_u are needed, so the product is
    carried as a power series cut there: O(m * smaller_u) steps, with Python's integers
    keeping every count exact.
    """
    m, n = min(n1, n2), max(n1, n2)
    counts = [1] + [0] * smaller_u
    for i in range(1, m + 1):
        for k in range(i, smaller_u + 1):  # times 1 / (1 - q^i) = 1 + q^i + q^(2i) + ...
            counts[k] += counts[k - i]
        step = n + i
        for k in range(smaller_u, step - 1, -1):  # times (1 - q^(n + i))
            counts[k] -= counts[k - step]
    return min(1.0, 2 * sum(counts) / math.comb(m + n, m))


def _figure(value: float | None, digits: int = 3) -> str:
    """A figure to quote: ``digits`` significant digits (all of a whole part), and an exponent
    only outside 1e-4 .. 1e6."""
    if value is None:
        return "none"
    if value == 0:
        return "0"
    if not math.isfinite(value):
        return f"{value:g}"
    magnitude = math.floor(math.log10(abs(value)))
    if not -4 <= magnitude < 6:
        return f"{value:.{digits}g}"
    text = f"{value:.{max(0, digits - 1 - magnitude)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _p_text(p_value: float) -> str:
    # Below about 1e-308 the normal tail underflows to zero.
    return "p < 1e-300" if p_value == 0 else f"p = {p_value:.2g}"


def _tested_reason(
    verdict: Verdict,
    before: Summary,
    after: Summary,
    relative: float | None,
    test: MannWhitney,
    *,
    alpha: float,
    min_relative_change: float,
    every_point_equal: bool,
) -> str:
    before_mean, after_mean = before.mean or 0.0, after.mean or 0.0  # both sides have points
    name = f"{_TEST_NAME}, exact" if test.method == "exact" else _TEST_NAME
    test_text = f"{_p_text(test.p_value)} ({name})"
    movement = _mean_movement(before_mean, after_mean, relative)
    if verdict in ("increased", "decreased"):
        if (after_mean > before_mean) == (verdict == "increased"):
            return f"after the event {movement}, {test_text}"
        # The ranks and the mean disagree, as when a few large points leave the mean behind.
        tended = "higher" if verdict == "increased" else "lower"
        return (
            f"after the event the points tended {tended} (the median went from "
            f"{_figure(before.median)} to {_figure(after.median)}) although {movement}, "
            f"{test_text}"
        )
    if every_point_equal:
        return (
            f"no significant change: every point before and after the event was "
            f"{_figure(before_mean)}, {test_text}"
        )
    if test.p_value >= alpha:
        return f"no significant change: {movement}, {test_text}, not below {alpha:g}"
    return (
        f"no significant change: {movement}, less than the "
        f"{_figure(min_relative_change * 100, 2)}% that counts as a change, although "
        f"{test_text}"
    )


def _mean_movement(before_mean: float, after_mean: float, relative: float | None) -> str:
    if after_mean == before_mean:
        return f"the mean stayed at {_figure(before_mean)}"
    verb = "rose" if after_mean > before_mean else "fell"
    text = f"the mean {verb} from {_figure(before_mean)} to {_figure(after_mean)}"
    if relative is None:
        return text
    sign = "+" if relative > 0 else "-"
    return f"{text} ({sign}{_figure(abs(relative) * 100, 2)}%)"


def _only(count: int) -> str:
    if count == 0:
        return "no points"
    return "only 1 point" if count == 1 else f"only {count} points"


def _not_enough_reason(
    n_before: int, n_after: int, min_points: int, event_age_seconds: float | None
) -> str:
    needed = f"at least {min_points} {'is' if min_points == 1 else 'are'} needed"
    short_before, short_after = n_before < min_points, n_after < min_points
    if short_before and short_after:
        text = (
            f"{_only(n_before)} before the event and {_only(n_after)} after it "
            f"({needed} on each side)"
        )
    elif short_before:
        text = f"{_only(n_before)} before the event ({needed})"
    else:
        text = f"{_only(n_after)} after the event ({needed})"
    if short_after and event_age_seconds is not None:
        text += f"; the event is {_age(event_age_seconds)} old"
    return text


def _age(seconds: float) -> str:
    if seconds < 120:
        unit, length = "second", 1
    elif seconds < 2 * 3600:
        unit, length = "minute", 60
    elif seconds < 2 * 86400:
        unit, length = "hour", 3600
    else:
        unit, length = "day", 86400
    count = round(seconds / length)
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _left_out_clause(count: int) -> str:
    if count == 0:
        return ""
    if count == 1:
        return "; 1 point that was not a finite number was left out"
    return f"; {count} points that were not finite numbers were left out"
