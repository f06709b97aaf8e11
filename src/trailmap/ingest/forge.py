"""What the GitHub and GitLab adapters share: reading a payload of any shape without raising,
forge times with their zone, and the trimmed CloudEvent each delivery becomes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from trailmap.ingest.webhooks import ForgeContext, Mapped
from trailmap.timeline.events import derive_service

__all__ = [
    "MAX_COMMITS",
    "Missing",
    "change_event",
    "commit_list",
    "delivery_problem",
    "dig",
    "first_line",
    "forge_time",
    "number",
    "pushed_default_branch",
    "repository_source",
    "required_text",
    "required_time",
    "service_for",
    "short_sha",
    "text",
    "version_for",
]

MAX_COMMITS: Final = 20
# The validator refuses an event over 10 KB (the default `max_event_bytes`); a mapped event
# stays under this, so a byte-heavy payload (long non-ASCII messages) never reaches the limit.
_BUDGET_BYTES: Final = 8000
_MAX_DESCRIPTION: Final = 1000
_MAX_SUBJECT: Final = 50
_MAX_VERSION: Final = 50
_MAX_SERVICE: Final = 200
_MAX_SOURCE: Final = 500
_MAX_ID: Final = 200
_MAX_TEXT: Final = 500
_MAX_MESSAGE: Final = 200
_MAX_NAME: Final = 100

_SHA = re.compile(r"[0-9a-f]{7,64}", re.IGNORECASE)
# A ref that reads as a release: 1.2, v1.2.3, 2024.05.1-rc.1 (a tag, not a branch).
_VERSION_LIKE = re.compile(r"v?[0-9]+(?:\.[0-9]+)+(?:[-+._][0-9A-Za-z.+-]*)?")
_FORGE_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ]"
    r"(?P<clock>[0-9]{2}:[0-9]{2}(?::[0-9]{2})?)(?:[.,](?P<fraction>[0-9]+))?"
    r"\s*(?P<zone>Z|UTC|[+-][0-9]{2}:?[0-9]{2})",
    re.ASCII,
)
_WEB = re.compile(r"https?://[^\s\x00-\x1f\x7f]+", re.ASCII | re.IGNORECASE)
_NOT_SHOWN = re.compile(r"[\x00\ud800-\udfff]")


class Missing(Exception):
    """The payload lacks what the mapping needs; `reason` says what, for the deliveries log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def delivery_problem(context: ForgeContext, header: str) -> str | None:
    """Why the delivery's id cannot name its events (the validator's limit is 200), or None."""
    delivery = context.delivery_id
    if not isinstance(delivery, str) or not delivery.strip():
        return f"the delivery has no id ({header})"
    if len(delivery) > _MAX_ID:
        return f"the delivery id is longer than {_MAX_ID} characters"
    return None


def dig(value: object, *keys: str) -> object:
    """`value[k1][k2]...`, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def text(value: object, *keys: str, limit: int = _MAX_TEXT) -> str | None:
    """The non-blank string at `keys`, cut to `limit` characters, with what cannot be
    stored (NUL, lone surrogates) replaced; None for anything else."""
    found = dig(value, *keys)
    if not isinstance(found, str):
        return None
    cleaned = _NOT_SHOWN.sub("\ufffd", found).strip()
    return cleaned[:limit] if cleaned else None


def required_text(value: object, *keys: str, limit: int = _MAX_TEXT) -> str:
    found = text(value, *keys, limit=limit)
    if found is None:
        raise Missing(f"the payload has no {'.'.join(keys)}")
    return found


def number(value: object, *keys: str) -> int | None:
    found = dig(value, *keys)
    return found if isinstance(found, int) and not isinstance(found, bool) else None


def repository_source(value: object, *keys: str) -> str:
    """The source naming a repository: its web address at `keys` without the scheme,
    `//github.com/acme/checkout`, as the docs' examples and CI steps write it, so a
    repository's events from its webhook and from its pipelines share one source."""
    found = required_text(value, *keys, limit=_MAX_SOURCE + 10)
    if not _WEB.fullmatch(found):
        raise Missing(f"{'.'.join(keys)} is not a web address")
    source = "//" + found.split("://", 1)[1].rstrip("/")
    if len(source) > _MAX_SOURCE:
        raise Missing(f"{'.'.join(keys)} is longer than {_MAX_SOURCE} characters")
    return source


