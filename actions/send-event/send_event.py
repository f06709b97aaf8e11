"""The Trailmap GitHub Action: one event from a workflow run, on the runner's python3 alone
(standard library only; nothing is installed at run time)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

# The inputs action.yml passes, as the env names its step sets (tests hold the two equal).
INPUTS = (
    "url",
    "api-key",
    "type",
    "environment",
    "version",
    "service",
    "description",
    "severity",
    "source",
    "fail-on-error",
    "fail-on-violation",
)
# As `trailmap send` and the SDK: what may succeed if asked again.
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
ATTEMPTS = 5
BASE_DELAY = 0.5
MAX_DELAY = 30.0
MAX_RETRY_AFTER = 60.0
TIMEOUT = 10.0
SEVERITIES = ("LOW", "MINOR", "MAJOR", "CRITICAL")


class Failed(Exception):
    """The event was not stored; the message says why, without the key."""


def read_input(name: str) -> str:
    return os.environ.get("INPUT_" + name.upper().replace("-", "_"), "").strip()


def required(name: str, what_to_do: str) -> str:
    value = read_input(name)
    if not value:
        raise Failed(f"the {name} input is empty: {what_to_do}")
    return value


def escape(text: str) -> str:
    """A workflow command's message: %, CR and LF escaped as the runner expects."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def build_event(env: dict[str, str]) -> dict[str, Any]:
    """The CloudEvent, from the inputs and the run's GITHUB_* variables."""
    repository = env.get("GITHUB_REPOSITORY", "")
    sha = env.get("GITHUB_SHA", "")
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    run_id = env.get("GITHUB_RUN_ID", "")
    source = read_input("source") or f"//{urlsplit(server).netloc or 'github.com'}/{repository}"
    event: dict[str, Any] = {
        "specversion": "1.0",
        "type": read_input("type") or "deployment",
        "source": source,
        # The time of the step, not of a later retry.
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    version = read_input("version") or sha[:7]
    severity = read_input("severity").upper()
    if severity and severity not in SEVERITIES:
        raise Failed(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    optional = {
        "subject": read_input("environment"),
        "version": version,
        "service": read_input("service"),
        "severity": severity,
    }
    event.update({name: value for name, value in optional.items() if value})
    run_url = f"{server}/{repository}/actions/runs/{run_id}" if repository and run_id else None
    data = {
        "description": read_input("description"),
        "url": run_url,
        "repository": repository,
        "commit": sha,
        "ref": env.get("GITHUB_REF_NAME", ""),
        "actor": env.get("GITHUB_ACTOR", ""),
        "workflow": env.get("GITHUB_WORKFLOW", ""),
        "run_id": run_id,
        "run_attempt": env.get("GITHUB_RUN_ATTEMPT", ""),
    }
    event["data"] = {name: value for name, value in data.items() if value}
    event["id"] = event_id(event, env)
    return event


def event_id(event: dict[str, Any], env: dict[str, str]) -> str:
    """The same for every retry of this step, and for a step that says the same thing twice
    in one run attempt; a re-run of the job is a new attempt, and a new event."""
    said = json.dumps(
        [event.get(k) for k in ("type", "source", "subject", "version", "service", "severity")]
        + [event["data"].get("description")],
    )
    digest = hashlib.sha256(said.encode()).hexdigest()[:16]
    run = env.get("GITHUB_RUN_ID") or "local"
    attempt = env.get("GITHUB_RUN_ATTEMPT") or "1"
    job = (env.get("GITHUB_JOB") or "job")[:100]
    return f"gha-{run}-{attempt}-{job}-{digest}"


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return None if when.tzinfo is None else max(0.0, when.timestamp() - time.time())


def delay(retry: int, retry_after: float | None) -> float:
    backoff = random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**retry))  # noqa: S311 - jitter
    if retry_after is None:
        return backoff
    return max(min(retry_after, MAX_RETRY_AFTER), backoff)


