"""Identifiers: random UUIDs for things, time-ordered UUIDs (version 7) for events."""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["new_id", "new_time_ordered_id"]


def new_id() -> str:
    return str(uuid.uuid4())


def new_time_ordered_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of milliseconds, then randomness; sorts by creation time."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # 12 random bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # 62 random bits
    return str(uuid.UUID(int=value))
