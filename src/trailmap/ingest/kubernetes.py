"""Kubernetes objects read into change events, purely: an object's compact known state and its
new form in, its new compact state and the CloudEvents its change makes out."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "KINDS",
    "WORKLOAD_KINDS",
    "EnvironmentMap",
    "Reading",
    "WatchContext",
    "baseline",
    "deleted",
    "image_version",
    "observe",
]

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
KINDS = (*WORKLOAD_KINDS, "Pod", "ConfigMap")
_HISTORY = 10  # revisions kept per workload to recognise a rollback
_CONFIGMAP_KEYS = 200  # keys whose hashes are kept per ConfigMap; more are counted, not named
_MAX_SUBJECT = 50
# ConfigMaps a controller rewrites as a status report, not configuration.
_STATUS_CONFIGMAPS = frozenset({"cluster-autoscaler-status"})
_STALE = timedelta(days=1)  # an object's time older than this is not the change's time
_SKEW = timedelta(minutes=5)
_MAX_VERSION = 50
_PATHS = {
    "Deployment": "apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "StatefulSet": "apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "DaemonSet": "apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "Pod": "api/v1/namespaces/{ns}/pods/{name}",
    "ConfigMap": "api/v1/namespaces/{ns}/configmaps/{name}",
}

State = dict[str, Any]  # JSON-ready, so a state file or a settings column can hold it


@dataclass(frozen=True, slots=True)
class EnvironmentMap:
    """Namespace -> environment (the events' `subject`). Unmapped namespaces use `default`,
    or, without one, their own name."""

    mapping: Mapping[str, str] = field(default_factory=dict)
    default: str | None = None

    def environment(self, namespace: str) -> str:
        found = self.mapping.get(namespace)
        return (found or self.default or namespace)[:_MAX_SUBJECT]

    @classmethod
    def parse(
        cls, pairs: list[str] | tuple[str, ...], default: str | None = None
    ) -> EnvironmentMap:
        """`ns=env` pairs, as the command line takes them; a bad pair raises ValueError."""
        mapping: dict[str, str] = {}
        for pair in pairs:
            namespace, sep, environment = pair.partition("=")
            if not sep or not namespace.strip() or not environment.strip():
                raise ValueError(f"{pair!r} is not NAMESPACE=ENVIRONMENT")
            mapping[namespace.strip()] = environment.strip()
        return cls(mapping, default)


@dataclass(frozen=True, slots=True)
class WatchContext:
    """What the reading needs beside the object: the cluster's name (in each event's
    `source`), the namespace mapping, and the time the watcher saw the change (used when the
    object carries no time of its own)."""

    cluster: str
    environments: EnvironmentMap
    now: datetime


@dataclass(frozen=True, slots=True)
class Reading:
    """The object's new compact state (None: nothing worth keeping) and the events to send."""

    state: State | None
    events: tuple[dict[str, Any], ...] = ()


# -- the entry points -------------------------------------------------------------------


def baseline(obj: Mapping[str, Any]) -> State | None:
    """The known state of an object seen in the first list: what is, never an event (a
    restart or a first start must not report old changes as new)."""
    kind = _kind(obj)
    if kind in WORKLOAD_KINDS:
        state = _workload_state(kind, obj, None)
        progress = _progress(kind, obj)
        state["reported"] = progress if progress in {"done", "failed"} else None
        return state
    if kind == "Pod":
        return _pod_state(obj, crashing=True) if _crashlooping(obj) else None
    if kind == "ConfigMap":
        return _configmap_state(obj)
    return None


def observe(previous: State | None, obj: Mapping[str, Any], context: WatchContext) -> Reading:
    """An object added or modified after the first list, read against its known state."""
    kind = _kind(obj)
    if kind in WORKLOAD_KINDS:
        return _workload(kind, previous, obj, context)
    if kind == "Pod":
        return _pod(previous, obj, context)
    if kind == "ConfigMap":
        return _configmap(previous, obj, context)
    return Reading(None)


