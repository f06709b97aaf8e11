"""The Prometheus source against a real Prometheus (backfilled with promtool), and against
servers that misbehave on purpose: closed, silent, trickling, not Prometheus at all."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import httpx
import orjson
import pytest

from tests.metrics.conftest import StartPrometheus
from tests.metrics.prometheus_server import (
    BASIC_AUTH_USER,
    PrometheusServer,
    basic_auth_header,
    running_prometheus,
    to_openmetrics,
)
from trailmap.metrics.prometheus import (
    DEFAULT_QUERIES,
    PrometheusConfig,
    PrometheusSource,
    check_connection,
    render_query,
)
from trailmap.metrics.series import STANDARD_METRICS, MetricSource, SeriesRequest
from trailmap.outbound import OutboundPolicy

MINUTE_US = 60_000_000
NOW_US = int(time.time()) // 60 * MINUTE_US
CHANGE_US = NOW_US - 60 * MINUTE_US  # the deployment, an hour ago
DATA_START_US = NOW_US - 180 * MINUTE_US
DATA_END_US = NOW_US - 5 * MINUTE_US  # exclusive
HOSTILE = 'a"b\\c'
GAUGE = 'error_rate{service="$service",env="$environment"}'


# The test servers listen on loopback, which the default policy refuses.
LOOPBACK = OutboundPolicy.parse("127.0.0.0/8")


def _source(config: PrometheusConfig, *, client: httpx.AsyncClient | None = None) -> MetricSource:
    return PrometheusSource(config, outbound=LOOPBACK, client=client)


async def _check(config: PrometheusConfig) -> str | None:
    return await check_connection(config, outbound=LOOPBACK)


def _minutes(start_us: int, end_us: int) -> list[int]:
    return list(range(start_us, end_us, MINUTE_US))


def _checkout_error_rate(time_us: int) -> float:
    return 0.01 if time_us < CHANGE_US else 0.05


def _gauges() -> str:
    minutes = _minutes(DATA_START_US, DATA_END_US)

    def flat(value: float) -> list[tuple[int, float]]:
        return [(t, value) for t in minutes]

    return to_openmetrics(
        [
            (
                "error_rate",
                {"service": "checkout", "env": "production"},
                [(t, _checkout_error_rate(t)) for t in minutes],
            ),
            ("error_rate", {"service": "checkout", "env": "staging"}, flat(0.5)),
            ("error_rate", {"service": "payments", "env": "production"}, flat(0.9)),
            ("error_rate", {"service": HOSTILE, "env": "production"}, flat(0.3)),
            ("error_rate", {"service": 'a"b\\\\c', "env": "production"}, flat(0.4)),
            ("error_rate", {"service": "a", "env": "production"}, flat(0.6)),
            (
                "by_instance",
                {"service": "checkout", "env": "production", "instance": "a"},
                flat(1.0),
            ),
            (
                "by_instance",
                {"service": "checkout", "env": "production", "instance": "b"},
                flat(2.0),
            ),
        ]
    )


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binaries: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """One Prometheus for the module's read-only tests, behind basic auth so that every
    query proves the auth header reaches the server; a lookback shorter than the step, so
    each point comes back once."""
    workdir = tmp_path_factory.mktemp("shared-prometheus")
    with running_prometheus(_gauges(), workdir, basic_auth=True, lookback_delta="30s") as server:
        yield server


def _request(
    name: str = "error_rate",
    *,
    service: str = "checkout",
    environment: str = "production",
    start_us: int = CHANGE_US - 30 * MINUTE_US,
    end_us: int = CHANGE_US + 30 * MINUTE_US,
    step_seconds: int = 60,
) -> SeriesRequest:
    return SeriesRequest(
        name=name,
        service=service,
        environment=environment,
        start_us=start_us,
        end_us=end_us,
        step_seconds=step_seconds,
    )


# --- Against a real Prometheus --------------------------------------------------------------


@pytest.mark.anyio
async def test_fetch_returns_exactly_the_backfilled_points_of_the_service_and_environment(
    prometheus: PrometheusServer,
) -> None:
    source: MetricSource = _source(prometheus.config({"error_rate": GAUGE}))

    series = await source.fetch(_request())

    expected_times = _minutes(CHANGE_US - 30 * MINUTE_US, CHANGE_US + 30 * MINUTE_US)
    assert series.error is None
    assert series.source == "prometheus"
    assert series.name == "error_rate"
    assert series.times_us == expected_times
    assert series.values == [_checkout_error_rate(t) for t in expected_times]


@pytest.mark.anyio
async def test_points_of_the_last_hours_are_served_up_to_the_end_of_the_data(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": GAUGE}))

    series = await source.fetch(_request(start_us=NOW_US - 20 * MINUTE_US, end_us=NOW_US))

    assert series.error is None
    assert series.times_us == _minutes(NOW_US - 20 * MINUTE_US, DATA_END_US)
    assert set(series.values) == {0.05}


@pytest.mark.anyio
async def test_the_window_is_half_open_and_unaligned_edges_keep_only_points_inside(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": GAUGE}))
    start_us = CHANGE_US - 3 * MINUTE_US + 1
    end_us = CHANGE_US + 2 * MINUTE_US

    series = await source.fetch(_request(start_us=start_us, end_us=end_us))

    assert series.times_us == _minutes(CHANGE_US - 2 * MINUTE_US, end_us)
    assert series.values == [0.01, 0.01, 0.05, 0.05]


@pytest.mark.anyio
async def test_another_environment_gives_that_environments_points_only(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": GAUGE}))

    series = await source.fetch(_request(environment="staging"))

    assert series.error is None
    assert len(series.values) == 60
    assert set(series.values) == {0.5}


@pytest.mark.anyio
async def test_a_service_name_with_quote_and_backslash_is_matched_exactly(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": GAUGE}))

    series = await source.fetch(_request(service=HOSTILE))

    assert series.error is None
    assert len(series.values) == 60
    assert set(series.values) == {0.3}


@pytest.mark.anyio
async def test_a_service_name_cannot_break_out_of_its_label_matcher(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": GAUGE}))
    # Unescaped, this would read service="checkout",service!="",env="production".
    injection = 'checkout",service!="'

    series = await source.fetch(_request(service=injection))

    assert series.error is None
    assert series.values == []


@pytest.mark.anyio
async def test_a_regex_matcher_matches_the_service_name_literally(
    prometheus: PrometheusServer,
) -> None:
    source = _source(
        prometheus.config({"error_rate": 'error_rate{service=~"$service",env="$environment"}'})
    )

    pattern_like = await source.fetch(_request(service="check.ut"))
    hostile = await source.fetch(_request(service=HOSTILE))

    assert (pattern_like.error, pattern_like.values) == (None, [])
    assert set(hostile.values) == {0.3}


@pytest.mark.anyio
async def test_a_query_giving_several_series_is_an_error_asking_to_aggregate(
    prometheus: PrometheusServer,
) -> None:
    source = _source(
        prometheus.config({"saturation": 'by_instance{service="$service",env="$environment"}'})
    )

    series = await source.fetch(_request("saturation"))

    assert series.values == []
    assert series.error is not None
    assert "returned 2 series" in series.error
    assert "aggregate" in series.error


@pytest.mark.anyio
async def test_an_aggregated_query_gives_one_series(prometheus: PrometheusServer) -> None:
    source = _source(
        prometheus.config({"saturation": 'sum(by_instance{service="$service",env="$environment"})'})
    )

    series = await source.fetch(_request("saturation"))

    assert series.error is None
    assert set(series.values) == {3.0}


@pytest.mark.anyio
async def test_a_promql_syntax_error_reports_prometheus_own_message(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": "sum(" + GAUGE}))

    series = await source.fetch(_request())

    assert series.values == []
    assert series.error is not None
    assert prometheus.base_url in series.error
    assert "refused the query (HTTP 400, bad_data)" in series.error
    assert "parse error" in series.error
    assert "unclosed left parenthesis" in series.error


@pytest.mark.anyio
async def test_a_metric_without_a_query_is_reported_as_not_configured(
    prometheus: PrometheusServer,
) -> None:
    source = _source(prometheus.config({"error_rate": GAUGE}))

    series = await source.fetch(_request("p99_latency"))

    assert series.values == []
    assert series.error is not None
    assert series.error.startswith("p99_latency is not configured in the Prometheus source")


@pytest.mark.anyio
async def test_non_finite_values_are_skipped(prometheus: PrometheusServer) -> None:
    # Prometheus answers x/0 with +Inf and 0/0 with NaN; neither is a point.
    source = _source(
        prometheus.config(
            {
                "infinite": 'error_rate{service="$service",env="$environment"} / 0',
                "not_a_number": '(error_rate{service="$service",env="$environment"} * 0) / 0',
            }
        )
    )

    infinite = await source.fetch(_request("infinite"))
    not_a_number = await source.fetch(_request("not_a_number"))

    assert (infinite.error, infinite.values) == (None, [])
    assert (not_a_number.error, not_a_number.values) == (None, [])


@pytest.mark.anyio
async def test_a_wrong_password_is_a_401_sentence_without_the_secret(
    prometheus: PrometheusServer,
) -> None:
    secret = "wrong-secret-value"
    header = basic_auth_header(BASIC_AUTH_USER, secret)
    config = PrometheusConfig(
        base_url=prometheus.base_url, auth_header=header, queries={"error_rate": GAUGE}
    )

    series = await _source(config).fetch(_request())
    connection = await _check(config)

    for sentence in (series.error, connection):
        assert sentence is not None
        assert "401" in sentence
        assert prometheus.base_url in sentence
        assert secret not in sentence
        assert header[1] not in sentence
        assert header[1].split()[1] not in sentence


@pytest.mark.anyio
async def test_no_auth_header_against_a_server_that_wants_one_is_a_401_sentence(
    prometheus: PrometheusServer,
) -> None:
    config = PrometheusConfig(base_url=prometheus.base_url, queries={"error_rate": GAUGE})

    series = await _source(config).fetch(_request())

    assert series.error is not None
    assert "HTTP 401" in series.error


@pytest.mark.anyio
async def test_check_connection_is_none_when_the_server_answers(
    prometheus: PrometheusServer,
) -> None:
    assert await _check(prometheus.config({})) is None


@pytest.mark.anyio
async def test_a_shared_client_is_used_and_left_open(prometheus: PrometheusServer) -> None:
    async with httpx.AsyncClient() as client:
        source = _source(prometheus.config({"error_rate": GAUGE}), client=client)

        first = await source.fetch(_request())
        second = await source.fetch(_request(environment="staging"))

        assert not client.is_closed
    assert (first.error, second.error) == (None, None)
    assert len(first.values) == len(second.values) == 60


def _otel_http_histograms() -> str:
    """OpenTelemetry's http.server.request.duration as cumulative counters, one point a
    minute: checkout answers 10 requests/s, 0.5/s of them 5xx; per minute 300 take at most
    0.1s, 570 at most 0.5s, all 600 at most +Inf. payments never fails."""
    minutes = _minutes(DATA_START_US, DATA_END_US)
    buckets = {
        "200": {"0.1": 300, "0.5": 540, "+Inf": 570},
        "500": {"0.1": 0, "0.5": 30, "+Inf": 30},
    }
    series: list[tuple[str, dict[str, str], list[tuple[int, float]]]] = []
    for service in ("checkout", "payments"):
        for code, per_minute in buckets.items():
            if service == "payments" and code == "500":
                continue
            labels = {
                "service_name": service,
                "deployment_environment_name": "production",
                "http_response_status_code": code,
            }
            for le, count in per_minute.items():
                series.append(
                    (
                        "http_server_request_duration_seconds_bucket",
                        {**labels, "le": le},
                        [(t, float(count * i)) for i, t in enumerate(minutes)],
                    )
                )
            series.append(
                (
                    "http_server_request_duration_seconds_count",
                    labels,
                    [(t, float(per_minute["+Inf"] * i)) for i, t in enumerate(minutes)],
                )
            )
    return to_openmetrics(series)


@pytest.mark.anyio
async def test_the_default_queries_read_opentelemetry_http_server_histograms(
    start_prometheus: StartPrometheus,
) -> None:
    server = start_prometheus(_otel_http_histograms())
    source = _source(server.config(DEFAULT_QUERIES))
    expected = {
        "error_rate": 0.05,
        "throughput": 10.0,
        "p50_latency": 100.0,
        "p95_latency": 500.0,
        "p99_latency": 500.0,  # the rank lies in +Inf: the highest finite bound
    }

    for name in STANDARD_METRICS:
        series = await source.fetch(_request(name))

        assert series.error is None, name
        assert len(series.values) == 60, name
        assert series.values == pytest.approx([expected[name]] * 60), name

    payments = await source.fetch(_request("error_rate", service="payments"))
    assert payments.values == pytest.approx([0.0] * 60)


# --- Against servers that misbehave ---------------------------------------------------------


@asynccontextmanager
async def _raw_server(
    answer: Callable[[anyio.abc.SocketStream, bytes], Awaitable[None]],
    *,
    connections: list[bytes] | None = None,
) -> AsyncIterator[str]:
    """A loopback TCP server that reads a request and lets ``answer`` reply (or not); each
    request it reads is added to ``connections``."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            request = await stream.receive()  # a GET fits in one read
            if connections is not None:
                connections.append(request)
            await answer(stream, request)

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        # anyio's typed attributes, not Django's QuerySet.extra
        port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(listener.serve, serve)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                tasks.cancel_scope.cancel()


