"""Kubernetes objects read into change events, on the real objects in
tests/fixtures/upstream/kubernetes/ and variants of them made here."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.upstream import UPSTREAM
from trailmap.ingest.kubernetes import (
    EnvironmentMap,
    WatchContext,
    baseline,
    image_version,
    observe,
)

FIXTURES = UPSTREAM / "kubernetes"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CONTEXT = WatchContext(
    cluster="kind-test", environments=EnvironmentMap({"default": "production"}), now=NOW
)


def _seen_at(when: str) -> WatchContext:
    """The watcher seeing the change two minutes after the object's own time of it."""
    now = datetime.fromisoformat(when.replace("Z", "+00:00")) + timedelta(minutes=2)
    return WatchContext(CONTEXT.cluster, CONTEXT.environments, now)


def _load(name: str) -> dict[str, Any]:
    """A fixture as the API server sends it: JSON, times as RFC 3339 strings."""
    text = (FIXTURES / name).read_text()
    if name.endswith(".json"):
        loaded: dict[str, Any] = json.loads(text)
        return loaded
    as_json = json.dumps(
        yaml.safe_load(text), default=lambda when: when.isoformat().replace("+00:00", "Z")
    )
    reloaded: dict[str, Any] = json.loads(as_json)
    return reloaded


def _available() -> dict[str, Any]:
    return _load("deployment.available.json")


def _rolling(obj: dict[str, Any], revision: str, image: str) -> dict[str, Any]:
    """The deployment after its template changed: a new revision, not finished yet."""
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    meta["annotations"]["deployment.kubernetes.io/revision"] = revision
    meta["generation"] += 1
    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
    new["spec"]["template"]["spec"]["containers"][0]["image"] = image
    new["status"]["observedGeneration"] = meta["generation"]
    new["status"]["updatedReplicas"] = 0
    progressing = new["status"]["conditions"][1]
    progressing.update(reason="ReplicaSetUpdated", lastUpdateTime="2020-07-01T10:00:00Z")
    return new


def _finished(obj: dict[str, Any], when: str = "2020-07-01T10:01:00Z") -> dict[str, Any]:
    new = copy.deepcopy(obj)
    new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
    new["status"]["updatedReplicas"] = new["spec"]["replicas"]
    new["status"]["availableReplicas"] = new["spec"]["replicas"]
    new["status"]["conditions"][1].update(reason="NewReplicaSetAvailable", lastUpdateTime=when)
    return new


def test_the_first_list_becomes_known_state_and_never_an_event() -> None:
    listed = _load("deploymentlist.kube-system.json")
    for item in listed["items"]:
        item["kind"] = "Deployment"
        state = baseline(item)
        assert state is not None
        assert state["rev"] == "1"
        assert state["reported"] == "done"
        assert state["images"] == ["registry.k8s.io/coredns/coredns:v1.14.2"]
        # Seen again unchanged, it is no change.
        assert observe(state, item, CONTEXT).events == ()


def test_a_finished_rollout_of_a_new_revision_is_a_deployment_with_the_image_tag() -> None:
    known = baseline(_available())
    rolling = _rolling(_available(), "6", "gcr.io/heptio-images/ks-guestbook-demo:0.3")
    step = observe(known, rolling, CONTEXT)
    assert step.events == ()  # still rolling
    done = observe(step.state, _finished(rolling), _seen_at("2020-07-01T10:01:00Z"))
    (event,) = done.events
    assert event["type"] == "deployment"
    assert event["version"] == "0.3"
    assert event["subject"] == "production"
    assert event["service"] == "guestbook-ui"
    assert event["time"] == "2020-07-01T10:01:00Z"
    assert event["source"] == "//kind-test/apis/apps/v1/namespaces/default/deployments/guestbook-ui"
    assert event["data"]["revision"] == "6"
    assert event["data"]["status"] == "succeeded"
    assert "severity" not in event
    # Its status changing again (a scale, a resync) reports nothing more.
    again = _finished(_finished(rolling), when="2020-07-01T11:00:00Z")
    assert observe(done.state, again, CONTEXT).events == ()


def test_an_object_time_a_day_old_or_ahead_of_now_gives_way_to_the_time_it_was_seen() -> None:
    known = baseline(_available())
    rolling = _rolling(_available(), "6", "gcr.io/heptio-images/ks-guestbook-demo:0.3")
    (stale,) = observe(observe(known, rolling, CONTEXT).state, _finished(rolling), CONTEXT).events
    assert stale["time"] == NOW.isoformat()
    ahead = _seen_at("2020-07-01T09:00:00Z")
    (future,) = observe(observe(known, rolling, ahead).state, _finished(rolling), ahead).events
    assert future["time"] == ahead.now.isoformat()


