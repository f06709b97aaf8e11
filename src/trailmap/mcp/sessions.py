"""MCP session ids (the 2025-11-25 handshake), signed not stored, bound to the key that
opened them: `<nonce>.<key tag>.<signature>` (docs/internals.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from enum import Enum
from typing import TYPE_CHECKING

import anyio

from trailmap.accounts.installation import installation_secret

if TYPE_CHECKING:
    from trailmap.storage import Database

__all__ = ["SessionCheck", "SessionSigner"]

_SETTING = "mcp_session_secret"
_TAG_BYTES = 9
_SIGNATURE_BYTES = 18
_NONCE_BYTES = 16


class SessionCheck(Enum):
    OURS = "ours"  # issued to this very key
    UNKNOWN = "unknown"  # malformed, forged, or from another installation
    OTHER_KEY = "other key"  # a genuine session of another key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class SessionSigner:
    """Issues and checks session ids; loads (or makes) the shared secret on first use."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._secret: bytes | None = None
        self._lock = anyio.Lock()

    async def _key(self) -> bytes:
        if self._secret is None:
            async with self._lock:
                if self._secret is None:
                    self._secret = await installation_secret(self._db, _SETTING)
        return self._secret

    def _mac(self, secret: bytes, message: str, size: int) -> str:
        digest = hmac.new(secret, message.encode("utf-8"), hashlib.sha256).digest()
        return _b64(digest[:size])

    def _tag(self, secret: bytes, key_id: str) -> str:
        return self._mac(secret, f"key:{key_id}", _TAG_BYTES)

    async def issue(self, key_id: str) -> str:
        secret = await self._key()
        nonce = _b64(secrets.token_bytes(_NONCE_BYTES))
        tag = self._tag(secret, key_id)
        return f"{nonce}.{tag}.{self._mac(secret, f'session:{nonce}.{tag}', _SIGNATURE_BYTES)}"

    async def check(self, session_id: str, key_id: str) -> SessionCheck:
        if not session_id.isascii():
            return SessionCheck.UNKNOWN
        secret = await self._key()
        nonce, _, rest = session_id.partition(".")
        tag, _, signature = rest.partition(".")
        expected = self._mac(secret, f"session:{nonce}.{tag}", _SIGNATURE_BYTES)
        if not (nonce and tag and hmac.compare_digest(signature, expected)):
            return SessionCheck.UNKNOWN
        if not hmac.compare_digest(tag, self._tag(secret, key_id)):
            return SessionCheck.OTHER_KEY
        return SessionCheck.OURS
