"""A forge's webhook delivery, from its raw bytes to the timeline: the integration looked up,
the signature or token checked before anything is parsed, the payload mapped by the forge's
adapter, the events ingested, and what the delivery became recorded (docs/integrations/)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from trailmap import clock
from trailmap.errors import (
    NotFound,
    QuotaExceeded,
    TrailmapError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from trailmap.ingest.github import map_github
from trailmap.ingest.gitlab import map_gitlab
from trailmap.ingest.webhooks import DeliveryMapper, ForgeContext, Mapped
from trailmap.integrations.deliveries import (
    Outcome,
    WebhookTarget,
    find_webhook_target,
    record_delivery,
    record_delivery_in,
)
from trailmap.integrations.integrations import Integration
from trailmap.integrations.repositories import request_index_for_push
from trailmap.integrations.secrets import github_signature_ok, gitlab_token_ok
from trailmap.timeline.ingest import ingest_events

if TYPE_CHECKING:
    from trailmap.storage import Connection, Database

__all__ = ["MAPPERS", "DeliveryAnswer", "WebhookDelivery", "receive_delivery"]

log = logging.getLogger(__name__)

# Each forge's mapping of a delivery onto CloudEvents (ingest/github.py, ingest/gitlab.py).
MAPPERS: dict[str, DeliveryMapper] = {"github": map_github, "gitlab": map_gitlab}


@dataclass(frozen=True, slots=True)
class _Forge:
    name: str
    event_header: str
    delivery_header: str


_FORGES: Final[Mapping[str, _Forge]] = {
    "github": _Forge("GitHub", "x-github-event", "x-github-delivery"),
    "gitlab": _Forge("GitLab", "x-gitlab-event", "x-gitlab-event-uuid"),
}
_JSON: Final = ("application/json",)
_MAX_DELIVERY_ID: Final = 200


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A delivery as it arrived: the integration its URL names, the exact body, its
    Content-Type and its headers (names in lower case)."""

    integration_id: str
    body: bytes
    content_type: str
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DeliveryAnswer:
    delivery_id: str
    outcome: Outcome
    reason: str | None = None
    event_ids: Sequence[str] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "outcome": self.outcome,
            "reason": self.reason,
            "event_ids": list(self.event_ids),
        }


class _Services(Mapping[str, str]):
    """The repositories the integration maps, and the service (its `service` setting) that
    every other repository's changes are about."""

    def __init__(self, mapped: Mapping[str, str], others: str) -> None:
        self._mapped = mapped
        self._others = others

    def __getitem__(self, repository: str) -> str:
        return self._mapped.get(repository, self._others)

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapped)

    def __len__(self) -> int:
        return len(self._mapped)


def _no_webhook() -> NotFound:
    # The same answer whether the id names nothing, a disabled integration or one that
    # takes no webhooks: the URL is the only thing a caller knows.
    return NotFound("No webhook is at this URL (no such integration, or it is disabled).")


def _bad_signature(forge: _Forge) -> Unauthorized:
    what = (
        "X-Hub-Signature-256 is not the HMAC-SHA256 of the body under the webhook's secret"
        if forge.name == "GitHub"
        else "X-Gitlab-Token is not the webhook's secret token"
    )
    return Unauthorized(
        f"The delivery is not authenticated: {what}. Copy the secret Trailmap showed when the "
        "integration was made (or rotate it) into the webhook's settings."
    )


def _authenticated(
    integration: Integration, forge: _Forge, delivery: WebhookDelivery, secret_key: str | None
) -> bool:
    candidates = integration.accepted_secrets(secret_key, clock.now())
    if not candidates:
        log.warning(
            "integration %s: no secret could be opened (is TRAILMAP_SECRET_KEY set, and the "
            "same as when the secret was made?); its deliveries are refused",
            integration.id,
        )
        return False
    if forge.name == "GitHub":
        signature = delivery.headers.get("x-hub-signature-256")
        return github_signature_ok(delivery.body, signature, candidates)
    return gitlab_token_ok(delivery.headers.get("x-gitlab-token"), candidates)