def test_the_same_change_read_twice_makes_the_same_event_id() -> None:
    known = baseline(_available())
    rolling = _rolling(_available(), "6", "gcr.io/heptio-images/ks-guestbook-demo:0.3")
    first = observe(observe(known, rolling, CONTEXT).state, _finished(rolling), CONTEXT)
    second = observe(observe(known, rolling, CONTEXT).state, _finished(rolling), CONTEXT)
    assert first.events[0]["id"] == second.events[0]["id"]


def test_a_rollout_past_its_progress_deadline_is_a_major_failed_deployment() -> None:
    degraded = _load("deployment.progress-deadline-exceeded.yaml")
    before = copy.deepcopy(degraded)
    before["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    before["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "gcr.io/heptio-images/ks-guestbook-demo:0.2"
    )
    before["status"]["conditions"][1].update(status="True", reason="NewReplicaSetAvailable")
    before["status"]["replicas"] = before["status"]["updatedReplicas"] = 1
    known = baseline(before)
    assert known is not None
    assert known["reported"] == "done"
    (event,) = observe(known, degraded, _seen_at("2018-07-18T06:29:23Z")).events
    assert event["type"] == "deployment"
    assert event["severity"] == "MAJOR"
    assert event["version"] == "0.3"
    assert event["data"]["status"] == "failed"
    assert event["time"] == "2018-07-18T06:29:23Z"
    assert "timed out progressing" in event["data"]["reason"]
    assert event["subject"] == "production"


def test_a_new_revision_with_an_earlier_revisions_images_is_a_rollback() -> None:
    known = baseline(_available())  # revision 5 runs 0.2
    rolling = _rolling(_available(), "6", "gcr.io/heptio-images/ks-guestbook-demo:0.3")
    state = observe(observe(known, rolling, CONTEXT).state, _finished(rolling), CONTEXT).state
    undo = _rolling(_finished(rolling), "7", "gcr.io/heptio-images/ks-guestbook-demo:0.2")
    state = observe(state, undo, CONTEXT).state
    (event,) = observe(state, _finished(undo), CONTEXT).events
    assert event["type"] == "rollback"
    assert event["version"] == "0.2"
    assert "rolled back" in event["data"]["description"]


def test_a_statefulset_rollout_finishes_when_its_current_revision_reaches_the_update_revision() -> (
    None
):
    sts: dict[str, Any] = {
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "data", "uid": "u-sts", "generation": 2},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": "pg:16.1"}]}}},
        "status": {
            "observedGeneration": 2,
            "currentRevision": "db-1",
            "updateRevision": "db-1",
            "readyReplicas": 2,
        },
    }
    known = baseline(sts)
    new = copy.deepcopy(sts)
    new["metadata"]["generation"] = 3
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "pg:16.2"
    new["status"].update(observedGeneration=3, updateRevision="db-2", readyReplicas=1)
    step = observe(known, new, CONTEXT)
    assert step.events == ()
    new["status"].update(currentRevision="db-2", readyReplicas=2)
    (event,) = observe(step.state, new, CONTEXT).events
    assert (event["type"], event["version"], event["subject"]) == ("deployment", "16.2", "data")


def test_a_daemonset_rollout_finishes_when_every_node_runs_the_new_generation() -> None:
    ds: dict[str, Any] = {
        "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ops", "uid": "u-ds", "generation": 1},
        "spec": {"template": {"spec": {"containers": [{"image": "r/agent@sha256:" + "a" * 64}]}}},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberAvailable": 3,
        },
    }
    known = baseline(ds)
    new = copy.deepcopy(ds)
    new["metadata"]["generation"] = 2
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "r/agent:2.0"
    new["status"].update(observedGeneration=2, updatedNumberScheduled=1)
    step = observe(known, new, CONTEXT)
    assert step.events == ()
    new["status"]["updatedNumberScheduled"] = 3
    (event,) = observe(step.state, new, CONTEXT).events
    assert event["version"] == "2.0"
    assert event["source"].endswith("/daemonsets/agent")


