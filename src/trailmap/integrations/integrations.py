"""An organization's integrations: made, listed, changed, their secret rotated and removed by
owners and admins (the permission table's `manage_settings`), each change in the audit log."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, get_args

from trailmap import clock, ids
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.team import Authority
from trailmap.encryption import InvalidToken, decrypt, encrypt
from trailmap.errors import Conflict, ErrorDetail, NotFound, ValidationFailed
from trailmap.integrations.kubeconfig import check_kubeconfig
from trailmap.integrations.secrets import new_secret, open_secret, seal_secret
from trailmap.integrations.watches import CLUSTER_KINDS, WatchStatus
from trailmap.storage import Connection, Database
from trailmap.storage import integrations as store

__all__ = [
    "DEFAULT_OVERLAP",
    "KINDS",
    "SECRET_SETTINGS",
    "STATUSES",
    "TEXT_SETTINGS",
    "WEBHOOK_KINDS",
    "Integration",
    "IntegrationSettings",
    "Kind",
    "active_cluster_integrations",
    "active_integrations",
    "check_settings",
    "create_integration",
    "delete_integration",
    "get_integration",
    "is_integration_id",
    "list_integrations",
    "rotate_secret",
    "shows_secret",
    "update_integration",
    "webhook_path",
]

Kind = Literal["github", "gitlab", "kubernetes", "eks", "repository", "backstage"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
# The kinds that call in: a webhook URL and a secret the forge signs or sends with.
WEBHOOK_KINDS: Final = frozenset[str]({"github", "gitlab"})
Status = Literal["active", "disabled"]
STATUSES: Final[tuple[Status, ...]] = get_args(Status)

DEFAULT_OVERLAP: Final = timedelta(hours=24)
_MAX_OVERLAP: Final = timedelta(days=7)
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+$")
_MAX_SERVICES: Final = 500
_MAX_SERVICE: Final = 200


def is_integration_id(text: str) -> bool:
    """Whether `text` has the form of an integration's id (what is not, names none)."""
    return bool(_ID.match(text))


def webhook_path(integration_id: str) -> str:
    """Where the forge posts the integration's deliveries, below the server's public URL."""
    return f"/api/v1/integrations/{integration_id}/webhook"


# The settings every kind understands where it applies (docs/interfaces.md), each a text,
# besides `services`: the one a GitHub or GitLab repository's changes are about (`service`),
# the branch that counts as the default one (`branch`), a repository's remote or a
# Backstage's base URL (`url`), a cluster's `context`, `region` and `cluster`.
# A cluster's `default_env` is the environment of a namespace not in its `env_map`.
TEXT_SETTINGS: Final = (
    "service",
    "branch",
    "url",
    "context",
    "region",
    "cluster",
    "default_env",
    "submodules",
)
_TEXT_LIMITS: Final = {"branch": 255, "service": 200}
# Settings that hold credentials (a cluster's kubeconfig, a repository's or a Backstage's
# token): stored encrypted like the secret, never shown; an answer says only whether one is set.
SECRET_SETTINGS: Final = ("kubeconfig", "token")
_SECRET_SETTING_LIMIT: Final = 64 * 1024
_SETTINGS_PURPOSE: Final = "trailmap integration settings"
_TEXT_LIMIT: Final = 500
# A cluster's namespaces: `namespaces` (watched; none: every one) and `env_map` (namespace
# to environment, the events' subject).
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAX_NAMESPACES: Final = 200
_MAX_ENVIRONMENT: Final = 200


@dataclass(frozen=True, slots=True)
class IntegrationSettings:
    """`services` maps a repository's full name (`owner/name`) to a service; a repository
    not in it belongs to `service` when set, else is a service of its own name. `branch`
    overrides the branch the forge calls the default one. `texts` holds every text setting
    that is set (TEXT_SETTINGS), `service` and `branch` included."""

    services: Mapping[str, str] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict)
    env_map: Mapping[str, str] = field(default_factory=dict)
    namespaces: tuple[str, ...] = ()

    @property
    def service(self) -> str | None:
        return self.texts.get("service")

    @property
    def branch(self) -> str | None:
        return self.texts.get("branch")

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"services": dict(self.services), **dict(self.texts)}
        if self.env_map:
            out["env_map"] = dict(self.env_map)
        if self.namespaces:
            out["namespaces"] = list(self.namespaces)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> IntegrationSettings:
        data = data or {}
        texts = {k: str(data[k]) for k in TEXT_SETTINGS if data.get(k) is not None}
        return cls(
            services=dict(data.get("services") or {}),
            texts=texts,
            env_map=dict(data.get("env_map") or {}),
            namespaces=tuple(data.get("namespaces") or ()),
        )


