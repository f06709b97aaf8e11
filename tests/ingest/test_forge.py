"""What the GitHub and GitLab mappings share: forge times, versions, trimmed commit lists, and
never an exception, whatever a delivery's body holds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ingest.forges import check_mapping_survives, load, mutations
from tests.upstream import UPSTREAM
from trailmap.ingest.forge import MAX_COMMITS, commit_list, forge_time, version_for
from trailmap.ingest.github import map_github
from trailmap.ingest.gitlab import map_gitlab
from trailmap.ingest.webhooks import ForgeContext

CONTEXT = ForgeContext(delivery_id="delivery-1")
GITHUB_EVENTS = ("deployment_status", "deployment", "release", "push", "pull_request", "ping")
GITLAB_EVENTS = ("Deployment Hook", "Release Hook", "Push Hook", "Pipeline Hook", "")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2019-05-15T15:20:55Z", "2019-05-15T15:20:55Z"),
        ("2020-10-02T12:42:30.000Z", "2020-10-02T12:42:30Z"),
        ("2021-04-28 21:50:00 +0200", "2021-04-28T21:50:00+02:00"),
        ("2016-08-12 15:23:28 UTC", "2016-08-12T15:23:28Z"),
        ("2012-01-03T23:36:29+02:00", "2012-01-03T23:36:29+02:00"),
        ("2012-01-03T23:36:29.1234567-0330", "2012-01-03T23:36:29.123456-03:30"),
        (1557933657, "2019-05-15T15:20:57Z"),
    ],
)
def test_a_forge_time_keeps_its_zone(written: object, read: str) -> None:
    assert forge_time(written) == read


@pytest.mark.parametrize(
    "written",
    ["2019-05-15T15:20:55", "2019-05-15", "yesterday", "2019-02-30T10:00:00Z", True, 10**20, ""],
)
def test_a_time_without_a_zone_or_not_a_time_is_none(written: object) -> None:
    assert forge_time(written) is None


@pytest.mark.parametrize(
    ("ref", "sha", "version"),
    [
        ("refs/tags/release-7", None, "release-7"),
        ("v1.4.2", "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "v1.4.2"),
        ("2024.05.1-rc.1", None, "2024.05.1-rc.1"),
        ("main", "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "f95f852"),
        ("f95f852bd8fca8fcc58a9a2d6c842781e32a215e", None, "f95f852"),
        ("main", None, None),
        (None, "not a sha", None),
    ],
)
def test_a_version_is_a_tag_else_the_short_sha(
    ref: str | None, sha: str | None, version: str | None
) -> None:
    assert version_for(ref, sha, short=7) == version


def test_a_commit_list_keeps_what_a_person_needs_and_skips_what_is_not_a_commit() -> None:
    commits: list[Any] = [
        {
            "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
            "message": "Fix the cart\n\nIt lost items.",
            "timestamp": "2011-12-12T14:27:31+02:00",
            "author": {"name": "Jordi", "email": "jordi@example.com"},
            "added": ["CHANGELOG"],
        },
        "not a commit",
        {"message": "no id"},
    ]

    assert commit_list(commits) == [
        {
            "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
            "time": "2011-12-12T14:27:31+02:00",
            "message": "Fix the cart",
            "author": "Jordi",
        }
    ]
    assert len(commit_list([{"id": f"{n:040x}"} for n in range(50)])) == MAX_COMMITS


@given(payload=st.dictionaries(st.text(max_size=12), json_values, max_size=6))
def test_any_json_object_is_mapped_or_ignored_by_both_forges(payload: dict[str, Any]) -> None:
    for name in GITHUB_EVENTS:
        check_mapping_survives(map_github(name, payload, CONTEXT), name)
    for name in GITLAB_EVENTS:
        check_mapping_survives(map_gitlab(name, payload, CONTEXT), name)


@given(value=json_values)
def test_any_value_in_a_sample_s_repository_or_project_is_mapped_or_ignored(value: object) -> None:
    github = load(UPSTREAM / "github-webhooks" / "push.new-branch.json")
    gitlab = load(UPSTREAM / "gitlab-webhooks" / "push.json")
    github["repository"]["html_url"] = value
    gitlab["project"]["web_url"] = value

    check_mapping_survives(map_github("push", github, CONTEXT), repr(value))
    check_mapping_survives(map_gitlab("Push Hook", gitlab, CONTEXT), repr(value))


def test_the_mutations_cover_every_field_of_a_sample() -> None:
    sample = load(UPSTREAM / "gitlab-webhooks" / "release.json")
    labels = {label.split(" = ")[0] for label, _ in mutations(sample)}

    assert {"project.web_url", "assets.links.0.url", "commit.author.name", "tag"} <= labels
