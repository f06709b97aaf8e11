"""What the integration tests share: a server key to encrypt secrets, integrations made as
the operator, deliveries signed as GitHub signs them and sent as GitLab sends them."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from pathlib import Path
from typing import Any

from trailmap.accounts import Organization
from trailmap.accounts.audit import OPERATOR
from trailmap.accounts.team import OPERATOR_AUTHORITY
from trailmap.integrations.integrations import Integration, create_integration
from trailmap.storage import Database

__all__ = [
    "SECRET_KEY",
    "fixture_bytes",
    "github_headers",
    "gitlab_headers",
    "make_integration",
    "sign",
]

SECRET_KEY = "integration-tests-secret-key-0123456789abcdef"
_UPSTREAM = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"


def fixture_bytes(folder: str, name: str) -> bytes:
    """An upstream payload's exact bytes (tests/fixtures/upstream/README.md)."""
    return (_UPSTREAM / folder / name).read_bytes()


def sign(body: bytes, secret: str) -> str:
    """X-Hub-Signature-256 as GitHub computes it: HMAC-SHA256 of the exact body, hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(
    body: bytes, secret: str, event: str, delivery: str | None = None
) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/abc1234",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "109948940",
        "X-Hub-Signature-256": sign(body, secret),
    }


def gitlab_headers(secret: str, event: str, delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.0.0",
        "X-Gitlab-Event": event,
        "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
        "X-Gitlab-Instance": "https://gitlab.example.com",
        "X-Gitlab-Token": secret,
    }


async def make_integration(
    db: Database, org: Organization, *, kind: str = "github", name: str = "forge", **more: Any
) -> tuple[Integration, str]:
    return await create_integration(
        db,
        org.id,
        who=OPERATOR_AUTHORITY,
        by=OPERATOR,
        kind=kind,
        name=name,
        secret_key=SECRET_KEY,
        **more,
    )
