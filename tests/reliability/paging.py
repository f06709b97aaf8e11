"""Reading back what a reliability test sent: every event id of its source, page by page."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

__all__ = ["stored_event_ids"]


def stored_event_ids(
    key: str, source: str, base_urls: Iterator[str], *, timeout: float = 30.0
) -> list[str]:
    """Every event id of `source` from the last day, in pages of 100, each page asked of the
    next of `base_urls` (one server repeated, or the nodes in turn, so that a cursor made by
    one node is followed by the next)."""
    found: list[str] = []
    cursor: str | None = None
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as http:
        while True:
            params = {"from": "-1d", "source": source, "limit": "100"}
            if cursor:
                params["cursor"] = cursor
            response = http.get(f"{next(base_urls)}/api/v1/events", params=params)
            assert response.status_code == 200, response.text
            page = response.json()["data"]
            found += [e["event_id"] for e in page["events"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return found
