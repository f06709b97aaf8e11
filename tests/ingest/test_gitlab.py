"""GitLab webhook deliveries mapped to timeline events, from the payload examples in GitLab's
webhook documentation; variants the examples lack (a merge, a failed deployment or pipeline)
are built from them in the test."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.factories import make_org, principal_for
from tests.ingest.forges import (
    MAX_BYTES,
    NOW,
    check_mapping_survives,
    load,
    mutations,
    one_event,
    stored_row,
)
from tests.upstream import UPSTREAM
from trailmap import clock
from trailmap.ingest.gitlab import map_gitlab
from trailmap.ingest.webhooks import ForgeContext
from trailmap.storage import Database
from trailmap.timeline.ingest import ingest_events

FIXTURES = UPSTREAM / "gitlab-webhooks"
DELIVERY = "13792a34-cac6-4fda-95a8-c58e00a3954e"
CONTEXT = ForgeContext(delivery_id=DELIVERY)

# Each example file and the X-Gitlab-Event header GitLab sends with it.
EVENT_NAMES = {
    "deployment.json": "Deployment Hook",
    "merge_request.json": "Merge Request Hook",
    "pipeline.json": "Pipeline Hook",
    "push.json": "Push Hook",
    "release.json": "Release Hook",
}


def sample(name: str) -> dict[str, Any]:
    return load(FIXTURES / name)


def deployment(status: str) -> dict[str, Any]:
    payload = sample("deployment.json")
    payload["status"] = status
    return payload


def merged_merge_request() -> dict[str, Any]:
    payload = sample("merge_request.json")
    payload["object_attributes"].update(
        action="merge", state="merged", updated_at="2013-12-03 17:30:12 UTC"
    )
    return payload


def failed_pipeline() -> dict[str, Any]:
    payload = sample("pipeline.json")
    payload["object_attributes"]["status"] = "failed"  # its job test-build failed already
    return payload


def test_every_example_payload_is_copied_with_its_event_name() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.json")) == sorted(EVENT_NAMES)


def test_a_successful_deployment_is_a_deployment_to_its_environment() -> None:
    event = one_event(map_gitlab("Deployment Hook", sample("deployment.json"), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "deployment",
        "source": "//10.126.0.2:3000/root/test-deployment-webhooks",
        "time": "2021-04-28T21:50:00+02:00",
        "subject": "staging",
        "version": "279484c0",
        "service": "test-deployment-webhooks",
        "datacontenttype": "application/json",
        "data": {
            "description": "Deployed test-deployment-webhooks 279484c0 to staging: Add new file",
            "status": "succeeded",
            "state": "success",
            "sha": "279484c09fbe69ededfced8c1bb6e6d24616b468",
            "url": "http://10.126.0.2:3000/root/test-deployment-webhooks/-/jobs/796",
            "environment_url": "https://staging.example.com",
            "tier": "staging",
            "deployment_id": 15,
            "actor": "root",
            "repository": "root/test-deployment-webhooks",
        },
    }
    row = stored_row(event)
    assert clock.to_us(datetime(2021, 4, 28, 19, 50, tzinfo=UTC)) == row["time_us"]


def test_a_failed_deployment_is_a_major_deployment_marked_failed() -> None:
    event = one_event(map_gitlab("Deployment Hook", deployment("failed"), CONTEXT))

    assert (event["type"], event["severity"], event["subject"], event["version"]) == (
        "deployment",
        "MAJOR",
        "staging",
        "279484c0",
    )
    assert event["data"]["status"] == "failed"
    assert event["data"]["description"] == (
        "Deployment of test-deployment-webhooks 279484c0 to staging failed: Add new file"
    )
    assert stored_row(event)["severity"] == "MAJOR"


def test_a_deployment_of_a_tag_takes_the_tag_as_its_version() -> None:
    payload = deployment("success")
    payload["ref"] = "v3.2.0"

    assert one_event(map_gitlab("Deployment Hook", payload, CONTEXT))["version"] == "v3.2.0"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("canceled", "deployment status 'canceled': a canceled deployment is not recorded"),
        (
            "running",
            "deployment status 'running' is not recorded; only success and failed are outcomes",
        ),
    ],
)
def test_a_deployment_without_an_outcome_is_ignored(status: str, reason: str) -> None:
    mapped = map_gitlab("Deployment Hook", deployment(status), CONTEXT)

    assert (mapped.events, mapped.ignored) == ((), reason)


def test_a_created_release_is_a_release_of_its_tag() -> None:
    event = one_event(map_gitlab("Release Hook", sample("release.json"), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "release",
        "source": "//example.com/gitlab-org/release-webhook-example",
        "time": "2020-11-02T12:55:12Z",
        "version": "v1.1",
        "service": "release-webhook-example",
        "datacontenttype": "application/json",
        "data": {
            "description": "Released release-webhook-example v1.1\n\nv1.1 has been released",
            "tag": "v1.1",
            "name": "v1.1",
            "url": "https://example.com/gitlab-org/release-webhook-example/-/releases/v1.1",
            "sha": "ee0a3fb31ac16e11b9dbb596ad16d4af654d08f8",
            "repository": "gitlab-org/release-webhook-example",
        },
    }
    stored_row(event)


@pytest.mark.parametrize("action", ["update", "delete"])
def test_release_actions_other_than_create_are_ignored(action: str) -> None:
    payload = sample("release.json")
    payload["action"] = action

    assert map_gitlab("Release Hook", payload, CONTEXT).ignored == (
        f"release action {action!r} is not recorded; only create is"
    )


def test_a_push_to_the_default_branch_lists_its_commits_and_how_many_more() -> None:
    event = one_event(map_gitlab("Push Hook", sample("push.json"), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "push",
        "source": "//example.com/mike/diaspora",
        # The payload says when each commit was written, not when the push happened.
        "time": "NOW",
        "version": "da156088",
        "service": "diaspora",
        "datacontenttype": "application/json",
        "data": {
            "description": "Pushed 4 commits to master: fixed readme",
            "ref": "master",
            "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "actor": "jsmith",
            "repository": "mike/diaspora",
            "commits": [
                {
                    "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
                    "time": "2011-12-12T14:27:31+02:00",
                    "message": "Update Catalan translation to e38cb41.",
                    "author": "Jordi Mallach",
                },
                {
                    "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                    "time": "2012-01-03T23:36:29+02:00",
                    "message": "fixed readme",
                    "author": "GitLab dev user",
                },
            ],
            "commits_more": 2,
        },
    }
    assert stored_row(event)["time_us"] == clock.to_us(NOW)


def test_a_push_to_another_branch_is_ignored() -> None:
    payload = sample("push.json")
    payload["ref"] = "refs/heads/feature"

    assert map_gitlab("Push Hook", payload, CONTEXT).ignored == (
        "a push to branch 'feature', not the default branch 'master'"
    )


def test_a_deleted_branch_is_ignored() -> None:
    payload = sample("push.json")
    payload.update(after="0" * 40, checkout_sha=None, commits=[], total_commits_count=0)

    assert map_gitlab("Push Hook", payload, CONTEXT).ignored == (
        "the push deleted refs/heads/master"
    )


def test_a_tag_push_is_ignored() -> None:
    payload = sample("push.json")
    payload.update(object_kind="tag_push", ref="refs/tags/v1.0.0")

    assert map_gitlab("Tag Push Hook", payload, CONTEXT).ignored == (
        "a push of a tag; releases and deployments say when a tag ships"
    )


def test_a_merged_merge_request_is_a_change_merged() -> None:
    payload = merged_merge_request()
    payload["object_attributes"]["target_branch"] = "master"

    event = one_event(map_gitlab("Merge Request Hook", payload, CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "change-merged",
        "source": "//example.com/gitlabhq/gitlab-test",
        "time": "2013-12-03T17:30:12Z",
        "version": "da156088",
        "service": "gitlab-test",
        "datacontenttype": "application/json",
        "data": {
            "description": "Merged merge request !1 into master: MS-Viewport",
            "number": 1,
            "title": "MS-Viewport",
            "url": "http://example.com/diaspora/merge_requests/1",
            "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "ref": "master",
            "head_ref": "ms-viewport",
            "actor": "root",
            "repository": "gitlabhq/gitlab-test",
        },
    }
    stored_row(event)


def test_a_merge_into_another_branch_is_ignored() -> None:
    payload = merged_merge_request()
    payload["object_attributes"]["target_branch"] = "stable"

    assert map_gitlab("Merge Request Hook", payload, CONTEXT).ignored == (
        "merge request !1 was merged into 'stable', not the default branch 'master'"
    )


def test_an_opened_merge_request_is_ignored() -> None:
    mapped = map_gitlab("Merge Request Hook", sample("merge_request.json"), CONTEXT)

    assert mapped.ignored == "merge request action 'open' is not recorded; only merge is"


def test_a_failed_pipeline_on_the_default_branch_is_a_minor_pipeline_run() -> None:
    event = one_event(map_gitlab("Pipeline Hook", failed_pipeline(), CONTEXT))

    assert event == {
        "specversion": "1.0",
        "id": DELIVERY,
        "type": "pipeline-run",
        "source": "//192.168.64.1:3005/gitlab-org/gitlab-test",
        "time": "2016-08-12T15:26:29Z",
        "version": "bcbb5ec3",
        "severity": "MINOR",
        "service": "gitlab-test",
        "datacontenttype": "application/json",
        "data": {
            "description": "Pipeline #31 failed on master (test-build): test",
            "status": "failed",
            "pipeline_id": 31,
            "url": "http://example.com/gitlab-org/gitlab-test/-/pipelines/31",
            "sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
            "ref": "master",
            "trigger": "merge_request_event",
            "failed_jobs": ["test-build"],
            "actor": "root",
            "repository": "gitlab-org/gitlab-test",
        },
    }
    assert stored_row(event)["severity"] == "MINOR"


def test_a_successful_pipeline_is_ignored() -> None:
    mapped = map_gitlab("Pipeline Hook", sample("pipeline.json"), CONTEXT)

    assert mapped.ignored == "pipeline status 'success'; only failed pipelines are recorded"


def test_a_failed_pipeline_on_another_branch_is_ignored() -> None:
    payload = failed_pipeline()
    payload["object_attributes"]["ref"] = "feature"

    assert map_gitlab("Pipeline Hook", payload, CONTEXT).ignored == (
        "a pipeline on 'feature', not the default branch 'master'"
    )


def test_a_failed_pipeline_for_a_tag_is_ignored() -> None:
    payload = failed_pipeline()
    payload["object_attributes"].update(ref="v1.0", tag=True)

    assert map_gitlab("Pipeline Hook", payload, CONTEXT).ignored == (
        "a pipeline for tag 'v1.0', not the default branch"
    )


@pytest.mark.parametrize("name", sorted(EVENT_NAMES))
def test_the_object_kind_names_the_event_when_the_header_does_not(name: str) -> None:
    payload = sample(name)

    by_header = map_gitlab(EVENT_NAMES[name], payload, CONTEXT)

    assert map_gitlab("", payload, CONTEXT) == by_header
    assert map_gitlab("System Hook", payload, CONTEXT) == by_header
    assert map_gitlab(payload["object_kind"], payload, CONTEXT) == by_header


def test_a_header_that_contradicts_the_payload_is_ignored() -> None:
    mapped = map_gitlab("Push Hook", sample("pipeline.json"), CONTEXT)

    assert mapped.ignored == "the event is 'Push Hook' but the payload's object_kind is 'pipeline'"


@pytest.mark.parametrize("name", ["Job Hook", "Issue Hook", "Note Hook", "Something New"])
def test_events_without_a_mapping_are_ignored_by_name(name: str) -> None:
    assert map_gitlab(name, {}, CONTEXT).ignored == f"event {name!r} is not mapped"


def test_a_project_mapped_to_a_service_changes_the_service() -> None:
    context = ForgeContext(
        delivery_id=DELIVERY, services={"root/test-deployment-webhooks": "checkout"}
    )

    event = one_event(map_gitlab("Deployment Hook", sample("deployment.json"), context))

    assert event["service"] == "checkout"
    assert stored_row(event)["service"] == "checkout"


def test_the_service_of_an_unmapped_project_is_what_its_source_names() -> None:
    event = one_event(map_gitlab("Merge Request Hook", merged_merge_request(), CONTEXT))

    assert stored_row({**event, "service": None})["service"] == event["service"]


def test_the_integration_s_default_branch_overrides_the_project_s() -> None:
    context = ForgeContext(delivery_id=DELIVERY, default_branch="main")

    assert map_gitlab("Push Hook", sample("push.json"), context).ignored == (
        "a push to branch 'master', not the default branch 'main'"
    )


def test_a_payload_with_the_wrong_shape_is_ignored_saying_what_is_missing() -> None:
    payload = sample("release.json")
    payload["project"] = 5

    assert map_gitlab("Release Hook", payload, CONTEXT).ignored == (
        "the payload has no project.path_with_namespace"
    )


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2021-04-28 21:50:00 +0200", "2021-04-28T21:50:00+02:00"),
        ("2016-08-12 15:23:28 UTC", "2016-08-12T15:23:28Z"),
        ("2013-12-03T17:23:34Z", "2013-12-03T17:23:34Z"),
        ("2012-01-03T23:36:29+02:00", "2012-01-03T23:36:29+02:00"),
        ("2020-10-02T12:42:30.000-05:30", "2020-10-02T12:42:30-05:30"),
    ],
)
def test_gitlab_s_ways_of_writing_a_time_keep_their_zone(written: str, read: str) -> None:
    payload = sample("deployment.json")
    payload["status_changed_at"] = written

    assert one_event(map_gitlab("Deployment Hook", payload, CONTEXT))["time"] == read


MAPPED_VARIANTS = {
    "deployment failed": ("Deployment Hook", deployment("failed")),
    "merge_request merged": ("Merge Request Hook", merged_merge_request()),
    "pipeline failed": ("Pipeline Hook", failed_pipeline()),
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
        check_mapping_survives(map_gitlab(event_name, damaged, CONTEXT), label)


@pytest.mark.parametrize("payload", [[], "text", 5, None])
def test_a_body_that_is_not_an_object_is_ignored(payload: Any) -> None:
    assert map_gitlab("Push Hook", payload, CONTEXT).ignored == "the payload is not a JSON object"


@pytest.mark.anyio
async def test_a_redelivered_gitlab_delivery_is_a_duplicate(db: Database) -> None:
    org = await make_org(db)
    principal = principal_for(org)
    payload = sample("deployment.json")
    first: list[object] = list(map_gitlab("Deployment Hook", payload, CONTEXT).events)
    again: list[object] = list(
        map_gitlab("Deployment Hook", copy.deepcopy(payload), CONTEXT).events
    )
    # The example is from 2021: the timeline receives it soon after, within its retention.
    now = datetime(2021, 4, 28, 19, 51, tzinfo=UTC)

    stored = await ingest_events(db, principal, first, max_event_bytes=MAX_BYTES, now=now)
    repeated = await ingest_events(db, principal, again, max_event_bytes=MAX_BYTES, now=now)

    assert (len(stored.accepted), stored.duplicates, stored.rejected) == (1, [], [])
    assert (repeated.accepted, len(repeated.duplicates), repeated.rejected) == ([], 1, [])


def test_a_system_hook_of_a_kind_without_a_mapping_is_ignored_by_its_kind() -> None:
    mapped = map_gitlab("System Hook", {"object_kind": "repository_update"}, CONTEXT)

    assert mapped.ignored == "event 'repository_update' is not mapped"