def _reply(status: str, content_type: str, body: bytes, *, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _no_answer(url: str, timeout_seconds: float) -> str:
    return (
        f"Trailmap could not get an answer from the Prometheus server at {url}: the "
        f"connection was refused or closed, nothing answered within {timeout_seconds:g} "
        "seconds, or what answered was not HTTP."
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed when the socket is: nothing listens there now


@pytest.mark.anyio
async def test_a_closed_port_gives_an_error_quickly() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    config = PrometheusConfig(base_url=url, timeout_seconds=30)
    started = time.monotonic()

    series = await _source(config).fetch(_request())
    connection = await _check(config)

    assert time.monotonic() - started < 5
    assert series.error == connection == _no_answer(url, 30)


async def _close_at_once(stream: anyio.abc.SocketStream, request: bytes) -> None:
    pass  # the connection closes without a byte: "Server disconnected"


async def _speak_ssh(stream: anyio.abc.SocketStream, request: bytes) -> None:
    await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n")


async def _speak_redis(stream: anyio.abc.SocketStream, request: bytes) -> None:
    await stream.send(b"-ERR unknown command 'GET', with args beginning with: 'SECRET-KEY'\r\n")


async def _stay_silent(stream: anyio.abc.SocketStream, request: bytes) -> None:
    await anyio.sleep_forever()


@pytest.mark.anyio
@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_closed_open_and_silent_ports_give_one_and_the_same_sentence(scheme: str) -> None:
    # Told apart, these would make a configured URL a port scanner: "Connection refused"
    # (closed), "Server disconnected" or a protocol error (open, not HTTP), a timeout
    # (filtered). Over https, a port that does not speak TLS is one more way to tell.
    sentences: dict[str, str | None] = {}
    closed = f"{scheme}://127.0.0.1:{_closed_port()}"
    sentences["closed"] = (
        await _source(PrometheusConfig(base_url=closed, timeout_seconds=0.5)).fetch(_request())
    ).error
    for name, behaviour in [
        ("closes at once", _close_at_once),
        ("speaks ssh", _speak_ssh),
        ("speaks redis", _speak_redis),
        ("stays silent", _stay_silent),
    ]:
        async with _raw_server(behaviour) as plain:
            url = plain.replace("http://", f"{scheme}://")
            config = PrometheusConfig(base_url=url, timeout_seconds=0.5)
            error = (await _source(config).fetch(_request())).error
            sentences[name] = None if error is None else error.replace(url, closed)

    assert set(sentences.values()) == {_no_answer(closed, 0.5)}, sentences


@pytest.mark.anyio
async def test_a_server_that_never_answers_gives_the_no_answer_sentence_within_the_timeout() -> (
    None
):
    async with _raw_server(_stay_silent) as url:
        source = _source(PrometheusConfig(base_url=url, timeout_seconds=0.5))
        started = time.monotonic()

        series = await source.fetch(_request())

        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2.0
    assert series.error == _no_answer(url, 0.5)


@pytest.mark.anyio
async def test_a_server_trickling_its_answer_is_cut_off_at_the_timeout() -> None:
    # Each byte arrives well within httpx's read timeout; only the overall bound stops it.
    async def trickle(stream: anyio.abc.SocketStream, request: bytes) -> None:
        await stream.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        while True:
            await stream.send(b" ")
            await anyio.sleep(0.05)

    async with _raw_server(trickle) as url:
        source = _source(PrometheusConfig(base_url=url, timeout_seconds=0.5))
        started = time.monotonic()

        series = await source.fetch(_request())

        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert series.error == _no_answer(url, 0.5)


@pytest.mark.anyio
async def test_a_page_that_is_not_the_prometheus_api_is_an_error_naming_the_server() -> None:
    async def html(stream: anyio.abc.SocketStream, request: bytes) -> None:
        await stream.send(_reply("200 OK", "text/html", b"<html>Grafana</html>"))

    async with _raw_server(html) as url:
        series = await _source(PrometheusConfig(base_url=url)).fetch(_request())

    assert series.error == (
        f"The Prometheus server at {url} answered with something that is not the Prometheus "
        "API's JSON (text/html); check the base URL."
    )


SECRET = "AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "content_type", "body", "told"),
    [
        (
            "500 Internal Server Error",
            "text/plain",
            SECRET.encode(),
            "HTTP 500 Internal Server Error.",
        ),
        ("502 Bad Gateway", "text/html", f"<pre>{SECRET}</pre>".encode(), "HTTP 502 Bad Gateway."),
        (
            "500 Internal Server Error",
            "application/json",
            f'{{"status":"error","errorType":"internal","error":"{SECRET}"}}'.encode(),
            "HTTP 500 Internal Server Error.",
        ),
        (
            "400 Bad Request",
            "application/json",
            f'{{"status":"error","errorType":"made_up","error":"{SECRET}"}}'.encode(),
            "HTTP 400 Bad Request.",
        ),
        (f"403 {SECRET.split(maxsplit=1)[0]}", "text/plain", SECRET.encode(), "HTTP 403 Forbidden"),
        (
            "200 OK",
            f"text/{SECRET.split(maxsplit=1)[0]}",
            SECRET.encode(),
            "(another content type)",
        ),
        ("200 OK", "application/json", f'{{"secret":"{SECRET}"}}'.encode(), "(application/json)"),
        ("299 Whatever", "text/plain", SECRET.encode(), "(text/plain)"),
        ("599 " + SECRET.split(maxsplit=1)[0], "text/plain", SECRET.encode(), "HTTP 599."),
    ],
    ids=[
        "500-text",
        "502-html",
        "500-prometheus-shaped",
        "400-unknown-error-type",
        "403-reason-phrase",
        "200-content-type",
        "200-json",
        "299",
        "599-reason-phrase",
    ],
)
async def test_an_answer_is_told_by_its_status_never_by_its_body(
    status: str, content_type: str, body: bytes, told: str
) -> None:
    # Pointed at an internal service, the source must not read its answers out: neither
    # the body nor the reason phrase (the server's own words) comes back.
    async def answer(stream: anyio.abc.SocketStream, request: bytes) -> None:
        await stream.send(_reply(status, content_type, body))

    async with _raw_server(answer) as url:
        config = PrometheusConfig(base_url=url)
        series = await _source(config).fetch(_request())
        connection = await _check(config)

    for sentence in (series.error, connection):
        assert sentence is not None
        assert sentence.startswith(f"The Prometheus server at {url} ")
        assert told in sentence
        for part in ("AKIA", "wJalrXUtnFEMI", "aws_secret"):
            assert part not in sentence


@pytest.mark.anyio
async def test_the_prometheus_apis_own_error_is_shown_clipped_to_one_line() -> None:
    message = "parse error: unexpected end of input\n" + "x" * 2000

    async def bad_data(stream: anyio.abc.SocketStream, request: bytes) -> None:
        body = orjson.dumps({"status": "error", "errorType": "bad_data", "error": message})
        await stream.send(_reply("400 Bad Request", "application/json", body))

    async with _raw_server(bad_data) as url:
        series = await _source(PrometheusConfig(base_url=url)).fetch(_request())

    assert series.error is not None
    assert series.error.startswith(
        f"The Prometheus server at {url} refused the query (HTTP 400, bad_data): "
        "parse error: unexpected end of input xxx"
    )
    assert series.error.endswith("xxx...")
    assert len(series.error) < 700


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["another server", "the same server"])
async def test_a_redirect_is_not_followed_and_its_location_not_repeated(where: str) -> None:
    asked_there: list[bytes] = []
    asked_here: list[bytes] = []

    async def answer_there(stream: anyio.abc.SocketStream, request: bytes) -> None:
        await stream.send(_reply("200 OK", "application/json", b'{"status":"success"}'))

    async with _raw_server(answer_there, connections=asked_there) as there:
        target = there if where == "another server" else ""
        location = f"{target}/prometheus/api/v1/query_range?token=from-the-redirect"

        async def moved(stream: anyio.abc.SocketStream, request: bytes) -> None:
            await stream.send(
                _reply("302 Found", "text/plain", b"", extra=f"Location: {location}\r\n")
            )

        async with _raw_server(moved, connections=asked_here) as here:
            series = await _source(PrometheusConfig(base_url=here)).fetch(_request())

    assert series.error == (
        f"The Prometheus server at {here} answered HTTP 302 Found, a redirect, which "
        "Trailmap does not follow; set the base URL to the server's own address."
    )
    assert (len(asked_here), asked_there) == (1, [])


