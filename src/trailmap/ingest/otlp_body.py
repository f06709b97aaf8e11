"""What OTLP/HTTP export bodies share whatever their signal (traces, metrics): the media
type, Content-Encoding, protobuf and the OTLP/JSON envelope, and the answer."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

# protobuf ships no type information (types-protobuf is not a dependency); its use here is
# confined to parse and serialize calls whose results are typed below.
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from trailmap.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trailmap.settings import Settings

__all__ = [
    "JSON",
    "PARSE_ERRORS",
    "PROTOBUF",
    "EntryCount",
    "EntryLimits",
    "Level",
    "Signal",
    "content_codings",
    "decompress",
    "encode_export_response",
    "json_array",
    "media_type_of",
    "parse_json",
    "parse_json_export",
    "parse_json_part",
    "parse_protobuf",
    "too_large",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ENCODINGS = ("gzip", "deflate", "identity")
# What json_format raises on input of the wrong shape (ParseError mostly; the rest to be safe).
PARSE_ERRORS = (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError)


@dataclass(frozen=True, slots=True)
class Signal:
    """An OTLP signal, in the words its errors use."""

    name: str  # "traces": "Send OTLP traces as ..."
    request: str  # the export message: "ExportTraceServiceRequest"
    batch_setting: str  # what makes the exporter's batches smaller, for a body too large


@dataclass(frozen=True, slots=True)
class EntryLimits:
    """The most entries of each kind one export may hold (`TRAILMAP_OTLP_MAX_*`): what a
    request makes the server do follows its entries, and a few kilobytes of gzip inflate
    into millions of empty ones, so bytes alone do not bound it."""

    resources: int
    scopes: int
    spans: int
    metrics: int
    data_points: int

    @classmethod
    def of(cls, settings: Settings) -> EntryLimits:
        return cls(
            resources=settings.otlp_max_resources,
            scopes=settings.otlp_max_scopes,
            spans=settings.otlp_max_spans,
            metrics=settings.otlp_max_metrics,
            data_points=settings.otlp_max_data_points,
        )


@dataclass(frozen=True, slots=True)
class Level:
    """One level of an export's nesting: the field numbers its entries have in their parent
    message and how many the whole export may hold (`most` None: a level passed through on
    the way down, such as a metric's gauge or sum, not counted)."""

    fields: frozenset[int]
    what: str = ""  # "spans", as the refusal names them
    most: int | None = None
    setting: str = ""  # the server setting that sets `most`


# As deep as the protobuf parser lets messages nest.
_MAX_GROUP_NESTING = 100


class _Broken(Exception):
    """The protobuf wire format is broken: refused as the parser would refuse it."""


class EntryCount:
    """An export's entries counted level by level (resources, scopes, spans, ...), refused
    (413) as soon as one level holds more than it may: a protobuf body before it is parsed
    (`scan`), an OTLP/JSON one as its arrays are read (`add`)."""

    def __init__(self, levels: Sequence[Level], signal: Signal) -> None:
        self.levels = tuple(levels)
        self.signal = signal
        self.counts = [0] * len(self.levels)
        # Fields other than counted entries (a resource, a schema URL, a metric's name) are
        # stepped over too, a Python step each: a body made of nothing else must not buy
        # millions of steps with a few kilobytes. Real exports have a few per entry.
        self._spare = 4 * sum(level.most or 0 for level in self.levels) + 64
        self._last = len(self.levels) - 1  # the deepest level `scan` reads

    def add(self, depth: int, count: int) -> None:
        """`count` more entries at `depth` (OTLP/JSON: the length of an array)."""
        self.counts[depth] += count
        most = self.levels[depth].most
        if most is not None and self.counts[depth] > most:
            raise self._over(self.levels[depth])

    def scan(self, raw: bytes) -> None:
        """Count the entries of a protobuf export before it is parsed, reading only each
        field's tag and length, and stop at the first level over its limit."""
        # Every field takes two bytes at least (a tag, a length or value): a level allowed
        # more entries than half the body's bytes cannot overflow, and neither can the
        # fields beneath it, so the scan stops above the deepest level that can. (An SDK's
        # batch of 512 spans is never read past its resources.)
        bound = len(raw) // 2
        self._last = max(
            (
                depth
                for depth, level in enumerate(self.levels)
                if level.most is not None and level.most < bound
            ),
            default=-1,
        )
        if self._last < 0:
            return
        try:
            self._scan(raw, 0, len(raw), 0)
        except (_Broken, IndexError):
            raise ValidationFailed.field(
                "body",
                f"the body is not a valid protobuf {self.signal.request}; check that it is "
                "not truncated and that Content-Encoding is right",
            ) from None

    def _scan(self, data: bytes, pos: int, end: int, depth: int) -> None:  # noqa: PLR0912
        # The hot loop (one step per span or data point): one function, locals only, no call
        # per entry; hence its branches.
        level = self.levels[depth]
        fields = level.fields
        deeper = depth < self._last
        counted = level.most is not None
        room = (level.most or 0) - self.counts[depth]
        found = 0
        others = 0
        while pos < end:
            tag = data[pos]
            pos += 1
            if tag >= 0x80:
                tag, pos = _varint(data, pos, tag)
            wire = tag & 7
            if wire == 2:
                size = data[pos]
                pos += 1
                if size >= 0x80:
                    size, pos = _varint(data, pos, size)
                stop = pos + size
                if stop > end:
                    raise _Broken
                if tag >> 3 in fields:
                    if counted:
                        found += 1
                        if found > room:
                            raise self._over(level)
                    if deeper:
                        self._scan(data, pos, stop, depth + 1)
                    if counted:
                        pos = stop
                        continue
                pos = stop
            else:
                pos = self._step_over(data, pos, end, tag, 0)
            others += 1
            if others > self._spare:
                raise self._cluttered()
        if pos != end:
            raise _Broken
        self.counts[depth] += found
        self._spare -= others

    def _step_over(self, data: bytes, pos: int, end: int, tag: int, nesting: int) -> int:
        """Past a field that is no entry (its tag read): its value, or a whole group."""
        wire = tag & 7
        if wire == 0:
            while data[pos] >= 0x80:
                pos += 1
            return pos + 1
        if wire == 1:
            return pos + 8
        if wire == 5:
            return pos + 4
        if wire == 2:
            size = data[pos]
            pos += 1
            if size >= 0x80:
                size, pos = _varint(data, pos, size)
            return pos + size
        if wire == 3:  # a group: never in OTLP, but the parser steps over one
            return self._skip_group(data, pos, end, tag >> 3, nesting)
        raise _Broken

    def _skip_group(self, data: bytes, pos: int, end: int, number: int, nesting: int) -> int:
        """Step over a group's fields up to its end (each a step of the spare ones)."""
        if nesting > _MAX_GROUP_NESTING:
            raise _Broken
        while pos < end:
            tag = data[pos]
            pos += 1
            if tag >= 0x80:
                tag, pos = _varint(data, pos, tag)
            self._spare -= 1
            if self._spare < 0:
                raise self._cluttered()
            if tag & 7 == 4:
                if tag >> 3 != number:
                    raise _Broken
                return pos
            pos = self._step_over(data, pos, end, tag, nesting + 1)
        raise _Broken

    def _over(self, level: Level) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The export holds more than {level.most} {level.what}; export smaller batches "
            f"({self.signal.batch_setting}), or raise {level.setting} on the server."
        )

    def _cluttered(self) -> ValidationFailed:
        kinds = ", ".join(level.what for level in self.levels if level.what)
        return ValidationFailed.field(
            "body",
            f"the body holds more fields besides its {kinds} than any OpenTelemetry exporter "
            "sends; it is not an OTLP export",
        )


