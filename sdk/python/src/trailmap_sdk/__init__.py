"""Trailmap's Python SDK: send change events to a Trailmap server, from a CI script or an
application, without the server's dependencies (httpx alone)."""

from trailmap_sdk.batching import AsyncBatcher, Batcher, BatcherStats
from trailmap_sdk.client import AsyncTrailmap, Trailmap
from trailmap_sdk.deployment import Deployment
from trailmap_sdk.errors import ApiError, EventRejected, RetriesExhausted, TrailmapError
from trailmap_sdk.events import Event, Severity
from trailmap_sdk.results import Rejected, SendResult, Stored
from trailmap_sdk.retry import RetryPolicy, retry_after_seconds

__all__ = [
    "ApiError",
    "AsyncBatcher",
    "AsyncTrailmap",
    "Batcher",
    "BatcherStats",
    "Deployment",
    "Event",
    "EventRejected",
    "Rejected",
    "RetriesExhausted",
    "RetryPolicy",
    "SendResult",
    "Severity",
    "Stored",
    "Trailmap",
    "TrailmapError",
    "retry_after_seconds",
]
