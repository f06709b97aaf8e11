"""CDEvents (https://cdevents.dev) read onto Trailmap's CloudEvent: their types mapped to ours,
and the environment, service, version and description dug out of their subject."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = [
    "CDEventFields",
    "cdevent_to_cloudevent",
    "extract_fields",
    "is_cdevents_type",
    "is_raw_cdevent",
    "map_cdevents_type",
]

_PREFIX = "dev.cdevents."
_MAX_TYPE_LENGTH = 100
_MAX_VERSION_LENGTH = 50
_MAX_DESCRIPTION_LENGTH = 1000
_SEVERITIES = frozenset({"LOW", "MINOR", "MAJOR", "CRITICAL"})

# dev.cdevents.<subject>.<predicate>.<version>; the version (semver, maybe with a
# pre-release such as 0.4.0-draft) is optional because it never changes the mapping.
_CDEVENTS_TYPE = re.compile(
    r"dev\.cdevents\.(?P<subject>[a-z][a-z0-9_-]*)\.(?P<predicate>[a-z][a-z0-9_-]*)"
    r"(?:\.[0-9]+\.[0-9]+\.[0-9]+(?:-[0-9a-z.-]+)?)?",
    re.ASCII | re.IGNORECASE,
)

# Where a CDEvents pair has a name Trailmap already uses (or should group with another
# pair), it is listed here; every other pair becomes "<subject>-<predicate>".
_TYPE_NAMES = {
    ("service", "deployed"): "deployment",
    ("service", "upgraded"): "deployment",
    ("service", "rolledback"): "rollback",
    ("incident", "detected"): "incident",
    ("incident", "reported"): "incident",
    ("pipelinerun", "finished"): "pipeline-run",
    ("taskrun", "finished"): "task-run",
    ("build", "finished"): "build",
    ("testcaserun", "finished"): "test-run",
    ("testsuiterun", "finished"): "test-run",
}
# CDEvents runs words together; Trailmap types are kebab-case.
_SUBJECT_NAMES = {
    "pipelinerun": "pipeline-run",
    "taskrun": "task-run",
    "testcaserun": "test-case-run",
    "testsuiterun": "test-suite-run",
    "testoutput": "test-output",
}
# Subjects whose content names the thing that ran, used to describe its outcome.
_RUN_NAME_KEYS = ("pipelineName", "taskName")


@dataclass(frozen=True)
class CDEventFields:
    """What a CDEvent says in Trailmap's terms; None wherever the event does not say."""

    subject: str | None
    """The environment (Trailmap's `subject`), from subject.content.environment.id."""
    service: str | None
    """The service, from subject.content.service.id, or subject.id for service events."""
    version: str | None
    """The version from the artifact's package URL (after '@'), at most 50 characters."""
    description: str | None
    """The event's description, or a run's name, outcome and errors; at most 1,000 chars."""
    severity: str | None
    """Only when the payload gives one of LOW, MINOR, MAJOR, CRITICAL; CDEvents has none."""


def is_cdevents_type(event_type: str) -> bool:
    """Whether `event_type` is a CDEvents type such as dev.cdevents.service.deployed.0.3.0."""
    return isinstance(event_type, str) and _CDEVENTS_TYPE.fullmatch(event_type) is not None


def map_cdevents_type(event_type: str) -> str | None:
    """Trailmap's type for a CDEvents type, whatever its version; None for other types."""
    pair = _subject_and_predicate(event_type)
    if pair is None:
        return None
    subject, predicate = pair
    name = _TYPE_NAMES.get(pair) or f"{_SUBJECT_NAMES.get(subject, subject)}-{predicate}"
    return name[:_MAX_TYPE_LENGTH]