def deleted(previous: State | None) -> Reading:
    """An object gone: its state is dropped (a crashloop episode ends with its pod)."""
    del previous
    return Reading(None)


# -- workloads --------------------------------------------------------------------------


def _workload(
    kind: str, previous: State | None, obj: Mapping[str, Any], context: WatchContext
) -> Reading:
    meta = obj.get("metadata") or {}
    if previous is not None and previous.get("uid") != meta.get("uid"):
        previous = None  # deleted and created again under the same name
    state = _workload_state(kind, obj, previous)
    if state["rev"] is None:
        return Reading(state)  # the controller has not stamped a revision yet
    if previous is None or previous.get("rev") != state["rev"]:
        state["reported"] = None
        state["rollback"] = _is_rollback(previous, state)
        state["since"] = meta.get("generation")
    progress = _progress(kind, obj)
    if progress is None or state.get("reported") == progress or state.get("reported") == "done":
        return Reading(state)
    state["reported"] = progress
    return Reading(state, (_workload_event(kind, obj, state, progress, context),))


def _workload_state(kind: str, obj: Mapping[str, Any], previous: State | None) -> State:
    meta = obj.get("metadata") or {}
    images = _images(obj)
    rev = _revision(kind, obj)
    history: list[list[Any]] = [list(item) for item in (previous or {}).get("history", [])]
    if rev is not None and (not history or history[-1][0] != rev):
        history = [item for item in history if item[0] != rev]
        history.append([rev, images])
        history = history[-_HISTORY:]
    return {
        "kind": kind,
        "ns": meta.get("namespace") or "",
        "name": meta.get("name") or "",
        "uid": meta.get("uid") or "",
        "rev": rev,
        "images": images,
        "history": history,
        "reported": (previous or {}).get("reported"),
        "rollback": bool((previous or {}).get("rollback")),
        "since": (previous or {}).get("since", meta.get("generation")),
    }


