"""Where notifications go: a channel's kind, its settings (checked, shown) and its secrets
(encrypted, write-only: an answer says which are set, never what they are)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal, get_args

from trailmap import clock
from trailmap.encryption import InvalidToken, decrypt, encrypt
from trailmap.errors import ErrorDetail, ValidationFailed
from trailmap.outbound import OutboundError, OutboundPolicy, origin

__all__ = [
    "KINDS",
    "OPSGENIE_URL",
    "PAGERDUTY_URL",
    "Channel",
    "Kind",
    "check_channel_settings",
    "check_destinations",
    "destinations",
    "is_id",
    "open_secrets",
    "seal_secrets",
]

Kind = Literal["webhook", "email", "pagerduty", "opsgenie", "slack", "google_chat"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
PAGERDUTY_URL: Final = "https://events.pagerduty.com/v2/enqueue"
OPSGENIE_URL: Final = "https://api.opsgenie.com/v2/alerts"
_PURPOSE: Final = "trailmap notification channel secrets"
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}$")
_HOST = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
_TEXT_LIMIT: Final = 500
_MAX_RECIPIENTS: Final = 50

# Per kind: the settings shown (and their defaults), and the secrets it takes (write-only).
_PUBLIC: Final[dict[str, dict[str, object]]] = {
    "webhook": {},
    "email": {
        "host": None,
        "port": 587,
        "security": "starttls",
        "username": None,
        "from": None,
        "to": None,
    },
    "pagerduty": {"url": PAGERDUTY_URL},
    "opsgenie": {"url": OPSGENIE_URL},
    "slack": {},
    "google_chat": {},
}
_SECRETS: Final[dict[str, tuple[str, ...]]] = {
    "webhook": ("url", "secret"),
    "email": ("password",),
    "pagerduty": ("routing_key",),
    "opsgenie": ("api_key",),
    "slack": ("url",),
    "google_chat": ("url",),
}
# The secrets a channel cannot send without (a webhook's signing secret is made when none
# is given; an SMTP server may need no password).
_REQUIRED_SECRETS: Final[dict[str, tuple[str, ...]]] = {
    "webhook": ("url",),
    "email": (),
    "pagerduty": ("routing_key",),
    "opsgenie": ("api_key",),
    "slack": ("url",),
    "google_chat": ("url",),
}
_SECURITY: Final = ("starttls", "tls", "none")


def is_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    org_id: str
    kind: Kind
    name: str
    settings: Mapping[str, Any]
    enabled: bool
    created: datetime
    created_by: str
    sealed: str | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Channel:
        return cls(
            id=row["id"],
            org_id=row["org_id"],
            kind=row["kind"],
            name=row["name"],
            settings=dict(row["settings"] or {}),
            enabled=bool(row["enabled"]),
            created=clock.from_us(row["created_us"]),
            created_by=row["created_by"],
            sealed=row["secrets_encrypted"],
        )

    def secrets(self, secret_key: str | None) -> dict[str, str]:
        """The channel's secrets, opened; empty when the server's keys cannot open them."""
        return open_secrets(self.sealed, secret_key)

    def as_json(self) -> dict[str, Any]:
        """As the API shows it: the settings, which secrets are set, never their values."""
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "enabled": self.enabled,
            "settings": self.public_settings,
            "secrets_set": list(self.settings.get("_secrets_set", ())),
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "created_by": self.created_by,
        }

    @property
    def public_settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.settings.items() if not k.startswith("_")}


def open_secrets(sealed: str | None, secret_key: str | None) -> dict[str, str]:
    if sealed is None or not secret_key:
        return {}
    try:
        opened = json.loads(decrypt(secret_key, _PURPOSE, sealed))
    except (InvalidToken, ValueError):
        return {}
    return {k: v for k, v in opened.items() if isinstance(v, str)}


def seal_secrets(secret_key: str | None, values: Mapping[str, str]) -> str | None:
    if not values:
        return None
    if not secret_key:
        raise ValidationFailed(
            "Set TRAILMAP_SECRET_KEY on the server first: a notification channel's secrets "
            "are stored encrypted with it (docs/operations.md)."
        )
    return encrypt(secret_key, _PURPOSE, json.dumps(dict(values)))


def _check_url(name: str, value: object, problems: list[ErrorDetail]) -> str | None:
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        problems.append(ErrorDetail(field=f"settings.{name}", message="an https or http URL"))
        return None
    try:
        scheme, _, _ = origin(value.strip())
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        problems.append(ErrorDetail(field=f"settings.{name}", message="an https or http URL"))
        return None
    return value.strip()


def check_channel_settings(
    kind: Kind,
    data: object,
    *,
    base: Mapping[str, Any] | None = None,
    base_secrets: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """The settings shown, the secrets to keep, and a webhook's signing secret when one was
    made now (to be shown once); what `data` does not name is kept from `base` and
    `base_secrets`. Raises ValidationFailed naming every problem."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValidationFailed.field("settings", "an object of the channel's settings")
    known = (*_PUBLIC[kind], *_SECRETS[kind])
    problems = [
        ErrorDetail(
            field=f"settings.{k}",
            message=f"unknown; a {kind} channel's settings are {', '.join(known) or 'none'}",
        )
        for k in sorted(str(k) for k in set(data) - set(known))
    ]
    shown = _public(kind, data, base or {}, problems)
    kept = _secrets(kind, data, base_secrets or {}, problems)
    made = None
    if kind == "webhook" and "secret" not in kept:
        made = kept["secret"] = secrets.token_urlsafe(32)
    named = {p.field for p in problems}
    required = [*_REQUIRED_SECRETS[kind], *(("host", "from", "to") if kind == "email" else ())]
    problems.extend(
        ErrorDetail(field=f"settings.{name}", message="required")
        for name in required
        if name not in kept and name not in shown and f"settings.{name}" not in named
    )
    if problems:
        raise ValidationFailed(
            f"The settings are not valid: {problems[0].field}: {problems[0].message}",
            details=problems,
        )
    shown["_secrets_set"] = sorted(kept)
    return shown, kept, made