def extract_fields(cdevent: Mapping[str, object]) -> CDEventFields:
    """Trailmap's fields from a CDEvent (the object with `context` and `subject`).

    Odd shapes (missing keys, wrong types) give None for the field concerned, never an
    error: the event is still worth keeping, and the validator reports what is required.
    """
    event_type = _text(_dig(cdevent, "context", "type"))
    pair = _subject_and_predicate(event_type) if event_type is not None else None
    cd_subject = pair[0] if pair is not None else None
    content = _dig(cdevent, "subject", "content")

    service = _text(_dig(content, "service", "id"))
    if service is None and cd_subject == "service":
        service = _text(_dig(cdevent, "subject", "id"))

    purl = _text(_dig(content, "artifactId"))
    if purl is None and cd_subject == "artifact":
        # An artifact event's subject is the artifact itself, named by its package URL.
        purl = _text(_dig(cdevent, "subject", "id"))

    return CDEventFields(
        subject=_environment(content),
        service=service,
        version=_purl_version(purl) if purl is not None else None,
        description=_description(content),
        severity=_severity(content) or _severity(_dig(cdevent, "customData")),
    )


def is_raw_cdevent(obj: Mapping[str, object]) -> bool:
    """Whether `obj` is a CDEvent sent as is, rather than wrapped in a CloudEvent."""
    if not isinstance(obj, Mapping) or "specversion" in obj:
        return False
    context = obj.get("context")
    event_type = context.get("type") if isinstance(context, Mapping) else None
    return (
        isinstance(event_type, str)
        and event_type.startswith(_PREFIX)
        and isinstance(obj.get("subject"), Mapping)
    )


def cdevent_to_cloudevent(obj: Mapping[str, object]) -> dict[str, object]:
    """A raw CDEvent as a CloudEvents 1.0 object carrying the whole CDEvent as its data.

    The type stays the CDEvents type: mapping it is the validator's job, and so is
    reporting what is missing, which is why absent context fields are left out here.
    """
    event: dict[str, object] = {"specversion": "1.0"}
    context = obj.get("context")
    if isinstance(context, Mapping):
        for cloud_key, context_key in (
            ("id", "id"),
            ("source", "source"),
            ("type", "type"),
            ("time", "timestamp"),
        ):
            if context_key in context:
                event[cloud_key] = context[context_key]
    event["datacontenttype"] = "application/json"
    event["data"] = dict(obj)
    return event


def _subject_and_predicate(event_type: str) -> tuple[str, str] | None:
    if not isinstance(event_type, str):
        return None
    match = _CDEVENTS_TYPE.fullmatch(event_type)
    if match is None:
        return None
    return match["subject"].lower(), match["predicate"].lower()


def _dig(value: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _environment(content: object) -> str | None:
    environment = _dig(content, "environment")
    # CDEvents 0.1 producers sometimes send the environment as a bare id.
    if isinstance(environment, str):
        return _text(environment)
    return _text(_dig(environment, "id"))


def _purl_version(purl: str) -> str | None:
    # pkg:type/namespace/name@version?qualifiers#subpath; '@' inside a name should be
    # percent-encoded, but the last '@' is the version separator even when it is not.
    locator = re.split(r"[?#]", purl, maxsplit=1)[0]
    _, at, version = locator.rpartition("@")
    if not at:
        return None
    return _text(unquote(version)[:_MAX_VERSION_LENGTH])


def _description(content: object) -> str | None:
    description = _text(_dig(content, "description"))
    if description is None:
        description = _run_description(content)
    return description[:_MAX_DESCRIPTION_LENGTH] if description is not None else None


def _run_description(content: object) -> str | None:
    """A run's name, outcome and errors, e.g. "myPipeline failure: Something went wrong"."""
    name = None
    for key in _RUN_NAME_KEYS:
        name = name or _text(_dig(content, key))
    outcome = _text(_dig(content, "outcome"))
    errors = _text(_dig(content, "errors"))
    headline = " ".join(part for part in (name, outcome) if part is not None)
    if headline and errors:
        return f"{headline}: {errors}"
    return headline or errors


def _severity(container: object) -> str | None:
    severity = _text(_dig(container, "severity"))
    if severity is not None and severity.upper() in _SEVERITIES:
        return severity.upper()
    return None
