"""`Trailmap` and `AsyncTrailmap`: events sent to `POST /api/v1/events`, retried until they
are stored or refused."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from trailmap_sdk import wire
from trailmap_sdk.deployment import AsyncDeployment, Deployment, SyncDeployment
from trailmap_sdk.errors import RetriesExhausted, TrailmapError
from trailmap_sdk.events import Event, Severity, event_json
from trailmap_sdk.results import SendResult
from trailmap_sdk.retry import RetryPolicy

__all__ = ["AsyncTrailmap", "Trailmap"]

log = logging.getLogger("trailmap_sdk")

EventLike = Event | Mapping[str, Any]


def _settings(url: str | None, api_key: str | None) -> tuple[str, str]:
    url = url or os.environ.get("TRAILMAP_URL")
    api_key = api_key or os.environ.get("TRAILMAP_API_KEY")
    if not url:
        raise TrailmapError("no server URL: pass url= or set TRAILMAP_URL")
    if not api_key:
        raise TrailmapError("no API key: pass api_key= or set TRAILMAP_API_KEY (READ_WRITE)")
    return url, api_key


class _Base:
    def __init__(
        self,
        url: str | None,
        api_key: str | None,
        *,
        timeout: float,
        max_retries: int,
        retry: RetryPolicy | None,
        source: str | None,
    ) -> None:
        self.url, self._api_key = _settings(url, api_key)
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        self.timeout = timeout
        self.source = source
        self._endpoint = wire.endpoint(self.url)
        self._headers = wire.headers(self._api_key)

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.url!r})"

    def _deployment(
        self,
        *,
        service: str,
        version: str | None,
        environment: str | None,
        source: str | None,
        description: str | None,
        severity: Severity,
        deployment_id: str | None,
        data: Mapping[str, Any] | None,
    ) -> Deployment:
        deployment = Deployment(
            service=service,
            version=version,
            environment=environment,
            source=source or self.source or f"//{service}",
            description=description,
            failure_severity=severity,
            data=dict(data or {}),
        )
        if deployment_id:
            deployment.id = deployment_id
        return deployment


def _exhausted(attempts: int, last: wire.Retry | None, cause: Exception | None) -> Exception:
    problem = last.problem if last is not None else "no attempt was made"
    error = RetriesExhausted(attempts, problem, last.error if last is not None else None)
    error.__cause__ = cause
    return error


def _unreachable(endpoint: str, error: httpx.TransportError) -> wire.Retry:
    return wire.Retry(f"could not reach {endpoint}: {type(error).__name__}: {error}")


class Trailmap(_Base):
    """A client for one Trailmap server and key (READ_WRITE). `url` and `api_key` default to
    `TRAILMAP_URL` and `TRAILMAP_API_KEY`. Use it as a context manager, or `close()` it.

    `sleep` waits between retries (tests pass their own); `transport` is httpx's.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        retry: RetryPolicy | None = None,
        source: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            url, api_key, timeout=timeout, max_retries=max_retries, retry=retry, source=source
        )
        self._sleep = sleep
        self._http = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def send(self, event: EventLike) -> SendResult:
        """Send one event; its result is accepted (stored now) or a duplicate (stored
        before). Raises `EventRejected` when the server refuses it, `ApiError` for another
        refusal (a bad key), `RetriesExhausted` when every attempt failed."""
        return self._post(wire.single(event_json(event)))

    def send_many(self, events: Iterable[EventLike]) -> SendResult:
        """Send events in as few requests as the server's limits allow (1,000 a request).
        Results are per event, indexed as given: a rejected one does not stop the others."""
        bodies = [event_json(e) for e in events]
        result = SendResult()
        for chunk in wire.chunks(bodies):
            result += self._post(chunk)
        return result

    def _post(self, chunk: wire.Chunk) -> SendResult:
        last: wire.Retry | None = None
        cause: Exception | None = None
        for attempt in range(self.retry.attempts):
            try:
                response = self._http.post(
                    self._endpoint, content=chunk.body, headers=self._headers
                )
            except httpx.TransportError as error:
                last, cause = _unreachable(self._endpoint, error), error
            else:
                answer = wire.read_answer(response, chunk, attempt + 1)
                if isinstance(answer, SendResult):
                    return answer
                last, cause = answer, None
            if attempt + 1 < self.retry.attempts:
                wait = self.retry.delay(attempt, last.retry_after)
                log.info(
                    "attempt %d failed (%s); retrying in %.1fs", attempt + 1, last.problem, wait
                )
                self._sleep(wait)
        raise _exhausted(self.retry.attempts, last, cause)

    def deployment(
        self,
        *,
        service: str,
        version: str | None = None,
        environment: str | None = None,
        source: str | None = None,
        description: str | None = None,
        failure_severity: Severity = "MAJOR",
        deployment_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        raise_errors: bool = False,
    ) -> SyncDeployment:
        """`with client.deployment(service=..., version=..., environment=...):` reports
        `deployment-started`, then a `deployment` with `data.status` `succeeded` when the
        block ends, or `failed` (with `failure_severity` and the exception's type) when it
        raises; the exception
        goes on. A report that fails is logged, not raised, unless `raise_errors`."""
        plan = self._deployment(
            service=service,
            version=version,
            environment=environment,
            source=source,
            description=description,
            severity=failure_severity,
            deployment_id=deployment_id,
            data=data,
        )
        return SyncDeployment(plan, self.send, raise_errors=raise_errors)


class AsyncTrailmap(_Base):
    """`Trailmap` for asyncio: the same arguments, and `await` on every call."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
        retry: RetryPolicy | None = None,
        source: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url, api_key, timeout=timeout, max_retries=max_retries, retry=retry, source=source
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, event: EventLike) -> SendResult:
        """As `Trailmap.send`."""
        return await self._post(wire.single(event_json(event)))

    async def send_many(self, events: Iterable[EventLike]) -> SendResult:
        """As `Trailmap.send_many`."""
        bodies = [event_json(e) for e in events]
        result = SendResult()
        for chunk in wire.chunks(bodies):
            result += await self._post(chunk)
        return result

    async def _post(self, chunk: wire.Chunk) -> SendResult:
        last: wire.Retry | None = None
        cause: Exception | None = None
        for attempt in range(self.retry.attempts):
            try:
                response = await self._http.post(
                    self._endpoint, content=chunk.body, headers=self._headers
                )
            except httpx.TransportError as error:
                last, cause = _unreachable(self._endpoint, error), error
            else:
                answer = wire.read_answer(response, chunk, attempt + 1)
                if isinstance(answer, SendResult):
                    return answer
                last, cause = answer, None
            if attempt + 1 < self.retry.attempts:
                wait = self.retry.delay(attempt, last.retry_after)
                log.info(
                    "attempt %d failed (%s); retrying in %.1fs", attempt + 1, last.problem, wait
                )
                await self._sleep(wait)
        raise _exhausted(self.retry.attempts, last, cause)

    def deployment(
        self,
        *,
        service: str,
        version: str | None = None,
        environment: str | None = None,
        source: str | None = None,
        description: str | None = None,
        failure_severity: Severity = "MAJOR",
        deployment_id: str | None = None,
        data: Mapping[str, Any] | None = None,
        raise_errors: bool = False,
    ) -> AsyncDeployment:
        """`async with client.deployment(...)`: as `Trailmap.deployment`."""
        plan = self._deployment(
            service=service,
            version=version,
            environment=environment,
            source=source,
            description=description,
            severity=failure_severity,
            deployment_id=deployment_id,
            data=data,
        )
        return AsyncDeployment(plan, self.send, raise_errors=raise_errors)
