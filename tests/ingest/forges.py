"""What the GitHub and GitLab mapping tests share: the validator's verdict on a mapped event,
and every way of damaging a payload one field at a time."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from trailmap.ingest.webhooks import Mapped
from trailmap.timeline.events import EventRow, validate_event

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MAX_BYTES = 10 * 1024
# What a broken sender might put where a field should be.
ODD_VALUES: tuple[object, ...] = (None, 5, True, "", "x", [], {}, "\x00\ud800", "é" * 5000)


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def one_event(mapped: Mapped) -> dict[str, Any]:
    assert mapped.ignored is None, mapped.ignored
    assert len(mapped.events) == 1
    return mapped.events[0]


def stored_row(event: dict[str, Any]) -> dict[str, Any]:
    """The row the timeline would store: the validator accepts the event, under 10 KB."""
    assert len(orjson.dumps(event)) < MAX_BYTES
    outcome = validate_event(event, index=0, now=NOW, max_bytes=MAX_BYTES)
    assert isinstance(outcome, EventRow), outcome
    return outcome.values


def paths(value: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every key of every object, and the first item of every array, depth first."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from paths(inner, (*prefix, key))
    elif isinstance(value, list) and value:
        yield (*prefix, 0)
        yield from paths(value[0], (*prefix, 0))


def mutations(payload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The payload with one field removed, or replaced by each odd value; the whole payload
    replaced too. Each comes with a label naming what was done."""
    yield "payload = {}", {}
    for path in paths(payload):
        for value in (_REMOVED, *ODD_VALUES):
            damaged = copy.deepcopy(payload)
            parent: Any = damaged
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            if value is _REMOVED:
                if isinstance(parent, dict):
                    del parent[last]
                else:
                    parent.pop(last)
            else:
                parent[last] = value
            label = ".".join(str(p) for p in path)
            yield f"{label} = {'removed' if value is _REMOVED else repr(value)[:20]}", damaged


def check_mapping_survives(mapped: Mapped, label: str) -> None:
    """A damaged payload maps to valid events or to a reason, never to an exception."""
    if mapped.ignored is not None:
        assert mapped.ignored.strip(), label
        assert not mapped.events, label
        return
    assert mapped.events, label
    for event in mapped.events:
        outcome = validate_event(event, index=0, now=NOW, max_bytes=MAX_BYTES)
        assert isinstance(outcome, EventRow), (label, outcome)
        assert len(orjson.dumps(event)) < MAX_BYTES, label


_REMOVED = object()
