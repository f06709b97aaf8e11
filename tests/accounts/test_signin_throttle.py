"""The sign-in throttle (the audit's hole 5): guessing is slowed per account and address,
failures fade, and nobody is locked out by failures that others caused."""

from __future__ import annotations

import pytest

from tests.console.test_signin import Clock
from trailmap.accounts import add_user, create_org
from trailmap.accounts.signin import (
    FREE_FAILURES,
    FREE_FAILURES_PER_CLIENT,
    TooManyAttempts,
    sign_in,
)
from trailmap.errors import Unauthorized
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
ADA = "ada@acme.example"
ATTACKER = "203.0.113.9"
HOME = "198.51.100.4"
OFFICE = "192.0.2.50"


@pytest.fixture
async def acme(db: Database) -> Database:
    await create_org(db, "acme")
    await add_user(db, ADA, org_slug="acme", role="owner", password=PASSWORD)
    for n in range(FREE_FAILURES_PER_CLIENT + 2):
        await add_user(db, f"user{n}@acme.example", org_slug="acme", password=PASSWORD)
    return db


async def _fail(db: Database, email: str, client: str) -> str:
    """One wrong password; what the server answered ("wrong" or "blocked")."""
    try:
        await sign_in(db, email, "not the password", client=client)
    except TooManyAttempts:
        return "blocked"
    except Unauthorized:
        return "wrong"
    raise AssertionError("a wrong password was let in")


async def test_failures_from_one_address_do_not_lock_the_owner_out_from_another(
    acme: Database,
) -> None:
    for _ in range(FREE_FAILURES + 3):
        await _fail(acme, ADA, ATTACKER)
    with pytest.raises(TooManyAttempts):
        await sign_in(acme, ADA, PASSWORD, client=ATTACKER)
    done = await sign_in(acme, ADA, PASSWORD, client=HOME)
    assert done.email == ADA


async def test_one_guess_every_fifteen_minutes_does_not_keep_an_account_locked(
    acme: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    for _ in range(FREE_FAILURES):
        await _fail(acme, ADA, ATTACKER)
    answers = []
    for _ in range(8):  # two hours of one guess every quarter of an hour
        time.advance(15 * 60)
        answers.append(await _fail(acme, ADA, ATTACKER))
    assert answers == ["wrong"] * 8  # each was checked: failures fade, no block builds up
    time.advance(15 * 60)
    assert (await sign_in(acme, ADA, PASSWORD, client=ATTACKER)).email == ADA


async def test_failures_fade_so_a_block_after_a_quiet_hour_starts_short_again(
    acme: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    for _ in range(FREE_FAILURES + 4):
        time.advance(60)  # wait out each block, so every failure is checked
        await _fail(acme, ADA, ATTACKER)
    with pytest.raises(TooManyAttempts) as long_block:
        await sign_in(acme, ADA, PASSWORD, client=ATTACKER)
    time.advance(3600)
    for _ in range(FREE_FAILURES - 1):
        await _fail(acme, ADA, ATTACKER)
    # After an hour, what is left of the old failures is less than one free failure.
    assert (await sign_in(acme, ADA, PASSWORD, client=ATTACKER)).email == ADA
    assert long_block.value.retry_after > 2


async def test_a_right_password_passes_an_address_block_that_others_caused(
    acme: Database,
) -> None:
    # An office behind one address: many people mistype, on many accounts.
    for n in range(FREE_FAILURES_PER_CLIENT + 2):
        await _fail(acme, f"user{n}@acme.example", OFFICE)
    # A wrong password from there is now refused for a while, without a verdict...
    assert await _fail(acme, ADA, OFFICE) == "blocked"
    # ...but the right one is let in, and a success does not lengthen the office's block.
    assert (await sign_in(acme, ADA, PASSWORD, client=OFFICE)).email == ADA
    assert (await sign_in(acme, "user0@acme.example", PASSWORD, client=OFFICE)).user_id


async def test_a_success_takes_back_its_own_attempt_from_the_address_count(
    acme: Database,
) -> None:
    # A success costs the address nothing: many people signing in from one office never
    # add up to a block.
    for n in range(FREE_FAILURES_PER_CLIENT + 2):
        done = await sign_in(acme, f"user{n}@acme.example", PASSWORD, client=OFFICE)
        assert done.user_id
    assert await _fail(acme, ADA, OFFICE) == "wrong"
