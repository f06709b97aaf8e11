"""Password hashes, a few at a time: each takes argon2's memory cost (64 MiB) while it runs,
so sign-ins at once wait their turn on their own worker threads, and a sign-in that waits
too long is refused with 503 and Retry-After rather than taking the server's memory."""

from __future__ import annotations

import threading

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest

from trailmap.accounts import passwords
from trailmap.accounts.passwords import (
    PasswordHashing,
    default_hashes_at_once,
    hash_password,
    verify_password,
)
from trailmap.errors import Unavailable

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"


async def test_no_more_hashes_run_at_once_than_allowed_and_the_others_wait() -> None:
    hashing = PasswordHashing(at_once=2, wait_seconds=60)
    stored = hash_password(PASSWORD)
    results: list[bool] = []
    seen: list[tuple[int, int]] = []

    async def check(password: str) -> None:
        results.append(await hashing.verify(password, stored))

    async with anyio.create_task_group() as tasks:
        for n in range(8):
            tasks.start_soon(check, PASSWORD if n % 2 else "wrong password")
        await anyio.wait_all_tasks_blocked()
        seen.append((hashing.running, hashing.waiting))
    assert seen == [(2, 6)]
    assert sorted(results) == [False] * 4 + [True] * 4
    assert (hashing.running, hashing.waiting) == (0, 0)


async def test_a_hash_runs_on_a_worker_thread_of_its_own_not_the_databases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off the event loop, and off the default thread limiter every request's database
    calls share: sixty sign-ins once held all forty of its threads."""
    hashing = PasswordHashing(at_once=1)
    seen: list[tuple[threading.Thread, float]] = []
    real = passwords.hash_password

    def noted(password: str) -> str:
        default = anyio.to_thread.current_default_thread_limiter
        seen.append(
            (
                threading.current_thread(),
                anyio.from_thread.run_sync(lambda: default().borrowed_tokens),
            )
        )
        return real(password)

    monkeypatch.setattr(passwords, "hash_password", noted)
    stored = await hashing.hash(PASSWORD)
    assert verify_password(PASSWORD, stored)
    ((thread, default_borrowed),) = seen
    assert thread is not threading.current_thread()
    assert default_borrowed == 0


async def test_a_hash_that_waits_past_its_bound_is_refused_with_503_and_retry_after() -> None:
    hashing = PasswordHashing(at_once=1, wait_seconds=0.05)
    taken, done = anyio.Event(), anyio.Event()

    async def flood() -> None:  # every turn taken, as by a flood of sign-ins
        async with hashing.turn():
            taken.set()
            await done.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(flood)
        await taken.wait()
        with pytest.raises(Unavailable) as refused:
            await hashing.verify(PASSWORD, None)
        done.set()
    assert refused.value.status == 503
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert "try again" in refused.value.message
    # The turn given back, the next one goes through.
    assert not await hashing.verify(PASSWORD, None)


def test_the_default_is_a_few_hashes_sized_by_cpus_and_memory() -> None:
    # argon2-cffi's default: 64 MiB a hash; within 256 MiB, one per CPU.
    assert 1 <= default_hashes_at_once() <= 4
    assert PasswordHashing().at_once == default_hashes_at_once()
