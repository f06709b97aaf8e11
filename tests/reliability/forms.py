"""Which form of the reliability suite is running: fast (in scripts/test) or full
(scripts/reliability, TRAILMAP_RELIABILITY=full)."""

from __future__ import annotations

import os

__all__ = ["FULL", "scale"]

# Full runs last longer and push harder; the fast form proves the same properties in
# seconds. Every figure a full run measures is printed and recorded in docs/operations.md.
FULL = os.environ.get("TRAILMAP_RELIABILITY") == "full"


def scale(fast: float, full: float) -> float:
    """A duration or a count for the form being run."""
    return full if FULL else fast
