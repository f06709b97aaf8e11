"""Each freeze and policy kind on its edges, judged as the ingest path and the check endpoint
judge them: time zones, daylight-saving change days, windows that cross midnight, weekly
windows, counts of earlier deployments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.guardrails.rules import at, deployment, freeze, policy, violations
from trailmap.errors import ValidationFailed
from trailmap.guardrails.evaluate import Deployment, Question, Rules
from trailmap.guardrails.rules import Policy, check_freeze, check_policy

# -- freezes ------------------------------------------------------------------------------------

_WEEKEND = {
    "days": ["fri"],
    "start": "16:00",
    "end_day": "mon",
    "end": "08:00",
    "timezone": "Europe/Paris",
}


def test_a_one_off_freeze_holds_its_start_and_not_its_end() -> None:
    rules = [freeze(start="2026-12-20T00:00:00Z", end="2026-12-27T00:00:00Z")]
    assert violations(rules, deployment("2026-12-19T23:59:59+00:00")) == []
    assert violations(rules, deployment("2026-12-20T00:00:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-12-26T23:59:59+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-12-27T00:00:00+00:00")) == []


def test_a_weekend_freeze_runs_from_friday_afternoon_to_monday_morning_in_its_zone() -> None:
    rules = [freeze(recurrence=_WEEKEND)]
    # Friday 2026-12-11, Paris is UTC+1 in winter.
    assert violations(rules, deployment("2026-12-11T15:59:00+01:00")) == []
    assert violations(rules, deployment("2026-12-11T16:00:00+01:00")) == ["freeze"]
    assert violations(rules, deployment("2026-12-13T12:00:00+01:00")) == ["freeze"]
    assert violations(rules, deployment("2026-12-14T07:59:00+01:00")) == ["freeze"]
    assert violations(rules, deployment("2026-12-14T08:00:00+01:00")) == []
    # The same instant written in UTC is judged the same.
    assert violations(rules, deployment("2026-12-11T15:00:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-12-11T14:59:00+00:00")) == []


def test_a_freeze_shows_its_window_and_reason() -> None:
    rules = Rules([freeze(recurrence=_WEEKEND, reason="Weekend")], [])
    [found] = rules.violations(deployment("2026-12-12T10:00:00+01:00"))
    assert found["window"] == {
        "start": "2026-12-11T16:00:00+01:00",
        "end": "2026-12-14T08:00:00+01:00",
    }
    assert found["reason"] == "Weekend"
    assert "Weekend" in found["message"]


def test_a_weekend_freeze_follows_the_clocks_across_the_autumn_change_in_paris() -> None:
    # 2026-10-25: Paris goes from UTC+2 to UTC+1. The freeze from Friday 23 at 16:00 (+02:00)
    # ends on Monday 26 at 08:00 local, which is then +01:00, i.e. 07:00 UTC.
    rules = [freeze(recurrence=_WEEKEND)]
    assert violations(rules, deployment("2026-10-23T14:00:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-10-23T13:59:00+00:00")) == []
    assert violations(rules, deployment("2026-10-26T06:59:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-10-26T07:00:00+00:00")) == []


def test_a_nightly_freeze_that_crosses_midnight_on_the_spring_change_day() -> None:
    # 2026-03-29: Paris skips 02:00-03:00. A 22:00-06:00 freeze from Saturday 28 ends at
    # 06:00 +02:00 = 04:00 UTC, seven hours after it began (21:00 UTC).
    rules = [
        freeze(
            recurrence={
                "days": ["sat"],
                "start": "22:00",
                "end": "06:00",
                "timezone": "Europe/Paris",
            }
        )
    ]
    assert violations(rules, deployment("2026-03-28T20:59:00+00:00")) == []
    assert violations(rules, deployment("2026-03-28T21:00:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-03-29T03:59:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-03-29T04:00:00+00:00")) == []
    # Sunday night is not a listed day.
    assert violations(rules, deployment("2026-03-29T21:00:00+00:00")) == []


def test_a_freeze_starting_in_the_skipped_hour_starts_when_the_clock_shows_it_after() -> None:
    # 02:30 does not exist in New York on 2026-03-08: it is read with the offset before the
    # change (-05:00), i.e. 07:30 UTC, which the clocks show as 03:30 EDT.
    rules = [
        freeze(
            recurrence={
                "days": ["sun"],
                "start": "02:30",
                "end": "05:00",
                "timezone": "America/New_York",
            }
        )
    ]
    assert violations(rules, deployment("2026-03-08T07:29:00+00:00")) == []
    assert violations(rules, deployment("2026-03-08T07:30:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-03-08T08:59:00+00:00")) == ["freeze"]
    assert violations(rules, deployment("2026-03-08T09:00:00+00:00")) == []


def test_a_freeze_covers_only_its_environments_and_services_whatever_their_case() -> None:
    rules = [
        freeze(
            start="2026-12-20T00:00:00Z",
            end="2026-12-27T00:00:00Z",
            environments=["Production"],
            services=["checkout"],
        )
    ]
    during = "2026-12-21T12:00:00+00:00"
    assert violations(rules, deployment(during, environment="production")) == ["freeze"]
    assert violations(rules, deployment(during, service="CHECKOUT")) == ["freeze"]
    assert violations(rules, deployment(during, environment="staging")) == []
    assert violations(rules, deployment(during, environment=None)) == []
    assert violations(rules, deployment(during, service="payments")) == []


def test_a_disabled_freeze_flags_nothing() -> None:
    rules = [freeze(start="2026-12-20T00:00:00Z", end="2026-12-27T00:00:00Z", enabled=False)]
    assert violations(rules, deployment("2026-12-21T12:00:00+00:00")) == []


# -- policies -----------------------------------------------------------------------------------


def test_blocked_days_are_read_in_the_policy_zone() -> None:
    rules = [policy("blocked_days", days=["sat", "sun"], timezone="Pacific/Auckland")]
    # Friday 2026-12-11 11:30 UTC is Saturday 00:30 in Auckland (UTC+13).
    assert violations(rules, deployment("2026-12-11T10:59:00+00:00")) == []
    assert violations(rules, deployment("2026-12-11T11:30:00+00:00")) == ["blocked_days"]


def test_allowed_hours_flag_outside_the_range_and_not_at_its_start() -> None:
    rules = [policy("allowed_hours", start="09:00", end="17:00", timezone="America/New_York")]
    assert violations(rules, deployment("2026-12-10T08:59:00-05:00")) == ["allowed_hours"]
    assert violations(rules, deployment("2026-12-10T09:00:00-05:00")) == []
    assert violations(rules, deployment("2026-12-10T16:59:00-05:00")) == []
    assert violations(rules, deployment("2026-12-10T17:00:00-05:00")) == ["allowed_hours"]


def test_allowed_hours_that_cross_midnight() -> None:
    rules = [policy("allowed_hours", start="22:00", end="06:00", timezone="Europe/Paris")]
    assert violations(rules, deployment("2026-12-10T23:30:00+01:00")) == []
    assert violations(rules, deployment("2026-12-11T05:59:00+01:00")) == []
    assert violations(rules, deployment("2026-12-11T06:00:00+01:00")) == ["allowed_hours"]
    assert violations(rules, deployment("2026-12-10T21:59:00+01:00")) == ["allowed_hours"]


def test_allowed_hours_on_the_autumn_change_day_use_the_wall_clock() -> None:
    # 2026-10-25 in Paris: 08:30 UTC is 09:30 CET (after the change), inside 09:00-17:00;
    # the day before, 08:30 UTC was 10:30 CEST. 07:30 UTC on the change day is 08:30 CET.
    rules = [policy("allowed_hours", start="09:00", end="17:00", timezone="Europe/Paris")]
    assert violations(rules, deployment("2026-10-25T08:30:00+00:00")) == []
    assert violations(rules, deployment("2026-10-25T07:30:00+00:00")) == ["allowed_hours"]
    assert violations(rules, deployment("2026-10-24T07:30:00+00:00")) == []


def _asked(rule: Policy, dep: Deployment) -> Question:
    [question] = Rules([], [rule]).questions(dep)
    return question


def test_the_daily_cap_counts_from_the_local_midnight_up_to_its_cap() -> None:
    cap = policy("daily_cap", max=2, timezone="America/New_York")
    dep = deployment("2026-12-10T12:00:00+00:00")
    # 2026-12-10 in New York starts at 05:00 UTC; past 2 earlier ones it cannot change.
    assert _asked(cap, dep) == Question(cap.id, "count", at("2026-12-10T05:00:00+00:00"), 2)
    assert violations([cap], dep, {cap.id: 1}) == []
    assert violations([cap], dep, {cap.id: 2}) == ["daily_cap"]


def test_the_daily_cap_day_on_the_spring_change_in_paris_lasts_23_hours() -> None:
    cap = policy("daily_cap", max=1, timezone="Europe/Paris")
    # 2026-03-29 in Paris starts at 23:00 UTC on the 28th (still +01:00).
    late = deployment("2026-03-29T21:59:00+00:00")
    assert _asked(cap, late).from_us == at("2026-03-28T23:00:00+00:00")
    # 2026-10-25 starts at 22:00 UTC on the 24th (still +02:00) and lasts 25 hours.
    autumn = deployment("2026-10-25T22:30:00+00:00")
    assert _asked(cap, autumn).from_us == at("2026-10-24T22:00:00+00:00")


def test_the_cooldown_asks_for_the_latest_within_its_minutes() -> None:
    rule = policy("cooldown", minutes=30)
    dep = deployment("2026-12-10T12:29:59+00:00")
    assert _asked(rule, dep) == Question(rule.id, "latest", at("2026-12-10T11:59:59+00:00") + 1)
    assert violations([rule], dep, {rule.id: at("2026-12-10T12:00:00+00:00")}) == ["cooldown"]
    assert violations([rule], dep, {rule.id: None}) == []
    [found] = Rules([], [rule]).violations(dep, {rule.id: at("2026-12-10T12:00:00+00:00")})
    assert "30 min after the previous deployment" in found["message"]


def test_velocity_counts_a_rolling_hour_including_the_deployment() -> None:
    rule = policy("max_velocity_per_hour", max=2)
    dep = deployment("2026-12-10T12:00:00+00:00")
    assert _asked(rule, dep) == Question(rule.id, "count", at("2026-12-10T11:00:00+00:00") + 1, 2)
    assert violations([rule], dep, {rule.id: 1}) == []
    assert violations([rule], dep, {rule.id: 2}) == ["max_velocity_per_hour"]


def test_the_rollback_rate_needs_its_minimum_of_deployments() -> None:
    rule = policy("max_rollback_rate", max_percent=20, window_days=7, min_deployments=5)
    now = deployment("2026-12-10T12:00:00+00:00")
    rollback = deployment("2026-12-10T12:00:00+00:00", type="rollback")
    asked = _asked(rule, now)
    assert (asked.what, asked.from_us) == ("rate", at("2026-12-03T12:00:00+00:00"))
    # 1 rollback in 4 (3 earlier and this one): below the minimum of 5 deployments.
    assert violations([rule], now, {rule.id: (3, 1)}) == []
    # 1 in 5 is 20%: not above.
    assert violations([rule], now, {rule.id: (4, 1)}) == []
    # A rollback now makes 2 in 5 = 40%.
    [found] = Rules([], [rule]).violations(rollback, {rule.id: (4, 1)})
    assert found["kind"] == "max_rollback_rate"
    assert "2 rollbacks in 5 deployments" in found["message"]


def test_policies_cover_only_their_scope() -> None:
    rule = policy("cooldown", minutes=30, services=["checkout"], environments=["production"])
    when = "2026-12-10T12:10:00+00:00"
    latest = {rule.id: at("2026-12-10T12:00:00+00:00")}
    assert violations([rule], deployment(when), latest) == ["cooldown"]
    assert violations([rule], deployment(when, service="payments"), latest) == []
    assert violations([rule], deployment(when, environment="staging"), latest) == []
    assert Rules([], [rule]).questions(deployment(when, environment="staging")) == []


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "start": "2026-12-20T00:00:00Z", "end": "2026-12-19T00:00:00Z"}, "end"),
        ({"name": "x", "start": "2026-12-20T00:00:00", "end": "2026-12-21T00:00:00Z"}, "start"),
        (
            {
                "name": "x",
                "recurrence": {
                    "days": ["fri"],
                    "start": "16:00",
                    "end": "08:00",
                    "timezone": "Mars/Olympus",
                },
            },
            "recurrence.timezone",
        ),
        (
            {"name": "x", "recurrence": {"days": ["friyay"], "start": "16:00", "end": "08:00"}},
            "recurrence.days",
        ),
        (
            {"name": "x", "recurrence": {"days": ["fri"], "start": "25:00", "end": "08:00"}},
            "recurrence.start",
        ),
        ({"name": "", "start": "2026-12-20T00:00:00Z", "end": "2026-12-21T00:00:00Z"}, "name"),
        ({"name": "x"}, "start"),
    ],
)
def test_a_bad_freeze_is_refused_naming_its_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_freeze(body, datetime.now(UTC))
    assert field in {d.field for d in refused.value.details}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "no_fridays", "name": "x", "settings": {}}, "kind"),
        (
            {"kind": "allowed_hours", "name": "x", "settings": {"start": "09:00", "end": "09:00"}},
            "settings.end",
        ),
        (
            {
                "kind": "allowed_hours",
                "name": "x",
                "settings": {"start": "09:00", "end": "17:00", "timezone": "Paris"},
            },
            "settings.timezone",
        ),
        ({"kind": "daily_cap", "name": "x", "settings": {"max": 0}}, "settings.max"),
        ({"kind": "cooldown", "name": "x", "settings": {"minutes": "ten"}}, "settings.minutes"),
        (
            {"kind": "cooldown", "name": "x", "settings": {"minutes": 5, "hours": 1}},
            "settings.hours",
        ),
        (
            {"kind": "max_rollback_rate", "name": "x", "settings": {"max_percent": 120}},
            "settings.max_percent",
        ),
        ({"kind": "blocked_days", "name": "x", "settings": {"days": []}}, "settings.days"),
    ],
)
def test_a_bad_policy_is_refused_naming_its_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        check_policy(body)
    assert field in {d.field for d in refused.value.details}
