"""Metric points from a Prometheus-compatible API (Prometheus, Thanos, Mimir, VictoriaMetrics):
one PromQL template per metric, rendered for a service and environment (docs/internals.md)."""

from __future__ import annotations

import logging
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import httpx
import orjson

from trailmap.metrics.series import Series, SeriesRequest
from trailmap.outbound import OutboundError, OutboundPolicy, certificate_problem

__all__ = [
    "DEFAULT_QUERIES",
    "PLACEHOLDERS",
    "PrometheusConfig",
    "PrometheusSource",
    "check_connection",
    "render_query",
]

log = logging.getLogger(__name__)

# The names a template may use, as $name or ${name}; $$ is a literal dollar sign.
PLACEHOLDERS: tuple[str, ...] = ("service", "environment")

# OpenTelemetry's stable HTTP server metric (http.server.request.duration, seconds) as it
# reaches Prometheus with its resource attributes as labels (service.name ->
# service_name, deployment.environment.name -> deployment_environment_name).
_SELECTOR = 'service_name="$service",deployment_environment_name="$environment"'
_REQUESTS = f"http_server_request_duration_seconds_count{{{_SELECTOR}}}"
_SERVER_ERRORS = (
    f'http_server_request_duration_seconds_count{{{_SELECTOR},http_response_status_code=~"5.."}}'
)
_BUCKETS = f"http_server_request_duration_seconds_bucket{{{_SELECTOR}}}"


def _quantile_ms(quantile: str) -> str:
    return f"1000 * histogram_quantile({quantile}, sum by (le) (rate({_BUCKETS}[5m])))"


DEFAULT_QUERIES: Mapping[str, str] = {
    # `or vector(0)`: a service without a single 5xx has no such series at all, and its
    # error rate is 0, not missing. No traffic gives 0/0 = NaN, which is skipped.
    "error_rate": f"(sum(rate({_SERVER_ERRORS}[5m])) or vector(0)) / sum(rate({_REQUESTS}[5m]))",
    "throughput": f"sum(rate({_REQUESTS}[5m]))",
    "p50_latency": _quantile_ms("0.5"),
    "p95_latency": _quantile_ms("0.95"),
    "p99_latency": _quantile_ms("0.99"),
}

_MAX_TIMEOUT_SECONDS: Final = 300.0
_MAX_BODY_BYTES: Final = 32 * 1024 * 1024
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    """Where an organization's Prometheus-compatible API is and how to ask it.

    ``base_url`` may carry a path prefix (Mimir's ``/prometheus``); ``/api/v1/...`` is
    appended to it. ``auth_header`` is sent as is, e.g. ``("Authorization", "Bearer ...")``
    or ``("X-Scope-OrgID", "tenant")``; its value is never shown (repr, errors, logs)."""

    base_url: str
    auth_header: tuple[str, str] | None = None
    queries: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_QUERIES))
    timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _checked_base_url(self.base_url))
        if self.auth_header is not None:
            name, value = self.auth_header
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"auth_header name {name!r} is not a valid HTTP header name")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"auth_header {name} value contains a line break or NUL")
        if not (
            isinstance(self.timeout_seconds, int | float)
            and math.isfinite(self.timeout_seconds)
            and 0 < self.timeout_seconds <= _MAX_TIMEOUT_SECONDS
        ):
            raise ValueError(
                f"timeout_seconds must be more than 0 and at most {_MAX_TIMEOUT_SECONDS:g}"
            )
        queries = dict(self.queries)
        for metric, template in queries.items():
            if not metric:
                raise ValueError("a query needs a metric name")
            try:
                render_query(template, service="service", environment="environment")
            except ValueError as exc:
                raise ValueError(f"the query for {metric}: {exc}") from None
        object.__setattr__(self, "queries", queries)

    def __repr__(self) -> str:
        auth = "None" if self.auth_header is None else f"({self.auth_header[0]!r}, '***')"
        return (
            f"PrometheusConfig(base_url={self.base_url!r}, auth_header={auth}, "
            f"queries={self.queries!r}, timeout_seconds={self.timeout_seconds!r})"
        )