@dataclass(frozen=True, slots=True)
class Integration:
    id: str
    org_id: str
    kind: Kind
    name: str
    settings: IntegrationSettings
    status: Status
    created: datetime
    created_by: str
    secret_rotated: datetime | None
    previous_secret_until: datetime | None
    last_delivery: datetime | None
    sealed_secret: str = field(repr=False)
    sealed_previous: str | None = field(default=None, repr=False)
    sealed_settings: str | None = field(default=None, repr=False)
    watch: WatchStatus | None = None  # kinds kubernetes and eks: the server's watch

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Integration:
        def at(us: int | None) -> datetime | None:
            return None if us is None else clock.from_us(us)

        return cls(
            id=row["id"],
            org_id=row["org_id"],
            kind=row["kind"],
            name=row["name"],
            settings=IntegrationSettings.from_json(row["settings"]),
            status=row["status"],
            created=clock.from_us(row["created_us"]),
            created_by=row["created_by"],
            secret_rotated=at(row["secret_rotated_us"]),
            previous_secret_until=at(row["previous_expires_us"]),
            last_delivery=at(row.get("last_delivery_us")),
            sealed_secret=row["secret_encrypted"],
            sealed_previous=row["previous_secret_encrypted"],
            sealed_settings=row.get("secret_settings_encrypted"),
            watch=(
                WatchStatus.from_row(row, clock.now_us()) if row["kind"] in CLUSTER_KINDS else None
            ),
        )

    @property
    def has_webhook(self) -> bool:
        return self.kind in WEBHOOK_KINDS

    def accepted_secrets(self, secret_key: str | None, now: datetime) -> list[str]:
        """The secrets a delivery may be signed with now: the current one and, until its
        overlap ends, the previous one; none that the server's keys cannot open."""
        if not secret_key:
            return []
        sealed = [self.sealed_secret]
        until = self.previous_secret_until
        if self.sealed_previous and until is not None and now < until:
            sealed.append(self.sealed_previous)
        opened: list[str] = []
        for one in sealed:
            try:
                opened.append(open_secret(secret_key, one))
            except InvalidToken:
                continue  # the server's secret key changed: that secret is lost
        return opened

    def secret_settings(self, secret_key: str | None) -> dict[str, str]:
        """The settings stored encrypted (SECRET_SETTINGS), opened; empty when none is set
        or the server's keys cannot open them."""
        return _open_settings(self.sealed_settings, secret_key)

    def as_json(self, public_url: str | None = None) -> dict[str, Any]:
        """As the API shows it: never a secret."""

        def iso(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat().replace("+00:00", "Z")

        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "status": self.status,
            "settings": self.settings.as_json(),
            "created": iso(self.created),
            "created_by": self.created_by,
            "secret_rotated": iso(self.secret_rotated),
            "previous_secret_until": iso(self.previous_secret_until),
            "last_delivery": iso(self.last_delivery),
            "kubeconfig_set": self.sealed_settings is not None
            and self.kind not in ("backstage", "repository"),
        }
        if self.kind in ("repository", "backstage"):  # their secret setting is a token
            out["token_set"] = self.sealed_settings is not None
        if self.watch is not None:
            out["watch"] = self.watch.as_json()
        if self.has_webhook:
            out["webhook_path"] = webhook_path(self.id)
            if public_url is not None:
                out["webhook_url"] = public_url.rstrip("/") + webhook_path(self.id)
        return out


def shows_secret(integration: Integration, secret: str, secret_key: str | None) -> bool:
    """Whether `secret` is the integration's current secret (the console's page that shows a
    new secret once checks the one it was handed)."""
    if not secret_key:
        return False
    try:
        current = open_secret(secret_key, integration.sealed_secret)
    except InvalidToken:
        return False
    return hmac.compare_digest(current.encode(), secret.encode())


# -- checking what is asked ------------------------------------------------------------------


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name.strip()):
        raise ValidationFailed.field(
            "name",
            "1 to 100 letters, digits, spaces, dots, hyphens or underscores, starting with "
            "a letter or digit (for example acme-github)",
        )
    return name.strip()


def _check_kind(kind: object) -> Kind:
    if kind not in KINDS:
        raise ValidationFailed.field("kind", f"one of {', '.join(KINDS)}")
    return kind


