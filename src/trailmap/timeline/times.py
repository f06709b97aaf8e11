"""Time expressions people and tools send us (query bounds, event times, time zones),
and the two ways we show times back: ISO 8601 in a chosen zone and "5 min ago"."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "TimeExpressionError",
    "format_local_time",
    "format_relative",
    "format_relative_us",
    "format_time",
    "parse_duration",
    "parse_event_time",
    "parse_time_expression",
    "resolve_timezone",
]


class TimeExpressionError(ValueError):
    """A time, time zone or time expression we cannot read; the message says what to send."""


# Longer input is never a time; refusing it early keeps error messages and regexes cheap.
_MAX_TEXT_LENGTH = 200
_MAX_RELATIVE_SECONDS = 36525 * 86400  # 100 years

_TIMEZONE_EXAMPLES = "for example Europe/Paris, America/New_York or UTC"
_QUERY_FORMS = (
    "a relative time such as -30m, -2h, -7d or -1w; now, today or yesterday; "
    "an ISO 8601 time such as 2026-11-20T10:00:00Z, 2026-11-20T10:00 or 2026-11-20; "
    "or an RFC 2822 time such as Fri, 20 Nov 2026 10:00:00 +0000"
)
_EVENT_FORMS = (
    "an RFC 3339 / ISO 8601 time with a zone such as 2026-11-20T10:00:00Z or "
    "2026-11-20T10:00:00+02:00, an RFC 2822 time such as Fri, 20 Nov 2026 10:00:00 +0000, "
    "or NOW for the server's time"
)
_NO_ZONE = "has no time zone; add Z or an offset such as +02:00, e.g. 2026-11-20T10:00:00Z"

# IANA names are ASCII path segments; checking the shape first means nothing like
# "../etc/passwd" or an absolute path ever reaches the file lookup in zoneinfo.
_TIMEZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+){0,3}", re.ASCII)

_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}
# A bare number is refused rather than guessed: "30" could mean minutes or seconds.
_RELATIVE = re.compile(
    r"(?P<sign>[+-])?\s*(?P<amount>[0-9]{1,15})\s*(?P<unit>"
    + "|".join(sorted(_UNIT_SECONDS, key=len, reverse=True))
    + r")",
    re.ASCII | re.IGNORECASE,
)

# Written out rather than left to datetime.fromisoformat, whose 3.11 rules are both looser
# (any separator character) and stricter (at most 6 fractional digits) than what clients send.
_ISO = re.compile(
    r"""
    (?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})
    (?:
        [T\x20](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})
        (?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?
        (?P<zone>Z|(?P<zone_sign>[+-])(?P<zone_hour>[0-9]{2})
            (?::?(?P<zone_minute>[0-9]{2})
                # Seconds are not RFC 3339, but isoformat() writes them for historic
                # local mean time offsets such as Paris's +00:09:21 before 1911.
                (?::?(?P<zone_second>[0-9]{2}))?
            )?
        )?
    )?
    """,
    re.ASCII | re.IGNORECASE | re.VERBOSE,
)


def resolve_timezone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The IANA time zone called `name`, or `default` when no name is given.

    Names are case-sensitive as in the tz database, except that "UTC" and "Z" are
    accepted in any case because clients send them every which way.
    """
    key = default if name is None or name == "" else name
    stripped = key.strip()
    if stripped.upper() in {"UTC", "Z"}:
        return ZoneInfo("UTC")
    if _TIMEZONE_NAME.fullmatch(stripped):
        try:
            return ZoneInfo(stripped)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise TimeExpressionError(
        f"{_quote(key)} is not a time zone we know; use an IANA time zone name, "
        f"{_TIMEZONE_EXAMPLES}."
    )