def _checked_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, not {url!r}")
    if not parts.hostname:
        raise ValueError("base_url needs a host")
    if parts.username is not None or parts.password is not None:
        # A password in the URL would show wherever the URL is shown.
        raise ValueError("base_url must not contain credentials; use auth_header")
    if parts.query or parts.fragment:
        raise ValueError("base_url must not have a query string or fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"base_url has an invalid port: {url!r}") from None
    return url.rstrip("/")


# --- Templates -----------------------------------------------------------------------------

_IDENTIFIER_START = frozenset(string.ascii_letters + "_")
_IDENTIFIER = frozenset(string.ascii_letters + string.digits + "_")
_QUOTES = frozenset("\"'`")
_REGEX_SPECIAL = frozenset(r"\.+*?()|[]{}^$")
_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def render_query(template: str, *, service: str, environment: str) -> str:
    """The template with ``$service`` and ``$environment`` replaced by the values, escaped
    as the content of the PromQL string literal they stand in, so no value can end the
    literal early: ``"$service"`` and ``'$service'`` escape backslashes, that quote and
    control characters; after ``=~`` or ``!~`` the value is also escaped as a regular
    expression, so it matches only itself. A placeholder outside a string literal, an
    unknown ``$name``, or a value a raw `...` literal cannot hold is a ValueError. Text in
    ``#`` comments is left alone."""
    values = {"service": service, "environment": environment}
    out: list[str] = []
    quote: str | None = None  # the quote of the string literal we are in
    regex = False  # whether that literal is the operand of =~ or !~
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if quote is None and c == "#":
            end = template.find("\n", i)
            end = n if end == -1 else end
            out.append(template[i:end])
            i = end
        elif quote is None and c in _QUOTES:
            regex = "".join(out).rstrip().endswith(("=~", "!~"))
            quote = c
            out.append(c)
            i += 1
        elif quote is not None and c == quote:
            quote = None
            out.append(c)
            i += 1
        elif quote is not None and quote != "`" and c == "\\":
            out.append(template[i : i + 2])  # an escape the author wrote, kept whole
            i += 2
        elif c == "$":
            name, i = _placeholder(template, i)
            if name is None:
                out.append("$")
                continue
            if name not in values:
                known = ", ".join(f"${p}" for p in PLACEHOLDERS)
                raise ValueError(f"unknown placeholder ${name} (known: {known}; $$ for a $)")
            if quote is None:
                raise ValueError(
                    f'${name} must be inside a quoted string, e.g. service_name="$service"'
                )
            out.append(_literal_content(values[name], quote, regex=regex))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _placeholder(template: str, i: int) -> tuple[str | None, int]:
    """The placeholder at template[i] == "$" and the index after it; None for a literal $."""
    following = template[i + 1 : i + 2]
    if following == "$":
        return None, i + 2
    if following == "{":
        end = _identifier_end(template, i + 2)
        if template[end : end + 1] != "}":
            raise ValueError(f"unclosed ${{ at character {i + 1}")
        return template[i + 2 : end], end + 1
    if following and following in _IDENTIFIER_START:
        end = _identifier_end(template, i + 1)
        return template[i + 1 : end], end
    return None, i + 1  # "$" ending a regular expression, for instance


def _identifier_end(template: str, start: int) -> int:
    end = start
    while end < len(template) and template[end] in _IDENTIFIER:
        end += 1
    return end


def _literal_content(value: str, quote: str, *, regex: bool) -> str:
    if regex:
        value = "".join("\\" + c if c in _REGEX_SPECIAL else c for c in value)
    if quote == "`":
        # A raw literal has no escapes: a backquote cannot be in it, and nothing else needs
        # escaping.
        if "`" in value:
            raise ValueError("a value with a ` cannot be placed in a `...` string; use quotes")
        return value
    escaped: list[str] = []
    for c in value:
        if c in _NAMED_ESCAPES:
            escaped.append(_NAMED_ESCAPES[c])
        elif c == quote:
            escaped.append("\\" + c)
        elif c < " " or c == "\x7f":
            escaped.append(f"\\x{ord(c):02x}")
        elif "\ud800" <= c <= "\udfff":
            raise ValueError("a value is not valid Unicode text (a lone surrogate)")
        else:
            escaped.append(c)
    return "".join(escaped)


# --- Asking the server ---------------------------------------------------------------------

# The Prometheus API's errors about a query (bad_data 400, execution 422, timeout and
# unavailable 503; VictoriaMetrics names the type by the status): only such an answer, in
# the API's JSON, has its message shown, since it explains a mistake in a PromQL template.
_API_ERROR_TYPES: Final = frozenset({"bad_data", "execution", "timeout", "unavailable"})
_API_ERROR_STATUSES: Final = frozenset({400, 422, 503})
_MAX_API_ERROR_CHARS: Final = 500
# The content types an answer that is not the API's JSON is named by (a login page, a
# dashboard, a proxy's error); any other is not repeated, since the server chose its text.
_KNOWN_MEDIA_TYPES: Final = frozenset(
    {
        "application/json",
        "application/problem+json",
        "application/xml",
        "application/octet-stream",
        "application/openmetrics-text",
        "application/x-protobuf",
        "text/html",
        "text/plain",
        "text/xml",
    }
)


class _Failure(Exception):
    """Why the server gave no usable answer: the sentence's end, after the server's name,
    or (``whole``) the whole sentence."""

    def __init__(self, text: str, *, whole: bool = False) -> None:
        super().__init__(text)
        self.whole = whole

    def sentence(self, config: PrometheusConfig) -> str:
        text = str(self)
        return text if self.whole else f"The Prometheus server at {_display(config)} {text}"


class PrometheusSource:
    """A ``MetricSource`` over a Prometheus-compatible query API, reached only at the
    addresses ``outbound`` allows (trailmap/outbound.py).

    Without a client, each fetch opens and closes its own; a shared ``httpx.AsyncClient``
    is used as given (this source sends its own timeout and auth header per request)."""

    name = "prometheus"

    def __init__(
        self,
        config: PrometheusConfig,
        *,
        outbound: OutboundPolicy,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self._outbound = outbound
        self._client = client

    async def fetch(self, request: SeriesRequest) -> Series:
        template = self.config.queries.get(request.name)
        if template is None:
            return self._error(
                request.name,
                f"{request.name} is not configured in the Prometheus source at "
                f"{_display(self.config)}: it has no query for it (it has queries for: "
                f"{', '.join(sorted(self.config.queries)) or 'none'}).",
            )
        if request.step_seconds < 1:
            return self._error(request.name, "The step must be at least 1 second.")
        try:
            query = render_query(template, service=request.service, environment=request.environment)
        except ValueError as exc:
            return self._error(request.name, f"The Prometheus query for {request.name}: {exc}.")
        # Evaluate on multiples of the step (as Grafana does), so the same points come back
        # however the window is cut; Prometheus includes `end`, the request excludes it.
        step_us = request.step_seconds * 1_000_000
        first_us = -(-request.start_us // step_us) * step_us
        last_us = (request.end_us - 1) // step_us * step_us
        if last_us < first_us:
            return Series(name=request.name, source=self.name)
        params = {
            "query": query,
            "start": _seconds(first_us),
            "end": _seconds(last_us),
            "step": str(request.step_seconds),
        }
        try:
            data = await _ask(
                self.config, "/api/v1/query_range", params, self._client, self._outbound
            )
            times_us, values = _matrix_points(data, request)
        except _Failure as exc:
            return self._error(request.name, exc.sentence(self.config))
        return Series(name=request.name, source=self.name, times_us=times_us, values=values)

    def _error(self, metric: str, sentence: str) -> Series:
        sentence = _scrub(sentence, self.config)
        log.warning("prometheus source: %s: %s", metric, sentence)
        return Series(name=metric, source=self.name, error=sentence)


async def check_connection(
    config: PrometheusConfig,
    *,
    outbound: OutboundPolicy,
    client: httpx.AsyncClient | None = None,
) -> str | None:
    """None when the server answers a query (``1``) with the configured auth header; else
    the sentence saying why not."""
    try:
        data = await _ask(config, "/api/v1/query", {"query": "1"}, client, outbound)
    except _Failure as exc:
        return _scrub(exc.sentence(config), config)
    if not isinstance(data, dict) or data.get("resultType") != "scalar":
        return (
            f"The Prometheus server at {_display(config)} answered the query 1 with "
            "something other than a scalar."
        )
    return None


async def _ask(
    config: PrometheusConfig,
    path: str,
    params: dict[str, str],
    client: httpx.AsyncClient | None,
    outbound: OutboundPolicy,
) -> Any:
    """The ``data`` of a successful answer; anything else raises _Failure. Whatever went
    wrong on the way, the sentence never quotes what the server sent (but for the
    Prometheus API's own error message) and never tells a closed port from an open one."""
    headers = {"Accept": "application/json"}
    if config.auth_header is not None:
        headers[config.auth_header[0]] = config.auth_header[1]
    try:
        with anyio.fail_after(config.timeout_seconds):
            async with outbound.get(
                config.base_url + path,
                io_timeout_seconds=config.timeout_seconds,
                params=params,
                headers=headers,
                client=client,
            ) as response:
                body = await _read(response)
                content_type = response.headers.get("Content-Type", "")
                return _answer_data(config, response.status_code, content_type, body)
    except OutboundError as exc:
        raise _Failure(f"is not asked: {exc}.") from None
    except (TimeoutError, httpx.HTTPError) as exc:
        problem = certificate_problem(exc)
        if problem is not None:
            raise _Failure(
                f"presented a TLS certificate that is not trusted ({problem})."
            ) from None
        raise _Failure(
            f"Trailmap could not get an answer from the Prometheus server at "
            f"{_display(config)}: the connection was refused or closed, nothing answered "
            f"within {config.timeout_seconds:g} seconds, or what answered was not HTTP.",
            whole=True,
        ) from None


async def _read(response: httpx.Response) -> bytes:
    if response.is_redirect:
        # Not followed, and its Location not repeated: it could name any host.
        raise _Failure(
            f"answered HTTP {_status(response.status_code)}, a redirect, which Trailmap does "
            "not follow; set the base URL to the server's own address."
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise _Failure(
                f"answered with more than {_MAX_BODY_BYTES // (1024 * 1024)} MiB; "
                "the query must aggregate to one series."
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _answer_data(config: PrometheusConfig, status: int, content_type: str, body: bytes) -> Any:
    media_type = content_type.split(";", maxsplit=1)[0].strip().lower()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    api_error = _api_error(status, media_type, document)
    if api_error is not None:
        error_type, message = api_error
        end = "" if message.endswith(".") else "."
        raise _Failure(f"refused the query (HTTP {status}, {error_type}): {message}{end}")
    if status in (401, 403):
        header = "no auth header" if config.auth_header is None else config.auth_header[0]
        raise _Failure(
            f"refused the credentials (HTTP {_status(status)}); check the auth header ({header})."
        )
    if not 200 <= status < 300:
        raise _Failure(f"answered HTTP {_status(status)}.")
    if not isinstance(document, dict) or document.get("status") != "success":
        kind = media_type if media_type in _KNOWN_MEDIA_TYPES else "another content type"
        raise _Failure(
            f"answered with something that is not the Prometheus API's JSON ({kind}); "
            "check the base URL."
        )
    return document.get("data")


def _api_error(status: int, media_type: str, document: Any) -> tuple[str, str] | None:
    """The error type and message of an answer that is the Prometheus API's own error (a
    PromQL mistake is explained there); None for any other answer, whose body is not shown."""
    if (
        status not in _API_ERROR_STATUSES
        or media_type != "application/json"
        or not isinstance(document, dict)
        or document.get("status") != "error"
        or document.get("errorType") not in {*_API_ERROR_TYPES, str(status)}
        or not isinstance(document.get("error"), str)
    ):
        return None
    message = " ".join(document["error"].split()) or "(no message)"
    if len(message) > _MAX_API_ERROR_CHARS:
        message = message[: _MAX_API_ERROR_CHARS - 3] + "..."
    return str(document["errorType"]), message


def _status(status: int) -> str:
    """The status with its standard phrase; the server's own reason phrase is its text."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _matrix_points(data: Any, request: SeriesRequest) -> tuple[list[int], list[float]]:
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise _Failure(f"answered a range query with a {kind or 'malformed'} result, not a matrix.")
    result = data.get("result")
    if not isinstance(result, list):
        raise _Failure("answered with a malformed matrix.")
    if not result:
        return [], []
    if len(result) > 1:
        raise _Failure(
            f"returned {len(result)} series for {request.name} of {request.service} in "
            f"{request.environment}; the query must aggregate them to one series "
            "(for example with sum(...) or sum by () (...))."
        )
    values = result[0].get("values") if isinstance(result[0], dict) else None
    if not isinstance(values, list):
        raise _Failure("answered with a malformed matrix.")
    points: dict[int, float] = {}
    try:
        for timestamp, text in values:
            value = float(text)
            time_us = round(float(timestamp) * 1_000_000)
            if math.isfinite(value) and request.start_us <= time_us < request.end_us:
                points[time_us] = value
    except (TypeError, ValueError):
        raise _Failure("answered with a malformed point in the matrix.") from None
    times_us = sorted(points)
    return times_us, [points[t] for t in times_us]


def _seconds(time_us: int) -> str:
    """Microseconds as exact decimal seconds (Prometheus keeps milliseconds)."""
    sign = "-" if time_us < 0 else ""
    whole, fraction = divmod(abs(time_us), 1_000_000)
    return f"{sign}{whole}.{fraction:06d}" if fraction else f"{sign}{whole}"


def _display(config: PrometheusConfig) -> str:
    return config.base_url  # validated to carry no credentials, query or fragment


def _scrub(sentence: str, config: PrometheusConfig) -> str:
    """The sentence without the auth header's value, whatever the server echoed back."""
    if config.auth_header is not None and config.auth_header[1]:
        value = config.auth_header[1]
        sentence = sentence.replace(value, "***")
        _, _, credential = value.partition(" ")  # the token of "Bearer <token>"
        if len(credential) >= 4:
            sentence = sentence.replace(credential, "***")
    return sentence