async def receive_delivery(
    db: Database,
    delivery: WebhookDelivery,
    *,
    secret_key: str | None,
    max_event_bytes: int,
) -> DeliveryAnswer:
    """What the delivery became; a `TrailmapError` (4xx) when it is not authentic, names no
    delivery, or is refused, the refusal recorded when the delivery could be named."""
    headers = delivery.headers
    named = headers.get("x-github-delivery") or headers.get("x-gitlab-event-uuid")
    target = await find_webhook_target(db, delivery.integration_id, named)
    if target is None or target.integration.status != "active":
        raise _no_webhook()
    integration = target.integration
    forge = _FORGES.get(integration.kind)
    if forge is None:
        raise _no_webhook()
    # The signature first: nothing of an unauthenticated body is parsed, nothing recorded.
    if not _authenticated(integration, forge, delivery, secret_key):
        raise _bad_signature(forge)
    delivery_id = (headers.get(forge.delivery_header) or "").strip()
    if not delivery_id:
        raise ValidationFailed.field(
            forge.delivery_header,
            f"missing: {forge.name} sends it with every delivery, and Trailmap needs it to "
            "tell a redelivery from a new event",
        )
    if len(delivery_id) > _MAX_DELIVERY_ID:
        raise ValidationFailed.field(
            forge.delivery_header, f"at most {_MAX_DELIVERY_ID} characters (a forge's is a UUID)"
        )
    if delivery_id != named:
        target = await find_webhook_target(db, integration.id, delivery_id) or target
    return await _Receiving(db, target, forge, delivery_id, max_event_bytes).run(delivery)


_URL_KEYS: Final = ("clone_url", "html_url", "ssh_url", "git_url", "git_http_url", "web_url")


def _repository_urls(payload: Mapping[str, Any]) -> list[str]:
    """The pushed repository's URLs: GitHub's `repository`, GitLab's `project`/`repository`."""
    urls: list[str] = []
    for holder in ("repository", "project"):
        found = payload.get(holder)
        if isinstance(found, Mapping):
            urls += [
                v
                for k in (*_URL_KEYS, "git_ssh_url", "homepage", "url")
                if isinstance(v := found.get(k), str) and len(v) < 2000
            ]
    return urls


