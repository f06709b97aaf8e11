"""Every upstream payload, and the same payloads broken field by field, delivered signed to
the webhook with the real GitHub and GitLab mappings: each answer is a 200 (accepted,
duplicate, ignored) or a 4xx in the one error shape, never a 5xx."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import Tenant
from tests.integrations.support import SECRET_KEY, github_headers, gitlab_headers, make_integration
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

_UPSTREAM = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"
_GITLAB_EVENTS = {
    "push": "Push Hook",
    "merge_request": "Merge Request Hook",
    "pipeline": "Pipeline Hook",
    "deployment": "Deployment Hook",
    "release": "Release Hook",
}
_BROKEN: tuple[object, ...] = (None, 7, "x", [], {})
_PER_PAYLOAD = 25


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, retention_purge_interval_seconds=0, secret_key=SECRET_KEY
    )


def _breakages(payload: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    """The payload with one field (at the top, or one level down) removed or of a wrong type."""
    paths: list[tuple[str, ...]] = [(k,) for k in payload]
    paths += [(k, n) for k, v in payload.items() if isinstance(v, dict) for n in v]
    out = []
    for path in rng.sample(paths, min(_PER_PAYLOAD, len(paths))):
        broken = copy.deepcopy(payload)
        holder = broken
        for key in path[:-1]:
            holder = holder[key]
        choice = rng.randrange(len(_BROKEN) + 1)
        if choice == len(_BROKEN):
            del holder[path[-1]]
        else:
            holder[path[-1]] = copy.deepcopy(_BROKEN[choice])
        out.append(broken)
    return out


def _assert_answered(answer: httpx.Response, what: str) -> None:
    assert answer.status_code < 500, (what, answer.text)
    if answer.status_code >= 400:
        body = answer.json()
        assert body["success"] is False, (what, body)
        assert body["error"], (what, body)
    else:
        assert answer.json()["data"]["outcome"] in ("accepted", "duplicate", "ignored")


async def test_upstream_payloads_whole_and_broken_are_never_a_server_error(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    hub, hub_secret = await make_integration(db, tenant.org, name="hub")
    lab, lab_secret = await make_integration(db, tenant.org, kind="gitlab", name="lab")
    rng = random.Random(20)
    for path in sorted((_UPSTREAM / "github-webhooks").glob("*.json")):
        event = path.name.split(".", 1)[0]
        original = orjson.loads(path.read_bytes())
        for n, payload in enumerate([original, *_breakages(original, rng)]):
            body = orjson.dumps(payload)
            answer = await client.post(
                f"/api/v1/integrations/{hub.id}/webhook",
                content=body,
                headers=github_headers(body, hub_secret, event, f"{path.name}-{n}"),
            )
            _assert_answered(answer, f"{path.name} #{n}")
    for path in sorted((_UPSTREAM / "gitlab-webhooks").glob("*.json")):
        event = _GITLAB_EVENTS[path.stem]
        original = orjson.loads(path.read_bytes())
        for n, payload in enumerate([original, *_breakages(original, rng)]):
            body = orjson.dumps(payload)
            answer = await client.post(
                f"/api/v1/integrations/{lab.id}/webhook",
                content=body,
                headers=gitlab_headers(lab_secret, event, f"{path.name}-{n}"),
            )
            _assert_answered(answer, f"{path.name} #{n}")
