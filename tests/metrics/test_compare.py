"""The before/after comparison: its Mann-Whitney U test checked against SciPy's, its summaries
against numpy and ``statistics``, and its verdicts on series whose answer is known."""

from __future__ import annotations

import math
import re
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu  # type: ignore[import-untyped]  # SciPy ships no types

from trailmap.metrics.compare import Comparison, compare, mann_whitney_u

_PROPERTY = settings(max_examples=300, deadline=None)
_TEST = "(Mann-Whitney U, two-sided)"

# Small integers make ties likely; bounded floats make them rare.
_tied_values = st.integers(min_value=0, max_value=6).map(float)
_spread_values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
_values = st.one_of(_tied_values, _spread_values)


def _scipy_u_and_p(x: list[float], y: list[float]) -> tuple[float, float]:
    """SciPy's answer in our orientation: its statistic is that of x, ours that of y."""
    result = mannwhitneyu(x, y, alternative="two-sided", method="auto")
    return len(x) * len(y) - float(result.statistic), float(result.pvalue)


def _expected_method(x: list[float], y: list[float]) -> str:
    ties = len(set(x + y)) < len(x) + len(y)
    return "asymptotic" if (len(x) > 8 and len(y) > 8) or ties else "exact"


def _normal(seed: int, n: int, mean: float, sd: float = 1.0) -> list[float]:
    return [float(v) for v in np.random.default_rng(seed).normal(mean, sd, n)]


def _check_against_scipy(x: list[float], y: list[float]) -> None:
    ours = mann_whitney_u(x, y)
    u, p_value = _scipy_u_and_p(x, y)
    assert ours.method == _expected_method(x, y)
    assert ours.u == u
    rel_tol = 1e-9 if ours.method == "exact" else 1e-6
    assert math.isclose(ours.p_value, p_value, rel_tol=rel_tol, abs_tol=1e-300)


@_PROPERTY
@given(
    x=st.lists(st.one_of(_tied_values, _spread_values), min_size=1, max_size=12),
    y=st.lists(st.one_of(_tied_values, _spread_values), min_size=1, max_size=30),
)
def test_small_samples_get_scipys_p_value_and_method_with_and_without_ties(
    x: list[float], y: list[float]
) -> None:
    _check_against_scipy(x, y)


@_PROPERTY
@given(
    values=st.lists(_spread_values.map(abs), min_size=2, max_size=40, unique=True),
    data=st.data(),
)
def test_samples_without_ties_with_one_of_at_most_eight_points_get_scipys_exact_p_value(
    values: list[float], data: st.DataObject
) -> None:
    size = data.draw(st.integers(min_value=1, max_value=min(8, len(values) - 1)))
    x, y = (
        (values[:size], values[size:])
        if data.draw(st.booleans())
        else (values[size:], values[:size])
    )
    assert mann_whitney_u(x, y).method == "exact"
    _check_against_scipy(x, y)


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(_values, min_size=9, max_size=300),
    y=st.lists(_values, min_size=9, max_size=300),
)
def test_larger_samples_get_scipys_asymptotic_p_value(x: list[float], y: list[float]) -> None:
    _check_against_scipy(x, y)


def test_a_small_sample_against_a_large_one_without_ties_gets_the_exact_p_value() -> None:
    x = _normal(1, 8, 0.3)
    y = _normal(2, 1440, 0.0)
    assert mann_whitney_u(x, y).method == "exact"
    _check_against_scipy(x, y)


def test_scipys_documented_example_gives_its_u_and_p_value() -> None:
    males = [19.0, 22.0, 16.0, 29.0, 24.0]
    females = [20.0, 11.0, 17.0, 12.0]

    result = mann_whitney_u(males, females)

    assert result.u == 3.0  # the females' U; the males' is 17
    assert result.method == "exact"
    assert math.isclose(result.p_value, 1 / 9, rel_tol=1e-12)