@pytest.mark.anyio
async def test_a_base_url_the_policy_refuses_is_not_asked_at_all() -> None:
    # Stored before the rule, or resolving elsewhere since: checked again at every fetch.
    asked: list[bytes] = []

    async def answer(stream: anyio.abc.SocketStream, request: bytes) -> None:
        await stream.send(_reply("200 OK", "application/json", b"{}"))

    async with _raw_server(answer, connections=asked) as url:
        config = PrometheusConfig(base_url=url, auth_header=("Authorization", "Bearer s3cret"))
        series = await PrometheusSource(config, outbound=OutboundPolicy.default()).fetch(_request())
        connection = await check_connection(config, outbound=OutboundPolicy.default())

    assert series.error == connection
    assert series.error == (
        f"The Prometheus server at {url} is not asked: 127.0.0.1 is a loopback address, not "
        "in TRAILMAP_OUTBOUND_ALLOWED_NETWORKS "
        "(public,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7)."
    )
    assert asked == []


@pytest.mark.anyio
async def test_an_instant_result_where_a_matrix_is_expected_is_an_error() -> None:
    async def vector(stream: anyio.abc.SocketStream, request: bytes) -> None:
        body = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
        await stream.send(_reply("200 OK", "application/json", body))

    async with _raw_server(vector) as url:
        series = await _source(PrometheusConfig(base_url=url)).fetch(_request())

    assert series.error is not None
    assert "vector result, not a matrix" in series.error


