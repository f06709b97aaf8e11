"""The team's lifecycle in the domain, on SQLite and PostgreSQL: invitations, roles, removal,
passwords and disabling, each checked against the permission table and written to the log."""

from __future__ import annotations

from datetime import timedelta

import pytest

from trailmap import clock
from trailmap.accounts import add_user, authenticate, create_key, create_org
from trailmap.accounts.audit import OPERATOR, Actor, list_audit
from trailmap.accounts.memberships import Membership, find_membership
from trailmap.accounts.signin import session_user, sign_in
from trailmap.accounts.team import (
    OPERATOR_AUTHORITY,
    accept_invitation,
    change_password,
    change_role,
    disable_user,
    enable_user,
    invitation_for,
    invite,
    issue_password_reset,
    list_members,
    remove_member,
    reset_password,
    set_org_key_rules,
)
from trailmap.errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from trailmap.storage import Database
from trailmap.storage import accounts as store

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
OWNER = "ada@acme.example"
ADMIN = "grace@acme.example"
MEMBER = "bob@acme.example"
ADA = Actor(OWNER)


async def _acme(db: Database) -> None:
    await create_org(db, "acme")
    await add_user(db, OWNER, org_slug="acme", role="owner", password=PASSWORD)
    await add_user(db, ADMIN, org_slug="acme", role="admin", password=PASSWORD)
    await add_user(db, MEMBER, org_slug="acme", role="member", password=PASSWORD)


async def _as(db: Database, email: str) -> Membership:
    done = await sign_in(db, email, PASSWORD, client="127.0.0.1")
    membership = await find_membership(db, done.user_id, "acme")
    assert membership is not None
    return membership


async def test_an_invitation_accepted_once_makes_a_member_who_can_sign_in(db: Database) -> None:
    await _acme(db)
    owner = await _as(db, OWNER)
    made = await invite(db, "acme", "Carol@Acme.example", "member", who=owner, by=ADA, days=7)
    assert made.token is not None
    assert made.email == "carol@acme.example"
    assert (await invitation_for(db, made.token)) is not None

    invitation, user_id = await accept_invitation(db, made.token, "carols new password")
    assert invitation.role == "member"
    signed = await sign_in(db, "carol@acme.example", "carols new password", client=None)
    assert signed.user_id == user_id
    # The link is spent: it no longer opens, and a second use is refused.
    assert await invitation_for(db, made.token) is None
    with pytest.raises(NotFound):
        await accept_invitation(db, made.token, "another password here")
    members = {m.email: m.role for m in await list_members(db, "acme", who=owner)}
    assert members["carol@acme.example"] == "member"


async def test_someone_with_an_account_joins_with_their_own_password_only(db: Database) -> None:
    await _acme(db)
    await create_org(db, "other")
    await add_user(db, "dan@other.example", org_slug="other", role="owner", password=PASSWORD)
    made = await invite(
        db, "acme", "dan@other.example", who=OPERATOR_AUTHORITY, by=OPERATOR, days=1
    )
    assert made.token is not None
    with pytest.raises(Forbidden, match="has an account already"):
        await accept_invitation(db, made.token, "a guessed password")
    # A wrong guess does not spend the link; the right password joins.
    await accept_invitation(db, made.token, PASSWORD)
    done = await sign_in(db, "dan@other.example", PASSWORD, client=None)
    assert await find_membership(db, done.user_id, "acme") is not None


async def test_an_expired_or_revoked_invitation_does_not_open(db: Database) -> None:
    await _acme(db)
    made = await invite(db, "acme", "eve@acme.example", who=OPERATOR_AUTHORITY, by=OPERATOR, days=1)
    assert made.token is not None
    with pytest.MonkeyPatch.context() as patch:
        later = clock.now() + timedelta(days=1, seconds=1)
        patch.setattr(clock, "now_us", lambda: clock.to_us(later))
        assert await invitation_for(db, made.token) is None
        with pytest.raises(NotFound):
            await accept_invitation(db, made.token, "eves new password")


