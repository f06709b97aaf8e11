"""Tests for reading CDEvents onto Trailmap's CloudEvent, against the upstream examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.upstream import UPSTREAM
from trailmap.timeline.cdevents import (
    CDEventFields,
    cdevent_to_cloudevent,
    extract_fields,
    is_cdevents_type,
    is_raw_cdevent,
    map_cdevents_type,
)

FIXTURES = UPSTREAM / "cdevents"
FIXTURE_PATHS = sorted(FIXTURES.glob("*.json"))
SHA = "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db934"

# What each upstream conformance example should become in Trailmap.
EXPECTED: dict[str, tuple[str, CDEventFields]] = {
    "artifact_published.json": (
        "artifact-published",
        CDEventFields(None, None, "234fd47e07d1004f0aed9c", None, None),
    ),
    "change_merged.json": ("change-merged", CDEventFields(None, None, None, None, None)),
    "incident_detected.json": (
        "incident",
        CDEventFields("prod1", "myApp", SHA[:50], "Response time above threshold of 100ms", None),
    ),
    "incident_resolved.json": (
        "incident-resolved",
        CDEventFields("prod1", "myApp", SHA[:50], "Response time restored below 100ms", None),
    ),
    "pipelinerun_finished.json": (
        "pipeline-run",
        CDEventFields(
            None,
            None,
            None,
            "myPipeline failure: Something went wrong\nWith some more details",
            None,
        ),
    ),
    "service_deployed.json": (
        "deployment",
        CDEventFields("test123", "mySubject123", SHA[:50], None, None),
    ),
    "service_rolledback.json": (
        "rollback",
        CDEventFields("test123", "mySubject123", SHA[:50], None, None),
    ),
    "service_upgraded.json": (
        "deployment",
        CDEventFields("test123", "mySubject123", SHA[:50], None, None),
    ),
}


def load(name: str) -> dict[str, object]:
    loaded = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def cdevent(
    event_type: str, content: object, subject_id: object = "subject-1"
) -> dict[str, object]:
    return {
        "context": {
            "id": "1",
            "source": "/ci",
            "type": event_type,
            "timestamp": "2026-11-20T10:00:00Z",
        },
        "subject": {"id": subject_id, "content": content},
    }


def fixture_ids() -> list[str]:
    return [path.name for path in FIXTURE_PATHS]


# The fixtures themselves


def test_the_upstream_fixtures_are_present() -> None:
    assert FIXTURE_PATHS, f"no CDEvents fixtures found in {FIXTURES}"


def test_every_fixture_has_an_expectation() -> None:
    assert set(fixture_ids()) <= set(EXPECTED)


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=fixture_ids())
def test_every_fixture_is_a_raw_cdevent_with_a_mapped_type(path: Path) -> None:
    event = load(path.name)
    assert is_raw_cdevent(event)
    context = event["context"]
    assert isinstance(context, dict)
    assert is_cdevents_type(context["type"])
    assert map_cdevents_type(context["type"]) == EXPECTED[path.name][0]


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=fixture_ids())
def test_every_fixture_yields_its_trailmap_fields(path: Path) -> None:
    assert extract_fields(load(path.name)) == EXPECTED[path.name][1]


@pytest.mark.parametrize("path", FIXTURE_PATHS, ids=fixture_ids())
def test_every_fixture_wraps_into_a_cloudevent_that_keeps_it_whole(path: Path) -> None:
    event = load(path.name)
    context = event["context"]
    assert isinstance(context, dict)
    wrapped = cdevent_to_cloudevent(event)
    assert wrapped == {
        "specversion": "1.0",
        "id": context["id"],
        "source": context["source"],
        "type": context["type"],
        "time": context["timestamp"],
        "datacontenttype": "application/json",
        "data": event,
    }
    assert not is_raw_cdevent(wrapped)
    data = wrapped["data"]
    assert isinstance(data, dict)
    assert extract_fields(data) == EXPECTED[path.name][1]


def test_a_deployment_names_environment_service_and_image_digest() -> None:
    fields = extract_fields(load("service_deployed.json"))
    assert fields.subject == "test123"
    assert fields.service == "mySubject123"
    assert fields.version is not None
    assert fields.version.startswith("sha256:0b31b1c0")
    assert len(fields.version) == 50


def test_an_incident_names_environment_service_and_description() -> None:
    fields = extract_fields(load("incident_detected.json"))
    assert map_cdevents_type("dev.cdevents.incident.detected.0.3.0") == "incident"
    assert fields.subject == "prod1"
    assert fields.service == "myApp"
    assert fields.description == "Response time above threshold of 100ms"
    assert fields.severity is None


# is_cdevents_type and map_cdevents_type


@pytest.mark.parametrize(
    "event_type",
    [
        "dev.cdevents.service.deployed.0.3.0",
        "dev.cdevents.service.deployed.0.4.0-draft",
        "dev.cdevents.pipelinerun.finished.0.1.1",
        "dev.cdevents.service.deployed",
        "dev.cdevents.newsubject.happened.1.0.0",
    ],
)
def test_cdevents_types_are_recognised(event_type: str) -> None:
    assert is_cdevents_type(event_type)


@pytest.mark.parametrize(
    "event_type",
    [
        "deployment",
        "",
        "dev.cdevents",
        "dev.cdevents.",
        "dev.cdevents.service",
        "dev.cdevents.service.",
        "dev.cdevents.service.deployed.",
        "dev.cdevents.service.deployed.x",
        "dev.cdeventsx.tool-thing.happened.0.1.0",
        "com.example.service.deployed.0.3.0",
        " dev.cdevents.service.deployed.0.3.0",
        "dev.cdevents.service..deployed.0.3.0",
    ],
)
def test_other_types_are_not_cdevents_types(event_type: str) -> None:
    assert not is_cdevents_type(event_type)
    assert map_cdevents_type(event_type) is None


@pytest.mark.parametrize(
    ("cd_type", "trailmap_type"),
    [
        ("service.deployed", "deployment"),
        ("service.upgraded", "deployment"),
        ("service.rolledback", "rollback"),
        ("service.removed", "service-removed"),
        ("service.published", "service-published"),
        ("incident.detected", "incident"),
        ("incident.reported", "incident"),
        ("incident.resolved", "incident-resolved"),
        ("change.created", "change-created"),
        ("change.updated", "change-updated"),
        ("change.reviewed", "change-reviewed"),
        ("change.merged", "change-merged"),
        ("change.abandoned", "change-abandoned"),
        ("pipelinerun.queued", "pipeline-run-queued"),
        ("pipelinerun.started", "pipeline-run-started"),
        ("pipelinerun.finished", "pipeline-run"),
        ("taskrun.started", "task-run-started"),
        ("taskrun.finished", "task-run"),
        ("build.queued", "build-queued"),
        ("build.started", "build-started"),
        ("build.finished", "build"),
        ("artifact.packaged", "artifact-packaged"),
        ("artifact.signed", "artifact-signed"),
        ("artifact.published", "artifact-published"),
        ("environment.created", "environment-created"),
        ("environment.modified", "environment-modified"),
        ("environment.deleted", "environment-deleted"),
        ("testcaserun.finished", "test-run"),
        ("testsuiterun.finished", "test-run"),
        ("testcaserun.started", "test-case-run-started"),
        ("testsuiterun.queued", "test-suite-run-queued"),
        ("testoutput.published", "test-output-published"),
        ("ticket.created", "ticket-created"),
        ("ticket.updated", "ticket-updated"),
        ("ticket.closed", "ticket-closed"),
        ("repository.created", "repository-created"),
        ("branch.deleted", "branch-deleted"),
    ],
)
def test_cdevents_types_map_to_trailmap_types(cd_type: str, trailmap_type: str) -> None:
    assert map_cdevents_type(f"dev.cdevents.{cd_type}.0.3.0") == trailmap_type


def test_the_version_does_not_change_the_mapping() -> None:
    for version in ("0.1.0", "0.3.0", "0.4.0-draft", "12.0.7"):
        assert map_cdevents_type(f"dev.cdevents.service.deployed.{version}") == "deployment"
    assert map_cdevents_type("dev.cdevents.service.deployed") == "deployment"


def test_an_unknown_pair_becomes_subject_dash_predicate() -> None:
    assert map_cdevents_type("dev.cdevents.widget.polished.0.1.0") == "widget-polished"


def test_mapped_types_are_lower_case() -> None:
    assert map_cdevents_type("dev.cdevents.Service.Deployed.0.3.0") == "deployment"
    assert map_cdevents_type("dev.cdevents.Widget.Polished.0.3.0") == "widget-polished"


def test_mapped_types_are_at_most_a_hundred_characters() -> None:
    mapped = map_cdevents_type(f"dev.cdevents.{'a' * 80}.{'b' * 80}.0.1.0")
    assert mapped is not None
    assert len(mapped) == 100


@given(event_type=st.text())
def test_mapping_any_text_gives_none_or_a_short_type(event_type: str) -> None:
    mapped = map_cdevents_type(event_type)
    assert is_cdevents_type(event_type) == (mapped is not None)
    assert mapped is None or 0 < len(mapped) <= 100


@given(
    subject=st.from_regex(r"\A[a-z][a-z0-9]{0,30}\Z"),
    predicate=st.from_regex(r"\A[a-z][a-z0-9]{0,30}\Z"),
)
def test_every_well_formed_type_maps_to_something(subject: str, predicate: str) -> None:
    mapped = map_cdevents_type(f"dev.cdevents.{subject}.{predicate}.0.3.0")
    assert mapped is not None
    assert predicate in mapped or mapped in {
        "deployment",
        "rollback",
        "incident",
        "pipeline-run",
        "task-run",
        "build",
        "test-run",
    }


# extract_fields


def test_the_service_comes_from_the_content_when_it_names_one() -> None:
    event = cdevent("dev.cdevents.service.deployed.0.3.0", {"service": {"id": "checkout"}})
    assert extract_fields(event).service == "checkout"


def test_only_service_events_fall_back_to_the_subject_id_for_the_service() -> None:
    assert extract_fields(cdevent("dev.cdevents.service.deployed.0.3.0", {})).service == (
        "subject-1"
    )
    assert extract_fields(cdevent("dev.cdevents.change.merged.0.3.0", {})).service is None


def test_the_environment_may_be_a_bare_id() -> None:
    event = cdevent("dev.cdevents.service.deployed.0.3.0", {"environment": "production"})
    assert extract_fields(event).subject == "production"


def test_blank_strings_count_as_absent() -> None:
    event = cdevent(
        "dev.cdevents.service.deployed.0.3.0",
        {"environment": {"id": "  "}, "description": "", "service": {"id": " "}},
        subject_id="",
    )
    assert extract_fields(event) == CDEventFields(None, None, None, None, None)


@pytest.mark.parametrize(
    ("purl", "version"),
    [
        ("pkg:oci/myapp@sha256%3A0b31", "sha256:0b31"),
        ("pkg:oci/myapp@v1.2.3?repository_url=ghcr.io/acme", "v1.2.3"),
        ("pkg:npm/%40angular/core@17.0.1#subpath", "17.0.1"),
        ("pkg:npm/@angular/core@17.0.1", "17.0.1"),
        ("pkg:oci/myapp", None),
        ("pkg:oci/myapp@", None),
        ("pkg:oci/myapp@" + "9" * 80, "9" * 50),
    ],
)
def test_the_version_is_read_from_the_artifact_package_url(purl: str, version: str | None) -> None:
    event = cdevent("dev.cdevents.service.deployed.0.3.0", {"artifactId": purl})
    assert extract_fields(event).version == version


def test_an_artifact_event_takes_its_version_from_the_subject_package_url() -> None:
    event = cdevent("dev.cdevents.artifact.packaged.0.3.0", {}, subject_id="pkg:oci/app@v2")
    assert extract_fields(event).version == "v2"


def test_other_events_do_not_read_a_version_from_the_subject_id() -> None:
    event = cdevent("dev.cdevents.change.merged.0.3.0", {}, subject_id="pkg:oci/app@v2")
    assert extract_fields(event).version is None


def test_a_run_is_described_by_its_name_and_outcome() -> None:
    event = cdevent(
        "dev.cdevents.taskrun.finished.0.3.0", {"taskName": "unit-tests", "outcome": "success"}
    )
    assert extract_fields(event).description == "unit-tests success"


def test_a_run_with_only_errors_is_described_by_them() -> None:
    event = cdevent("dev.cdevents.pipelinerun.finished.0.3.0", {"errors": "timed out"})
    assert extract_fields(event).description == "timed out"


def test_an_explicit_description_wins_over_the_run_summary() -> None:
    event = cdevent(
        "dev.cdevents.pipelinerun.finished.0.3.0",
        {"description": "nightly", "pipelineName": "p", "outcome": "failure"},
    )
    assert extract_fields(event).description == "nightly"


def test_descriptions_are_cut_to_a_thousand_characters() -> None:
    event = cdevent("dev.cdevents.incident.detected.0.3.0", {"description": "d" * 5000})
    assert extract_fields(event).description == "d" * 1000


def test_severity_is_none_unless_the_payload_gives_a_known_one() -> None:
    assert extract_fields(load("incident_detected.json")).severity is None
    content_says = cdevent("dev.cdevents.incident.detected.0.3.0", {"severity": "critical"})
    assert extract_fields(content_says).severity == "CRITICAL"
    custom_says = {
        **cdevent("dev.cdevents.incident.detected.0.3.0", {}),
        "customData": {"severity": "MAJOR"},
    }
    assert extract_fields(custom_says).severity == "MAJOR"
    unknown = cdevent("dev.cdevents.incident.detected.0.3.0", {"severity": "sev1"})
    assert extract_fields(unknown).severity is None


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"context": None, "subject": None},
        {"context": [], "subject": "x"},
        {"context": {"type": 7}, "subject": {"content": []}},
        {"context": {"type": "dev.cdevents.service.deployed.0.3.0"}, "subject": {"id": 5}},
        {
            "context": {"type": "dev.cdevents.service.deployed.0.3.0"},
            "subject": {
                "content": {
                    "environment": {"id": 3},
                    "service": "checkout",
                    "artifactId": ["pkg:oci/a@1"],
                    "description": {"text": "x"},
                }
            },
        },
    ],
)
def test_odd_shapes_give_nones_rather_than_errors(odd: dict[str, object]) -> None:
    assert extract_fields(odd) == CDEventFields(None, None, None, None, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "context",
                    "subject",
                    "content",
                    "type",
                    "id",
                    "environment",
                    "service",
                    "artifactId",
                    "description",
                    "pipelineName",
                    "taskName",
                    "outcome",
                    "errors",
                    "severity",
                    "customData",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
cdevents_types = st.sampled_from(
    [
        "dev.cdevents.service.deployed.0.3.0",
        "dev.cdevents.artifact.published.0.3.0",
        "dev.cdevents.pipelinerun.finished.0.3.0",
        "dev.cdevents.incident.detected.0.3.0",
    ]
)


@given(obj=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_extract_fields_never_raises_on_arbitrary_json(obj: dict[str, object]) -> None:
    fields = extract_fields(obj)
    assert isinstance(fields, CDEventFields)


@given(event_type=cdevents_types, subject=json_values, content=json_values, extra=json_values)
def test_extract_fields_never_raises_on_arbitrary_cdevent_contents(
    event_type: str, subject: object, content: object, extra: object
) -> None:
    shaped_subject = {"id": subject, "content": content}
    fields = extract_fields(
        {"context": {"type": event_type}, "subject": shaped_subject, "customData": extra}
    )
    assert fields.version is None or len(fields.version) <= 50
    assert fields.description is None or len(fields.description) <= 1000
    assert fields.severity in {None, "LOW", "MINOR", "MAJOR", "CRITICAL"}


@given(obj=st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_is_raw_cdevent_and_wrapping_never_raise_on_arbitrary_json(obj: dict[str, object]) -> None:
    is_raw_cdevent(obj)
    wrapped = cdevent_to_cloudevent(obj)
    assert wrapped["specversion"] == "1.0"
    assert wrapped["data"] == obj


# is_raw_cdevent and cdevent_to_cloudevent


def test_a_cloudevent_carrying_a_cdevent_is_not_a_raw_cdevent() -> None:
    event = {**cdevent("dev.cdevents.service.deployed.0.3.0", {}), "specversion": "1.0"}
    assert not is_raw_cdevent(event)


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"context": {"type": "dev.cdevents.service.deployed.0.3.0"}},
        {"context": {"type": "dev.cdevents.service.deployed.0.3.0"}, "subject": "x"},
        {"context": {"type": "com.example.deployed"}, "subject": {}},
        {"context": {"type": 1}, "subject": {}},
        {"context": "dev.cdevents.service.deployed.0.3.0", "subject": {}},
    ],
)
def test_objects_without_a_cdevents_context_and_subject_are_not_raw_cdevents(
    obj: dict[str, object],
) -> None:
    assert not is_raw_cdevent(obj)


def test_a_minimal_cdevent_is_a_raw_cdevent() -> None:
    assert is_raw_cdevent({"context": {"type": "dev.cdevents.x"}, "subject": {}})


def test_missing_context_fields_are_left_out_for_the_validator_to_report() -> None:
    event = {"context": {"type": "dev.cdevents.service.deployed.0.3.0"}, "subject": {}}
    assert cdevent_to_cloudevent(event) == {
        "specversion": "1.0",
        "type": "dev.cdevents.service.deployed.0.3.0",
        "datacontenttype": "application/json",
        "data": event,
    }


def test_wrapping_copies_the_cdevent_rather_than_sharing_it() -> None:
    event = cdevent("dev.cdevents.service.deployed.0.3.0", {})
    wrapped = cdevent_to_cloudevent(event)
    assert wrapped["data"] == event
    assert wrapped["data"] is not event