def _check_status(status: object) -> Status:
    if status not in STATUSES:
        raise ValidationFailed.field("status", f"one of {', '.join(STATUSES)}")
    return status


def check_settings(data: object, *, base: IntegrationSettings | None = None) -> IntegrationSettings:
    """The settings in `data` (`services` and the TEXT_SETTINGS), each problem named; what
    `data` does not name is kept from `base`, and a text set to null is removed."""
    base = base or IntegrationSettings()
    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise ValidationFailed.field("settings", "an object of settings, such as services")
    known = ("services", "env_map", "namespaces", *TEXT_SETTINGS, *SECRET_SETTINGS)
    problems: list[ErrorDetail] = [
        ErrorDetail(field=f"settings.{k}", message=f"unknown; the settings are {', '.join(known)}")
        for k in sorted(str(k) for k in set(data) - set(known))
    ]
    services = _check_services(data, base, problems)
    texts = dict(base.texts)
    for name in TEXT_SETTINGS:
        if name not in data:
            continue
        given = data[name]
        limit = _TEXT_LIMITS.get(name, _TEXT_LIMIT)
        if given is None:
            texts.pop(name, None)
        elif not isinstance(given, str) or not given.strip() or len(given) > limit:
            problems.append(
                ErrorDetail(
                    field=f"settings.{name}", message=f"a text of 1 to {limit} characters, or null"
                )
            )
        else:
            texts[name] = given.strip()
    env_map = _check_env_map(data, base, problems)
    namespaces = _check_namespaces(data, base, problems)
    if problems:
        raise ValidationFailed(
            f"The settings are not valid: {problems[0].field}: {problems[0].message}",
            details=problems,
        )
    return IntegrationSettings(
        services=services, texts=texts, env_map=env_map, namespaces=namespaces
    )


def _check_env_map(
    data: Mapping[str, Any], base: IntegrationSettings, problems: list[ErrorDetail]
) -> dict[str, str]:
    if "env_map" not in data:
        return dict(base.env_map)
    given = data["env_map"]
    if given is None:
        return {}
    if not isinstance(given, Mapping) or len(given) > _MAX_NAMESPACES:
        problems.append(
            ErrorDetail(
                field="settings.env_map",
                message=f"an object of at most {_MAX_NAMESPACES} namespaces to environments",
            )
        )
        return dict(base.env_map)
    env_map: dict[str, str] = {}
    for namespace, environment in given.items():
        where = f"settings.env_map.{namespace}"
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            problems.append(ErrorDetail(field=where, message="a Kubernetes namespace's name"))
        elif (
            not isinstance(environment, str)
            or not environment.strip()
            or len(environment) > _MAX_ENVIRONMENT
        ):
            problems.append(
                ErrorDetail(
                    field=where, message=f"an environment of 1 to {_MAX_ENVIRONMENT} characters"
                )
            )
        else:
            env_map[namespace] = environment.strip()
    return env_map


def _check_namespaces(
    data: Mapping[str, Any], base: IntegrationSettings, problems: list[ErrorDetail]
) -> tuple[str, ...]:
    if "namespaces" not in data:
        return base.namespaces
    given = data["namespaces"]
    if given is None:
        return ()
    if (
        not isinstance(given, list)
        or len(given) > _MAX_NAMESPACES
        or not all(isinstance(n, str) and _NAMESPACE.match(n) for n in given)
    ):
        problems.append(
            ErrorDetail(
                field="settings.namespaces",
                message=f"a list of at most {_MAX_NAMESPACES} Kubernetes namespaces' names "
                "(empty or null: every namespace)",
            )
        )
        return base.namespaces
    return tuple(dict.fromkeys(given))


def _check_services(
    data: Mapping[str, Any], base: IntegrationSettings, problems: list[ErrorDetail]
) -> dict[str, str]:
    if "services" not in data:
        return dict(base.services)
    given = data["services"]
    if given is None:
        return {}
    if not isinstance(given, Mapping) or len(given) > _MAX_SERVICES:
        problems.append(
            ErrorDetail(
                field="settings.services",
                message=f"an object of at most {_MAX_SERVICES} repositories (owner/name) "
                "to service names",
            )
        )
        return dict(base.services)
    services: dict[str, str] = {}
    for repo, service in given.items():
        where = f"settings.services.{repo}"
        if not isinstance(repo, str) or not _REPOSITORY.match(repo) or len(repo) > 300:
            problems.append(
                ErrorDetail(field=where, message="a repository's full name, owner/name")
            )
        elif not isinstance(service, str) or not service.strip() or len(service) > _MAX_SERVICE:
            problems.append(
                ErrorDetail(
                    field=where, message=f"a service name of 1 to {_MAX_SERVICE} characters"
                )
            )
        else:
            services[repo] = service.strip()
    return services


