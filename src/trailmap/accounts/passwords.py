"""Password hashing with argon2id; hashes carry their own parameters so they can be upgraded.
Each hash takes argon2's memory cost (64 MiB) for its time: `PasswordHashing` runs a few at once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from trailmap.errors import Unavailable

__all__ = [
    "DEFAULT_HASHING",
    "PasswordHashing",
    "default_hashes_at_once",
    "hash_password",
    "verify_password",
]

T = TypeVar("T")

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Verifying against this when the user does not exist keeps the two cases equally slow.
_DUMMY_HASH = _hasher.hash("trailmap-no-such-user")

# What the hashes running at once may take between them, by default (KiB, as argon2 counts).
_MEMORY_BUDGET_KIB = 256 * 1024
_RETRY_AFTER_S = 5


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def default_hashes_at_once() -> int:
    """One hash per CPU (each keeps one busy), within 256 MiB between them (argon2's memory
    cost is 64 MiB a hash): 2 on two CPUs, never more than 4."""
    by_memory = max(1, _MEMORY_BUDGET_KIB // _hasher.memory_cost)
    return max(1, min(os.cpu_count() or 1, by_memory))


class PasswordHashing:
    """Password hashes and checks, at most `at_once` at a time (0: `default_hashes_at_once`),
    each on a worker thread of their own rather than the database's. Each takes 64 MiB
    while it runs: sixty sign-ins at once took a server from 316 MiB to 2.3 GiB. The others
    wait their turn, up to `wait_seconds`, and are then refused with `Unavailable` (503
    with Retry-After)."""

    def __init__(self, *, at_once: int = 0, wait_seconds: float = 10.0) -> None:
        self.at_once = at_once or default_hashes_at_once()
        self.wait_seconds = wait_seconds
        self._turns = anyio.CapacityLimiter(self.at_once)
        # Taken only with a turn, so never waited for: it keeps hashes off the default
        # thread limiter, which the database calls of every request share.
        self._threads = anyio.CapacityLimiter(self.at_once)

    @property
    def running(self) -> int:
        """How many hashes run now."""
        return int(self._turns.borrowed_tokens)

    @property
    def waiting(self) -> int:
        """How many wait for their turn."""
        return self._turns.statistics().tasks_waiting

    async def hash(self, password: str) -> str:
        return await self._run(hash_password, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """`verify_password`: an unknown user (`password_hash` None) costs a hash too."""
        return await self._run(verify_password, password, password_hash)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """A turn to hash, waited for up to `wait_seconds`; then `Unavailable`."""
        waited = True
        with anyio.move_on_after(self.wait_seconds):
            await self._turns.acquire()
            waited = False
        if waited:
            raise Unavailable(
                "Too many sign-ins at once; try again in a few seconds.",
                retry_after=_RETRY_AFTER_S,
            )
        try:
            yield
        finally:
            self._turns.release()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        async with self.turn():
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)


# For callers outside the app (the CLI, the demo, tests): the app passes its own, sized by
# its settings (TRAILMAP_PASSWORD_HASHES_AT_ONCE).
DEFAULT_HASHING = PasswordHashing()
