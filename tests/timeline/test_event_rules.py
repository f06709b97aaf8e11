"""Every rule of the event table in INTERFACES.md, one by one, through `validate_event`."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factories import event
from tests.upstream import UPSTREAM
from trailmap import clock
from trailmap.errors import ErrorDetail
from trailmap.timeline.events import EventRow, validate_event

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
MAX_BYTES = 10 * 1024
FIXTURES = UPSTREAM
CDEVENTS = sorted((FIXTURES / "cdevents").glob("*.json"))


def check(item: object, *, index: int = 0) -> EventRow | list[ErrorDetail]:
    return validate_event(item, index=index, now=NOW, max_bytes=MAX_BYTES)


def accepted(item: object) -> dict[str, Any]:
    outcome = check(item)
    assert isinstance(outcome, EventRow), outcome
    return outcome.values


def refused(item: object, *, index: int = 0) -> list[ErrorDetail]:
    outcome = check(item, index=index)
    assert isinstance(outcome, list), f"accepted: {outcome}"
    assert outcome, "refused with no reason"
    return outcome


def only_problem(item: object) -> ErrorDetail:
    problems = refused(item)
    assert len(problems) == 1, problems
    return problems[0]


# -- specversion -------------------------------------------------------------------------


def test_a_missing_specversion_is_refused_and_the_message_says_to_send_1_0() -> None:
    problem = only_problem(event(specversion=None))
    assert problem.field == "specversion"
    assert '"1.0"' in problem.message


@pytest.mark.parametrize("value", ["0.3", "1", "1.0.0", " 1.0", 1.0, 1, None])
def test_a_specversion_other_than_the_string_1_0_is_refused(value: object) -> None:
    item = event()
    item["specversion"] = value
    problem = only_problem(item)
    assert problem.field == "specversion"
    assert "1.0" in problem.message


# -- type --------------------------------------------------------------------------------


def test_a_missing_type_is_refused_with_the_field_named() -> None:
    problem = only_problem(event(type=None))
    assert problem.field == "type"
    assert "type is required" in problem.message


def test_a_blank_type_is_refused() -> None:
    problem = only_problem(event(type="   "))
    assert problem.field == "type"
    assert "empty" in problem.message


def test_a_type_that_is_not_a_string_is_refused_saying_what_was_sent() -> None:
    problem = only_problem(event(type=42))
    assert problem.field == "type"
    assert problem.message == "type must be a string, not a number"


def test_a_type_of_exactly_100_characters_passes() -> None:
    assert accepted(event(type="t" * 100))["type"] == "t" * 100


def test_a_type_of_101_characters_is_refused_with_the_limit_in_the_message() -> None:
    problem = only_problem(event(type="t" * 101))
    assert problem.field == "type"
    assert "101 characters" in problem.message
    assert "at most 100" in problem.message


# -- source ------------------------------------------------------------------------------


def test_a_missing_source_is_refused_with_the_field_named() -> None:
    problem = only_problem(event(source=None))
    assert problem.field == "source"
    assert "source is required" in problem.message


def test_a_source_of_exactly_500_characters_passes() -> None:
    source = "//example.com/" + "s" * 486
    assert len(source) == 500
    assert accepted(event(source=source))["source"] == source


def test_a_source_of_501_characters_is_refused_with_the_limit_in_the_message() -> None:
    problem = only_problem(event(source="//example.com/" + "s" * 487))
    assert problem.field == "source"
    assert "at most 500" in problem.message


@pytest.mark.parametrize(
    "source", ["//github.com/acme/my service", "checkout service", "a\tb", "a\nb", "\x7fx"]
)
def test_a_source_with_spaces_or_control_characters_is_refused_with_an_example(
    source: str,
) -> None:
    problem = only_problem(event(source=source))
    assert problem.field == "source"
    assert "URI-reference without spaces" in problem.message
    assert "//github.com/acme/checkout" in problem.message


@pytest.mark.parametrize(
    "source",
    ["//github.com/acme/checkout", "/mycontext/4", "https://ci.example.com/job/12", "urn:x:y"],
)
def test_a_uri_reference_is_a_valid_source(source: str) -> None:
    assert accepted(event(source=source))["source"] == source


# -- time --------------------------------------------------------------------------------


def test_a_missing_time_is_refused_and_the_message_shows_the_forms_to_send() -> None:
    problem = only_problem(event(time=None))
    assert problem.field == "time"
    assert "2026-11-20T10:00:00Z" in problem.message
    assert '"NOW"' in problem.message


@pytest.mark.parametrize(
    "value",
    ["2026-11-20T09:00:00", "2026-11-20 09:00", "2026-11-20", "Fri, 20 Nov 2026 09:00:00"],
)
def test_a_time_without_a_zone_is_refused_with_the_field_named(value: str) -> None:
    problem = only_problem(event(time=value))
    assert problem.field == "time"
    assert "no time zone" in problem.message
    assert "add Z or an offset" in problem.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T09:00:00Z", datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),
        ("2026-11-20T11:00:00+02:00", datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),
        ("2026-11-20T04:00:00.250-05:00", datetime(2026, 11, 20, 9, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-20t09:00:00z", datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),
        ("Fri, 20 Nov 2026 10:00:00 +0100", datetime(2026, 11, 20, 9, 0, tzinfo=UTC)),
    ],
)
def test_a_time_with_a_zone_is_stored_as_that_instant(value: str, expected: datetime) -> None:
    assert accepted(event(time=value))["time_us"] == clock.to_us(expected)


@pytest.mark.parametrize("value", ["NOW", "now", " Now "])
def test_now_means_the_server_time(value: str) -> None:
    values = accepted(event(time=value))
    assert values["time_us"] == clock.to_us(NOW)
    assert values["received_us"] == clock.to_us(NOW)


@pytest.mark.parametrize("value", ["yesterday", "-2h", "2026-13-01T00:00:00Z", "soon", ""])
def test_a_time_that_is_not_a_time_is_refused_with_the_forms_to_use(value: str) -> None:
    problem = only_problem(event(time=value))
    assert problem.field == "time"
    assert "2026-11-20T10:00:00Z" in problem.message


def test_a_time_sent_as_a_number_is_refused() -> None:
    problem = only_problem(event(time=1_700_000_000))
    assert problem.field == "time"
    assert problem.message == "time must be a string, not a number"


# -- id ----------------------------------------------------------------------------------


def test_an_absent_id_is_generated_as_a_uuid_and_differs_each_time() -> None:
    first = accepted(event(id=None))["event_id"]
    second = accepted(event(id=None))["event_id"]
    assert str(uuid.UUID(first)) == first
    assert first != second


def test_an_id_of_exactly_200_characters_passes_and_is_kept() -> None:
    assert accepted(event(id="i" * 200))["event_id"] == "i" * 200


def test_an_id_of_201_characters_is_refused() -> None:
    problem = only_problem(event(id="i" * 201))
    assert problem.field == "id"
    assert "at most 200" in problem.message


def test_an_empty_id_is_refused_and_the_message_says_to_leave_it_out() -> None:
    problem = only_problem(event(id=" "))
    assert problem.field == "id"
    assert "leave it out" in problem.message


def test_a_numeric_id_is_refused_rather_than_silently_converted() -> None:
    problem = only_problem(event(id=7))
    assert problem.field == "id"
    assert "must be a string" in problem.message


# -- subject, version, service, datacontenttype, dataschema --------------------------------


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("subject", 50),
        ("version", 50),
        ("service", 200),
        ("datacontenttype", 200),
        ("dataschema", 500),
    ],
)
def test_an_optional_text_attribute_at_its_limit_passes_and_one_more_is_refused(
    name: str, limit: int
) -> None:
    assert accepted(event(**{name: "v" * limit}))[name] == "v" * limit
    problem = only_problem(event(**{name: "v" * (limit + 1)}))
    assert problem.field == name
    assert f"at most {limit}" in problem.message


@pytest.mark.parametrize("name", ["subject", "version", "service", "datacontenttype", "dataschema"])
@pytest.mark.parametrize("value", [1, True, ["production"], {"id": "production"}])
def test_an_optional_text_attribute_of_another_json_type_is_refused(
    name: str, value: object
) -> None:
    problem = only_problem(event(**{name: value}))
    assert problem.field == name
    assert problem.message.startswith(f"{name} must be a string, not ")


# -- severity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("LOW", "LOW"),
        ("minor", "MINOR"),
        ("Major", "MAJOR"),
        ("cRiTiCaL", "CRITICAL"),
        (" critical ", "CRITICAL"),
    ],
)
def test_a_severity_is_accepted_in_any_case_and_stored_upper_case(value: str, stored: str) -> None:
    assert accepted(event(severity=value))["severity"] == stored


@pytest.mark.parametrize("value", ["HIGH", "info", "", "SEV1", 3, True, ["LOW"]])
def test_any_other_severity_is_refused_with_the_four_allowed_values(value: object) -> None:
    problem = only_problem(event(severity=value))
    assert problem.field == "severity"
    assert "LOW, MINOR, MAJOR, CRITICAL" in problem.message


def test_an_absent_severity_is_stored_as_none() -> None:
    assert accepted(event(severity=None))["severity"] is None


# -- service -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "service"),
    [
        ("//github.com/acme/checkout", "checkout"),
        ("https://github.com/acme/checkout.git", "checkout"),
        ("https://ci.example.com/", "ci.example.com"),
        ("https://ci.example.com/job/payments/1234", "payments"),
        ("/mycontext/4", "mycontext"),
    ],
)
def test_an_absent_service_is_derived_from_the_source(source: str, service: str) -> None:
    assert accepted(event(source=source, service=None))["service"] == service


def test_a_given_service_wins_over_the_source() -> None:
    values = accepted(event(source="//github.com/acme/checkout", service="payments"))
    assert values["service"] == "payments"


# -- data --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [{"a": [1, 2.5, None, True]}, [1, "two"], '<much wow="xml"/>', 12, 0.5, False],
)
def test_data_may_be_any_json_value_and_is_kept_as_sent(data: object) -> None:
    assert accepted(event(data=data))["data"] == data


def test_data_description_of_exactly_1000_characters_becomes_the_description() -> None:
    values = accepted(event(data={"description": "d" * 1000}))
    assert values["description"] == "d" * 1000
    assert values["data"] == {"description": "d" * 1000}


def test_data_description_of_1001_characters_is_refused_with_its_path() -> None:
    problem = only_problem(event(data={"description": "d" * 1001}))
    assert problem.field == "data.description"
    assert "at most 1000" in problem.message


def test_data_description_that_is_not_a_string_is_refused() -> None:
    problem = only_problem(event(data={"description": ["a", "b"]}))
    assert problem.field == "data.description"
    assert "must be a string" in problem.message


def test_data_and_data_base64_together_are_refused_saying_to_send_one() -> None:
    problem = only_problem(event(data={"a": 1}, data_base64="AAEC"))
    assert problem.field == "data_base64"
    assert "either data or data_base64" in problem.message


def test_data_base64_alone_is_kept() -> None:
    values = accepted(event(data_base64="AAEC"))
    assert values["data_base64"] == "AAEC"
    assert values["data"] is None


def test_data_base64_that_is_not_a_string_is_refused() -> None:
    problem = only_problem(event(data_base64=[0, 1, 2]))
    assert problem.field == "data_base64"
    assert "base64 string" in problem.message


# -- size and characters ----------------------------------------------------------------


def _event_of_size(size: int) -> dict[str, Any]:
    item = event(data="")
    padding = size - len(orjson.dumps(item))
    item["data"] = "x" * padding
    assert len(orjson.dumps(item)) == size
    return item


def test_an_event_of_exactly_max_bytes_passes() -> None:
    accepted(_event_of_size(MAX_BYTES))


def test_an_event_one_byte_over_max_bytes_is_refused_with_its_size_and_the_limit() -> None:
    problem = only_problem(_event_of_size(MAX_BYTES + 1))
    assert problem.field is None
    assert problem.code == "PAYLOAD_TOO_LARGE"
    assert f"{MAX_BYTES + 1} bytes" in problem.message
    assert f"at most {MAX_BYTES}" in problem.message


def test_the_size_limit_is_the_one_passed_in() -> None:
    item = _event_of_size(600)
    assert isinstance(validate_event(item, index=0, now=NOW, max_bytes=600), EventRow)
    assert isinstance(validate_event(item, index=0, now=NOW, max_bytes=599), list)


@pytest.mark.parametrize(
    "item",
    [
        event(type="deploy\x00ment"),
        event(data={"description": "a\x00b"}),
        event(data={"a\x00": 1}),
        event(team="a\x00b"),
    ],
)
def test_a_nul_character_anywhere_is_refused(item: dict[str, Any]) -> None:
    problem = only_problem(item)
    assert "NUL character" in problem.message


@pytest.mark.parametrize(
    "text",
    [
        "\u202eevil\u202c",
        "\u200f\u05e9\u05dc\u05d5\u05dd",
        "🚀 déploiement 日本",
        "e\u0301",
        "\ufeff",
    ],
)
def test_odd_but_valid_unicode_is_kept_as_sent(text: str) -> None:
    values = accepted(event(subject=text[:50], data={"description": text}))
    assert values["description"] == text


def test_a_number_over_64_bits_is_refused_and_the_message_says_so() -> None:
    problem = only_problem(event(data={"count": 2**70}))
    assert "number too large" in problem.message


def test_a_lone_surrogate_is_refused_as_text_that_is_not_unicode() -> None:
    # Only the lenient fallback parser produces these, from "\ud800" in the body.
    item = json.loads(
        '{"specversion": "1.0", "type": "t", "source": "s", "time": "NOW", "data": "\\ud800"}'
    )
    problem = only_problem(item)
    assert "not valid Unicode" in problem.message


def test_data_nested_too_deep_to_store_is_refused_as_too_deep() -> None:
    data: Any = []
    for _ in range(300):
        data = [data]
    problem = only_problem(event(data=data))
    assert "nested too deeply" in problem.message


# -- extensions --------------------------------------------------------------------------


def test_scalar_extensions_with_lower_case_alphanumeric_names_are_kept() -> None:
    values = accepted(
        event(comexampleextension1="value", comexampleothervalue=5, ok=True, ratio=0.5)
    )
    assert values["extensions"] == {
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "ok": True,
        "ratio": 0.5,
    }


def test_an_extension_name_of_20_characters_passes_and_21_is_refused() -> None:
    assert accepted(event(**{"e" * 20: "x"}))["extensions"] == {"e" * 20: "x"}
    problem = only_problem(event(**{"e" * 21: "x"}))
    assert problem.field == "e" * 21
    assert "at most 20" in problem.message
    assert "inside data" in problem.message


@pytest.mark.parametrize("name", ["Team", "team_name", "team-name", "tëam", "", "team name"])
def test_an_extension_name_that_is_not_lower_case_alphanumeric_is_refused(name: str) -> None:
    problem = only_problem(event(**{name: "x"}))
    assert problem.field == name
    assert "lower-case letters and digits" in problem.message


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], []])
def test_an_extension_holding_a_structure_is_refused_saying_to_use_data(value: object) -> None:
    problem = only_problem(event(team=value))
    assert problem.field == "team"
    assert "inside data" in problem.message


def test_a_null_extension_is_ignored() -> None:
    assert accepted(event(unsetextension=None))["extensions"] is None


# -- CDEvents ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cdevents_type", "mapped"),
    [
        ("dev.cdevents.service.deployed.0.3.0", "deployment"),
        ("dev.cdevents.service.upgraded.0.3.0", "deployment"),
        ("dev.cdevents.service.rolledback.0.3.0", "rollback"),
        ("dev.cdevents.incident.detected.0.3.0", "incident"),
        ("dev.cdevents.pipelinerun.finished.0.3.0", "pipeline-run"),
        ("dev.cdevents.change.merged.0.3.0", "change-merged"),
    ],
)
def test_a_cdevents_type_is_mapped_and_the_original_kept(cdevents_type: str, mapped: str) -> None:
    values = accepted(event(type=cdevents_type))
    assert values["type"] == mapped
    assert values["original_type"] == cdevents_type


def test_a_plain_type_is_kept_with_no_original_type() -> None:
    values = accepted(event(type="deployment"))
    assert values["type"] == "deployment"
    assert values["original_type"] is None


def _load(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_the_cdevents_fixtures_are_present() -> None:
    assert len(CDEVENTS) == 8


@pytest.mark.parametrize("path", CDEVENTS, ids=lambda p: p.stem)
def test_a_raw_cdevent_fixture_is_accepted_with_its_context_as_the_cloudevent(
    path: Path,
) -> None:
    cdevent = _load(path)
    values = accepted(copy.deepcopy(cdevent))
    context = cdevent["context"]
    assert values["original_type"] == context["type"]
    assert not values["type"].startswith("dev.cdevents.")
    assert values["source"] == context["source"]
    assert values["event_id"] == context["id"]
    stamp = datetime.fromisoformat(context["timestamp"])
    assert values["time_us"] == clock.to_us(stamp)
    assert values["data"] == cdevent


def test_a_raw_service_deployed_cdevent_gives_environment_service_and_version() -> None:
    values = accepted(_load(FIXTURES / "cdevents" / "service_deployed.json"))
    assert values["type"] == "deployment"
    assert values["subject"] == "test123"
    assert values["service"] == "mySubject123"
    assert values["version"] is not None
    assert values["version"].startswith("sha256:0b31b1c02ff458ad")
    assert len(values["version"]) <= 50


def test_a_raw_incident_cdevent_gives_its_description_service_and_environment() -> None:
    values = accepted(_load(FIXTURES / "cdevents" / "incident_detected.json"))
    assert values["type"] == "incident"
    assert values["service"] == "myApp"
    assert values["subject"] == "prod1"
    assert values["description"] == "Response time above threshold of 100ms"


def test_a_raw_pipelinerun_cdevent_describes_its_outcome() -> None:
    values = accepted(_load(FIXTURES / "cdevents" / "pipelinerun_finished.json"))
    assert values["type"] == "pipeline-run"
    assert (
        values["description"] == "myPipeline failure: Something went wrong\nWith some more details"
    )


def test_a_raw_cdevent_without_a_timestamp_is_refused_on_time() -> None:
    cdevent = _load(FIXTURES / "cdevents" / "service_deployed.json")
    del cdevent["context"]["timestamp"]
    problem = only_problem(cdevent)
    assert problem.field == "time"


# -- the whole event ---------------------------------------------------------------------


@pytest.mark.parametrize("item", [[], "deployment", 1, None, True])
def test_an_item_that_is_not_an_object_is_refused_saying_so(item: object) -> None:
    problem = only_problem(item)
    assert problem.field is None
    assert problem.message.startswith("each event must be a JSON object, not ")


def test_every_problem_of_an_event_is_reported_at_once_with_its_index() -> None:
    item = {
        "specversion": "2.0",
        "type": "t" * 101,
        "source": "has space",
        "time": "2026-11-20T10:00:00",
        "severity": "HIGH",
        "subject": "s" * 51,
        "Bad_Name": 1,
    }
    problems = refused(item, index=7)
    assert {p.field for p in problems} == {
        "specversion",
        "type",
        "source",
        "time",
        "severity",
        "subject",
        "Bad_Name",
    }
    assert {p.index for p in problems} == {7}
    assert {p.code for p in problems} == {"VALIDATION_ERROR"}


def test_a_valid_event_becomes_a_row_with_every_column() -> None:
    values = accepted(
        event(
            id="d-1",
            time="2026-11-20T09:30:00Z",
            severity="major",
            data={"description": "Checkout v2"},
        )
    )
    assert values["event_id"] == "d-1"
    assert values["subject"] == "production"
    assert values["version"] == "v1.0.0"
    assert values["service"] == "checkout"
    assert values["severity"] == "MAJOR"
    assert values["description"] == "Checkout v2"
    assert str(uuid.UUID(values["id"])) == values["id"]
    assert "checkout v2" in values["search_text"]
    assert values["time_us"] == clock.to_us(NOW - timedelta(minutes=30))
    assert values["received_us"] == clock.to_us(NOW)


def test_now_must_be_aware() -> None:
    naive = datetime(2026, 11, 20, 10, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_event(event(), index=0, now=naive, max_bytes=MAX_BYTES)


def test_a_time_with_a_zone_far_from_utc_is_converted() -> None:
    tz = timezone(timedelta(hours=-23, minutes=-59))
    sent = datetime(2026, 11, 19, 10, 1, tzinfo=tz)
    assert accepted(event(time=sent.isoformat()))["time_us"] == clock.to_us(sent)
