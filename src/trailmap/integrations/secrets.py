"""Webhook secrets: made by the server, stored encrypted, checked in constant time against
the current one and, during a rotation's overlap, the previous one."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

from trailmap.encryption import decrypt, encrypt
from trailmap.errors import ValidationFailed

__all__ = [
    "PURPOSE",
    "github_signature_ok",
    "gitlab_token_ok",
    "new_secret",
    "open_secret",
    "seal_secret",
]

# The purpose of the key that encrypts webhook secrets (trailmap.encryption).
PURPOSE = "trailmap integration secrets"
_SECRET_BYTES = 32
_SIGNATURE_PREFIX = "sha256="


def new_secret() -> str:
    """A fresh webhook secret: 32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(_SECRET_BYTES)


def seal_secret(secret_key: str | None, secret: str) -> str:
    if not secret_key:
        raise ValidationFailed(
            "Set TRAILMAP_SECRET_KEY on the server first: an integration's webhook secret is "
            "stored encrypted with it (docs/operations.md)."
        )
    return encrypt(secret_key, PURPOSE, secret)


def open_secret(secret_key: str, sealed: str) -> str:
    """The secret, or `InvalidToken` when no key of `secret_key` opens it."""
    return decrypt(secret_key, PURPOSE, sealed)


def github_signature_ok(body: bytes, header: str | None, candidates: Sequence[str]) -> bool:
    """Whether `X-Hub-Signature-256` is `sha256=` and the HMAC-SHA256 of the exact body
    under one of `candidates`; every candidate is compared, in constant time."""
    if not header or not header.startswith(_SIGNATURE_PREFIX):
        return False
    given = header[len(_SIGNATURE_PREFIX) :].strip().lower().encode()
    matched = False
    for secret in candidates:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def gitlab_token_ok(header: str | None, candidates: Sequence[str]) -> bool:
    """Whether `X-Gitlab-Token` is one of `candidates`, compared in constant time."""
    if not header:
        return False
    given = header.encode()
    matched = False
    for secret in candidates:
        matched |= hmac.compare_digest(secret.encode(), given)
    return matched