async def test_members_may_not_invite_and_admins_may_not_make_owners(db: Database) -> None:
    await _acme(db)
    member, admin = await _as(db, MEMBER), await _as(db, ADMIN)
    with pytest.raises(Forbidden):
        await invite(db, "acme", "x@acme.example", who=member, by=Actor(MEMBER), days=7)
    with pytest.raises(Forbidden):
        await invite(db, "acme", "x@acme.example", "owner", who=admin, by=Actor(ADMIN), days=7)
    with pytest.raises(Forbidden):
        await change_role(db, "acme", MEMBER, "owner", who=admin, by=Actor(ADMIN))
    with pytest.raises(Forbidden):
        await change_role(db, "acme", OWNER, "member", who=admin, by=Actor(ADMIN))
    changed = await change_role(db, "acme", MEMBER, "admin", who=admin, by=Actor(ADMIN))
    assert changed.role == "admin"


async def test_the_last_owner_can_be_neither_removed_nor_demoted(db: Database) -> None:
    await _acme(db)
    owner = await _as(db, OWNER)
    with pytest.raises(Conflict, match="last owner"):
        await change_role(db, "acme", OWNER, "admin", who=owner, by=ADA)
    with pytest.raises(Conflict, match="last owner"):
        await remove_member(db, "acme", OWNER, who=owner, by=ADA)
    await change_role(db, "acme", ADMIN, "owner", who=owner, by=ADA)
    await change_role(db, "acme", OWNER, "admin", who=owner, by=ADA)  # one owner is left


async def test_a_removed_member_s_personal_keys_stop_at_once_and_service_keys_stay(
    db: Database,
) -> None:
    await _acme(db)
    owner = await _as(db, OWNER)
    bob = await sign_in(db, MEMBER, PASSWORD, client=None)
    _own, bobs_token = await create_key(
        db, "acme", name="bob's", scope="READ_ONLY", created_by=MEMBER, user_id=bob.user_id
    )
    _mcp, mcp_token = await create_key(
        db,
        "acme",
        name="MCP — Claude",
        scope="READ_ONLY",
        created_by=MEMBER,
        user_id=bob.user_id,
        oauth_client_id="https://claude.example/client",
    )
    _ci, ci_token = await create_key(
        db, "acme", name="ci", scope="READ_WRITE", created_by=MEMBER, service_account="ci"
    )
    assert (await authenticate(db, bobs_token)).role == "member"

    revoked = await remove_member(db, "acme", MEMBER, who=owner, by=ADA)

    assert {k["name"] for k in revoked} == {"bob's", "MCP — Claude"}
    for token in (bobs_token, mcp_token):
        with pytest.raises(Unauthorized):
            await authenticate(db, token)
    assert (await authenticate(db, ci_token)).org_slug == "acme"
    assert await find_membership(db, bob.user_id, "acme") is None
    log = await list_audit(db, owner.org_id)
    removal = next(a for a in log if a.action == "member.removed")
    assert removal.actor == OWNER
    assert removal.target == MEMBER
    assert removal.details is not None
    assert len(removal.details["keys_revoked"]) == 2
    # The log names keys by name and prefix only: no token appears in it.
    assert bobs_token not in str([a.as_json() for a in log])


async def test_a_personal_key_of_someone_no_longer_a_member_is_refused(db: Database) -> None:
    # Even a key the removal missed (a membership deleted another way) stops working.
    await _acme(db)
    bob = await sign_in(db, MEMBER, PASSWORD, client=None)
    _key, token = await create_key(
        db, "acme", name="bob's", scope="READ_ONLY", created_by=MEMBER, user_id=bob.user_id
    )
    org = await find_membership(db, bob.user_id, "acme")
    assert org is not None
    await db.write(store.delete_membership, org.org_id, bob.user_id)
    with pytest.raises(Unauthorized, match="no longer a member"):
        await authenticate(db, token)


async def test_changing_the_password_ends_the_other_sessions(db: Database) -> None:
    await _acme(db)
    here = await sign_in(db, MEMBER, PASSWORD, client=None)
    there = await sign_in(db, MEMBER, PASSWORD, client=None)
    with pytest.raises(Forbidden):
        await change_password(db, here.user_id, "not the password", "a new password here")
    await change_password(
        db, here.user_id, PASSWORD, "a new password here", keep_session=here.session
    )
    assert await session_user(db, here.session) is not None
    assert await session_user(db, there.session) is None
    with pytest.raises(Unauthorized):
        await sign_in(db, MEMBER, PASSWORD, client=None)
    assert (await sign_in(db, MEMBER, "a new password here", client=None)).email == MEMBER