def parse_time_expression(text: str, *, now: datetime, tz: ZoneInfo) -> datetime:
    """A query bound (`from`, `to`) as an aware UTC datetime.

    Times without a zone, and the words today and yesterday, are read as wall time in
    `tz`. A wall time that falls in a daylight-saving gap or overlap resolves the way
    zoneinfo does with fold=0: a skipped time (02:30 on a spring-forward night) takes the
    offset in force before the change, so it lands an hour later on the clock (03:30);
    a repeated time (02:30 on a fall-back night) means its first occurrence.
    """
    _require_aware(now, "now")
    stripped = _checked_text(text, _QUERY_FORMS)
    lowered = stripped.lower()
    if lowered == "now":
        return now.astimezone(UTC)
    if lowered in {"today", "yesterday"}:
        today = now.astimezone(tz).date()
        day = today if lowered == "today" else today - timedelta(days=1)
        return _wall_time_to_utc(datetime.combine(day, time()), tz, stripped)
    relative = _RELATIVE.fullmatch(stripped)
    if relative is not None:
        return _relative_to(now, relative, stripped)
    iso = _ISO.fullmatch(stripped)
    parsed = _iso_datetime(iso, stripped) if iso is not None else _rfc2822_datetime(stripped)
    if parsed is None:
        raise TimeExpressionError(
            f"Could not read {_quote(stripped)} as a time; use {_QUERY_FORMS}."
        )
    if parsed.tzinfo is None:
        return _wall_time_to_utc(parsed, tz, stripped)
    return _to_utc(parsed, stripped)


def parse_event_time(text: str, *, now: datetime) -> datetime:
    """An event's `time` as an aware UTC datetime; a time without a zone is refused,
    because guessing the sender's zone would silently misplace the event."""
    _require_aware(now, "now")
    stripped = _checked_text(text, _EVENT_FORMS)
    if stripped.lower() == "now":
        return now.astimezone(UTC)
    iso = _ISO.fullmatch(stripped)
    parsed = _iso_datetime(iso, stripped) if iso is not None else _rfc2822_datetime(stripped)
    if parsed is None:
        raise TimeExpressionError(
            f"Could not read {_quote(stripped)} as an event time; use {_EVENT_FORMS}."
        )
    if parsed.tzinfo is None:
        raise TimeExpressionError(f"The time {_quote(stripped)} {_NO_ZONE}.")
    return _to_utc(parsed, stripped)


def format_time(dt: datetime, tz: ZoneInfo) -> str:
    """ISO 8601 in `tz` with its offset, e.g. 2026-11-20T11:00:00+01:00; milliseconds
    appear only when there are some, so whole-second times stay short."""
    _require_aware(dt, "dt")
    return format_local_time(dt.astimezone(tz))


def format_local_time(local: datetime) -> str:
    """`format_time` of an aware datetime already in the zone to show."""
    timespec = "milliseconds" if local.microsecond >= 1000 else "seconds"
    return local.isoformat(timespec=timespec)


