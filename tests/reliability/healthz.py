"""Timing `/healthz` from a thread of its own while a test loads the server another way."""

from __future__ import annotations

import threading
import time
from typing import Protocol

import httpx


class HealthTally(Protocol):
    healthz_ms: list[float]
    healthz_failures: list[str]


def probe_healthz(
    url: str, tally: HealthTally, started: threading.Event, stop: threading.Event
) -> None:
    """GET /healthz back to back until told to stop, timing each answer."""
    with httpx.Client(base_url=url, timeout=60) as http:
        while not stop.is_set():
            began = time.perf_counter()
            try:
                response = http.get("/healthz")
            except httpx.HTTPError as error:
                tally.healthz_failures.append(repr(error))
                continue
            tally.healthz_ms.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                tally.healthz_failures.append(f"{response.status_code} {response.text[:200]}")
            started.set()
