"""Signing in to the console: passwords checked with a growing back-off, sessions in the DB
(docs/internals.md)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

from trailmap import clock
from trailmap.accounts import tokens
from trailmap.accounts.audit import Actor, record
from trailmap.accounts.passwords import DEFAULT_HASHING, PasswordHashing
from trailmap.errors import QuotaExceeded, Unauthorized
from trailmap.storage import Connection, Database
from trailmap.storage import accounts as account_store
from trailmap.storage import web as store

__all__ = [
    "FAILURE_HALF_LIFE_SECONDS",
    "FREE_FAILURES",
    "FREE_FAILURES_PER_ACCOUNT",
    "FREE_FAILURES_PER_CLIENT",
    "SESSION_SECONDS",
    "SignedIn",
    "TooManyAttempts",
    "csrf_token",
    "end_session",
    "same_token",
    "session_user",
    "sign_in",
]

FREE_FAILURES: Final = 5  # for one account from one address
FREE_FAILURES_PER_ACCOUNT: Final = 20  # for one account from every address together
FREE_FAILURES_PER_CLIENT: Final = 20  # from one address, whatever the accounts
MAX_BLOCK_SECONDS: Final = 15 * 60
FAILURE_HALF_LIFE_SECONDS: Final = 10 * 60  # failures fade: half are forgotten after this
SESSION_SECONDS: Final = 12 * 3600
_US: Final = 1_000_000
_WRONG: Final = "That e-mail and password do not match an account."


class TooManyAttempts(QuotaExceeded):
    """Sign-in refused until the back-off ends; `retry_after` says when."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    user_id: str
    email: str
    session: str  # the cookie's value, shown to this browser only


def _block_us(failures: int, free: int) -> int:
    """How long `failures` failures block a subject allowed `free` of them: 2 s at the
    limit, doubling with each further failure, at most `MAX_BLOCK_SECONDS`."""
    if failures < free:
        return 0
    return int(min(2 ** (failures - free + 1), MAX_BLOCK_SECONDS)) * _US


def _decayed(failures: int, since_us: int) -> int:
    """What is left of `failures` after `since_us` without one: half per half-life."""
    left = failures * 0.5 ** (max(since_us, 0) / (FAILURE_HALF_LIFE_SECONDS * _US))
    return int(left + 0.5)


def _subjects(email: str, client: str | None) -> list[tuple[str, int, bool]]:
    """What an attempt counts against: (name, free failures, whether a block refuses before
    the password is checked). This account from this address, and this account from
    anywhere, refuse; an address's own block (many accounts tried from it: an office behind
    one NAT, say) still lets a right password through, so that others' failures cannot
    lock a person out."""
    where = client or "-"
    found = [
        (f"pair:{email}|{where}", FREE_FAILURES, True),
        (f"email:{email}", FREE_FAILURES_PER_ACCOUNT, True),
    ]
    if client:
        found.append((f"ip:{client}", FREE_FAILURES_PER_CLIENT, False))
    return found


def _too_many(until_us: int, now_us: int) -> TooManyAttempts:
    wait = max(1, -(-(until_us - now_us) // _US))
    return TooManyAttempts(
        f"Too many failed sign-ins; try again in {wait} seconds.", retry_after=wait
    )


async def sign_in(
    db: Database,
    email: str,
    password: str,
    *,
    client: str | None,
    hashing: PasswordHashing = DEFAULT_HASHING,
) -> SignedIn:
    """Check the password and open a session, or raise `Unauthorized` / `TooManyAttempts`,
    or `Unavailable` when no hash could start within `hashing`'s wait (the attempt then
    counts, as every attempt does before its password is checked). Every attempt, right or
    wrong, goes to the audit log of the account's organizations."""
    email = email.strip().lower()[:320]
    subjects = _subjects(email, client)
    now_us = clock.now_us()
    # The attempt is counted as a failure before the password is looked at, in one write:
    # guesses sent at once cannot all slip in before the first failure is recorded.
    blocked_until, blocks = await db.write(
        store.reserve_attempt, subjects, now_us, _decayed, _block_us
    )
    if blocked_until:
        raise _too_many(blocked_until, now_us)
    user = await db.read(account_store.get_user_by_email, email)
    stored_hash = None if user is None else user["password_hash"]
    # argon2 is deliberately slow and large: off the event loop, a few at a time. An unknown
    # address is checked against a dummy hash, so both answers take as long.
    matched = await hashing.verify(password, stored_hash)
    actor = Actor(email, client=client)
    if user is None or not matched or user["disabled_us"] is not None:
        if user is not None:
            await db.write(_audit_all, user["id"], "sign_in.failed", actor)
        address_block = blocks.get(f"ip:{client}", (0, 0))[1]
        if address_block > now_us + _US:
            raise _too_many(address_block, now_us)
        raise Unauthorized(_WRONG, error="invalid_grant")
    session = secrets.token_urlsafe(32)
    now_us = clock.now_us()

    def _open(conn: Connection) -> None:
        own = [name for name, _free, _refuses in subjects if name.startswith("pair:")]
        others = {name: blocks[name] for name in blocks if name not in own}
        store.forgive_attempt(conn, own, others)
        store.insert_session(
            conn,
            {
                "session_hash": tokens.hash_token(session),
                "user_id": user["id"],
                "created_us": now_us,
                "expires_us": now_us + SESSION_SECONDS * _US,
            },
        )
        account_store.update_user(conn, user["id"], {"last_sign_in_us": now_us})
        _audit_all(conn, user["id"], "sign_in", actor)

    await db.write(_open)
    return SignedIn(user_id=user["id"], email=user["email"], session=session)


def _audit_all(conn: Connection, user_id: str, action: str, actor: Actor) -> None:
    for org in account_store.list_memberships(conn, user_id):
        record(conn, org["id"], action, actor, target=actor.name)


async def session_user(db: Database, session: str | None) -> dict[str, str] | None:
    """The signed-in user (`id`, `email`) behind a session cookie, or None."""
    if not session or len(session) > 200:
        return None
    row = await db.read(store.get_session_user, tokens.hash_token(session), clock.now_us())
    return None if row is None else {"id": row["id"], "email": row["email"]}


async def end_session(db: Database, session: str | None) -> None:
    if session:
        await db.write(store.delete_session, tokens.hash_token(session), clock.now_us())


def csrf_token(session: str) -> str:
    """The CSRF token of a session's forms: bound to the session, unknowable without its
    cookie (which is HttpOnly, so no script reads it)."""
    return hmac.new(session.encode(), b"trailmap-csrf", hashlib.sha256).hexdigest()


def same_token(presented: str, expected: str) -> bool:
    return secrets.compare_digest(presented.encode(), expected.encode())