def _public(
    kind: Kind, data: Mapping[str, Any], base: Mapping[str, Any], problems: list[ErrorDetail]
) -> dict[str, Any]:
    names = _PUBLIC[kind]
    shown = {k: v for k, v in base.items() if k in names and v is not None}
    for name, default in names.items():
        if name in data:
            value = None if data[name] is None else _CHECKS[name](name, data[name], problems)
            if value is None:
                shown.pop(name, None)
            else:
                shown[name] = value
        elif name not in shown and default is not None:
            shown[name] = default
    return shown


def _secrets(
    kind: Kind, data: Mapping[str, Any], base: Mapping[str, str], problems: list[ErrorDetail]
) -> dict[str, str]:
    kept = dict(base)
    for name in _SECRETS[kind]:
        if name not in data:
            continue
        given = data[name]
        value = None if given is None else _CHECKS.get(name, _check_text)(name, given, problems)
        if given is None:
            kept.pop(name, None)
        elif isinstance(value, str):
            kept[name] = value
    return kept


def _check_text(name: str, value: object, problems: list[ErrorDetail]) -> str | None:
    if not isinstance(value, str) or not value.strip() or len(value) > _TEXT_LIMIT:
        problems.append(
            ErrorDetail(field=f"settings.{name}", message="a text of 1 to 500 characters")
        )
        return None
    return value.strip()


def _check_port(name: str, value: object, problems: list[ErrorDetail]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        problems.append(ErrorDetail(field=f"settings.{name}", message="a port number, 1 to 65535"))
        return None
    return value


def _check_security(name: str, value: object, problems: list[ErrorDetail]) -> str | None:
    if value not in _SECURITY:
        problems.append(
            ErrorDetail(field=f"settings.{name}", message=f"one of {', '.join(_SECURITY)}")
        )
        return None
    return str(value)


def _check_host(name: str, value: object, problems: list[ErrorDetail]) -> str | None:
    if not isinstance(value, str) or not _HOST.match(value.strip()):
        problems.append(ErrorDetail(field=f"settings.{name}", message="an SMTP server's host name"))
        return None
    return value.strip()


def _check_address(name: str, value: object, problems: list[ErrorDetail]) -> str | None:
    if not isinstance(value, str) or not _EMAIL.match(value.strip()):
        problems.append(ErrorDetail(field=f"settings.{name}", message="an e-mail address"))
        return None
    return value.strip()


def _check_recipients(name: str, value: object, problems: list[ErrorDetail]) -> list[str] | None:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= _MAX_RECIPIENTS
        or not all(isinstance(v, str) and _EMAIL.match(v.strip()) for v in value)
    ):
        problems.append(
            ErrorDetail(
                field=f"settings.{name}", message=f"a list of 1 to {_MAX_RECIPIENTS} addresses"
            )
        )
        return None
    return [v.strip() for v in value]


_CHECKS: Final[dict[str, Callable[[str, object, list[ErrorDetail]], object]]] = {
    "url": _check_url,
    "port": _check_port,
    "security": _check_security,
    "host": _check_host,
    "from": _check_address,
    "to": _check_recipients,
    "username": _check_text,
}


def destinations(kind: str, settings: Mapping[str, Any], secrets_: Mapping[str, str]) -> list[str]:
    """The URLs a channel sends to, or its SMTP server as `smtp://host:port`."""
    if kind == "email":
        return [f"smtp://{settings.get('host')}:{settings.get('port', 587)}"]
    url = secrets_.get("url") or settings.get("url")
    return [str(url)] if url else []


async def check_destinations(
    policy: OutboundPolicy, kind: str, settings: Mapping[str, Any], secrets_: Mapping[str, str]
) -> None:
    """Raise ValidationFailed when the outbound guard would not let Trailmap connect to where
    the channel sends (its host, or an address the host resolves to, is refused)."""
    try:
        if kind == "email":
            await policy.resolve(str(settings["host"]), int(settings.get("port", 587)))
        else:
            for url in destinations(kind, settings, secrets_):
                await policy.check_url(url)
    except OutboundError as error:
        where = "settings.host" if kind == "email" else "settings.url"
        raise ValidationFailed(
            f"Trailmap will not send there: {error}",
            details=[ErrorDetail(field=where, message=str(error))],
        ) from None