def _answer(error: urllib.error.HTTPError) -> tuple[str, str | None]:
    """(what the server said, its Retry-After) for a refusal, in its one error shape."""
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    said = body.get("error") if isinstance(body, dict) else None
    code = body.get("code", "") if isinstance(body, dict) else ""
    text = f"{error.code} {code}: {said or error.reason}".replace(" : ", " ")
    return text, error.headers.get("Retry-After")


def send(url: str, api_key: str, event: dict[str, Any]) -> dict[str, Any]:
    """POST the event until it is stored, refused, or the attempts run out."""
    endpoint = url.rstrip("/") + "/api/v1/events"
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise Failed(f"url must start with https:// (or http://), not {url!r}")
    body = json.dumps(event).encode()
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "User-Agent": "trailmap-github-action/1",
    }
    last = "no attempt was made"
    for attempt in range(ATTEMPTS):
        retry_after: str | None = None
        # http(s) only, checked above.
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
                answer: dict[str, Any] = json.loads(response.read() or b"{}")
                return answer
        except urllib.error.HTTPError as error:
            last, retry_after = _answer(error)
            if error.code not in RETRYABLE:
                raise Failed(f"Trailmap refused the event: {last}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            last = f"could not reach {endpoint}: {reason}"
        if attempt + 1 < ATTEMPTS:
            wait = delay(attempt, retry_after_seconds(retry_after))
            print(f"attempt {attempt + 1} failed ({last}); retrying in {wait:.1f}s", flush=True)
            time.sleep(wait)
    raise Failed(f"gave up after {ATTEMPTS} attempts; last: {last}")


def write_outputs(values: dict[str, str]) -> None:
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as output:  # noqa: PTH123 - one append, as GitHub documents
        for name, value in values.items():
            output.write(f"{name}={value}\n")


def main() -> int:
    api_key = read_input("api-key")
    if api_key:
        # Already masked when it came from a secret; masked here when it did not.
        print(f"::add-mask::{api_key}", flush=True)
    fail = read_input("fail-on-error").lower() == "true"
    event_id_ = ""
    try:
        url = required("url", "set it to the Trailmap server's base URL")
        required("api-key", "pass a READ_WRITE key from a secret")
        event = build_event(dict(os.environ))
        event_id_ = event["id"]
        answer = send(url, api_key, event)
    except Failed as error:
        message = str(error).replace(api_key, "***") if api_key else str(error)
        write_outputs({"event-id": event_id_, "trailmap-id": "", "status": "failed"})
        level = "error" if fail else "warning"
        print(f"::{level} title=Trailmap::{escape(message)}", flush=True)
        return 1 if fail else 0
    data = answer.get("data") or {}
    accepted = data.get("accepted") or []
    duplicates = data.get("duplicates") or []
    stored = (accepted or duplicates or [{}])[0]
    status = "accepted" if accepted else "duplicate"
    violations = stored.get("violations") or []
    write_outputs(
        {
            "event-id": event_id_,
            "trailmap-id": str(stored.get("id") or ""),
            "status": status,
            "violations": str(len(violations)),
        }
    )
    print(
        f"Trailmap: {event['type']} from {event['source']} {status} "
        f"(id {event_id_}, trailmap id {stored.get('id')})",
        flush=True,
    )
    return report_violations(violations, fail=read_input("fail-on-violation").lower() == "true")


def report_violations(violations: list[dict[str, Any]], *, fail: bool) -> int:
    """Each guardrail the deployment went against, as a warning, or as an error that fails the
    step when fail-on-violation is true. The event is stored either way: guardrails warn,
    and only the workflow decides to stop."""
    level = "error" if fail else "warning"
    for violation in violations:
        said = f"{violation.get('kind', 'guardrail')}: {violation.get('message', '')}"
        print(f"::{level} title=Trailmap guardrail::{escape(said)}", flush=True)
    return 1 if violations and fail else 0


if __name__ == "__main__":
    sys.exit(main())