def _varint(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """A varint whose first byte, `first`, said more follow; returns it and the next pos."""
    value = first & 0x7F
    shift = 7
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Broken


def media_type_of(content_type: str | None, signal: Signal) -> str:
    """`application/json; charset=utf-8` -> `application/json`; refuses any other type."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"Send OTLP {signal.name} as {PROTOBUF} or {JSON}; "
            f"got {kind or 'no Content-Type header'}."
        )
    return kind


def content_codings(content_encoding: str | None) -> list[str]:
    """The Content-Encoding codings, refused up front when one is not supported."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    for coding in codings:
        if coding not in (*_ENCODINGS, "x-gzip"):
            raise UnsupportedMediaType(
                f"Content-Encoding {coding!r} is not supported; send the body as "
                f"{', '.join(_ENCODINGS)} (OTEL_EXPORTER_OTLP_COMPRESSION=gzip)."
            )
    return codings


def decompress(
    body: bytes, content_encoding: str | None, *, max_decoded_bytes: int, signal: Signal
) -> bytes:
    """Undo Content-Encoding (applied in the order listed), never inflating past the limit."""
    for coding in reversed(content_codings(content_encoding)):
        if coding in ("gzip", "x-gzip"):
            body = _inflate(body, zlib.MAX_WBITS | 16, coding, max_decoded_bytes, signal)
        elif coding == "deflate":
            # HTTP's deflate is zlib-wrapped, but some clients send raw deflate: accept both.
            wrapped = len(body) >= 2 and body[0] & 0x0F == 8 and int.from_bytes(body[:2]) % 31 == 0
            wbits = zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS
            body = _inflate(body, wbits, coding, max_decoded_bytes, signal)
    if len(body) > max_decoded_bytes:
        raise PayloadTooLarge(too_large(max_decoded_bytes, "", signal))
    return body


def _inflate(data: bytes, wbits: int, coding: str, limit: int, signal: Signal) -> bytes:
    """Decompress `max_length` at a time: a small bomb stops at limit + 1 bytes of output."""
    out = bytearray()
    while True:  # one pass per gzip member; a gzip stream may hold several
        inflater = zlib.decompressobj(wbits)
        try:
            while data and not inflater.eof:
                out += inflater.decompress(data, limit - len(out) + 1)
                if len(out) > limit:
                    raise PayloadTooLarge(too_large(limit, " after decompression", signal))
                data = inflater.unconsumed_tail
            out += inflater.flush(limit - len(out) + 1)
        except zlib.error as error:
            raise ValidationFailed.field(
                "body", f"the body is not valid {coding} data ({error}); check Content-Encoding"
            ) from None
        if len(out) > limit:
            raise PayloadTooLarge(too_large(limit, " after decompression", signal))
        if not inflater.eof:
            raise ValidationFailed.field(
                "body", f"the {coding} data ends early; the body was cut off in transit"
            )
        data = inflater.unused_data
        if not data or wbits < 0 or not data.startswith(b"\x1f\x8b"):
            return bytes(out)


def too_large(limit: int, how: str, signal: Signal) -> str:
    """The refusal of a body over `limit` bytes (`how`: " (N bytes)", " after decompression")."""
    # Compressing helps only with the limit as sent; past decompression, batches must shrink.
    gzip = "" if how == " after decompression" else " or compress them with gzip"
    return (
        f"The body is larger than {limit} bytes{how}; export smaller batches "
        f"({signal.batch_setting}){gzip}."
    )


def parse_protobuf(raw: bytes, message: Any, signal: Signal) -> Any:
    """`raw` parsed into a new `message` (the signal's export request, or a narrower view
    of it); a body that is not one is refused with a hint at what it looks like."""
    request = message()
    try:
        request.ParseFromString(raw)
    except DecodeError:
        hint = (
            "; it looks like JSON, so send it as application/json"
            if raw.lstrip()[:1] in (b"{", b"[")
            else "; check that it is not truncated and that Content-Encoding is right"
        )
        raise ValidationFailed.field(
            "body", f"the body is not a valid protobuf {signal.request}{hint}"
        ) from None
    return request


# The array atop each signal's OTLP/JSON body, and the signal, in the order errors name them.
_SIGNAL_ARRAYS = (
    ("resourceSpans", "traces"),
    ("resourceMetrics", "metrics"),
    ("resourceLogs", "logs"),
)


def parse_json_export(
    raw: bytes,
    request: Any,
    *,
    resources: tuple[str, str],
    scopes: tuple[str, str],
    items: tuple[str, str],
    add_item: Callable[[Any, object, str], None],
    count: EntryCount | None = None,
) -> None:
    """Read an OTLP/JSON export into `request`, an empty export message. `resources`,
    `scopes` and `items` name the nested arrays (camelCase, snake_case as in the proto).
    Resources and scopes are read whole; each item by `add_item(scope, entry, where)`, so
    that an unreadable item (a span, a metric) can cost only itself. With `count`, each
    array is counted (levels 0, 1 and 2) before any of it is read."""
    document = parse_json(raw)
    if not isinstance(document, dict):
        raise ValidationFailed.field(
            "body", f"an OTLP/JSON body is an object with a {resources[0]} array"
        )
    entries = json_array(document, *resources, "body")
    others = [(key, name) for key, name in _SIGNAL_ARRAYS if key != resources[0]]
    if not entries and any(key in document for key, _ in others):
        raise ValidationFailed.field(
            "body",
            f"this is OTLP {' or '.join(name for _, name in others)}; send it to its own endpoint",
        )
    add = count.add if count is not None else _count_nothing
    add(0, len(entries))
    for i, entry in enumerate(entries):
        where = f"{resources[0]}[{i}]"
        scope_entries = json_array(entry, *scopes, where)
        add(1, len(scope_entries))
        resource = getattr(request, resources[1]).add()
        parse_json_part(entry, resource, where, skip=scopes)
        for j, scope_entry in enumerate(scope_entries):
            scope_where = f"{where}.{scopes[0]}[{j}]"
            item_entries = json_array(scope_entry, *items, scope_where)
            add(2, len(item_entries))
            scope = getattr(resource, scopes[1]).add()
            parse_json_part(scope_entry, scope, scope_where, skip=items)
            for k, item in enumerate(item_entries):
                add_item(scope, item, f"{scope_where}.{items[0]}[{k}]")


def _count_nothing(_depth: int, _count: int) -> None:
    pass


def parse_json(raw: bytes) -> object:
    """The JSON document; refused whole only when no parser can read it."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        fast_error = error
    # Integers beyond 64 bits: read them here so that such a number costs only its own span
    # or data point, not the whole body.
    try:
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError):
        pass
    raise ValidationFailed.field(
        "body", f"the body is not valid JSON ({fast_error}); check that it is not truncated"
    )


def _not_json(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


def json_array(entry: object, camel: str, snake: str, where: str) -> list[Any]:
    """The list under `camel` (or its snake_case twin) of an object; absent or null is empty."""
    if not isinstance(entry, dict):
        raise ValidationFailed.field(where, "must be an object")
    value = entry.get(camel, entry.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationFailed.field(f"{where}.{camel}", "must be an array")
    return value


def parse_json_part(entry: dict[str, Any], target: Any, where: str, skip: tuple[str, ...]) -> None:
    """Read `entry` but for its `skip` keys (the lists read one item at a time) into
    `target`, a resource or scope message; a part that cannot be read sinks the body."""
    rest = {key: value for key, value in entry.items() if key not in skip}
    try:
        json_format.ParseDict(rest, target, ignore_unknown_fields=True)
    except PARSE_ERRORS as e:
        raise ValidationFailed.field(where, f"is not valid OTLP/JSON ({str(e)[:200]})") from None


def encode_export_response(
    response: Any, *, rejected_field: str, rejected: int, error_message: str, media_type: str
) -> bytes:
    """`response`, an empty OTLP export answer, in the request's encoding; `partial_success`
    (`rejected_field` counting what was refused) only when there is something to say."""
    if rejected or error_message:
        setattr(response.partial_success, rejected_field, rejected)
        response.partial_success.error_message = error_message
    if media_type == PROTOBUF:
        encoded: bytes = response.SerializeToString()
        return encoded
    return orjson.dumps(json_format.MessageToDict(response))
