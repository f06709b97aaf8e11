"""Password hashing with argon2id; hashes carry their own parameters so they can be upgraded."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hash_password", "verify_password"]

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Verifying against this when the user does not exist keeps the two cases equally slow.
_DUMMY_HASH = _hasher.hash("trailmap-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
