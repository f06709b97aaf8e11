"""Per-minute call statistics: counts, errors and a latency histogram good for percentiles
(docs/internals.md)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from trailmap.storage.tables import LATENCY_BUCKETS

__all__ = ["BUCKET_BOUNDS_MS", "LATENCY_BUCKETS", "Stats", "bucket_of"]

# Upper bounds of every bucket but the last, which holds everything slower (> ~16 s).
BUCKET_BOUNDS_MS: tuple[float, ...] = tuple(
    0.5 * math.sqrt(2) ** i for i in range(LATENCY_BUCKETS - 1)
)


def bucket_of(duration_ms: float) -> int:
    return bisect.bisect_left(BUCKET_BOUNDS_MS, duration_ms)


@dataclass(slots=True)
class Stats:
    """Calls, errors and latency of one subject over some minutes."""

    calls: int = 0
    errors: int = 0
    duration_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)

    def add(self, duration_ms: float, *, error: bool) -> None:
        self.calls += 1
        self.errors += error
        self.duration_ms += duration_ms
        self.buckets[bucket_of(duration_ms)] += 1

    def merge(self, other: Stats) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.duration_ms += other.duration_ms
        mine = self.buckets
        for i, count in enumerate(other.buckets):
            mine[i] += count

    @classmethod
    def total(cls, parts: Iterable[Stats]) -> Stats:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    @property
    def mean_ms(self) -> float | None:
        return self.duration_ms / self.calls if self.calls else None

    def percentile_ms(self, q: float) -> float | None:
        """The q-th quantile (0 < q <= 1), interpolated geometrically inside its bucket."""
        total = sum(self.buckets)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.buckets):
            if count and seen + count >= rank:
                low = BUCKET_BOUNDS_MS[i - 1] if i > 0 else 0.0
                high = BUCKET_BOUNDS_MS[i] if i < len(BUCKET_BOUNDS_MS) else low * math.sqrt(2)
                fraction = (rank - seen) / count
                if low == 0.0:
                    return high * fraction
                return float(low * (high / low) ** fraction)
            seen += count
        return BUCKET_BOUNDS_MS[-1]

    def summary(self, minutes: float) -> dict[str, float | int | None]:
        """The figures a person or a model reads: rate per minute, error rate, percentiles."""

        def rounded(value: float | None, digits: int = 1) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "calls": self.calls,
            "calls_per_minute": round(self.calls / minutes, 2) if minutes > 0 else None,
            "errors": self.errors,
            "error_rate": rounded(self.error_rate, 4),
            "mean_ms": rounded(self.mean_ms),
            "p50_ms": rounded(self.percentile_ms(0.5)),
            "p95_ms": rounded(self.percentile_ms(0.95)),
            "p99_ms": rounded(self.percentile_ms(0.99)),
        }