class _Receiving:
    """One authenticated delivery on its way: every outcome is recorded once."""

    def __init__(
        self,
        db: Database,
        target: WebhookTarget,
        forge: _Forge,
        delivery_id: str,
        max_event_bytes: int,
    ) -> None:
        self.db = db
        self.target = target
        self.forge = forge
        self.delivery_id = delivery_id
        self.max_event_bytes = max_event_bytes
        self.event_name: str | None = None

    async def _record(
        self, outcome: Outcome, reason: str | None, event_ids: Sequence[str] = ()
    ) -> DeliveryAnswer:
        await record_delivery(
            self.db,
            self.target.integration,
            delivery_id=self.delivery_id,
            event_name=self.event_name,
            outcome=outcome,
            reason=reason,
            event_ids=event_ids,
        )
        return DeliveryAnswer(self.delivery_id, outcome, reason, tuple(event_ids))

    async def _refuse(self, error: TrailmapError) -> TrailmapError:
        await self._record("refused", error.message)
        return error

    async def run(self, delivery: WebhookDelivery) -> DeliveryAnswer:
        earlier = self.target.earlier
        if earlier is not None and earlier.outcome != "refused":
            # A redelivery (the same delivery id): answered, nothing stored again. A delivery
            # refused before is tried again: the refusal may have been the quota's.
            when = earlier.received.strftime("%Y-%m-%d %H:%M:%S UTC")
            return DeliveryAnswer(
                self.delivery_id,
                "duplicate",
                f"delivered before, at {when}, and {earlier.outcome} then",
                earlier.event_ids,
            )
        self.event_name = (delivery.headers.get(self.forge.event_header) or "").strip() or None
        if self.event_name is None:
            raise await self._refuse(
                ValidationFailed.field(
                    self.forge.event_header, "missing: it names the kind of event delivered"
                )
            )
        if delivery.content_type not in _JSON:
            raise await self._refuse(
                UnsupportedMediaType(
                    f"Set the webhook's content type to application/json; got "
                    f"{delivery.content_type or 'no Content-Type header'}."
                )
            )
        payload = await self._payload(delivery.body)
        if self.forge.name == "GitHub" and self.event_name == "ping":
            return await self._record("ignored", "ping: GitHub checked that the webhook works")
        mapper = MAPPERS.get(self.target.integration.kind)
        if mapper is None:
            return await self._record(
                "ignored", f"this server does not read {self.forge.name} deliveries yet"
            )
        mapped = await self._mapped(mapper, payload)
        await self._index_pushed(mapped, payload)
        if mapped.ignored is not None or not mapped.events:
            return await self._record("ignored", mapped.ignored or "nothing in it to record")
        return await self._ingest(mapped)

    async def _index_pushed(self, mapped: Mapped, payload: Mapping[str, Any]) -> None:
        """A push to the default branch (the adapter made a push event of it): the
        organization's repository integrations of that repository are indexed again."""
        pushes = [e for e in mapped.events if e.get("type") == "push"]
        if not pushes:
            return
        urls = _repository_urls(payload)
        head = str(payload.get("after") or "")[:12]
        reason = f"a push to the default branch ({head})" if head else "a push"
        try:
            await request_index_for_push(
                self.db, self.target.integration.org_id, urls, reason=reason
            )
        except Exception:  # the delivery's events matter more than a missed index
            log.exception("integration %s: could not ask for an index", self.target.integration.id)

    async def _payload(self, body: bytes) -> Mapping[str, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            raise await self._refuse(
                ValidationFailed.field("body", f"the body is not valid JSON ({error})")
            ) from None
        if not isinstance(payload, dict):
            raise await self._refuse(
                ValidationFailed.field("body", "the body is JSON but not an object")
            )
        return payload

    async def _mapped(self, mapper: DeliveryMapper, payload: Mapping[str, Any]) -> Mapped:
        settings = self.target.integration.settings
        services: Mapping[str, str] = settings.services
        if settings.service is not None:
            services = _Services(settings.services, settings.service)
        context = ForgeContext(
            delivery_id=self.delivery_id, services=services, default_branch=settings.branch
        )
        try:
            return mapper(self.event_name or "", payload, context)
        except TrailmapError as error:
            raise await self._refuse(error) from None
        except Exception as error:
            # The payload is untrusted: a shape the adapter did not expect is this delivery's
            # problem (refused, 400), never the server's (500).
            log.warning(
                "integration %s: %s delivery %s could not be mapped",
                self.target.integration.id,
                self.event_name,
                self.delivery_id,
                exc_info=error,
            )
            raise await self._refuse(
                ValidationFailed.field(
                    "body",
                    f"the {self.event_name} payload is not in the shape {self.forge.name} "
                    f"sends ({type(error).__name__})",
                )
            ) from None

    async def _ingest(self, mapped: Mapped) -> DeliveryAnswer:
        recorded: list[DeliveryAnswer] = []

        def record_alongside(conn: Connection, made: list[str], known: list[str]) -> None:
            # In the events' own transaction: one write for the events and their delivery.
            outcome: Outcome = "accepted" if made else "duplicate"
            reason = None if made else "its events were on the timeline already"
            record_delivery_in(
                conn,
                self.target.integration,
                delivery_id=self.delivery_id,
                event_name=self.event_name,
                outcome=outcome,
                reason=reason,
                event_ids=made + known,
            )
            recorded.append(DeliveryAnswer(self.delivery_id, outcome, reason, made + known))

        try:
            result = await ingest_events(
                self.db,
                self.target.principal(),
                list(mapped.events),
                max_event_bytes=self.max_event_bytes,
                alongside=record_alongside,
            )
        except (QuotaExceeded, ValidationFailed) as error:
            if recorded:  # some events were stored before the quota refused the rest
                return recorded[0]
            raise await self._refuse(error) from None
        problems = "; ".join(
            f"{r['field'] or 'event'}: {r['message']}" for r in result.rejected[:3]
        )
        if not recorded:
            raise await self._refuse(
                ValidationFailed(f"No event could be made of the delivery: {problems}")
            )
        answer = recorded[0]
        if problems:
            # Rare: some of the delivery's events were refused; their reasons join the record.
            return await self._record(
                answer.outcome, f"some events were refused: {problems}", answer.event_ids
            )
        return answer