def test_u_counts_the_pairs_in_which_y_is_larger_with_ties_counting_half() -> None:
    assert mann_whitney_u([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).u == 9.0
    assert mann_whitney_u([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]).u == 0.0
    assert mann_whitney_u([1.0, 2.0], [2.0, 3.0]).u == 3.5


@pytest.mark.parametrize(("x_size", "y_size"), [(1, 1), (3, 5), (40, 40)])
def test_samples_of_one_repeated_value_have_p_value_one(x_size: int, y_size: int) -> None:
    result = mann_whitney_u([0.25] * x_size, [0.25] * y_size)
    assert result.p_value == 1.0
    assert result.u == x_size * y_size / 2


@pytest.mark.parametrize(("x", "y"), [([], [1.0]), ([1.0], []), ([], [])])
def test_an_empty_sample_is_refused(x: list[float], y: list[float]) -> None:
    with pytest.raises(ValueError, match="at least one point"):
        mann_whitney_u(x, y)


def test_a_nan_in_a_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        mann_whitney_u([1.0, math.nan], [2.0])


def test_a_shift_of_one_standard_deviation_up_is_an_increase() -> None:
    before, after = _normal(11, 60, 10.0), _normal(12, 60, 11.0)

    result = compare(before, after)

    assert result.verdict == "increased"
    assert result.p_value is not None
    assert result.p_value < 0.01
    assert result.method == "asymptotic"
    assert (result.u, result.p_value) == pytest.approx(_scipy_u_and_p(before, after), rel=1e-9)
    assert result.reason.startswith("after the event the mean rose from ")
    assert result.reason.endswith(_TEST)


def test_a_shift_of_one_standard_deviation_down_is_a_decrease() -> None:
    before, after = _normal(12, 60, 11.0), _normal(11, 60, 10.0)

    result = compare(before, after)

    assert result.verdict == "decreased"
    assert result.p_value is not None
    assert result.p_value < 0.01
    assert result.reason.startswith("after the event the mean fell from ")


def test_the_same_points_on_both_sides_are_no_significant_change() -> None:
    points = _normal(5, 60, 10.0)

    result = compare(points, list(points))

    assert result.verdict == "no significant change"
    assert result.p_value == 1.0
    assert result.absolute_change == 0.0
    assert result.reason.startswith("no significant change: the mean stayed at ")


def test_two_draws_from_one_distribution_are_no_significant_change() -> None:
    result = compare(_normal(21, 120, 10.0), _normal(22, 120, 10.0))

    assert result.verdict == "no significant change"
    assert result.p_value is not None
    assert result.p_value >= 0.01
    assert result.reason.endswith(f"{_TEST}, not below 0.01")


def test_an_error_rate_going_from_half_a_percent_to_five_percent_is_an_increase() -> None:
    rng = np.random.default_rng(7)
    requests = 1000  # a minute's requests
    before = [float(v) / requests for v in rng.binomial(requests, 0.005, 120)]
    after = [float(v) / requests for v in rng.binomial(requests, 0.05, 120)]

    result = compare(before, after)

    assert result.verdict == "increased"
    assert result.p_value is not None
    assert result.p_value < 0.01
    assert result.relative_change is not None
    assert result.relative_change > 5
    pattern = (
        r"after the event the mean rose from 0\.00\d+ to 0\.0\d+ \(\+\d+%\), "
        r"p = \d(\.\d)?e-\d+ \(Mann-Whitney U, two-sided\)"
    )
    assert re.fullmatch(pattern, result.reason), result.reason


def test_a_constant_series_unchanged_by_the_event_is_no_significant_change_with_p_one() -> None:
    result = compare([0.5] * 30, [0.5] * 30)

    assert result.verdict == "no significant change"
    assert result.p_value == 1.0
    assert result.reason == (
        "no significant change: every point before and after the event was 0.5, "
        "p = 1 (Mann-Whitney U, two-sided)"
    )


def test_small_samples_allowed_by_min_points_are_judged_by_the_exact_distribution() -> None:
    result = compare([1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0], min_points=5)

    assert result.method == "exact"
    assert result.p_value == pytest.approx(2 / 252, rel=1e-12)  # 2 of the C(10, 5) orderings
    assert result.verdict == "increased"
    assert result.reason == (
        "after the event the mean rose from 3 to 8 (+167%), "
        "p = 0.0079 (Mann-Whitney U, two-sided, exact)"
    )


def test_too_few_points_after_the_event_is_not_enough_data_and_says_how_old_the_event_is() -> None:
    result = compare(_normal(1, 60, 1.0), _normal(2, 4, 1.0), event_age_seconds=240)

    assert result.verdict == "not enough data"
    assert result.reason == (
        "only 4 points after the event (at least 10 are needed); the event is 4 minutes old"
    )
    assert (result.p_value, result.u, result.method) == (None, None, None)
    assert (result.before.n, result.after.n) == (60, 4)


def test_too_few_points_before_the_event_is_not_enough_data_naming_that_side() -> None:
    result = compare([1.0, 2.0, 3.0], _normal(2, 60, 1.0), event_age_seconds=3600)

    assert result.verdict == "not enough data"
    assert result.reason == "only 3 points before the event (at least 10 are needed)"


def test_too_few_points_on_both_sides_names_both_counts() -> None:
    result = compare([1.0], [], min_points=5)

    assert result.verdict == "not enough data"
    assert result.reason == (
        "only 1 point before the event and no points after it (at least 5 are needed on each side)"
    )
    assert result.after.mean is None
    assert result.absolute_change is None


def test_the_verdict_follows_the_ranks_when_one_outlier_drags_the_mean_the_other_way() -> None:
    before = [1.0 + 0.01 * i for i in range(29)] + [1000.0]
    after = [2.0 + 0.01 * i for i in range(30)]

    result = compare(before, after)

    assert result.absolute_change is not None
    assert result.absolute_change < 0
    assert result.verdict == "increased"
    assert result.reason.startswith(
        "after the event the points tended higher (the median went from 1.15 to 2.15) "
        "although the mean fell from "
    )


def test_a_significant_but_negligible_change_is_no_significant_change() -> None:
    before, after = _normal(31, 120, 100.0, sd=0.1), _normal(32, 120, 101.0, sd=0.1)

    result = compare(before, after)

    assert result.p_value is not None
    assert result.p_value < 1e-10
    assert result.verdict == "no significant change"
    assert "less than the 5% that counts as a change" in result.reason


def test_a_metric_rising_from_a_mean_of_zero_is_an_increase_without_a_relative_change() -> None:
    before = [0.0] * 60
    after = [0.0] * 30 + [0.01 * (i % 3 + 1) for i in range(30)]

    result = compare(before, after)

    assert result.verdict == "increased"
    assert result.relative_change is None
    assert result.absolute_change == pytest.approx(0.01)
    assert result.reason.startswith("after the event the mean rose from 0 to 0.01, p = ")


def test_points_that_are_not_finite_numbers_are_left_out_and_counted_in_the_reason() -> None:
    before = [*_normal(1, 20, 1.0), math.nan, math.inf]
    after = [*_normal(2, 20, 1.0), math.nan]

    result = compare(before, after)

    assert (result.before.n, result.after.n) == (20, 20)
    assert result.reason.endswith("; 3 points that were not finite numbers were left out")


def test_compare_does_not_modify_its_inputs() -> None:
    before = [3.0, 1.0, math.nan, 2.0] * 5
    after = (9.0, 7.0, 8.0) * 5
    before_copy, after_copy = list(before), after

    compare(before, after)

    assert before[:2] == before_copy[:2]
    assert [v for v in before if not math.isnan(v)] == [v for v in before_copy if not math.isnan(v)]
    assert [math.isnan(v) for v in before] == [math.isnan(v) for v in before_copy]
    assert after == after_copy


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(_values, min_size=1, max_size=200),
    after=st.lists(_values, min_size=1, max_size=200),
)
def test_summaries_agree_with_statistics_and_numpy(before: list[float], after: list[float]) -> None:
    result = compare(before, after, min_points=1)

    for side, points in ((result.before, before), (result.after, after)):
        assert side.n == len(points)
        assert side.mean == pytest.approx(statistics.fmean(points), rel=1e-12, abs=1e-9)
        assert side.median == pytest.approx(statistics.median(points), rel=1e-12, abs=1e-9)
        assert side.p95 == pytest.approx(float(np.percentile(points, 95)), rel=1e-12, abs=1e-9)


def test_a_side_without_points_has_a_summary_of_nones() -> None:
    result = compare([], [1.0, 2.0])

    assert (result.before.n, result.before.mean, result.before.median, result.before.p95) == (
        0,
        None,
        None,
        None,
    )
    assert result.after.p95 == pytest.approx(1.95)


@pytest.mark.parametrize(
    "settings_",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"min_points": 0},
        {"min_relative_change": -0.1},
        {"event_age_seconds": -1.0},
    ],
)
def test_settings_out_of_range_are_refused(settings_: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        compare([1.0] * 10, [2.0] * 10, **settings_)  # type: ignore[arg-type]


def test_a_comparison_is_frozen() -> None:
    result = compare([1.0] * 10, [1.0] * 10)
    assert isinstance(result, Comparison)
    with pytest.raises(AttributeError):
        result.verdict = "increased"  # type: ignore[misc]
