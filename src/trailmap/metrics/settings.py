"""Each organization's metric settings: which source serves each metric, and its
Prometheus-compatible API: base URL, encrypted auth header, PromQL templates (docs/internals.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import anyio

from trailmap import clock
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.principal import Principal
from trailmap.encryption import InvalidToken, decrypt, encrypt
from trailmap.errors import ErrorDetail, ValidationFailed
from trailmap.metrics.prometheus import render_query
from trailmap.metrics.series import SOURCES, STANDARD_METRICS
from trailmap.outbound import OutboundError, OutboundPolicy, origin
from trailmap.storage import Connection, Database
from trailmap.storage import metrics as store

__all__ = [
    "AUTO",
    "MetricSettings",
    "PrometheusSettings",
    "read_settings",
    "render_settings",
    "update_settings",
]

AUTO = "auto"
_CHOICES = (AUTO, *SOURCES)
_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_.:/-]{0,199}$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_MAX_TEMPLATE = 4000
_MAX_QUERIES = 50
_RESOLVE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    base_url: str
    auth_header_name: str | None = None
    auth_header_value: str | None = field(default=None, repr=False)
    queries: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class MetricSettings:
    """`sources` maps a metric name to "pushed", "spans", "prometheus" or "auto" (the
    default: pushed points if there are any, else spans, else Prometheus)."""

    sources: Mapping[str, str] = field(default_factory=dict)
    prometheus: PrometheusSettings | None = None
    # Whether an auth header is stored, even when it cannot be (or need not be) decrypted.
    has_auth_header: bool = False

    def source_for(self, metric: str) -> str:
        return self.sources.get(metric, AUTO)


# The purpose of the key that encrypts a metric source's auth header (trailmap.encryption).
_PURPOSE = "trailmap metric settings"


def _from_row(row: Any, secret_key: str | None) -> MetricSettings:
    if row is None:
        return MetricSettings()
    data: dict[str, Any] = row.settings or {}
    prom = data.get("prometheus")
    prometheus = None
    if prom:
        value = None
        if row.auth_header_encrypted and secret_key:
            try:
                value = decrypt(secret_key, _PURPOSE, row.auth_header_encrypted)
            except InvalidToken:
                value = None  # the secret key changed: the header is unusable, not shown
        prometheus = PrometheusSettings(
            base_url=prom["base_url"],
            auth_header_name=prom.get("auth_header_name"),
            auth_header_value=value,
            queries=dict(prom.get("queries") or {}),
            timeout_seconds=float(prom.get("timeout_seconds", 10.0)),
        )
    return MetricSettings(
        sources=dict(data.get("sources") or {}),
        prometheus=prometheus,
        has_auth_header=bool(row.auth_header_encrypted),
    )


async def read_settings(db: Database, org_id: str, *, secret_key: str | None) -> MetricSettings:
    row = await db.read_one(store.read_settings, org_id)
    return _from_row(row, secret_key)


def render_settings(settings: MetricSettings) -> dict[str, Any]:
    """The settings as the API shows them: never the auth header's value."""
    prom = settings.prometheus
    return {
        "sources": {name: settings.source_for(name) for name in STANDARD_METRICS}
        | dict(settings.sources),
        "prometheus": None
        if prom is None
        else {
            "base_url": prom.base_url,
            "auth_header_name": prom.auth_header_name,
            "auth_header_set": settings.has_auth_header,
            "queries": dict(prom.queries),
            "timeout_seconds": prom.timeout_seconds,
        },
    }


def _has_valid_port(parts: SplitResult) -> bool:
    try:
        _ = parts.port  # a port out of range or not a number raises
    except ValueError:
        return False
    return True


def _problems_of(body: Mapping[str, Any]) -> list[ErrorDetail]:  # noqa: PLR0912 - one check per field
    problems: list[ErrorDetail] = []

    def bad(where: str, message: str) -> None:
        problems.append(ErrorDetail(field=where, message=message))

    unknown = sorted(set(body) - {"sources", "prometheus"})
    for name in unknown:
        bad(name, "unknown field; the settings are sources and prometheus")
    sources = body.get("sources")
    if sources is not None:
        if not isinstance(sources, dict):
            bad("sources", "sources must be an object of metric name to source")
        else:
            for name, source in sources.items():
                if not _NAME.match(name):
                    bad(f"sources.{name}", "not a metric name")
                elif source not in _CHOICES:
                    bad(f"sources.{name}", f"the source must be one of {', '.join(_CHOICES)}")
    prom = body.get("prometheus")
    if prom is not None:
        if not isinstance(prom, dict):
            bad("prometheus", "prometheus must be an object, or null to remove it")
            return problems
        allowed = {"base_url", "auth_header", "queries", "timeout_seconds"}
        for name in sorted(set(prom) - allowed):
            bad(f"prometheus.{name}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
        url = prom.get("base_url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username
            or parts.password
            or parts.query
            or parts.fragment
            or not _has_valid_port(parts)
            or len(url or "") > 500
        ):
            bad(
                "prometheus.base_url",
                "an http(s) URL without credentials, query or fragment, such as "
                "http://prometheus:9090 (credentials go in auth_header)",
            )
        header = prom.get("auth_header")
        if header is not None and (
            not isinstance(header, dict)
            or set(header) != {"name", "value"}
            or not isinstance(header.get("name"), str)
            or not _HEADER.match(header["name"])
            or not isinstance(header.get("value"), str)
            or not header["value"]
            or len(header["value"]) > 4000
            or any(ch in header["value"] for ch in "\r\n\x00")
        ):
            bad(
                "prometheus.auth_header",
                'auth_header is {"name": "Authorization", "value": "Bearer ..."}',
            )
        queries = prom.get("queries")
        if queries is not None:
            if not isinstance(queries, dict) or len(queries) > _MAX_QUERIES:
                bad("prometheus.queries", f"an object of at most {_MAX_QUERIES} metric templates")
            else:
                for name, template in queries.items():
                    if not _NAME.match(name):
                        bad(f"prometheus.queries.{name}", "not a metric name")
                    elif not isinstance(template, str) or not 0 < len(template) <= _MAX_TEMPLATE:
                        bad(
                            f"prometheus.queries.{name}",
                            f"a PromQL template of 1 to {_MAX_TEMPLATE} characters",
                        )
                    else:
                        # Refused here, not at every later read (where it would fail).
                        try:
                            render_query(template, service="service", environment="environment")
                        except ValueError as exc:
                            bad(f"prometheus.queries.{name}", str(exc))
        timeout = prom.get("timeout_seconds", 10.0)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0.1 <= timeout <= 60
        ):
            bad("prometheus.timeout_seconds", "a number of seconds from 0.1 to 60")
    return problems