def _open_settings(sealed: str | None, secret_key: str | None) -> dict[str, str]:
    if sealed is None or not secret_key:
        return {}
    try:
        opened = json.loads(decrypt(secret_key, _SETTINGS_PURPOSE, sealed))
    except (InvalidToken, ValueError):
        return {}
    return {k: v for k, v in opened.items() if isinstance(v, str)}


def _split_settings(data: object) -> tuple[object, dict[str, str | None]]:
    """The settings without their secret ones, and the secret ones given (None: remove)."""
    if not isinstance(data, Mapping):
        return data, {}
    secret: dict[str, str | None] = {}
    for name in SECRET_SETTINGS:
        if name not in data:
            continue
        given = data[name]
        if given is not None and (
            not isinstance(given, str) or not given.strip() or len(given) > _SECRET_SETTING_LIMIT
        ):
            raise ValidationFailed.field(
                f"settings.{name}", f"a text of 1 to {_SECRET_SETTING_LIMIT} characters, or null"
            )
        if name == "kubeconfig" and given is not None:
            try:
                check_kubeconfig(given)
            except ValueError as error:
                raise ValidationFailed.field(f"settings.{name}", str(error)) from None
        secret[name] = given
    return {k: v for k, v in data.items() if k not in SECRET_SETTINGS}, secret


def _sealed_settings(
    current: str | None, changes: dict[str, str | None], secret_key: str | None
) -> str | None:
    """The encrypted secret settings once `changes` are applied to `current`'s."""
    if not changes:
        return current
    merged: dict[str, str | None] = {**_open_settings(current, secret_key), **changes}
    kept = {k: v for k, v in merged.items() if v is not None}
    if not kept:
        return None
    if not secret_key:
        seal_secret(secret_key, "")  # raises: the server has no key to encrypt with
    assert secret_key is not None
    return encrypt(secret_key, _SETTINGS_PURPOSE, json.dumps(kept))


def _check_overlap(overlap: timedelta) -> timedelta:
    if not timedelta(0) <= overlap <= _MAX_OVERLAP:
        raise ValidationFailed.field(
            "overlap", "from 0 to 7 days, during which the previous secret is still accepted"
        )
    return overlap


# -- managing them ---------------------------------------------------------------------------


def _details(integration: Integration) -> dict[str, Any]:
    """What the audit log says of an integration: never a secret."""
    return {"id": integration.id, "kind": integration.kind, "name": integration.name}


async def create_integration(
    db: Database,
    org_id: str,
    *,
    who: Authority,
    by: Actor,
    kind: object,
    name: object,
    settings: object = None,
    secret_key: str | None,
) -> tuple[Integration, str]:
    """A new integration and its secret, which is returned only now."""
    who.require("manage_settings")
    checked_kind = _check_kind(kind)
    checked_name = _check_name(name)
    public, secret_changes = _split_settings(settings)
    checked = check_settings(public)
    sealed_settings = _sealed_settings(None, secret_changes, secret_key)
    secret = new_secret()
    now_us = clock.now_us()
    row = {
        "org_id": org_id,
        "id": ids.new_id(),
        "kind": checked_kind,
        "name": checked_name,
        "settings": checked.as_json(),
        "status": "active",
        "secret_encrypted": seal_secret(secret_key, secret),
        "previous_secret_encrypted": None,
        "previous_expires_us": None,
        "secret_rotated_us": None,
        "secret_settings_encrypted": sealed_settings,
        "created_by": by.name[:400],
        "created_us": now_us,
    }

    def _create(conn: Connection) -> Integration:
        if store.name_taken(conn, org_id, checked_name):
            raise Conflict(f"An integration named {checked_name!r} exists already; pick another.")
        store.insert_integration(conn, row)
        made = Integration.from_row(row)
        record(conn, org_id, "integration.created", by, target=made.name, details=_details(made))
        return made

    return await db.write(_create), secret


def _get(conn: Connection, org_id: str, integration_id: str) -> Integration:
    row = (
        store.get_integration(conn, org_id, integration_id)
        if is_integration_id(integration_id)
        else None
    )
    if row is None:
        raise NotFound("No integration of this organization has that id.")
    return Integration.from_row(row)