def format_relative(dt: datetime, *, now: datetime) -> str:
    """How long ago (or until) `dt` is, in the units a person glances at: "5 min ago"."""
    return format_relative_us((now - dt) // timedelta(microseconds=1))


def format_relative_us(delta_us: int) -> str:
    """`format_relative` of `now - dt` in microseconds (positive: in the past)."""
    seconds = abs(delta_us) // 1_000_000
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        # 45-59 seconds reads better as "1 min" than as "0 min".
        amount = f"{max(1, seconds // 60)} min"
    elif seconds < 86400:
        amount = f"{seconds // 3600} h"
    else:
        amount = f"{seconds // 86400} d"
    return f"{amount} ago" if delta_us > 0 else f"in {amount}"


def _checked_text(text: object, forms: str) -> str:
    # Event JSON can carry any type in `time`; say so instead of failing on .strip().
    if not isinstance(text, str):
        raise TimeExpressionError(f"A time must be a string; use {forms}.")
    stripped = text.strip()
    if not stripped:
        raise TimeExpressionError(f"The time is empty; use {forms}.")
    if len(stripped) > _MAX_TEXT_LENGTH:
        raise TimeExpressionError(
            f"The time is {len(stripped)} characters long, which is too long to be one; "
            f"use {forms}."
        )
    return stripped


def parse_duration(text: str) -> timedelta:
    """A length of time such as 90d, 12h, 2w or 30 min (for lifetimes like --expires)."""
    stripped = _checked_text(text, "a duration such as 90d, 12h or 2w")
    match = _RELATIVE.fullmatch(stripped)
    if match is None or match["sign"] == "-" or int(match["amount"]) == 0:
        raise TimeExpressionError(
            f"Could not read {_quote(stripped)} as a duration; use a positive amount and a "
            "unit, such as 90d, 12h, 2w or 30min."
        )
    return _amount(match, stripped)


def _amount(match: re.Match[str], text: str) -> timedelta:
    seconds = int(match["amount"]) * _UNIT_SECONDS[match["unit"].lower()]
    if seconds > _MAX_RELATIVE_SECONDS:
        raise TimeExpressionError(
            f"{_quote(text)} reaches more than 100 years from now; use a smaller amount "
            "such as -30d, or an ISO 8601 date such as 2026-11-20."
        )
    return timedelta(seconds=seconds)


def _relative_to(now: datetime, match: re.Match[str], text: str) -> datetime:
    # No sign means "ago", as in "last 2h"; only an explicit + looks forward.
    amount = _amount(match, text)
    try:
        moved = now + amount if match["sign"] == "+" else now - amount
    except OverflowError as error:
        raise TimeExpressionError(
            f"{_quote(text)} falls outside the years 1 to 9999; use a smaller amount."
        ) from error
    return _to_utc(moved, text)


def _iso_datetime(match: re.Match[str], text: str) -> datetime:
    """Naive when the text has no zone; the caller decides what that means."""
    zone: tzinfo | None = None
    if match["zone"] is not None:
        if match["zone_sign"] is None:
            zone = UTC
        else:
            zone_hour = int(match["zone_hour"])
            zone_minute = int(match["zone_minute"] or 0)
            zone_second = int(match["zone_second"] or 0)
            if zone_hour > 23 or zone_minute > 59 or zone_second > 59:
                raise TimeExpressionError(
                    f"{_quote(text)} has an offset outside -23:59 to +23:59; "
                    "use an offset such as +02:00 or Z."
                )
            offset = timedelta(hours=zone_hour, minutes=zone_minute, seconds=zone_second)
            zone = timezone(-offset if match["zone_sign"] == "-" else offset)
    second = int(match["second"] or 0)
    # RFC 3339 allows a leap second (:60); datetime cannot hold one, so it becomes the
    # first instant of the next minute, as most clocks that smear or repeat it show.
    leap = second == 60
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    try:
        parsed = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"] or 0),
            int(match["minute"] or 0),
            59 if leap else second,
            int(fraction),
            tzinfo=zone,
        )
        if leap:
            parsed = parsed.replace(microsecond=0) + timedelta(seconds=1)
    except (ValueError, OverflowError) as error:
        raise TimeExpressionError(
            f"{_quote(text)} is not a real date and time ({error}); "
            "check the numbers, e.g. 2026-11-20T10:00:00Z."
        ) from error
    return parsed


def _rfc2822_datetime(text: str) -> datetime | None:
    """The RFC 2822 reading of `text`, naive when it carries no usable zone, or None."""
    try:
        return parsedate_to_datetime(text)
    # email.utils reports bad input with whichever error its arithmetic happens to hit.
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _wall_time_to_utc(wall: datetime, tz: ZoneInfo, text: str) -> datetime:
    # replace() keeps fold=0, which is the documented gap/overlap behaviour above.
    return _to_utc(wall.replace(tzinfo=tz), text)


def _to_utc(dt: datetime, text: str) -> datetime:
    try:
        return dt.astimezone(UTC)
    except (OverflowError, ValueError) as error:
        raise TimeExpressionError(
            f"{_quote(text)} falls outside the years 1 to 9999 in UTC; use a nearer time."
        ) from error


def _require_aware(dt: datetime, name: str) -> None:
    # A naive datetime here is a programming error, not bad input, so it is a plain ValueError.
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _quote(text: str) -> str:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return repr(shown)