def _revision(kind: str, obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if kind == "Deployment":
        value = (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision")
        return str(value) if value else None
    if kind == "StatefulSet":
        value = status.get("updateRevision")
        return str(value) if value else None
    generation = meta.get("generation")  # a DaemonSet's spec is its template
    return str(generation) if generation is not None else None


def _is_rollback(previous: State | None, state: State) -> bool:
    """The new revision runs the images of an earlier one, not those of the one before it."""
    if previous is None or state["images"] == previous.get("images"):
        return False
    return any(images == state["images"] for _rev, images in previous.get("history", []))


def _progress(kind: str, obj: Mapping[str, Any]) -> str | None:
    """ "done" (the rollout finished), "failed" (past its progress deadline) or None."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    spec = obj.get("spec") or {}
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    if observed < generation:
        return None
    if kind == "Deployment":
        progressing = _condition(obj, "Progressing") or {}
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed"
        replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        done = (
            progressing.get("status") == "True"
            and progressing.get("reason") == "NewReplicaSetAvailable"
            and int(status.get("updatedReplicas") or 0) == replicas
            and int(status.get("availableReplicas") or 0) == replicas
        )
        return "done" if done else None
    if kind == "StatefulSet":
        replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        done = (
            bool(status.get("updateRevision"))
            and status.get("currentRevision") == status.get("updateRevision")
            and int(status.get("readyReplicas") or 0) == replicas
        )
        return "done" if done else None
    desired = int(status.get("desiredNumberScheduled") or 0)
    done = (
        int(status.get("updatedNumberScheduled") or 0) == desired
        and int(status.get("numberAvailable") or 0) == desired
    )
    return "done" if done else None


def _workload_event(
    kind: str, obj: Mapping[str, Any], state: State, progress: str, context: WatchContext
) -> dict[str, Any]:
    failed = progress == "failed"
    rollback = state.get("rollback") and not failed
    type_ = "rollback" if rollback else "deployment"
    version = image_version(state["images"])
    progressing = _condition(obj, "Progressing") or {}
    when = progressing.get("lastTransitionTime" if failed else "lastUpdateTime")
    verb = (
        "failed: past its progress deadline"
        if failed
        else ("rolled back" if rollback else "rolled out")
    )
    description = f"{kind} {state['ns']}/{state['name']} revision {state['rev']} {verb}"
    if version:
        description += f" ({version})"
    data: dict[str, Any] = {
        "description": description[:1000],
        "kind": kind,
        "namespace": state["ns"],
        "name": state["name"],
        "revision": state["rev"],
        "images": state["images"][:20],
        "status": "failed" if failed else "succeeded",
    }
    if failed and progressing.get("message"):
        data["reason"] = str(progressing["message"])[:500]
    key = f"{state['uid']}/{state['rev']}/{state.get('since')}/{progress}"
    event = _event(type_, obj, context, event_id=key, when=when, data=data)
    if version:
        event["version"] = version
    if failed:
        event["severity"] = "MAJOR"
    return event


# -- pods -------------------------------------------------------------------------------


def _pod(previous: State | None, obj: Mapping[str, Any], context: WatchContext) -> Reading:
    meta = obj.get("metadata") or {}
    if previous is not None and previous.get("uid") != meta.get("uid"):
        previous = None
    crashing = _crashlooping(obj)
    if previous is not None and previous.get("crash"):
        if crashing or not _ready(obj):
            return Reading(previous)  # the episode goes on until the pod runs ready again
        return Reading(None)
    if not crashing:
        return Reading(None)
    state = _pod_state(obj, crashing=True)
    container, restarts, finished = _crashing_container(obj)
    description = (
        f"Pod {state['ns']}/{state['name']} is in CrashLoopBackOff"
        f" (container {container}, {restarts} restarts)"
    )
    data = {
        "description": description[:1000],
        "kind": "Pod",
        "namespace": state["ns"],
        "name": state["name"],
        "container": container,
        "restarts": restarts,
        "reason": "CrashLoopBackOff",
    }
    event = _event(
        "incident",
        obj,
        context,
        event_id=f"{state['uid']}/crashloop/{container}/{restarts}",
        when=finished,
        data=data,
    )
    event["severity"] = "MAJOR"
    return Reading(state, (event,))


def _pod_state(obj: Mapping[str, Any], *, crashing: bool) -> State:
    meta = obj.get("metadata") or {}
    return {
        "kind": "Pod",
        "ns": meta.get("namespace") or "",
        "name": meta.get("name") or "",
        "uid": meta.get("uid") or "",
        "crash": crashing,
    }


def _statuses(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = obj.get("status") or {}
    return [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]


def _crashlooping(obj: Mapping[str, Any]) -> bool:
    return any(
        ((item.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
        for item in _statuses(obj)
    )


def _crashing_container(obj: Mapping[str, Any]) -> tuple[str, int, str | None]:
    for item in _statuses(obj):
        if ((item.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff":
            terminated = (item.get("lastState") or {}).get("terminated") or {}
            return (
                str(item.get("name") or ""),
                int(item.get("restartCount") or 0),
                terminated.get("finishedAt"),
            )
    return "", 0, None


def _ready(obj: Mapping[str, Any]) -> bool:
    ready = _condition(obj, "Ready") or {}
    return ready.get("status") == "True"


# -- config maps ------------------------------------------------------------------------


def _configmap(previous: State | None, obj: Mapping[str, Any], context: WatchContext) -> Reading:
    meta = obj.get("metadata") or {}
    state = _configmap_state(obj)
    if previous is not None and previous.get("uid") != meta.get("uid"):
        previous = None
    if previous is None or meta.get("name") in _STATUS_CONFIGMAPS:
        return Reading(state)  # a new ConfigMap is known state: its workload's rollout tells
    if previous.get("hash") == state["hash"]:
        return Reading(state)  # labels, annotations or nothing: not a change of its data
    before: dict[str, str] = previous.get("keys") or {}
    after: dict[str, str] = state["keys"]
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(key for key in set(after) & set(before) if after[key] != before[key])
    parts = [
        f"{label} {', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}"
        for label, keys in (("changed", changed), ("added", added), ("removed", removed))
        if keys
    ]
    change = "; ".join(parts) or "data changed"
    description = f"ConfigMap {state['ns']}/{state['name']}: {change}"
    data = {
        "description": description[:1000],
        "kind": "ConfigMap",
        "namespace": state["ns"],
        "name": state["name"],
        "data_hash": state["hash"][:16],
    }
    event = _event(
        "config-change",
        obj,
        context,
        event_id=f"{state['uid']}/{meta.get('resourceVersion') or state['hash'][:16]}",
        when=None,
        data=data,
    )
    return Reading(state, (event,))


def _configmap_state(obj: Mapping[str, Any]) -> State:
    """Hashes only: a ConfigMap's values may be secrets and never leave the watcher."""
    meta = obj.get("metadata") or {}
    keys: dict[str, str] = {}
    for section in ("data", "binaryData"):
        for key, value in (obj.get(section) or {}).items():
            keys[f"{section}:{key}" if section == "binaryData" else key] = _digest(str(value))[:16]
    whole = _digest("\n".join(f"{key}={keys[key]}" for key in sorted(keys)))
    kept = dict(sorted(keys.items())[:_CONFIGMAP_KEYS])
    return {
        "kind": "ConfigMap",
        "ns": meta.get("namespace") or "",
        "name": meta.get("name") or "",
        "uid": meta.get("uid") or "",
        "hash": whole,
        "keys": kept,
        "count": len(keys),
    }


# -- what every event shares ------------------------------------------------------------


def image_version(images: list[str]) -> str | None:
    """The images' tags (or short digests), in container order without repeats."""
    tags: list[str] = []
    for image in images:
        tag = _tag(image)
        if tag not in tags:
            tags.append(tag)
    return ",".join(tags)[:_MAX_VERSION] or None


def _tag(image: str) -> str:
    if "@" in image:
        digest = image.rpartition("@")[2]
        algorithm, _, value = digest.partition(":")
        return f"{algorithm}:{value[:12]}" if value else digest
    last = image.rpartition("/")[2]
    return last.rpartition(":")[2] if ":" in last else "latest"


def _images(obj: Mapping[str, Any]) -> list[str]:
    template = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [
        str(container.get("image") or "")
        for container in (template.get("containers") or [])
        if isinstance(container, Mapping)
    ]


def _event(
    type_: str,
    obj: Mapping[str, Any],
    context: WatchContext,
    *,
    event_id: str,
    when: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    kind = _kind(obj)
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    path = _PATHS[kind].format(ns=namespace, name=meta.get("name") or "")
    data["cluster"] = context.cluster
    return {
        "specversion": "1.0",
        "id": event_id[:200],
        "type": type_,
        "source": f"//{context.cluster}/{path}"[:500],
        "time": _when(when, context.now),
        "subject": context.environments.environment(namespace),
        "service": _service(obj)[:200],
        "data": data,
    }


def _when(stamp: str | None, now: datetime) -> str:
    """The object's own time of the change when it is plausible (within a day before now and
    not ahead of it by more than a clock's skew), else the time the watcher saw it."""
    if stamp:
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None and when.tzinfo is not None and -_SKEW <= now - when <= _STALE:
            return stamp
    return now.isoformat()


def _service(obj: Mapping[str, Any]) -> str:
    """app.kubernetes.io/name, else the `app` label, else the workload's own name (for a
    pod: its owner's, without the pod-template hash)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    for label in ("app.kubernetes.io/name", "app"):
        if labels.get(label):
            return str(labels[label])
    name = str(meta.get("name") or "")
    if _kind(obj) == "Pod":
        owners = meta.get("ownerReferences") or []
        if owners:
            name = str(owners[0].get("name") or name)
            template_hash = labels.get("pod-template-hash")
            if template_hash and name.endswith(f"-{template_hash}"):
                name = name[: -len(template_hash) - 1]
    return name


def _condition(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def _kind(obj: Mapping[str, Any]) -> str:
    return str(obj.get("kind") or "")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
