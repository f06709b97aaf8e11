"""What organizations store encrypted at rest (a Prometheus auth header, a webhook secret):
Fernet with keys derived from TRAILMAP_SECRET_KEY and its retired keys, one derivation per use."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

__all__ = ["InvalidToken", "decrypt", "encrypt", "fernet"]


@lru_cache(maxsize=32)
def fernet(secret_key: str, purpose: str) -> MultiFernet:
    """Encrypts with the first key of `secret_key` (the keys one per line, as
    `Settings.encryption_secret` joins them: the current one first, then retired ones)
    and decrypts with any, so a key can be rotated without losing what it encrypted.
    `purpose` separates the keys of different uses (a header's key opens no webhook secret)."""
    keys = []
    for key in secret_key.splitlines():
        digest = hashlib.sha256(purpose.encode() + b"\x00" + key.encode()).digest()
        keys.append(Fernet(base64.urlsafe_b64encode(digest)))
    return MultiFernet(keys)


def encrypt(secret_key: str, purpose: str, value: str) -> str:
    return fernet(secret_key, purpose).encrypt(value.encode()).decode()


def decrypt(secret_key: str, purpose: str, token: str) -> str:
    """The value, or `InvalidToken` when no key of `secret_key` opens it."""
    return fernet(secret_key, purpose).decrypt(token.encode()).decode()