async def update_settings(
    db: Database,
    principal: Principal,
    body: object,
    *,
    secret_key: str | None,
    outbound: OutboundPolicy,
    actor: Actor | None = None,
) -> dict[str, Any]:
    """Replace the parts of the settings that `body` names; return them as shown, with
    `notices` when something the body did not name changed with it (a stored auth header
    dropped because the base URL now points at another server). Owners and admins only;
    the audit log names what changed, never a value."""
    principal.require("manage_settings")
    if not isinstance(body, dict):
        raise ValidationFailed("The settings are a JSON object with sources and prometheus.")
    problems = _problems_of(body)
    prom = body.get("prometheus")
    if isinstance(prom, dict) and prom.get("auth_header") is not None and not secret_key:
        problems.append(
            ErrorDetail(
                field="prometheus.auth_header",
                message="set TRAILMAP_SECRET_KEY on the server first: the header is stored "
                "encrypted with it",
            )
        )
    if not problems and isinstance(prom, dict):
        # Checked now, so the admin hears of it; checked again at every connection.
        problem = await _outbound_problem(outbound, prom["base_url"])
        if problem is not None:
            problems.append(ErrorDetail(field="prometheus.base_url", message=problem))
    if problems:
        raise ValidationFailed(
            f"The metric settings are not valid: {problems[0].field}: {problems[0].message}",
            details=problems,
        )
    who = actor or Actor(f"API key {principal.key_name}")

    def _update_and_log(conn: Connection) -> Any:
        shown = _update(conn, principal.org_id, body, secret_key)
        prom = body.get("prometheus")
        header = "auth_header" in prom if isinstance(prom, dict) else False
        changed = {"parts": sorted(str(k) for k in body), "auth_header_changed": header}
        record(conn, principal.org_id, "settings.changed", who, target="metrics", details=changed)
        return shown

    return await db.write(_update_and_log)


async def _outbound_problem(outbound: OutboundPolicy, url: str) -> str | None:
    try:
        with anyio.fail_after(_RESOLVE_SECONDS):
            await outbound.check_url(url)
    except TimeoutError:
        return f"its host did not resolve within {_RESOLVE_SECONDS:g} seconds"
    except OutboundError as error:
        return str(error)
    return None


def _same_server(stored: object, new: str) -> bool:
    """Whether both URLs reach the same server: scheme, host and port (a path may differ)."""
    if not isinstance(stored, str):
        return False
    try:
        return origin(stored) == origin(new)
    except ValueError:
        return False


def _update(conn: Connection, org_id: str, body: dict[str, Any], secret_key: str | None) -> Any:
    row = store.read_settings(conn, org_id)
    data: dict[str, Any] = dict(row.settings) if row is not None else {}
    encrypted = row.auth_header_encrypted if row is not None else None
    notices: list[str] = []
    if "sources" in body:
        # Merged into what is set: "auto" unpins a metric, and a metric not named is kept.
        merged = {**(data.get("sources") or {}), **body["sources"]}
        data["sources"] = {k: v for k, v in merged.items() if v != AUTO}
    if "prometheus" in body:
        prom = body["prometheus"]
        if prom is None:
            data.pop("prometheus", None)
            encrypted = None
        else:
            kept = data.get("prometheus") or {}
            header = prom.get("auth_header")  # absent: keep the stored one; null: remove it
            stored = {
                "base_url": prom["base_url"].rstrip("/"),
                "queries": prom.get("queries", kept.get("queries", {})),
                "timeout_seconds": float(
                    prom.get("timeout_seconds", kept.get("timeout_seconds", 10.0))
                ),
                "auth_header_name": kept.get("auth_header_name"),
            }
            if (
                "auth_header" not in prom
                and encrypted is not None
                and not _same_server(kept.get("base_url"), stored["base_url"])
            ):
                # The credential was given for one server: it is not sent to another.
                stored["auth_header_name"] = None
                encrypted = None
                notices.append(
                    "The stored auth header was removed: base_url now points at another "
                    f"server (scheme, host or port) than {kept.get('base_url')}. Send "
                    "auth_header again with it if the new server needs one."
                )
            if "auth_header" in prom:
                if header is None:
                    stored["auth_header_name"] = None
                    encrypted = None
                else:
                    assert secret_key is not None  # checked before the write
                    stored["auth_header_name"] = header["name"]
                    encrypted = encrypt(secret_key, _PURPOSE, header["value"])
            data["prometheus"] = stored
    store.write_settings(
        conn, org_id, settings=data, auth_header_encrypted=encrypted, updated_us=clock.now_us()
    )
    shown = render_settings(_from_row(store.read_settings(conn, org_id), None))
    return shown | {"notices": notices} if notices else shown