def forge_time(value: object) -> str | None:
    """An RFC 3339 time keeping the sender's zone, from what GitHub and GitLab write
    (`2019-05-15T15:20:55Z`, `2021-04-28 21:50:00 +0200`, `2016-08-12 15:23:28 UTC`) or
    from seconds since 1970 (GitHub's `pushed_at`); None when there is no zone to keep."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            at = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return at.isoformat().replace("+00:00", "Z")
    if not isinstance(value, str) or len(value) > 64:
        return None
    match = _FORGE_TIME.fullmatch(value.strip())
    if match is None:
        return None
    zone = match["zone"]
    offset = "+00:00" if zone in ("Z", "UTC") else f"{zone[:3]}:{zone[-2:]}"
    fraction = f".{match['fraction'][:6]}" if match["fraction"] else ""
    clock = match["clock"] if match["clock"].count(":") == 2 else f"{match['clock']}:00"
    try:
        at = datetime.fromisoformat(f"{match['date']}T{clock}{fraction}{offset}")
    except ValueError:
        return None
    written = at.isoformat()
    return written[:-6] + "Z" if zone in ("Z", "UTC") else written


def required_time(value: object, *keys: str) -> str:
    """The first of `keys` (each a dotted path) holding a time with a zone, required."""
    for path in keys:
        found = forge_time(dig(value, *path.split(".")))
        if found is not None:
            return found
    raise Missing(f"the payload has no time with a zone at {' or '.join(keys)}")


def first_line(message: object, limit: int = _MAX_MESSAGE) -> str | None:
    found = text(message, limit=10_000)
    return found.splitlines()[0].strip()[:limit] or None if found else None


def short_sha(sha: str | None, length: int) -> str | None:
    return sha[:length].lower() if sha is not None and _SHA.fullmatch(sha) else None


def version_for(ref: str | None, sha: str | None, *, short: int) -> str | None:
    """A tag (`refs/tags/v1.2`, or a ref that reads as a version) else the short commit sha."""
    if ref is not None:
        tag = ref.removeprefix("refs/tags/")
        if tag != ref or _VERSION_LIKE.fullmatch(tag):
            return tag[:_MAX_VERSION]
        if sha is None and _SHA.fullmatch(ref) and len(ref) == 40:
            sha = ref
    return short_sha(sha, short)


def pushed_default_branch(
    ref: str, *, deleted: bool, default_branch: Callable[[], str]
) -> str | Mapped:
    """The branch a push went to, when it is the default branch (the only push the timeline
    shows); otherwise why the push is ignored: a deleted ref, a tag, a ref that is not a
    branch, another branch. `default_branch` is asked only for a branch."""
    if deleted:
        return Mapped.ignore(f"the push deleted {ref}")
    if ref.startswith("refs/tags/"):
        return Mapped.ignore(
            f"a push of tag {ref.removeprefix('refs/tags/')!r}; releases and deployments say "
            "when a tag ships"
        )
    if not ref.startswith("refs/heads/"):
        return Mapped.ignore(f"a push to {ref!r}, which is not a branch")
    branch = ref.removeprefix("refs/heads/")
    default = default_branch()
    if branch != default:
        return Mapped.ignore(f"a push to branch {branch!r}, not the default branch {default!r}")
    return branch


def commit_list(commits: object) -> list[dict[str, Any]]:
    """Each commit's id, time, first line of its message and author, at most `MAX_COMMITS`."""
    if not isinstance(commits, list):
        return []
    found = []
    for commit in commits:
        sha = text(commit, "id", limit=64)
        if sha is None:
            continue
        found.append(
            _without_none(
                {
                    "id": sha,
                    "time": forge_time(dig(commit, "timestamp")),
                    "message": first_line(dig(commit, "message")),
                    "author": text(commit, "author", "name", limit=_MAX_NAME),
                }
            )
        )
        if len(found) == MAX_COMMITS:
            break
    return found


def service_for(context: ForgeContext, full_name: str, source: str) -> str:
    """The service the integration maps this repository to, else the repository's own name
    as `derive_service` reads it from the source (so a producer sending the same source
    without a service lands on the same one)."""
    mapped = context.services.get(full_name)
    if mapped is None:
        folded = full_name.casefold()
        mapped = next((s for n, s in context.services.items() if n.casefold() == folded), None)
    service = (mapped or "").strip() or derive_service(source) or full_name
    return service[:_MAX_SERVICE]


def change_event(
    *,
    event_type: str,
    source: str,
    context: ForgeContext,
    time: str,
    service: str,
    data: dict[str, Any],
    subject: str | None = None,
    version: str | None = None,
    severity: str | None = None,
    commits_total: int | None = None,
) -> dict[str, Any]:
    """The CloudEvent for one delivery: its id is the delivery id, so a redelivery is a
    duplicate; `data` is kept small (commits dropped from the end, saying how many)."""
    body = _without_none(data)
    if isinstance(body.get("description"), str):
        body["description"] = body["description"][:_MAX_DESCRIPTION]
    event = _without_none(
        {
            "specversion": "1.0",
            "id": context.delivery_id,
            "type": event_type,
            "source": source,
            "time": time,
            "subject": subject[:_MAX_SUBJECT] if subject else None,
            "version": version[:_MAX_VERSION] if version else None,
            "severity": severity,
            "service": service,
            "datacontenttype": "application/json",
            "data": body,
        }
    )
    commits = body.get("commits")
    if isinstance(commits, list):
        total = max(commits_total or 0, len(commits))
        body["commits_more"] = total - len(commits)
    while len(orjson.dumps(event)) > _BUDGET_BYTES:
        if isinstance(commits, list) and commits:
            commits.pop()
            body["commits_more"] += 1
        elif len(body.get("description") or "") > _MAX_MESSAGE:
            body["description"] = body["description"][:_MAX_MESSAGE]
        else:
            event["data"] = {k: body[k] for k in ("description", "repository") if k in body}
            break
    return event


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and v != ""}
