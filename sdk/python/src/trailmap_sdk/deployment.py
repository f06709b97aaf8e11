"""A deployment reported as it happens: `deployment-started` when it begins, then a
`deployment` whose `data.status` says whether it succeeded or failed."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from trailmap_sdk.errors import TrailmapError
from trailmap_sdk.events import Event, Severity
from trailmap_sdk.results import SendResult

__all__ = ["AsyncDeployment", "Deployment", "SyncDeployment"]

log = logging.getLogger("trailmap_sdk")

# The types, as Trailmap reads them: a deployment that ended is a `deployment`, succeeded or
# failed (`data.status`, and a severity when it failed), as the GitHub, GitLab and
# Kubernetes integrations report it; its start is a change of its own.
STARTED = "deployment-started"
SUCCEEDED = "deployment"
FAILED = "deployment"


@dataclass(slots=True)
class Deployment:
    """One deployment's reports. The three events share `data.deployment_id`, and their ids
    are `<id>.started`, `<id>.succeeded` and `<id>.failed`: sent twice, each is stored once.
    Add to `data` inside the block; it goes with the final report."""

    service: str
    source: str
    version: str | None = None
    environment: str | None = None
    description: str | None = None
    failure_severity: Severity = "MAJOR"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    data: dict[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    results: list[SendResult] = field(default_factory=list)
    errors: list[TrailmapError] = field(default_factory=list)
    _clock: float = 0.0

    def started(self) -> Event:
        self.started_at = datetime.now(UTC)
        self._clock = time.monotonic()
        return self._event(STARTED, "started", f"{self._what()}: started")

    def succeeded(self) -> Event:
        return self._event(SUCCEEDED, "succeeded", self._what(), finished=True)

    def failed(self, error: BaseException) -> Event:
        kind = type(error).__qualname__
        # The exception's type, never its message: a message may carry a secret.
        return self._event(
            FAILED,
            "failed",
            f"{self._what()}: failed ({kind})",
            severity=self.failure_severity,
            extra={"error": {"type": kind, "module": type(error).__module__}},
            finished=True,
        )

    def _what(self) -> str:
        if self.description:
            return self.description
        words = [self.service, self.version, f"to {self.environment}" if self.environment else None]
        return " ".join(w for w in words if w)

    def _event(
        self,
        event_type: str,
        status: str,
        description: str,
        *,
        severity: Severity | None = None,
        extra: dict[str, Any] | None = None,
        finished: bool = False,
    ) -> Event:
        data: dict[str, Any] = {
            **self.data,
            **(extra or {}),
            "deployment_id": self.id,
            "status": status,
        }
        if finished and self.started_at is not None:
            data["duration_seconds"] = round(time.monotonic() - self._clock, 3)
            data["started_at"] = self.started_at.isoformat()
        return Event(
            type=event_type,
            source=self.source,
            id=f"{self.id}.{status}",
            subject=self.environment,
            version=self.version,
            service=self.service,
            severity=severity,
            description=description[:1000],
            data=data,
        )

    def record(self, outcome: SendResult | TrailmapError, *, raise_errors: bool) -> None:
        """Keep a report's result, or its error (logged; raised with `raise_errors`)."""
        if isinstance(outcome, SendResult):
            self.results.append(outcome)
            return
        self.errors.append(outcome)
        if raise_errors:
            raise outcome
        log.warning("could not report deployment %s to Trailmap: %s", self.id, outcome)


class SyncDeployment:
    """The context manager `Trailmap.deployment` returns; entering gives the `Deployment`."""

    def __init__(
        self,
        deployment: Deployment,
        send: Callable[[Event], SendResult],
        *,
        raise_errors: bool,
    ) -> None:
        self.deployment = deployment
        self._send = send
        self._raise = raise_errors

    def _report(self, event: Event) -> None:
        try:
            outcome: SendResult | TrailmapError = self._send(event)
        except TrailmapError as error:
            outcome = error
        self.deployment.record(outcome, raise_errors=self._raise)

    def __enter__(self) -> Deployment:
        self._report(self.deployment.started())
        return self.deployment

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self._report(self.deployment.succeeded())
        else:
            self._report(self.deployment.failed(error))
        # None: the block's own exception, if any, goes on.


class AsyncDeployment:
    """The async context manager `AsyncTrailmap.deployment` returns."""

    def __init__(
        self,
        deployment: Deployment,
        send: Callable[[Event], Awaitable[SendResult]],
        *,
        raise_errors: bool,
    ) -> None:
        self.deployment = deployment
        self._send = send
        self._raise = raise_errors

    async def _report(self, event: Event) -> None:
        try:
            outcome: SendResult | TrailmapError = await self._send(event)
        except TrailmapError as error:
            outcome = error
        self.deployment.record(outcome, raise_errors=self._raise)

    async def __aenter__(self) -> Deployment:
        await self._report(self.deployment.started())
        return self.deployment

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            await self._report(self.deployment.succeeded())
        else:
            await self._report(self.deployment.failed(error))
