"""GitHub webhook deliveries mapped to timeline events, from GitHub's own sample payloads
(octokit/webhooks); variants the samples lack (a merge, a failed deployment) are built from
them in the test."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.factories import make_org, principal_for
from tests.ingest.forges import (
    MAX_BYTES,
    check_mapping_survives,
    load,
    mutations,
    one_event,
    stored_row,
)
from tests.upstream import UPSTREAM
from trailmap.ingest.github import map_github
from trailmap.ingest.webhooks import ForgeContext
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

FIXTURES = UPSTREAM / "github-webhooks"
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
CONTEXT = ForgeContext(delivery_id=DELIVERY)
SOURCE = "//github.com/Codertocat/Hello-World"
SHA = "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"

# Each sample file and the X-GitHub-Event header GitHub sends with it.
EVENT_NAMES = {
    "deployment.created.json": "deployment",
    "deployment_status.created.success.json": "deployment_status",
    "deployment_status.created.in_progress.gh-pages.json": "deployment_status",
    "push.new-branch.json": "push",
    "push.tag-deleted.json": "push",
    "release.published.json": "release",
    "pull_request.closed.json": "pull_request",
    "workflow_run.completed.json": "workflow_run",
    "workflow_job.completed.failure.json": "workflow_job",
    "check_suite.completed.json": "check_suite",
    "ping.json": "ping",
}


def sample(name: str) -> dict[str, Any]:
    return load(FIXTURES / name)


def deployment_status(state: str) -> dict[str, Any]:
    payload = sample("deployment_status.created.success.json")
    payload["deployment_status"]["state"] = state
    return payload


def merged_pull_request() -> dict[str, Any]:
    payload = sample("pull_request.closed.json")
    payload["pull_request"].update(merged=True, merged_at="2019-05-15T15:21:18Z")
    return payload


def failed_workflow_run(conclusion: str = "failure") -> dict[str, Any]:
    payload = sample("workflow_run.completed.json")
    payload["workflow_run"]["conclusion"] = conclusion
    return payload


def test_every_sample_payload_is_copied_with_its_event_name() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EVENT_NAMES)


def test_a_successful_deployment_status_is_a_deployment_to_its_environment() -> None:
    event = one_event(
        map_github("deployment_status", sample("deployment_status.created.success.json"), CONTEXT)
    )

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "deployment",
        "source": SOURCE,
        "time": "2019-05-15T15:20:55Z",
        "subject": "production",
        "version": "f95f852",
        "service": "Hello-World",
        "datacontenttype": "application/json",
        "data": {
            "description": "Deployed Hello-World f95f852 to production",
            "status": "succeeded",
            "state": "success",
            "sha": SHA,
            "ref": "master",
            "deployment_id": 145988746,
            "actor": "Codertocat",
            "repository": "Codertocat/Hello-World",
        },
    }
    row = stored_row(event)
    assert (row["type"], row["service"], row["subject"], row["severity"]) == (
        "deployment",
        "Hello-World",
        "production",
        None,
    )


@pytest.mark.parametrize("state", ["failure", "error"])
def test_a_failed_deployment_status_is_a_major_deployment_marked_failed(state: str) -> None:
    payload = deployment_status(state)
    payload["deployment_status"].update(
        description="Pods never became ready",
        log_url="https://github.com/Codertocat/Hello-World/actions/runs/1",
    )

    event = one_event(map_github("deployment_status", payload, CONTEXT))

    assert (event["type"], event["severity"], event["subject"], event["version"]) == (
        "deployment",
        "MAJOR",
        "production",
        "f95f852",
    )
    assert event["data"]["status"] == "failed"
    assert event["data"]["state"] == state
    assert event["data"]["description"] == (
        "Deployment of Hello-World f95f852 to production failed: Pods never became ready"
    )
    assert event["data"]["url"] == "https://github.com/Codertocat/Hello-World/actions/runs/1"
    assert stored_row(event)["severity"] == "MAJOR"


def test_a_deployment_of_a_tag_takes_the_tag_as_its_version() -> None:
    payload = deployment_status("success")
    payload["deployment"]["ref"] = "v2.4.1"

    assert one_event(map_github("deployment_status", payload, CONTEXT))["version"] == "v2.4.1"


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("in_progress", "only success, failure and error are outcomes"),
        ("queued", "only success, failure and error are outcomes"),
        ("pending", "only success, failure and error are outcomes"),
        ("inactive", "a newer deployment replaced this one"),
    ],
)
def test_a_deployment_status_that_is_no_outcome_is_ignored(state: str, reason: str) -> None:
    mapped = map_github("deployment_status", deployment_status(state), CONTEXT)

    assert mapped.events == ()
    assert mapped.ignored == f"deployment state {state!r} is not recorded: {reason}"


def test_the_in_progress_sample_is_ignored() -> None:
    payload = sample("deployment_status.created.in_progress.gh-pages.json")

    assert map_github("deployment_status", payload, CONTEXT).ignored == (
        "deployment state 'in_progress' is not recorded: only success, failure and error are "
        "outcomes"
    )


def test_a_created_deployment_is_ignored_because_its_status_carries_the_outcome() -> None:
    mapped = map_github("deployment", sample("deployment.created.json"), CONTEXT)

    assert mapped.events == ()
    assert mapped.ignored is not None
    assert "counted once" in mapped.ignored


def test_a_published_release_is_a_release_of_its_tag() -> None:
    event = one_event(map_github("release", sample("release.published.json"), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "release",
        "source": SOURCE,
        "time": "2019-05-15T15:20:53Z",
        "version": "0.0.1",
        "service": "Hello-World",
        "datacontenttype": "application/json",
        "data": {
            "description": "Released Hello-World 0.0.1",
            "tag": "0.0.1",
            "url": "https://github.com/Codertocat/Hello-World/releases/tag/0.0.1",
            "target": "master",
            "actor": "Codertocat",
            "repository": "Codertocat/Hello-World",
        },
    }
    stored_row(event)


@pytest.mark.parametrize("action", ["created", "released", "prereleased", "edited", "deleted"])
def test_release_actions_other_than_published_are_ignored(action: str) -> None:
    payload = sample("release.published.json")
    payload["action"] = action

    mapped = map_github("release", payload, CONTEXT)

    assert mapped.ignored == (
        f"release action {action!r} is not recorded; only published is, so that one release is "
        "counted once"
    )


def test_a_push_to_the_default_branch_lists_its_commits_and_their_times() -> None:
    event = one_event(map_github("push", sample("push.new-branch.json"), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "push",
        "source": SOURCE,
        # repository.pushed_at, seconds since 1970
        "time": "2019-05-15T15:20:57Z",
        "version": "6113728",
        "service": "Hello-World",
        "datacontenttype": "application/json",
        "data": {
            "description": "Pushed 1 commit to master: Initial commit",
            "ref": "master",
            "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "url": "https://github.com/Codertocat/Hello-World/commit/"
            "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "actor": "Codertocat",
            "repository": "Codertocat/Hello-World",
            "commits": [
                {
                    "id": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                    "time": "2019-05-15T15:19:25Z",
                    "message": "Initial commit",
                    "author": "Codertocat",
                }
            ],
            "commits_more": 0,
        },
    }
    stored_row(event)


def test_a_long_push_keeps_twenty_commits_and_says_how_many_more() -> None:
    payload = sample("push.new-branch.json")
    template = payload["commits"][0]
    payload["commits"] = [
        {
            **template,
            "id": f"{n:040x}",
            "message": f"Change {n}: " + "ü" * 400 + "\n\nA long body " * 50,
        }
        for n in range(35)
    ]

    event = one_event(map_github("push", payload, CONTEXT))

    commits = event["data"]["commits"]
    assert 0 < len(commits) <= 20
    assert event["data"]["commits_more"] == 35 - len(commits)
    assert all(len(c["message"]) <= 200 and "\n" not in c["message"] for c in commits)
    assert event["data"]["description"].startswith("Pushed 35 commits to master")
    stored_row(event)


def test_a_push_to_another_branch_is_ignored() -> None:
    payload = sample("push.new-branch.json")
    payload["ref"] = "refs/heads/feature/login"

    assert map_github("push", payload, CONTEXT).ignored == (
        "a push to branch 'feature/login', not the default branch 'master'"
    )


def test_a_deleted_tag_is_ignored() -> None:
    mapped = map_github("push", sample("push.tag-deleted.json"), CONTEXT)

    assert mapped.ignored == "the push deleted refs/tags/simple-tag"


def test_a_deleted_branch_is_ignored() -> None:
    payload = sample("push.tag-deleted.json")
    payload["ref"] = "refs/heads/master"

    assert map_github("push", payload, CONTEXT).ignored == "the push deleted refs/heads/master"


def test_a_pushed_tag_is_ignored() -> None:
    payload = sample("push.new-branch.json")
    payload["ref"] = "refs/tags/v1.0"

    assert map_github("push", payload, CONTEXT).ignored == (
        "a push of tag 'v1.0'; releases and deployments say when a tag ships"
    )


def test_the_integration_s_default_branch_overrides_the_repository_s() -> None:
    context = ForgeContext(delivery_id=DELIVERY, default_branch="main")

    mapped = map_github("push", sample("push.new-branch.json"), context)

    assert mapped.ignored == "a push to branch 'master', not the default branch 'main'"


def test_a_merged_pull_request_is_a_change_merged() -> None:
    event = one_event(map_github("pull_request", merged_pull_request(), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "change-merged",
        "source": SOURCE,
        "time": "2019-05-15T15:21:18Z",
        "version": "c4295bd",
        "service": "Hello-World",
        "datacontenttype": "application/json",
        "data": {
            "description": "Merged pull request #2 into master: Update the README with new "
            "information.",
            "number": 2,
            "title": "Update the README with new information.",
            "url": "https://github.com/Codertocat/Hello-World/pull/2",
            "sha": "c4295bd74fb0f4fda03689c3df3f2803b658fd85",
            "ref": "master",
            "head_ref": "changes",
            "actor": "Codertocat",
            "author": "Codertocat",
            "repository": "Codertocat/Hello-World",
        },
    }
    stored_row(event)


def test_a_pull_request_closed_without_merging_is_ignored() -> None:
    mapped = map_github("pull_request", sample("pull_request.closed.json"), CONTEXT)

    assert mapped.ignored == "pull request #2 was closed without being merged"


def test_a_pull_request_merged_into_another_branch_is_ignored() -> None:
    payload = merged_pull_request()
    payload["pull_request"]["base"]["ref"] = "release-1.x"

    assert map_github("pull_request", payload, CONTEXT).ignored == (
        "pull request #2 was merged into 'release-1.x', not the default branch 'master'"
    )


def test_an_opened_pull_request_is_ignored() -> None:
    payload = sample("pull_request.closed.json")
    payload["action"] = "opened"

    assert map_github("pull_request", payload, CONTEXT).ignored == (
        "pull request action 'opened' is not recorded; only merges are"
    )


@pytest.mark.parametrize("conclusion", ["failure", "timed_out", "startup_failure"])
def test_a_failed_workflow_run_on_the_default_branch_is_a_minor_pipeline_run(
    conclusion: str,
) -> None:
    event = one_event(map_github("workflow_run", failed_workflow_run(conclusion), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "pipeline-run",
        "source": "//github.com/octo-org/octo-repo",
        "time": "2020-10-05T16:33:49Z",
        "version": "3484a3f",
        "severity": "MINOR",
        "service": "octo-repo",
        "datacontenttype": "application/json",
        "data": {
            "description": "Workflow test failed on master: ci(action): update "
            "actions/setup-node digest to 8c91899",
            "status": "failed",
            "conclusion": conclusion,
            "workflow": "test",
            "url": "https://github.com/octo-org/octo-repo/actions/runs/289782451",
            "sha": "3484a3fb816e0859fd6e1cea078d76385ff50625",
            "ref": "master",
            "run_number": 163,
            "run_attempt": 1,
            "trigger": "repository_dispatch",
            "actor": "Codertocat",
            "repository": "octo-org/octo-repo",
        },
    }
    assert stored_row(event)["severity"] == "MINOR"


def test_a_successful_workflow_run_is_ignored() -> None:
    mapped = map_github("workflow_run", sample("workflow_run.completed.json"), CONTEXT)

    assert mapped.ignored == "the workflow run concluded 'success'; only failures are recorded"


def test_a_failed_workflow_run_on_another_branch_is_ignored() -> None:
    payload = failed_workflow_run()
    payload["workflow_run"]["head_branch"] = "renovate/setup-node"

    assert map_github("workflow_run", payload, CONTEXT).ignored == (
        "a workflow run on branch 'renovate/setup-node', not the default branch 'master'"
    )


def test_a_requested_workflow_run_is_ignored() -> None:
    payload = failed_workflow_run()
    payload["action"] = "requested"

    assert map_github("workflow_run", payload, CONTEXT).ignored == (
        "workflow run action 'requested' is not recorded; only completed is"
    )


def test_a_ping_is_ignored_as_a_ping() -> None:
    assert map_github("ping", sample("ping.json"), CONTEXT).ignored == "ping"


@pytest.mark.parametrize("name", ["workflow_job", "check_suite"])
def test_events_without_a_mapping_are_ignored_by_name(name: str) -> None:
    payload = sample(next(f for f, n in EVENT_NAMES.items() if n == name))

    assert map_github(name, payload, CONTEXT).ignored == f"event {name!r} is not mapped"


def test_a_repository_mapped_to_a_service_changes_the_service() -> None:
    context = ForgeContext(delivery_id=DELIVERY, services={"codertocat/hello-world": "checkout"})

    event = one_event(map_github("release", sample("release.published.json"), context))

    assert event["service"] == "checkout"
    assert event["source"] == SOURCE
    assert stored_row(event)["service"] == "checkout"


def test_the_service_of_an_unmapped_repository_is_what_its_source_names() -> None:
    event = one_event(map_github("release", sample("release.published.json"), CONTEXT))

    # The same as an event sent with this source and no service.
    assert stored_row({**event, "service": None})["service"] == event["service"]


def test_a_payload_with_the_wrong_shape_is_ignored_saying_what_is_missing() -> None:
    payload = sample("release.published.json")
    payload["repository"] = 5

    assert map_github("release", payload, CONTEXT).ignored == (
        "the payload has no repository.full_name"
    )


def test_a_time_without_a_zone_is_never_guessed() -> None:
    payload = deployment_status("success")
    payload["deployment_status"].update(
        created_at="2019-05-15 15:20:55", updated_at="2019-05-15 15:20:55"
    )

    mapped = map_github("deployment_status", payload, CONTEXT)

    assert mapped.ignored == (
        "the payload has no time with a zone at deployment_status.created_at or "
        "deployment_status.updated_at"
    )


def test_a_delivery_without_an_id_is_ignored() -> None:
    mapped = map_github("release", sample("release.published.json"), ForgeContext(" "))

    assert mapped.ignored == "the delivery has no id (X-GitHub-Delivery)"


MAPPED_VARIANTS = {
    "deployment_status success": ("deployment_status", deployment_status("success")),
    "deployment_status failure": ("deployment_status", deployment_status("failure")),
    "pull_request merged": ("pull_request", merged_pull_request()),
    "workflow_run failure": ("workflow_run", failed_workflow_run()),
}


@pytest.mark.parametrize(
    ("event_name", "payload"),
    [pytest.param(EVENT_NAMES[f], sample(f), id=f) for f in sorted(EVENT_NAMES)]
    + [pytest.param(*v, id=k) for k, v in MAPPED_VARIANTS.items()],
)
def test_a_damaged_payload_is_mapped_or_ignored_never_an_error(
    event_name: str, payload: dict[str, Any]
) -> None:
    for label, damaged in mutations(payload):
        check_mapping_survives(map_github(event_name, damaged, CONTEXT), label)


@pytest.mark.parametrize("payload", [[], "text", 5, None])
def test_a_body_that_is_not_an_object_is_ignored(payload: Any) -> None:
    assert map_github("push", payload, CONTEXT).ignored == "the payload is not a JSON object"


@pytest.mark.anyio
async def test_a_redelivered_github_delivery_is_a_duplicate(db: Database) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    payload = sample("deployment_status.created.success.json")
    first: list[object] = list(map_github("deployment_status", payload, CONTEXT).events)
    again: list[object] = list(
        map_github("deployment_status", copy.deepcopy(payload), CONTEXT).events
    )
    other = list(
        map_github("deployment_status", payload, ForgeContext(delivery_id="another")).events
    )

    # The sample is from 2019: the timeline receives it soon after, within its retention.
    now = datetime(2019, 5, 15, 15, 21, tzinfo=UTC)

    stored = await ingest_events(db, principal, first, max_event_bytes=MAX_BYTES, now=now)
    repeated = await ingest_events(
        db, principal, [*again, *other], max_event_bytes=MAX_BYTES, now=now
    )

    assert (len(stored.accepted), len(stored.duplicates), stored.rejected) == (1, 0, [])
    assert len(repeated.duplicates) == 1
    assert len(repeated.accepted) == 1
    assert repeated.rejected == []