@pytest.mark.anyio
async def test_the_path_prefix_of_the_base_url_is_kept() -> None:
    targets: list[bytes] = []

    async def not_found(stream: anyio.abc.SocketStream, request: bytes) -> None:
        targets.append(request.split(b" ")[1].split(b"?")[0])
        await stream.send(_reply("404 Not Found", "text/plain", b"404 page not found"))

    async with _raw_server(not_found) as url:
        config = PrometheusConfig(base_url=f"{url}/prometheus/")
        series = await _source(config).fetch(_request())

    assert targets == [b"/prometheus/api/v1/query_range"]
    assert series.error == f"The Prometheus server at {url}/prometheus answered HTTP 404 Not Found."


# --- Configuration and templates ------------------------------------------------------------


def test_the_config_repr_hides_the_auth_header_value() -> None:
    config = PrometheusConfig(
        base_url="https://mimir.example.com/prometheus",
        auth_header=("Authorization", "Bearer s3cret-token"),
    )

    assert "s3cret-token" not in repr(config)
    assert "Authorization" in repr(config)


@pytest.mark.parametrize(
    ("base_url", "complaint"),
    [
        ("ftp://prometheus.example.com", "http:// or https://"),
        ("prometheus.example.com:9090", "http:// or https://"),
        ("http://", "needs a host"),
        ("https://user:pw@prometheus.example.com", "credentials"),
        ("https://prometheus.example.com/?token=x", "query string"),
        ("https://prometheus.example.com:99999", "invalid port"),
    ],
)
def test_a_base_url_that_is_not_an_http_server_is_refused(base_url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        PrometheusConfig(base_url=base_url)


def test_a_config_with_an_unknown_placeholder_is_refused_naming_the_metric() -> None:
    with pytest.raises(ValueError, match=r"the query for throughput: unknown placeholder \$job"):
        PrometheusConfig(base_url="http://127.0.0.1:9090", queries={"throughput": 'up{job="$job"}'})


def test_the_default_queries_cover_every_standard_metric() -> None:
    assert set(DEFAULT_QUERIES) == set(STANDARD_METRICS)
    assert PrometheusConfig(base_url="http://127.0.0.1:9090").queries == dict(DEFAULT_QUERIES)


def test_values_are_escaped_for_the_quotes_they_stand_in() -> None:
    template = "m{a=\"$service\", b='$service', c=`$environment`}"

    rendered = render_query(template, service="x\"'\\\n\x01", environment='p\\q"')

    assert rendered == 'm{a="x\\"\'\\\\\\n\\x01", b=\'x"\\\'\\\\\\n\\x01\', c=`p\\q"`}'


def test_values_after_a_regex_operator_are_escaped_as_regex_and_string() -> None:
    rendered = render_query('m{s=~"$service",e!~ "$environment"}', service="a.b", environment='(x"')

    assert rendered == 'm{s=~"a\\\\.b",e!~ "\\\\(x\\""}'


def test_braces_dollar_dollar_and_regex_anchors_are_understood() -> None:
    template = 'm{s="${service}",p=~"/api/.*$",cost="$$5"} # $unknown in a comment'

    rendered = render_query(template, service="web", environment="prod")

    assert rendered == 'm{s="web",p=~"/api/.*$",cost="$5"} # $unknown in a comment'


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ('m{s="$servce"}', r"unknown placeholder \$servce"),
        ('m{s="${service"}', r"unclosed \$\{"),
        ("m{s=$service}", "inside a quoted string"),
        ("sum(rate(m[$__rate_interval]))", r"unknown placeholder \$__rate_interval"),
    ],
)
def test_a_template_that_cannot_be_rendered_safely_is_a_value_error(
    template: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        render_query(template, service="web", environment="prod")


def test_a_backquote_cannot_be_placed_in_a_raw_string() -> None:
    with pytest.raises(ValueError, match=r"cannot be placed in a `\.\.\.` string"):
        render_query("m{s=`$service`}", service="a`b", environment="prod")


def test_to_openmetrics_escapes_labels_and_writes_seconds() -> None:
    text = to_openmetrics([("m", {"s": 'a"b\\c\nd'}, [(1_500_000, 1.0), (0, float("nan"))])])

    assert text == (
        "# TYPE m gauge\n"
        'm{s="a\\"b\\\\c\\nd"} NaN 0.000000\n'
        'm{s="a\\"b\\\\c\\nd"} 1.0 1.500000\n'
        "# EOF\n"
    )