def test_a_crashlooping_pod_is_one_incident_per_episode() -> None:
    pod = _load("pod.crashloopbackoff.yaml")
    running: dict[str, Any] = copy.deepcopy(pod)
    running["status"]["containerStatuses"][0]["state"] = {"running": {}}
    assert observe(None, running, CONTEXT).state is None  # a healthy pod is not kept
    first = observe(None, pod, _seen_at("2018-12-02T09:20:25Z"))
    (incident,) = first.events
    assert incident["type"] == "incident"
    assert incident["severity"] == "MAJOR"
    assert incident["subject"] == "argocd"  # unmapped: the namespace's own name
    assert incident["service"] == "my-pod"
    assert incident["time"] == "2018-12-02T09:20:25Z"
    assert "CrashLoopBackOff" in incident["data"]["description"]
    # Restarting again and again in the same episode: nothing new.
    again = copy.deepcopy(pod)
    again["status"]["containerStatuses"][0]["restartCount"] = 4
    second = observe(first.state, again, CONTEXT)
    assert second.events == ()
    between = copy.deepcopy(running)  # running but not ready yet: the episode goes on
    third = observe(second.state, between, CONTEXT)
    assert third.events == ()
    assert third.state is not None
    # Ready again ends it; a new crash loop is a new incident.
    ready = copy.deepcopy(running)
    for condition in ready["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition["status"] = "True"
    assert observe(third.state, ready, CONTEXT).state is None
    again["status"]["containerStatuses"][0]["restartCount"] = 9
    (new_incident,) = observe(None, again, CONTEXT).events
    assert new_incident["id"] != incident["id"]


def test_a_pod_crashlooping_at_start_is_known_and_not_reported() -> None:
    state = baseline(_load("pod.crashloopbackoff.yaml"))
    assert state is not None
    assert observe(state, _load("pod.crashloopbackoff.yaml"), CONTEXT).events == ()


def test_running_pods_of_a_real_list_are_not_kept_at_all() -> None:
    for item in _load("podlist.kube-system.json")["items"]:
        item["kind"] = "Pod"
        assert baseline(item) is None
        assert observe(None, item, CONTEXT).state is None


def _configmap(data: dict[str, str], rv: str) -> dict[str, Any]:
    return {
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "default",
            "uid": "u-cm",
            "resourceVersion": rv,
        },
        "data": data,
    }


def test_a_configmap_data_change_is_a_config_change_naming_keys_never_values() -> None:
    known = baseline(_configmap({"LOG_LEVEL": "info", "DB_PASSWORD": "hunter2"}, "1"))
    changed = _configmap({"LOG_LEVEL": "debug", "DB_PASSWORD": "hunter2", "NEW": "x"}, "2")
    reading = observe(known, changed, CONTEXT)
    (event,) = reading.events
    assert event["type"] == "config-change"
    assert event["subject"] == "production"
    assert event["data"]["description"] == (
        "ConfigMap default/settings: changed LOG_LEVEL; added NEW"
    )
    text = json.dumps(event) + json.dumps(reading.state)
    assert "hunter2" not in text
    assert "debug" not in text
    # Labels or annotations alone are no change of its data.
    relabelled = copy.deepcopy(changed)
    relabelled["metadata"]["labels"] = {"team": "a"}
    relabelled["metadata"]["resourceVersion"] = "3"
    assert observe(reading.state, relabelled, CONTEXT).events == ()


def test_a_new_configmap_and_a_status_configmap_are_known_state_not_changes() -> None:
    created = observe(None, _configmap({"A": "1"}, "1"), CONTEXT)
    assert created.events == ()
    assert created.state is not None
    status = _configmap({"status": "Healthy at 10:00"}, "1")
    status["metadata"]["name"] = "cluster-autoscaler-status"
    later = _configmap({"status": "Healthy at 10:01"}, "2")
    later["metadata"]["name"] = "cluster-autoscaler-status"
    assert observe(baseline(status), later, CONTEXT).events == ()


def test_changing_a_configmap_back_is_a_change_again_with_its_own_id() -> None:
    first = _configmap({"A": "1"}, "1")
    second = _configmap({"A": "2"}, "2")
    third = _configmap({"A": "1"}, "3")
    one = observe(baseline(first), second, CONTEXT)
    two = observe(one.state, third, CONTEXT)
    assert one.events[0]["id"] != two.events[0]["id"]


@pytest.mark.parametrize(
    ("images", "version"),
    [
        (["nginx"], "latest"),
        (["registry:5000/team/api:1.4.2"], "1.4.2"),
        (["api:1.4.2", "sidecar:0.9"], "1.4.2,0.9"),
        (["api:1.4.2", "api:1.4.2"], "1.4.2"),
        (["r/api@sha256:" + "b" * 64], "sha256:bbbbbbbbbbbb"),
    ],
)
def test_the_version_is_the_images_tags(images: list[str], version: str) -> None:
    assert image_version(images) == version


def test_a_namespace_mapping_with_a_default_and_bad_pairs() -> None:
    environments = EnvironmentMap.parse(["prod=production", "stg = staging"], default="other")
    assert environments.environment("prod") == "production"
    assert environments.environment("stg") == "staging"
    assert environments.environment("team-a") == "other"
    with pytest.raises(ValueError, match="NAMESPACE=ENVIRONMENT"):
        EnvironmentMap.parse(["prod"])
