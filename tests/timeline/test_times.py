"""Tests for reading and showing times: query bounds, event times, zones and formatting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trailmap.clock import from_us, to_us
from trailmap.timeline.times import (
    TimeExpressionError,
    format_relative,
    format_time,
    parse_duration,
    parse_event_time,
    parse_time_expression,
    resolve_timezone,
)

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def query(text: str, *, now: datetime = NOW, tz: ZoneInfo = PARIS) -> datetime:
    return parse_time_expression(text, now=now, tz=tz)


def utc(year: int, month: int, day: int, *clock: int) -> datetime:
    hour, minute, second, microsecond = (*clock, 0, 0, 0, 0)[:4]
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


# Strings shaped like the accepted forms, so the property tests reach the date arithmetic
# and range checks rather than stopping at the first character that matches nothing.
near_misses = st.one_of(
    st.text(),
    st.text(alphabet="0123456789-+:.,TZtz WGMTsmhdw"),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,12})?)?"
        r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?\Z"
    ),
    st.from_regex(r"\A *[+-]? *[0-9]{1,20} *(s|sec|m|min|h|hr|hours?|d|days?|w|weeks?) *\Z"),
    st.from_regex(
        r"\A(Mon, |Fri, )?[0-9]{1,2} (Jan|Feb|Nov|Dec) [0-9]{1,5} [0-9]{1,2}:[0-9]{2}"
        r"(:[0-9]{2})? ?(GMT|UT|EST|[+-][0-9]{4}|XYZ)?\Z"
    ),
)
any_aware_now = st.datetimes(timezones=st.just(UTC))
some_zones = st.sampled_from(
    [ZoneInfo(name) for name in ("UTC", "Europe/Paris", "Pacific/Kiritimati", "Etc/GMT+12")]
)


# resolve_timezone


def test_an_iana_name_resolves_to_that_zone() -> None:
    assert resolve_timezone("America/New_York") == NEW_YORK


def test_utc_and_z_are_accepted_in_any_case() -> None:
    for name in ("UTC", "utc", "Utc", "Z", "z"):
        assert resolve_timezone(name) == ZoneInfo("UTC")


def test_no_name_means_the_default_zone() -> None:
    assert resolve_timezone(None) == ZoneInfo("UTC")
    assert resolve_timezone("") == ZoneInfo("UTC")
    assert resolve_timezone(None, default="Europe/Paris") == PARIS


def test_surrounding_whitespace_in_a_zone_name_is_ignored() -> None:
    assert resolve_timezone(" Europe/Paris ") == PARIS


@pytest.mark.parametrize(
    "name",
    [
        "Mars/Base",
        "../etc/passwd",
        "/etc/passwd",
        "Europe/../../etc",
        "America",
        "a\x00b",
        "x" * 300,
    ],
)
def test_unknown_or_malformed_zone_names_are_refused_with_examples(name: str) -> None:
    with pytest.raises(TimeExpressionError) as caught:
        resolve_timezone(name)
    message = str(caught.value)
    assert "Europe/Paris" in message
    assert "America/New_York" in message
    assert "UTC" in message


def test_the_refusal_names_the_zone_that_was_sent() -> None:
    with pytest.raises(TimeExpressionError, match="Mars/Base"):
        resolve_timezone("Mars/Base")


def test_zone_names_are_case_sensitive_like_the_tz_database() -> None:
    with pytest.raises(TimeExpressionError):
        resolve_timezone("europe/paris")


def test_an_invalid_default_is_refused_too() -> None:
    with pytest.raises(TimeExpressionError):
        resolve_timezone(None, default="")


def test_a_time_expression_error_is_a_value_error() -> None:
    assert issubclass(TimeExpressionError, ValueError)


# Query bounds: relative amounts


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("-30m", timedelta(minutes=30)),
        ("-2h", timedelta(hours=2)),
        ("-7d", timedelta(days=7)),
        ("-1w", timedelta(weeks=1)),
        ("-45s", timedelta(seconds=45)),
        ("-90min", timedelta(minutes=90)),
        ("-2 h", timedelta(hours=2)),
        ("- 2h", timedelta(hours=2)),
        ("2h", timedelta(hours=2)),
        ("-3hr", timedelta(hours=3)),
        ("-1 hour", timedelta(hours=1)),
        ("-5 hours", timedelta(hours=5)),
        ("-10sec", timedelta(seconds=10)),
        ("-1 day", timedelta(days=1)),
        ("-3 days", timedelta(days=3)),
        ("-2 weeks", timedelta(weeks=2)),
        ("-1 week", timedelta(weeks=1)),
        ("-15 minutes", timedelta(minutes=15)),
        ("-0m", timedelta(0)),
    ],
)
def test_relative_amounts_count_back_from_now(text: str, ago: timedelta) -> None:
    assert query(text) == NOW - ago


def test_relative_amounts_ignore_case_and_surrounding_whitespace() -> None:
    assert query("  -2H ") == NOW - timedelta(hours=2)
    assert query("-30MIN") == NOW - timedelta(minutes=30)


def test_a_plus_sign_counts_forward_from_now() -> None:
    assert query("+1d") == NOW + timedelta(days=1)


def test_relative_results_are_in_utc_whatever_the_zone_of_now() -> None:
    result = query("-1h", now=NOW.astimezone(NEW_YORK))
    assert result == NOW - timedelta(hours=1)
    assert result.tzinfo is UTC


def test_a_relative_amount_up_to_a_hundred_years_is_accepted() -> None:
    assert query("-5200w") == NOW - timedelta(weeks=5200)


@pytest.mark.parametrize("text", ["-36526d", "-5300w", "-99999999999999h", "+36526d"])
def test_a_relative_amount_over_a_hundred_years_is_refused(text: str) -> None:
    with pytest.raises(TimeExpressionError, match="100 years"):
        query(text)


def test_a_relative_amount_past_year_one_is_refused_not_overflowed() -> None:
    with pytest.raises(TimeExpressionError):
        query("-2d", now=datetime(1, 1, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize("text", ["30", "-30", "-1.5h", "-2y", "-2 mo", "--2h", "-2h ago"])
def test_relative_amounts_need_a_whole_number_and_a_known_unit(text: str) -> None:
    with pytest.raises(TimeExpressionError):
        query(text)


# Query bounds: now, today, yesterday


def test_now_is_now_in_utc() -> None:
    assert query("now", now=NOW.astimezone(PARIS)) == NOW
    assert query(" NOW ").tzinfo is UTC


def test_today_is_the_start_of_today_in_the_zone() -> None:
    assert query("today") == utc(2026, 11, 19, 23)
    assert query("Today", tz=ZoneInfo("UTC")) == utc(2026, 11, 20)


def test_yesterday_is_the_start_of_yesterday_in_the_zone() -> None:
    assert query("yesterday") == utc(2026, 11, 18, 23)


def test_today_follows_the_zone_date_not_the_utc_date() -> None:
    # 03:00 UTC is still the evening before in New York.
    early = utc(2026, 11, 20, 3)
    assert query("today", now=early, tz=NEW_YORK) == utc(2026, 11, 19, 5)


def test_day_boundaries_follow_the_calendar_across_a_dst_change() -> None:
    # Paris moved to summer time on 2026-03-29, a 23-hour day.
    now = utc(2026, 3, 30, 10)
    assert query("today", now=now) == utc(2026, 3, 29, 22)
    assert query("yesterday", now=now) == utc(2026, 3, 28, 23)


# Query bounds: ISO 8601 and RFC 2822


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00Z", utc(2026, 11, 20, 10)),
        ("2026-11-20t10:00:00z", utc(2026, 11, 20, 10)),
        ("2026-11-20T10:00:00+01:00", utc(2026, 11, 20, 9)),
        ("2026-11-20T10:00:00-05:30", utc(2026, 11, 20, 15, 30)),
        ("2026-11-20T10:00:00+0100", utc(2026, 11, 20, 9)),
        ("2026-11-20T10:00:00+01", utc(2026, 11, 20, 9)),
        ("2026-11-20T10:00:00.5Z", utc(2026, 11, 20, 10, 0, 0, 500000)),
        ("2026-11-20T10:00:00.123456Z", utc(2026, 11, 20, 10, 0, 0, 123456)),
        ("2026-11-20T10:00:00.123456789Z", utc(2026, 11, 20, 10, 0, 0, 123456)),
        ("2026-11-20T10:00:00,25Z", utc(2026, 11, 20, 10, 0, 0, 250000)),
        ("2026-11-20T10:00Z", utc(2026, 11, 20, 10)),
        ("1900-01-01T00:09:21+00:09:21", utc(1900, 1, 1)),
    ],
)
def test_iso_times_with_a_zone_keep_their_zone(text: str, expected: datetime) -> None:
    result = query(text)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00", utc(2026, 11, 20, 9)),
        ("2026-11-20 10:00:00", utc(2026, 11, 20, 9)),
        ("2026-07-20T10:00:00.250", utc(2026, 7, 20, 8, 0, 0, 250000)),
    ],
)
def test_iso_times_without_a_zone_are_wall_time_in_the_zone(text: str, expected: datetime) -> None:
    assert query(text) == expected


def test_a_date_alone_is_the_start_of_that_day_in_the_zone() -> None:
    assert query("2026-11-20") == utc(2026, 11, 19, 23)
    assert query("2026-11-20", tz=NEW_YORK) == utc(2026, 11, 20, 5)


def test_a_skipped_wall_time_takes_the_offset_from_before_the_change() -> None:
    # 02:30 did not exist in Paris on 2026-03-29; fold=0 reads it with +01:00.
    assert query("2026-03-29T02:30") == utc(2026, 3, 29, 1, 30)


def test_a_repeated_wall_time_means_its_first_occurrence() -> None:
    # 02:30 happened twice in Paris on 2026-10-25; fold=0 is the earlier, at +02:00.
    assert query("2026-10-25T02:30") == utc(2026, 10, 25, 0, 30)


def test_a_leap_second_becomes_the_start_of_the_next_minute() -> None:
    assert query("2016-12-31T23:59:60Z") == utc(2017, 1, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fri, 20 Nov 2026 10:00:00 +0000", utc(2026, 11, 20, 10)),
        ("Fri, 20 Nov 2026 10:00:00 GMT", utc(2026, 11, 20, 10)),
        ("fri, 20 nov 2026 10:00:00 gmt", utc(2026, 11, 20, 10)),
        ("Fri, 20 Nov 2026 10:00:00 +0200", utc(2026, 11, 20, 8)),
        ("20 Nov 2026 10:00:00 -0500", utc(2026, 11, 20, 15)),
    ],
)
def test_rfc_2822_times_are_read(text: str, expected: datetime) -> None:
    assert query(text) == expected


def test_an_rfc_2822_time_marked_as_zoneless_is_wall_time_in_the_zone() -> None:
    # RFC 2822 spells "no zone information" as -0000.
    assert query("Fri, 20 Nov 2026 10:00:00 -0000") == utc(2026, 11, 20, 9)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "soon",
        "last week",
        "2026-02-30",
        "2026-13-01T00:00Z",
        "2026-11-20T25:00Z",
        "2026-11-20T10:00:00+24:00",
        "2026-11-20T10:00:00+01:60",
        "0000-01-01",
        "20261120",
        "2026-11-20x10:00",
        "2026-11-20T10:00:00 Z",
        "Fri, 20 Nov 2026",
        "x" * 1000,
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(TimeExpressionError):
        query(text)


def test_the_refusal_lists_the_accepted_forms() -> None:
    with pytest.raises(TimeExpressionError) as caught:
        query("soon")
    message = str(caught.value)
    for form in ("'soon'", "-2h", "now", "today", "yesterday", "2026-11-20T10:00:00Z"):
        assert form in message
    assert "RFC 2822" in message


def test_an_impossible_date_says_what_is_wrong_with_it() -> None:
    with pytest.raises(TimeExpressionError, match="day is out of range"):
        query("2026-02-30")


def test_a_long_refused_text_is_shortened_in_the_message() -> None:
    with pytest.raises(TimeExpressionError) as caught:
        query("y" * 150)
    assert "y" * 100 not in str(caught.value)


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59"]
)
def test_times_that_leave_the_datetime_range_in_utc_are_refused(text: str) -> None:
    with pytest.raises(TimeExpressionError, match="years 1 to 9999"):
        query(text, tz=ZoneInfo("America/Los_Angeles"))


def test_a_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as caught:
        query("now", now=datetime(2026, 11, 20))  # noqa: DTZ001 - the point of the test
    assert not isinstance(caught.value, TimeExpressionError)


@given(text=near_misses, now=any_aware_now, tz=some_zones)
def test_any_text_gives_a_utc_time_or_a_time_expression_error(
    text: str, now: datetime, tz: ZoneInfo
) -> None:
    try:
        result = parse_time_expression(text, now=now, tz=tz)
    except TimeExpressionError:
        return
    assert result.tzinfo is UTC


# parse_event_time


def event_time(text: str) -> datetime:
    return parse_event_time(text, now=NOW)


@pytest.mark.parametrize("text", ["NOW", "now", " Now "])
def test_now_in_any_case_is_the_server_time(text: str) -> None:
    assert event_time(text) == NOW


def test_now_for_an_event_is_given_in_utc() -> None:
    result = parse_event_time("NOW", now=NOW.astimezone(PARIS))
    assert result == NOW
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00Z", utc(2026, 11, 20, 10)),
        ("2026-11-20T10:00:00+02:00", utc(2026, 11, 20, 8)),
        ("2026-11-20T10:00:00.123Z", utc(2026, 11, 20, 10, 0, 0, 123000)),
        ("2023-03-20T14:27:05.315384Z", utc(2023, 3, 20, 14, 27, 5, 315384)),
        ("Fri, 20 Nov 2026 10:00:00 +0000", utc(2026, 11, 20, 10)),
        ("Fri, 20 Nov 2026 10:00:00 GMT", utc(2026, 11, 20, 10)),
        ("1969-07-20T20:17:40Z", utc(1969, 7, 20, 20, 17, 40)),
        ("0001-01-01T00:00:00Z", utc(1, 1, 1)),
        ("9999-12-31T23:59:59.999999Z", utc(9999, 12, 31, 23, 59, 59, 999999)),
    ],
)
def test_event_times_with_a_zone_are_read_in_utc(text: str, expected: datetime) -> None:
    result = event_time(text)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-20T10:00:00",
        "2026-11-20 10:00",
        "2026-11-20",
        "Fri, 20 Nov 2026 10:00:00 -0000",
        "Fri, 20 Nov 2026 10:00:00",
    ],
)
def test_an_event_time_without_a_zone_is_refused_with_how_to_add_one(text: str) -> None:
    with pytest.raises(TimeExpressionError) as caught:
        event_time(text)
    message = str(caught.value)
    assert "has no time zone" in message
    assert "add Z or an offset such as +02:00" in message
    assert "2026-11-20T10:00:00Z" in message


@pytest.mark.parametrize("text", ["-2h", "today", "yesterday", "garbage", "", "1700000000"])
def test_query_words_and_garbage_are_not_event_times(text: str) -> None:
    with pytest.raises(TimeExpressionError) as caught:
        event_time(text)
    message = str(caught.value)
    assert "2026-11-20T10:00:00Z" in message
    assert "NOW" in message


@pytest.mark.parametrize(
    "text", ["0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "10000-01-01T00:00:00Z"]
)
def test_event_times_beyond_the_datetime_range_are_refused(text: str) -> None:
    with pytest.raises(TimeExpressionError):
        event_time(text)


def test_an_event_time_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(TimeExpressionError, match="must be a string"):
        parse_event_time(1700000000, now=NOW)  # type: ignore[arg-type]


@given(text=near_misses, now=any_aware_now)
def test_any_text_gives_an_event_time_or_a_time_expression_error(text: str, now: datetime) -> None:
    try:
        result = parse_event_time(text, now=now)
    except TimeExpressionError:
        return
    assert result.tzinfo is UTC


@given(
    moment=st.datetimes(
        min_value=datetime(2, 1, 1),  # noqa: DTZ001 - bounds for a zone-aware strategy
        max_value=datetime(9998, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    offset_minutes=st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_an_iso_event_time_reads_back_as_the_same_instant(
    moment: datetime, offset_minutes: int
) -> None:
    shown = moment.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()
    assert parse_event_time(shown, now=NOW) == moment


# to_us and from_us


def test_the_epoch_is_zero_microseconds() -> None:
    assert to_us(utc(1970, 1, 1)) == 0
    assert from_us(0) == utc(1970, 1, 1)


def test_micros_are_exact_at_the_far_end_of_the_range() -> None:
    # A float would round this; the integer path must not.
    last = utc(9999, 12, 31, 23, 59, 59, 999999)
    assert to_us(last) == 253402300799999999
    assert from_us(253402300799999999) == last


def test_micros_before_the_epoch_are_negative() -> None:
    assert to_us(utc(1969, 12, 31, 23, 59, 59, 999999)) == -1


def test_micros_count_the_instant_not_the_wall_clock() -> None:
    assert to_us(datetime(1970, 1, 1, 1, tzinfo=PARIS)) == 0


def test_from_micros_gives_utc() -> None:
    assert from_us(1).tzinfo is UTC


def test_micros_outside_the_datetime_range_are_a_value_error() -> None:
    with pytest.raises(ValueError, match="outside"):
        from_us(10**20)


def test_a_naive_datetime_has_no_micros() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        to_us(datetime(2026, 11, 20))  # noqa: DTZ001 - the point of the test


@given(moment=st.datetimes(timezones=st.just(UTC)))
def test_datetimes_round_trip_through_micros(moment: datetime) -> None:
    assert from_us(to_us(moment)) == moment


@given(
    us=st.integers(
        min_value=to_us(datetime.min.replace(tzinfo=UTC)),
        max_value=to_us(datetime.max.replace(tzinfo=UTC)),
    )
)
def test_micros_round_trip_through_datetimes(us: int) -> None:
    assert to_us(from_us(us)) == us


# format_time


def test_format_time_shows_the_offset_of_the_zone() -> None:
    assert format_time(utc(2026, 11, 20, 10), PARIS) == "2026-11-20T11:00:00+01:00"
    assert format_time(utc(2026, 7, 20, 10), PARIS) == "2026-07-20T12:00:00+02:00"
    assert format_time(utc(2026, 11, 20, 10), ZoneInfo("UTC")) == "2026-11-20T10:00:00+00:00"


def test_format_time_shows_milliseconds_only_when_there_are_some() -> None:
    assert format_time(utc(2026, 11, 20, 10, 0, 0, 123456), PARIS) == (
        "2026-11-20T11:00:00.123+01:00"
    )
    assert format_time(utc(2026, 11, 20, 10, 0, 0, 999), PARIS) == "2026-11-20T11:00:00+01:00"


def test_format_time_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 11, 20), PARIS)  # noqa: DTZ001 - the point of the test


@given(
    moment=st.datetimes(
        min_value=datetime(2, 1, 1),  # noqa: DTZ001 - bounds for a zone-aware strategy
        max_value=datetime(9998, 12, 31),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    tz=some_zones,
)
def test_a_formatted_time_reads_back_to_the_millisecond(moment: datetime, tz: ZoneInfo) -> None:
    expected = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert parse_event_time(format_time(moment, tz), now=NOW) == expected


# format_relative


@pytest.mark.parametrize(
    ("ago", "expected"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=44), "just now"),
        (timedelta(seconds=45), "1 min ago"),
        (timedelta(minutes=5), "5 min ago"),
        (timedelta(minutes=59, seconds=59), "59 min ago"),
        (timedelta(hours=1), "1 h ago"),
        (timedelta(hours=2, minutes=30), "2 h ago"),
        (timedelta(hours=23, minutes=59), "23 h ago"),
        (timedelta(days=1), "1 d ago"),
        (timedelta(days=3, hours=5), "3 d ago"),
        (timedelta(days=400), "400 d ago"),
    ],
)
def test_past_times_are_described_as_ago(ago: timedelta, expected: str) -> None:
    assert format_relative(NOW - ago, now=NOW) == expected


@pytest.mark.parametrize(
    ("ahead", "expected"),
    [
        (timedelta(seconds=30), "just now"),
        (timedelta(minutes=5), "in 5 min"),
        (timedelta(hours=2), "in 2 h"),
        (timedelta(days=3), "in 3 d"),
    ],
)
def test_future_times_are_described_as_in(ahead: timedelta, expected: str) -> None:
    assert format_relative(NOW + ahead, now=NOW) == expected


def test_format_relative_compares_instants_across_zones() -> None:
    assert format_relative(NOW.astimezone(PARIS) - timedelta(minutes=5), now=NOW) == "5 min ago"


# parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("30 min", timedelta(minutes=30)),
        ("+1d", timedelta(days=1)),
    ],
)
def test_a_duration_reads_as_an_amount_and_a_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["-90d", "0d", "90", "ninety days", "", "200000w"])
def test_a_duration_that_is_not_a_positive_amount_with_a_unit_is_refused(text: str) -> None:
    with pytest.raises(TimeExpressionError):
        parse_duration(text)
