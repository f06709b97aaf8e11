"""What the server said about each event sent: stored now, stored before (a duplicate), or
rejected with its index, code and reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Rejected", "SendResult", "Stored"]


@dataclass(frozen=True, slots=True)
class Stored:
    """An accepted or duplicate event: `index` in what was sent, `id` Trailmap's own id
    (`trailmap_id`), `event_id` the producer's id."""

    index: int
    id: str | None
    source: str
    event_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event the server refused: `code` is `VALIDATION_ERROR`, `PAYLOAD_TOO_LARGE` or
    `QUOTA_EXCEEDED`; `field` names the attribute at fault when there is one."""

    index: int
    code: str
    message: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    """Per event, never all-or-nothing. `attempts` counts requests, retries included (the
    most any one request needed, for a batch sent in several requests)."""

    accepted: tuple[Stored, ...] = ()
    duplicates: tuple[Stored, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """Every event is stored (now or before)."""
        return not self.rejected

    @property
    def stored(self) -> tuple[Stored, ...]:
        """Accepted and duplicates, in the order sent."""
        return tuple(sorted(self.accepted + self.duplicates, key=lambda s: s.index))

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, offset: int, attempts: int) -> SendResult:
        """The `data` of a 200/201 answer; `offset` is the first item's index overall."""
        return cls(
            accepted=tuple(_stored(item, offset) for item in _items(data, "accepted")),
            duplicates=tuple(_stored(item, offset) for item in _items(data, "duplicates")),
            rejected=_rejected(_items(data, "rejected"), offset),
            attempts=attempts,
        )

    @classmethod
    def all_rejected(
        cls, details: Sequence[Mapping[str, Any]], *, offset: int, attempts: int
    ) -> SendResult:
        """A 400/413 naming each item: nothing in the request was stored."""
        return cls(rejected=_rejected(details, offset), attempts=attempts)

    def __add__(self, other: SendResult) -> SendResult:
        return SendResult(
            accepted=self.accepted + other.accepted,
            duplicates=self.duplicates + other.duplicates,
            rejected=self.rejected + other.rejected,
            attempts=max(self.attempts, other.attempts),
        )


def _items(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    items = data.get(name)
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def _stored(item: Mapping[str, Any], offset: int) -> Stored:
    stored_id = item.get("id")
    return Stored(
        index=int(item.get("index", 0)) + offset,
        id=str(stored_id) if stored_id is not None else None,
        source=str(item.get("source", "")),
        event_id=str(item.get("event_id", "")),
    )


def _rejected(details: Sequence[Mapping[str, Any]], offset: int) -> tuple[Rejected, ...]:
    rejected = []
    for item in details:
        index = item.get("index")
        if not isinstance(index, int):
            continue
        field = item.get("field")
        rejected.append(
            Rejected(
                index=index + offset,
                code=str(item.get("code") or "VALIDATION_ERROR"),
                message=str(item.get("message", "")),
                field=str(field) if field is not None else None,
            )
        )
    return tuple(rejected)
