"""Fuzzing the parsers that read what clients send: the change event, time expressions, and
OTLP trace and metric bodies. Whatever arrives, each answers with a result or with the
error it documents (a list of problems, `TimeExpressionError`, a 4xx `TrailmapError`),
never with another exception.

Run alone: `TRAILMAP_RELIABILITY=full .venv/bin/python -m pytest -s
tests/reliability/test_fuzz_parsers.py` (without the variable: the fast form).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.json.common.metrics_encoder import (
    encode_metrics as json_encode_metrics,
)
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import (
    encode_metrics as proto_encode_metrics,
)

from tests.ingest.test_otlp_decoding import json_body, protobuf_body, sdk_spans
from tests.ingest.test_otlp_metrics_decoding import sdk_metrics
from tests.reliability.forms import scale
from trailmap.errors import ErrorDetail, TrailmapError
from trailmap.ingest.otlp import decode_span_batch, decode_traces
from trailmap.ingest.otlp_body import JSON, PROTOBUF
from trailmap.ingest.otlp_metrics import Problems, decode_metrics, points_of
from trailmap.timeline.events import CORE_ATTRIBUTES, EventRow, validate_event
from trailmap.timeline.times import (
    TimeExpressionError,
    parse_event_time,
    parse_time_expression,
    resolve_timezone,
)

_EXAMPLES = int(scale(150, 5000))
_FUZZ = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    database=None,
    # Building the valid OTLP bodies once per module is the slow part, not the parsers.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
_MAX_EVENT_BYTES = 10 * 1024
_LIMIT = 1024 * 1024

# -- strategies ---------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
_JSON_LIKE = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
_TIME_TEXT = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["now", "NOW", "today", "yesterday", "-2h", "+3d", "-0m", "Z"]),
    st.from_regex(
        r"\A[+-]?\s*[0-9]{1,18}\s*(s|m|h|d|w|min|hours|weeks)\Z",
        fullmatch=True,
    ),
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,12})?)?"
        r"(Z|[+-][0-9]{2}(:?[0-9]{2}(:?[0-9]{2})?)?)?)?\Z",
        fullmatch=True,
    ),
    st.from_regex(
        r"\A(Mon|Fri|Xyz), [0-9]{1,2} (Jan|Feb|Nov|Foo) [0-9]{1,5} [0-9]{2}:[0-9]{2}(:[0-9]{2})?"
        r"( [+-][0-9]{4}| GMT| [A-Z]{1,5})?\Z",
        fullmatch=True,
    ),
)
_VALID_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "type": "deployment",
    "source": "//github.com/acme/checkout",
    "time": "2026-11-20T10:00:00Z",
    "subject": "production",
    "version": "v1.0.0",
    "severity": "LOW",
    "service": "checkout",
    "data": {"description": "checkout v1"},
}
# Event-shaped objects: known attribute names (and CDEvents' shape) with values of any kind.
_EVENT_LIKE = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from(sorted(CORE_ATTRIBUTES)), st.text(max_size=25)),
        _JSON_LIKE,
        max_size=12,
    ),
    st.builds(
        lambda changes: {**_VALID_EVENT, **changes},
        st.dictionaries(st.sampled_from([*sorted(CORE_ATTRIBUTES), "context"]), _JSON_LIKE),
    ),
    st.builds(
        lambda kind, context, subject: {
            "context": {"type": kind, **context},
            "subject": subject,
        },
        st.one_of(
            st.sampled_from(
                ["dev.cdevents.service.deployed.0.2.0", "dev.cdevents.incident.detected.0.1.0"]
            ),
            st.text(max_size=40),
        ),
        st.dictionaries(st.sampled_from(["id", "source", "timestamp", "version"]), _JSON_LIKE),
        _JSON_LIKE,
    ),
)


def _is_client_error(error: TrailmapError) -> bool:
    return 400 <= error.status < 500


def _mutated(body: bytes, data: st.DataObject) -> bytes:
    """A valid body with a few bytes flipped, cut, inserted or duplicated."""
    out = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        if not out:
            break
        at = data.draw(st.integers(0, len(out) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat"]))
        if action == "flip":
            out[at] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del out[at : at + data.draw(st.integers(1, 16))]
        elif action == "insert":
            out[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif action == "truncate":
            del out[at:]
        else:
            out[at:at] = out[at : at + data.draw(st.integers(1, 64))]
    return bytes(out)


def _paths(node: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _replaced(document: object, path: tuple[Any, ...], value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        return {**document, head: _replaced(document[head], rest, value)}
    assert isinstance(document, list)
    return [_replaced(v, rest, value) if i == head else v for i, v in enumerate(document)]


def _mutated_json(body: bytes, data: st.DataObject) -> bytes:
    """A valid OTLP/JSON document with one to three subtrees replaced by any JSON value."""
    document: object = json.loads(body)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(document)))
        document = _replaced(document, path, data.draw(_JSON_LIKE))
    text = json.dumps(document, allow_nan=True)
    return text.encode()


def _encoded(body: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    return body


_ENCODINGS = st.sampled_from([None, "gzip", "deflate", "identity", "gzip, identity", "br", ""])
_CONTENT_TYPES = st.sampled_from(
    [PROTOBUF, JSON, "application/json; charset=utf-8", "text/plain", "", "APPLICATION/JSON"]
)

# -- the change event ---------------------------------------------------------------------


def _check_event(item: object) -> None:
    result = validate_event(item, index=3, now=_NOW, max_bytes=_MAX_EVENT_BYTES)
    if isinstance(result, EventRow):
        assert result.index == 3
        assert isinstance(result.values["source"], str)
        assert isinstance(result.values["time_us"], int)
        return
    assert isinstance(result, list)
    assert result, "a refused event says what is wrong with it"
    for detail in result:
        assert isinstance(detail, ErrorDetail)
        assert detail.message.strip()
        assert detail.index == 3


@_FUZZ
@given(item=_JSON_LIKE)
def test_any_json_value_is_a_valid_event_or_a_list_of_problems(item: object) -> None:
    _check_event(item)


@_FUZZ
@given(item=_EVENT_LIKE)
def test_any_event_shaped_object_is_a_valid_event_or_a_list_of_problems(item: object) -> None:
    _check_event(item)


# -- time expressions ---------------------------------------------------------------------


def _answers_a_time_or_refuses(parse: Callable[[], datetime]) -> None:
    try:
        parsed = parse()
    except TimeExpressionError as error:
        refused: TimeExpressionError | None = error
    else:
        refused = None
    if refused is not None:
        assert str(refused).strip()
        return
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() is not None
    assert not parsed.utcoffset()


@_FUZZ
@given(
    text=_TIME_TEXT, zone=st.sampled_from(["UTC", "Europe/Paris", "America/St_Johns", "Asia/Gaza"])
)
def test_any_text_is_a_query_time_or_a_time_expression_error(text: str, zone: str) -> None:
    tz = ZoneInfo(zone)
    _answers_a_time_or_refuses(lambda: parse_time_expression(text, now=_NOW, tz=tz))


@_FUZZ
@given(text=_TIME_TEXT)
def test_any_text_is_an_event_time_or_a_time_expression_error(text: str) -> None:
    _answers_a_time_or_refuses(lambda: parse_event_time(text, now=_NOW))


@_FUZZ
@given(name=st.one_of(st.text(max_size=40), st.sampled_from(["../etc/passwd", "/etc/localtime"])))
def test_any_text_is_a_time_zone_or_a_time_expression_error(name: str) -> None:
    try:
        resolve_timezone(name)
    except TimeExpressionError as error:
        message = str(error)
    else:
        message = "resolved"
    assert message.strip()


# -- OTLP traces --------------------------------------------------------------------------

_TRACES_PROTOBUF = protobuf_body(sdk_spans())
_TRACES_JSON = json_body(sdk_spans())


def _decode_traces_or_refuse(body: bytes, content_type: str, encoding: str | None) -> None:
    for decode in (decode_traces, decode_span_batch):
        try:
            decode(
                body,
                content_type=content_type,
                content_encoding=encoding,
                max_decoded_bytes=_LIMIT,
                problems=[],
            )
        except TrailmapError as error:
            refused: TrailmapError | None = error
        else:
            refused = None
        assert refused is None or _is_client_error(refused), refused


@_FUZZ
@given(body=st.binary(max_size=2048), content_type=_CONTENT_TYPES, encoding=_ENCODINGS)
def test_any_bytes_are_decoded_as_traces_or_refused_with_a_client_error(
    body: bytes, content_type: str, encoding: str | None
) -> None:
    _decode_traces_or_refuse(body, content_type, encoding)


@_FUZZ
@given(data=st.data(), encoding=st.sampled_from([None, "gzip", "deflate"]))
def test_a_mutated_protobuf_trace_export_is_decoded_or_refused_with_a_client_error(
    data: st.DataObject, encoding: str | None
) -> None:
    body = _mutated(_TRACES_PROTOBUF, data)
    _decode_traces_or_refuse(_encoded(body, encoding), PROTOBUF, encoding)
    # The compressed stream itself mutated: its checks must hold too.
    _decode_traces_or_refuse(
        _mutated(_encoded(_TRACES_PROTOBUF, encoding), data), PROTOBUF, encoding
    )


@_FUZZ
@given(data=st.data())
def test_a_mutated_otlp_json_trace_export_is_decoded_or_refused_with_a_client_error(
    data: st.DataObject,
) -> None:
    _decode_traces_or_refuse(_mutated_json(_TRACES_JSON, data), JSON, None)
    _decode_traces_or_refuse(_mutated(_TRACES_JSON, data), JSON, None)


# -- OTLP metrics -------------------------------------------------------------------------

_METRICS = sdk_metrics()
_METRICS_PROTOBUF: bytes = proto_encode_metrics(_METRICS).SerializeToString()
_METRICS_JSON: bytes = json_encode_metrics(_METRICS).to_json().encode()


def _decode_metrics_or_refuse(body: bytes, content_type: str, encoding: str | None) -> None:
    try:
        problems = Problems()
        request = decode_metrics(
            body,
            content_type=content_type,
            content_encoding=encoding,
            max_decoded_bytes=_LIMIT,
            problems=problems,
        )
        # Reading the points is part of decoding: that is where values are checked.
        points = points_of(request, problems)
    except TrailmapError as error:
        refused: TrailmapError | None = error
    else:
        refused = None
    if refused is not None:
        assert _is_client_error(refused), refused
        return
    assert len(points.points) == len(points.origins)


@_FUZZ
@given(body=st.binary(max_size=2048), content_type=_CONTENT_TYPES, encoding=_ENCODINGS)
def test_any_bytes_are_decoded_as_metrics_or_refused_with_a_client_error(
    body: bytes, content_type: str, encoding: str | None
) -> None:
    _decode_metrics_or_refuse(body, content_type, encoding)


@_FUZZ
@given(data=st.data(), encoding=st.sampled_from([None, "gzip", "deflate"]))
def test_a_mutated_protobuf_metrics_export_is_decoded_or_refused_with_a_client_error(
    data: st.DataObject, encoding: str | None
) -> None:
    body = _mutated(_METRICS_PROTOBUF, data)
    _decode_metrics_or_refuse(_encoded(body, encoding), PROTOBUF, encoding)


@_FUZZ
@given(data=st.data())
def test_a_mutated_otlp_json_metrics_export_is_decoded_or_refused_with_a_client_error(
    data: st.DataObject,
) -> None:
    _decode_metrics_or_refuse(_mutated_json(_METRICS_JSON, data), JSON, None)
    _decode_metrics_or_refuse(_mutated(_METRICS_JSON, data), JSON, None)
