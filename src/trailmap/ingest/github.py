"""GitHub webhook deliveries as timeline events: deployments, releases, merges, pushes to the
default branch and failed workflow runs (docs/integrations/github.md)."""

from __future__ import annotations

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

__all__ = ["map_github"]

_SHORT_SHA: Final = 7  # as GitHub shows a commit
# Events GitHub sends that are ignored whatever they carry, and why.
_IGNORED: Final = {
    # The route answers pings itself; the reason is the event's name.
    "ping": "ping",
    "deployment": (
        "a deployment is recorded from its deployment_status (success, failure or error), "
        "so that each deployment is counted once"
    ),
}
_SUCCEEDED: Final = frozenset({"success"})
_FAILED: Final = frozenset({"failure", "error"})
_RUN_FAILED: Final = frozenset({"failure", "timed_out", "startup_failure"})


@dataclass(frozen=True, slots=True)
class _Repository:
    full_name: str
    source: str
    service: str
    default_branch: str | None

    def require_default_branch(self) -> str:
        if self.default_branch is None:
            raise Missing("the payload has no repository.default_branch")
        return self.default_branch


def map_github(event_name: str, payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    """What one delivery (`X-GitHub-Event` and its decoded body) becomes on the timeline."""
    name = event_name.strip() if isinstance(event_name, str) else ""
    if name in _IGNORED:
        return Mapped.ignore(_IGNORED[name])
    mapping = _MAPPINGS.get(name)
    if mapping is None:
        return Mapped.ignore(f"event {name or '(none)'!r} is not mapped")
    if not isinstance(payload, Mapping):
        return Mapped.ignore("the payload is not a JSON object")
    problem = delivery_problem(context, "X-GitHub-Delivery")
    if problem is not None:
        return Mapped.ignore(problem)
    try:
        return mapping(payload, context)
    except Missing as missing:
        return Mapped.ignore(missing.reason)


def _repository(payload: Mapping[str, Any], context: ForgeContext) -> _Repository:
    full_name = required_text(payload, "repository", "full_name")
    source = repository_source(payload, "repository", "html_url")
    return _Repository(
        full_name=full_name,
        source=source,
        service=service_for(context, full_name, source),
        default_branch=context.default_branch or text(payload, "repository", "default_branch"),
    )


def _deployment_status(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    state = required_text(payload, "deployment_status", "state")
    if state not in _SUCCEEDED | _FAILED:
        why = (
            "a newer deployment replaced this one"
            if state == "inactive"
            else "only success, failure and error are outcomes"
        )
        return Mapped.ignore(f"deployment state {state!r} is not recorded: {why}")
    repo = _repository(payload, context)
    environment = text(payload, "deployment_status", "environment") or required_text(
        payload, "deployment", "environment"
    )
    sha = text(payload, "deployment", "sha", limit=64)
    ref = text(payload, "deployment", "ref")
    version = version_for(ref, sha, short=_SHORT_SHA)
    failed = state in _FAILED
    what = " ".join(p for p in (repo.service, version) if p)
    detail = text(payload, "deployment_status", "description", limit=800)
    description = (
        f"Deployment of {what} to {environment} failed" + (f": {detail}" if detail else "")
        if failed
        else f"Deployed {what} to {environment}" + (f": {detail}" if detail else "")
    )
    event = change_event(
        event_type="deployment",
        source=repo.source,
        context=context,
        time=required_time(payload, "deployment_status.created_at", "deployment_status.updated_at"),
        service=repo.service,
        subject=environment,
        version=version,
        severity="MAJOR" if failed else None,
        data={
            "description": description,
            "status": "failed" if failed else "succeeded",
            "state": state,
            "sha": sha,
            "ref": ref,
            "url": text(payload, "deployment_status", "log_url")
            or text(payload, "deployment_status", "target_url"),
            "environment_url": text(payload, "deployment_status", "environment_url"),
            "deployment_id": number(payload, "deployment", "id"),
            "actor": text(payload, "deployment_status", "creator", "login")
            or text(payload, "sender", "login"),
            "repository": repo.full_name,
        },
    )
    return Mapped(events=(event,))


def _release(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    action = text(payload, "action")
    if action != "published":
        return Mapped.ignore(
            f"release action {action!r} is not recorded; only published is, so that one "
            "release is counted once"
        )
    repo = _repository(payload, context)
    tag = required_text(payload, "release", "tag_name")
    name = text(payload, "release", "name", limit=200)
    notes = text(payload, "release", "body", limit=700)
    headline = f"Released {repo.service} {tag}" + (f": {name}" if name and name != tag else "")
    event = change_event(
        event_type="release",
        source=repo.source,
        context=context,
        time=required_time(payload, "release.published_at", "release.created_at"),
        service=repo.service,
        version=tag,
        data={
            "description": headline + (f"\n\n{notes}" if notes else ""),
            "tag": tag,
            "name": name,
            "url": text(payload, "release", "html_url"),
            "target": text(payload, "release", "target_commitish", limit=200),
            "prerelease": dig(payload, "release", "prerelease") is True or None,
            "actor": text(payload, "release", "author", "login")
            or text(payload, "sender", "login"),
            "repository": repo.full_name,
        },
    )
    return Mapped(events=(event,))


def _push(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    branch = pushed_default_branch(
        required_text(payload, "ref"),
        deleted=dig(payload, "deleted") is True,
        default_branch=lambda: _repository(payload, context).require_default_branch(),
    )
    if isinstance(branch, Mapped):
        return branch
    repo = _repository(payload, context)
    commits = commit_list(dig(payload, "commits"))
    listed = dig(payload, "commits")
    total = len(listed) if isinstance(listed, list) else len(commits)
    after = text(payload, "after", limit=64)
    head = first_line(dig(payload, "head_commit", "message"))
    verb = "Force-pushed" if dig(payload, "forced") is True else "Pushed"
    event = change_event(
        event_type="push",
        source=repo.source,
        context=context,
        time=required_time(payload, "repository.pushed_at", "head_commit.timestamp"),
        service=repo.service,
        version=short_sha(after, _SHORT_SHA),
        commits_total=total,
        data={
            "description": f"{verb} {_count(total, 'commit')} to {branch}"
            + (f": {head}" if head else ""),
            "ref": branch,
            "sha": after,
            "before": _commit(text(payload, "before", limit=64)),
            "url": text(payload, "compare"),
            "actor": text(payload, "pusher", "name", limit=100) or text(payload, "sender", "login"),
            "repository": repo.full_name,
            "commits": commits,
        },
    )
    return Mapped(events=(event,))


def _pull_request(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    action = text(payload, "action")
    pr = number(payload, "pull_request", "number") or number(payload, "number")
    label = f"pull request #{pr}" if pr is not None else "the pull request"
    if action != "closed":
        return Mapped.ignore(f"pull request action {action!r} is not recorded; only merges are")
    if dig(payload, "pull_request", "merged") is not True:
        return Mapped.ignore(f"{label} was closed without being merged")
    repo = _repository(payload, context)
    base = required_text(payload, "pull_request", "base", "ref")
    default = repo.require_default_branch()
    if base != default:
        return Mapped.ignore(
            f"{label} was merged into {base!r}, not the default branch {default!r}"
        )
    title = text(payload, "pull_request", "title", limit=200)
    sha = text(payload, "pull_request", "merge_commit_sha", limit=64)
    event = change_event(
        event_type="change-merged",
        source=repo.source,
        context=context,
        time=required_time(payload, "pull_request.merged_at", "pull_request.closed_at"),
        service=repo.service,
        version=short_sha(sha, _SHORT_SHA),
        data={
            "description": f"Merged {label} into {base}" + (f": {title}" if title else ""),
            "number": pr,
            "title": title,
            "url": text(payload, "pull_request", "html_url"),
            "sha": sha,
            "ref": base,
            "head_ref": text(payload, "pull_request", "head", "ref", limit=200),
            "actor": text(payload, "pull_request", "merged_by", "login")
            or text(payload, "sender", "login"),
            "author": text(payload, "pull_request", "user", "login"),
            "repository": repo.full_name,
        },
    )
    return Mapped(events=(event,))


def _workflow_run(payload: Mapping[str, Any], context: ForgeContext) -> Mapped:
    action = text(payload, "action")
    if action != "completed":
        return Mapped.ignore(f"workflow run action {action!r} is not recorded; only completed is")
    conclusion = text(payload, "workflow_run", "conclusion")
    if conclusion not in _RUN_FAILED:
        return Mapped.ignore(
            f"the workflow run concluded {conclusion!r}; only failures are recorded"
        )
    repo = _repository(payload, context)
    branch = required_text(payload, "workflow_run", "head_branch")
    default = repo.require_default_branch()
    if branch != default:
        return Mapped.ignore(
            f"a workflow run on branch {branch!r}, not the default branch {default!r}"
        )
    head_repo = text(payload, "workflow_run", "head_repository", "full_name")
    if head_repo is not None and head_repo != repo.full_name:
        return Mapped.ignore(f"a workflow run on {head_repo}'s branch {branch!r}, a fork")
    workflow = text(payload, "workflow_run", "name", limit=200) or text(
        payload, "workflow", "name", limit=200
    )
    title = text(payload, "workflow_run", "display_title", limit=200) or first_line(
        dig(payload, "workflow_run", "head_commit", "message")
    )
    sha = text(payload, "workflow_run", "head_sha", limit=64)
    event = change_event(
        event_type="pipeline-run",
        source=repo.source,
        context=context,
        time=required_time(payload, "workflow_run.updated_at", "workflow_run.run_started_at"),
        service=repo.service,
        version=short_sha(sha, _SHORT_SHA),
        severity="MINOR",
        data={
            "description": f"Workflow {workflow or '(unnamed)'} failed on {branch}"
            + (f": {title}" if title else ""),
            "status": "failed",
            "conclusion": conclusion,
            "workflow": workflow,
            "url": text(payload, "workflow_run", "html_url"),
            "sha": sha,
            "ref": branch,
            "run_number": number(payload, "workflow_run", "run_number"),
            "run_attempt": number(payload, "workflow_run", "run_attempt"),
            "trigger": text(payload, "workflow_run", "event", limit=100),
            "actor": text(payload, "workflow_run", "actor", "login")
            or text(payload, "sender", "login"),
            "repository": repo.full_name,
        },
    )
    return Mapped(events=(event,))


def _commit(sha: str | None) -> str | None:
    """A commit sha, or None for the zeros a forge writes where there is no commit."""
    return None if sha is None or sha.strip("0") == "" else sha


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_MAPPINGS: Final[dict[str, Callable[[Mapping[str, Any], ForgeContext], Mapped]]] = {
    "deployment_status": _deployment_status,
    "release": _release,
    "push": _push,
    "pull_request": _pull_request,
    "workflow_run": _workflow_run,
}