async def test_a_reset_link_sets_the_password_once_and_ends_every_session(db: Database) -> None:
    await _acme(db)
    session = await sign_in(db, MEMBER, PASSWORD, client=None)
    token = await issue_password_reset(db, MEMBER, minutes=60, by=OPERATOR)
    assert token is not None
    assert await issue_password_reset(db, "nobody@acme.example", minutes=60, by=OPERATOR) is None
    with pytest.raises(ValidationFailed):
        await reset_password(db, token, "short")
    assert await reset_password(db, token, "a brand new password") == MEMBER
    assert await session_user(db, session.session) is None
    with pytest.raises(NotFound):
        await reset_password(db, token, "yet another password")
    assert (await sign_in(db, MEMBER, "a brand new password", client=None)).email == MEMBER


async def test_a_disabled_user_cannot_sign_in_and_loses_sessions_and_keys(db: Database) -> None:
    await _acme(db)
    session = await sign_in(db, MEMBER, PASSWORD, client=None)
    _key, token = await create_key(
        db, "acme", name="bob's", scope="READ_ONLY", created_by=MEMBER, user_id=session.user_id
    )
    revoked = await disable_user(db, MEMBER, by=OPERATOR)
    assert [k["name"] for k in revoked] == ["bob's"]
    assert await session_user(db, session.session) is None
    with pytest.raises(Unauthorized):
        await authenticate(db, token)
    with pytest.raises(Unauthorized):
        await sign_in(db, MEMBER, PASSWORD, client=None)
    assert [
        m.disabled
        for m in await list_members(db, "acme", who=OPERATOR_AUTHORITY)
        if m.email == MEMBER
    ] == [True]
    await enable_user(db, MEMBER, by=OPERATOR)
    assert (await sign_in(db, MEMBER, PASSWORD, client=None)).email == MEMBER


async def test_sign_ins_right_and_wrong_are_in_the_audit_log_with_their_address(
    db: Database,
) -> None:
    await _acme(db)
    with pytest.raises(Unauthorized):
        await sign_in(db, MEMBER, "not it", client="192.0.2.7")
    done = await sign_in(db, MEMBER, PASSWORD, client="192.0.2.7")
    org = await find_membership(db, done.user_id, "acme")
    assert org is not None
    log = await list_audit(db, org.org_id)
    assert [(a.action, a.client) for a in log[:2]] == [
        ("sign_in", "192.0.2.7"),
        ("sign_in.failed", "192.0.2.7"),
    ]
    assert "not it" not in str([a.as_json() for a in log])
    members = {
        m.email: m.last_sign_in for m in await list_members(db, "acme", who=OPERATOR_AUTHORITY)
    }
    assert members[MEMBER] is not None
    assert members[OWNER] is None


async def test_members_create_read_write_keys_only_where_the_organization_allows(
    db: Database,
) -> None:
    await _acme(db)
    member = await _as(db, MEMBER)
    with pytest.raises(Forbidden):
        member.require_key_scope("READ_WRITE")
    member.require_key_scope("READ_ONLY")
    with pytest.raises(Forbidden):
        await set_org_key_rules(db, "acme", who=member, by=Actor(MEMBER), members_write_keys=True)
    owner = await _as(db, OWNER)
    await set_org_key_rules(db, "acme", who=owner, by=ADA, members_write_keys=True)
    (await _as(db, MEMBER)).require_key_scope("READ_WRITE")
    with pytest.raises(Forbidden):
        (await _as(db, MEMBER)).require_key_scope("ADMIN")


async def test_a_maximum_key_lifetime_bounds_every_new_key(db: Database) -> None:
    await _acme(db)
    await set_org_key_rules(db, "acme", who=OPERATOR_AUTHORITY, by=OPERATOR, max_key_days=30)
    key, _token = await create_key(db, "acme", name="k", scope="READ_ONLY", created_by="t")
    assert key.expires is not None
    assert timedelta(days=29) < key.expires - key.created <= timedelta(days=30)
    with pytest.raises(ValidationFailed, match="at most 30 days"):
        await create_key(
            db, "acme", name="k2", scope="READ_ONLY", created_by="t", expires_in=timedelta(days=31)
        )