async def active_cluster_integrations(db: Database) -> list[Integration]:
    """Every organization's active kubernetes and eks integrations: what the server's
    supervisor watches (it acts for the server, not for a member)."""
    rows = await db.read_one(store.active_cluster_integrations, CLUSTER_KINDS)
    return [Integration.from_row(r) for r in rows]


async def active_integrations(db: Database, kinds: tuple[str, ...]) -> list[Integration]:
    """Every organization's active integrations of `kinds` (the Backstage indexer's list: it
    acts for the server, not for a member)."""
    rows = await db.read_one(store.active_cluster_integrations, kinds)
    return [Integration.from_row(r) for r in rows]


async def list_integrations(db: Database, org_id: str, *, who: Authority) -> list[Integration]:
    who.require("manage_settings")
    return [Integration.from_row(r) for r in await db.read_one(store.list_integrations, org_id)]


async def get_integration(
    db: Database, org_id: str, integration_id: str, *, who: Authority
) -> Integration:
    who.require("manage_settings")
    return await db.read_one(_get, org_id, integration_id)


async def update_integration(
    db: Database,
    org_id: str,
    integration_id: str,
    changes: object,
    *,
    who: Authority,
    by: Actor,
    secret_key: str | None = None,
) -> Integration:
    """Change the name, status or settings that `changes` names (a secret setting needs
    `secret_key`, the server's, to be encrypted with)."""
    who.require("manage_settings")
    if not isinstance(changes, Mapping) or not changes:
        raise ValidationFailed("Send a JSON object with name, status and/or settings.")
    unknown = sorted(set(changes) - {"name", "status", "settings"})
    if unknown:
        raise ValidationFailed.field(unknown[0], "unknown; change name, status or settings")

    def _update(conn: Connection) -> Integration:
        current = _get(conn, org_id, integration_id)
        values: dict[str, Any] = {}
        if "name" in changes:
            values["name"] = _check_name(changes["name"])
            if store.name_taken(conn, org_id, values["name"], other_than=current.id):
                raise Conflict(f"An integration named {values['name']!r} exists already.")
        if "status" in changes:
            values["status"] = _check_status(changes["status"])
        if "settings" in changes:
            public, secret_changes = _split_settings(changes["settings"])
            values["settings"] = check_settings(public, base=current.settings).as_json()
            if secret_changes:
                values["secret_settings_encrypted"] = _sealed_settings(
                    current.sealed_settings, secret_changes, secret_key
                )
        store.update_integration(conn, org_id, current.id, values)
        changed = _get(conn, org_id, current.id)
        details = _details(changed) | {"changed": sorted(values)}
        record(conn, org_id, "integration.updated", by, target=changed.name, details=details)
        return changed

    return await db.write(_update)


async def rotate_secret(
    db: Database,
    org_id: str,
    integration_id: str,
    *,
    who: Authority,
    by: Actor,
    secret_key: str | None,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> tuple[Integration, str]:
    """A new secret, returned only now; the previous one is still accepted for `overlap`
    (while the forge's settings are changed), then no more."""
    who.require("manage_settings")
    _check_overlap(overlap)
    secret = new_secret()
    sealed = seal_secret(secret_key, secret)
    now = clock.now()

    def _rotate(conn: Connection) -> Integration:
        current = _get(conn, org_id, integration_id)
        keep_previous = overlap > timedelta(0)
        store.update_integration(
            conn,
            org_id,
            current.id,
            {
                "secret_encrypted": sealed,
                "previous_secret_encrypted": current.sealed_secret if keep_previous else None,
                "previous_expires_us": clock.to_us(now + overlap) if keep_previous else None,
                "secret_rotated_us": clock.to_us(now),
            },
        )
        details = _details(current) | {"overlap_seconds": int(overlap.total_seconds())}
        record(conn, org_id, "integration.secret_rotated", by, target=current.name, details=details)
        return _get(conn, org_id, current.id)

    return await db.write(_rotate), secret


async def delete_integration(
    db: Database, org_id: str, integration_id: str, *, who: Authority, by: Actor
) -> Integration:
    """Remove the integration and its deliveries; its webhook answers 404 from now on. The
    events it made stay on the timeline."""
    who.require("manage_settings")

    def _delete(conn: Connection) -> Integration:
        current = _get(conn, org_id, integration_id)
        store.delete_integration(conn, org_id, current.id)
        record(
            conn, org_id, "integration.deleted", by, target=current.name, details=_details(current)
        )
        return current

    return await db.write(_delete)
