"""GitLab webhook deliveries as timeline events: deployments, releases, merges, pushes to the
default branch and failed pipelines (docs/integrations/gitlab.md)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from trailmap.ingest.forge import (
    Missing,
    change_event,
    commit_list,
    delivery_problem,
    dig,
    first_line,
    number,
    pushed_default_branch,
    repository_source,
    required_text,
    required_time,
    service_for,
    short_sha,
    text,
    version_for,
)
from trailmap.ingest.webhooks import ForgeContext, Mapped

__all__ = ["map_gitlab"]

_SHORT_SHA: Final = 8  # as GitLab shows a commit (and CI_COMMIT_SHORT_SHA)
_MAX_FAILED_JOBS: Final = 10
_NO_COMMIT: Final = "0" * 40
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# The `X-Gitlab-Event` header's values, by the `object_kind` of the payloads they carry.
_HEADERS: Final = {
    "Push Hook": "push",
    "Tag Push Hook": "tag_push",
    "Merge Request Hook": "merge_request",
    "Pipeline Hook": "pipeline",
    "Deployment Hook": "deployment",
    "Release Hook": "release",
    "Job Hook": "build",
    "Issue Hook": "issue",
    "Confidential Issue Hook": "issue",
    "Note Hook": "note",
    "Confidential Note Hook": "note",
    "Wiki Page Hook": "wiki_page",
    "Feature Flag Hook": "feature_flag",
    "Emoji Hook": "emoji",
    "Member Hook": "member",
    "Resource Access Token Hook": "access_token",
    "Milestone Hook": "milestone",
}


# Kinds ignored whatever they carry, and why.
_IGNORED: Final = {
    "tag_push": "a push of a tag; releases and deployments say when a tag ships",
}


@dataclass(frozen=True, slots=True)
class _Project:
    full_name: str
    source: str
    service: str
    default_branch: str | None

    def require_default_branch(self) -> str:
        if self.default_branch is None:
            raise Missing("the payload has no project.default_branch")
        return self.default_branch


def map_gitlab(event_name: str, payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    """What one delivery (`X-Gitlab-Event`, or the payload's `object_kind`, and the decoded
    body) becomes on the timeline."""
    if not isinstance(payload, Mapping):
        return Mapped.ignore("the payload is not a JSON object")
    try:
        kind = _kind(event_name, payload)
        if kind in _IGNORED:
            return Mapped.ignore(_IGNORED[kind])
        problem = delivery_problem(context, "X-Gitlab-Event-UUID")
        if problem is not None:
            return Mapped.ignore(problem)
        return _MAPPINGS[kind](payload, context)
    except Missing as missing:
        return Mapped.ignore(missing.reason)


def _kind(event_name: str, payload: Mapping[str, Any]) -> str:
    """The `object_kind` the header names (or, without a known header, the payload's own),
    when Trailmap maps or deliberately ignores it."""
    named = event_name.strip() if isinstance(event_name, str) else ""
    said = _HEADERS.get(named) or (named if named in _MAPPINGS or named in _IGNORED else None)
    kind = text(payload, "object_kind", limit=100)
    if said is not None and kind is not None and said != kind:
        raise Missing(f"the event is {named!r} but the payload's object_kind is {kind!r}")
    found = said or kind
    if found not in _MAPPINGS and found not in _IGNORED:
        label = named if named in _HEADERS else (found or named or "(none)")
        raise Missing(f"event {label!r} is not mapped")
    return found


def _project(payload: Mapping[str, Any], context: ForgeContext) -> _Project:
    full_name = required_text(payload, "project", "path_with_namespace")
    source = repository_source(payload, "project", "web_url")
    return _Project(
        full_name=full_name,
        source=source,
        service=service_for(context, full_name, source),
        default_branch=context.default_branch or text(payload, "project", "default_branch"),
    )


def _deployment(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    status = required_text(payload, "status")
    if status == "canceled":
        return Mapped.ignore("deployment status 'canceled': a canceled deployment is not recorded")
    if status not in ("success", "failed"):
        return Mapped.ignore(
            f"deployment status {status!r} is not recorded; only success and failed are outcomes"
        )
    project = _project(payload, context)
    environment = required_text(payload, "environment")
    commit_url = text(payload, "commit_url")
    tail = commit_url.rstrip("/").rsplit("/", 1)[-1] if commit_url else None
    sha = tail if tail is not None and _FULL_SHA.fullmatch(tail) else None
    ref = text(payload, "ref")
    version = version_for(ref, sha, short=_SHORT_SHA) or short_sha(
        text(payload, "short_sha", limit=64), _SHORT_SHA
    )
    failed = status == "failed"
    what = " ".join(p for p in (project.service, version) if p)
    title = first_line(dig(payload, "commit_title"))
    description = (
        f"Deployment of {what} to {environment} failed"
        if failed
        else f"Deployed {what} to {environment}"
    ) + (f": {title}" if title else "")
    event = change_event(
        event_type="deployment",
        source=project.source,
        context=context,
        time=required_time(payload, "status_changed_at"),
        service=project.service,
        subject=environment,
        version=version,
        severity="MAJOR" if failed else None,
        data={
            "description": description,
            "status": "failed" if failed else "succeeded",
            "state": status,
            "sha": sha or text(payload, "short_sha", limit=64),
            "ref": ref,
            "url": text(payload, "deployable_url"),
            "environment_url": text(payload, "environment_external_url"),
            "tier": text(payload, "environment_tier", limit=50),
            "deployment_id": number(payload, "deployment_id"),
            "actor": text(payload, "user", "username", limit=100),
            "repository": project.full_name,
        },
    )
    return Mapped(events=(event,))


def _release(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    action = text(payload, "action")
    if action != "create":
        return Mapped.ignore(f"release action {action!r} is not recorded; only create is")
    project = _project(payload, context)
    tag = required_text(payload, "tag")
    name = text(payload, "name", limit=200)
    notes = text(payload, "description", limit=700)
    headline = f"Released {project.service} {tag}" + (f": {name}" if name and name != tag else "")
    event = change_event(
        event_type="release",
        source=project.source,
        context=context,
        time=required_time(payload, "created_at", "released_at"),
        service=project.service,
        version=tag,
        data={
            "description": headline + (f"\n\n{notes}" if notes else ""),
            "tag": tag,
            "name": name,
            "url": text(payload, "url"),
            "sha": text(payload, "commit", "id", limit=64),
            "repository": project.full_name,
        },
    )
    return Mapped(events=(event,))


def _push(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    after = text(payload, "after", limit=64)
    branch = pushed_default_branch(
        required_text(payload, "ref"),
        deleted=after == _NO_COMMIT,
        default_branch=lambda: _project(payload, context).require_default_branch(),
    )
    if isinstance(branch, Mapped):
        return branch
    project = _project(payload, context)
    commits = commit_list(dig(payload, "commits"))
    listed = dig(payload, "commits")
    total = number(payload, "total_commits_count")
    if total is None:
        total = len(listed) if isinstance(listed, list) else len(commits)
    head = first_line(commits[-1].get("message")) if commits else None
    sha = text(payload, "checkout_sha", limit=64) or after
    event = change_event(
        event_type="push",
        source=project.source,
        context=context,
        # GitLab's push payload says when each commit was written, not when it was pushed:
        # the push is placed when it arrives (webhooks are sent within seconds).
        time="NOW",
        service=project.service,
        version=short_sha(sha, _SHORT_SHA),
        commits_total=total,
        data={
            "description": f"Pushed {_count(total, 'commit')} to {branch}"
            + (f": {head}" if head else ""),
            "ref": branch,
            "sha": sha,
            "before": _commit(text(payload, "before", limit=64)),
            "actor": text(payload, "user_username", limit=100)
            or text(payload, "user_name", limit=100),
            "repository": project.full_name,
            "commits": commits,
        },
    )
    return Mapped(events=(event,))


def _merge_request(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    action = text(payload, "object_attributes", "action")
    iid = number(payload, "object_attributes", "iid")
    label = f"merge request !{iid}" if iid is not None else "the merge request"
    if action != "merge":
        return Mapped.ignore(f"merge request action {action!r} is not recorded; only merge is")
    project = _project(payload, context)
    target = required_text(payload, "object_attributes", "target_branch")
    default = project.require_default_branch()
    if target != default:
        return Mapped.ignore(
            f"{label} was merged into {target!r}, not the default branch {default!r}"
        )
    title = text(payload, "object_attributes", "title", limit=200)
    sha = text(payload, "object_attributes", "merge_commit_sha", limit=64) or text(
        payload, "object_attributes", "last_commit", "id", limit=64
    )
    event = change_event(
        event_type="change-merged",
        source=project.source,
        context=context,
        time=required_time(payload, "object_attributes.merged_at", "object_attributes.updated_at"),
        service=project.service,
        version=short_sha(sha, _SHORT_SHA),
        data={
            "description": f"Merged {label} into {target}" + (f": {title}" if title else ""),
            "number": iid,
            "title": title,
            "url": text(payload, "object_attributes", "url"),
            "sha": sha,
            "ref": target,
            "head_ref": text(payload, "object_attributes", "source_branch", limit=200),
            "actor": text(payload, "user", "username", limit=100),
            "repository": project.full_name,
        },
    )
    return Mapped(events=(event,))


def _pipeline(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    status = required_text(payload, "object_attributes", "status")
    if status != "failed":
        return Mapped.ignore(f"pipeline status {status!r}; only failed pipelines are recorded")
    ref = required_text(payload, "object_attributes", "ref")
    if dig(payload, "object_attributes", "tag") is True:
        return Mapped.ignore(f"a pipeline for tag {ref!r}, not the default branch")
    project = _project(payload, context)
    default = project.require_default_branch()
    if ref != default:
        return Mapped.ignore(f"a pipeline on {ref!r}, not the default branch {default!r}")
    pipeline = number(payload, "object_attributes", "id")
    jobs = _failed_jobs(dig(payload, "builds"))
    title = first_line(dig(payload, "commit", "message"))
    sha = text(payload, "object_attributes", "sha", limit=64)
    label = f"Pipeline #{pipeline}" if pipeline is not None else "A pipeline"
    reasons = f" ({', '.join(jobs)})" if jobs else ""
    event = change_event(
        event_type="pipeline-run",
        source=project.source,
        context=context,
        time=required_time(
            payload, "object_attributes.finished_at", "object_attributes.created_at"
        ),
        service=project.service,
        version=short_sha(sha, _SHORT_SHA),
        severity="MINOR",
        data={
            "description": f"{label} failed on {ref}{reasons}" + (f": {title}" if title else ""),
            "status": "failed",
            "pipeline_id": pipeline,
            "url": text(payload, "object_attributes", "url"),
            "sha": sha,
            "ref": ref,
            "trigger": text(payload, "object_attributes", "source", limit=100),
            "failed_jobs": jobs or None,
            "actor": text(payload, "user", "username", limit=100),
            "repository": project.full_name,
        },
    )
    return Mapped(events=(event,))


def _failed_jobs(builds: object) -> list[str]:
    if not isinstance(builds, list):
        return []
    names = [
        name
        for build in builds
        if dig(build, "status") == "failed" and dig(build, "allow_failure") is not True
        for name in (text(build, "name", limit=100),)
        if name is not None
    ]
    return names[:_MAX_FAILED_JOBS]


def _commit(sha: str | None) -> str | None:
    """A commit sha, or None for the zeros a forge writes where there is no commit."""
    return None if sha is None or sha.strip("0") == "" else sha


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_MAPPINGS: Final[dict[str, Callable[[Mapping[str, Any], ForgeContext], Mapped]]] = {
    "deployment": _deployment,
    "release": _release,
    "push": _push,
    "merge_request": _merge_request,
    "pipeline": _pipeline,
}
