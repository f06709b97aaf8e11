"""The token format: `tmk_` + 32 random bytes in base62 + a 6-character CRC32 checksum, so a
typo is caught offline; only a token's SHA-256 is stored (docs/api.md, "Authentication")."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from typing import Final, Literal

__all__ = [
    "ACCESS_TOKEN_PREFIX",
    "API_KEY_PREFIX",
    "REFRESH_TOKEN_PREFIX",
    "display_prefix",
    "hash_token",
    "is_well_formed",
    "mint_token",
    "tokens_match",
]

TokenPrefix = Literal["tmk_", "tma_", "tmr_"]
API_KEY_PREFIX: Final = "tmk_"
ACCESS_TOKEN_PREFIX: Final = "tma_"  # noqa: S105 - a prefix, not a secret
REFRESH_TOKEN_PREFIX: Final = "tmr_"  # noqa: S105 - a prefix, not a secret

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LENGTH = 43  # 62**43 > 2**256: room for any 32-byte value
_CHECKSUM_LENGTH = 6  # 62**6 > 2**32: room for any CRC32
_PREFIXES = (API_KEY_PREFIX, ACCESS_TOKEN_PREFIX, REFRESH_TOKEN_PREFIX)


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(_ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LENGTH)


def mint_token(prefix: TokenPrefix = API_KEY_PREFIX) -> str:
    body = _base62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LENGTH)
    return f"{prefix}{body}{_checksum(body)}"


def is_well_formed(token: str, prefix: TokenPrefix | None = None) -> bool:
    """True when `token` has a known prefix, the right length and alphabet, and its checksum."""
    prefixes = (prefix,) if prefix else _PREFIXES
    head = next((p for p in prefixes if token.startswith(p)), None)
    if head is None or len(token) != len(head) + _BODY_LENGTH + _CHECKSUM_LENGTH:
        return False
    rest = token[len(head) :]
    if any(ch not in _ALPHABET for ch in rest):
        return False
    body, checksum = rest[:_BODY_LENGTH], rest[_BODY_LENGTH:]
    return hmac.compare_digest(_checksum(body), checksum)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_match(token: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented token against a stored hash."""
    return hmac.compare_digest(hash_token(token), stored_hash)


def display_prefix(token: str) -> str:
    """What lists show of a token: its prefix and the first characters, never enough to use."""
    return token[:12]
