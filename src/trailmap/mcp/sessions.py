"""MCP sessions (the 2025-11-25 handshake) bound to the API key that opened them.

The transport is stateless, so a session holds nothing but a name: every request is
authenticated by its own key. What a session id must do is refuse to be carried over to
another key. It is signed, not stored, so that any node can check it:

    Mcp-Session-Id: <nonce>.<key tag>.<signature>

where the key tag is HMAC(secret, key id) cut short, and the signature HMAC(secret, nonce and
key tag). A request whose id has a bad signature gets 404 (not a session of this server: the
client starts a new one, as the specification says); one whose id names another key gets 403.
The secret is made once per installation and kept in the database, so every node shares it.
Clients on the 2026-07-28 protocol have no sessions; nothing here applies to them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from enum import Enum

import anyio

from trailmap.storage import Database
from trailmap.storage import instance as store

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
                    stored = await self._db.write(
                        store.first_setting, _SETTING, secrets.token_hex(32)
                    )
                    self._secret = bytes.fromhex(stored)
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
