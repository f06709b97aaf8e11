"""The API Keys and Service Accounts pages, driven as a browser drives them: who sees which
keys, a token shown once, revoking with confirmation and CSRF, and the plan's key limit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest

from tests.console.conftest import NewBrowser
from tests.factories import event, make_key, make_org
from tests.forms import Page, parse, sign_in
from trailmap.accounts import ApiKey, Organization, add_user, create_key, list_keys
from trailmap.accounts.service_accounts import list_service_accounts
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery"
OWNER = "ada@acme.example"
MEMBER = "bob@acme.example"
OUTSIDER = "carol@other.example"
_WHOLE_TOKEN = re.compile(r"tmk_[0-9A-Za-z]{49}")


@dataclass(frozen=True)
class Acme:
    org: Organization
    slug: str
    owner_id: str
    member_id: str
    owner: httpx.AsyncClient
    member: httpx.AsyncClient
    outsider: httpx.AsyncClient


async def _signed_in(browser: httpx.AsyncClient, email: str) -> httpx.AsyncClient:
    done = await sign_in(browser, email, PASSWORD)
    assert done.status_code == 303, done.text
    return browser


@pytest.fixture
async def acme(db: Database, new_browser: NewBrowser) -> Acme:
    org = await make_org(db, slug="acme")
    owner = await add_user(db, OWNER, org_slug=org.slug, role="owner", password=PASSWORD)
    member = await add_user(db, MEMBER, org_slug=org.slug, role="member", password=PASSWORD)
    other = await make_org(db, slug="other")
    await add_user(db, OUTSIDER, org_slug=other.slug, role="owner", password=PASSWORD)
    return Acme(
        org=org,
        slug=org.slug,
        owner_id=owner.id,
        member_id=member.id,
        owner=await _signed_in(new_browser(), OWNER),
        member=await _signed_in(new_browser(), MEMBER),
        outsider=await _signed_in(new_browser(), OUTSIDER),
    )


async def _open(browser: httpx.AsyncClient, path: str) -> Page:
    response = await browser.get(path)
    assert response.status_code == 200, response.text
    return parse(response.text)


async def _create_key(
    browser: httpx.AsyncClient, slug: str, name: str, *, scope: str = "read-only", expires: str = ""
) -> httpx.Response:
    """Fill in and send the Create a key form of the keys page; a key made is answered with
    a redirect (post, redirect, get) to the page that shows its token, which is followed."""
    form = (await _open(browser, f"/orgs/{slug}/keys")).form(f"/orgs/{slug}/keys")
    assert form.method == "post"
    offered = [o.value for o in form.selects["scope"]]
    # Owners and admins are offered every scope; members read-only (docs/operations.md).
    assert offered in (["read-only", "read-write", "admin"], ["read-only"]), offered
    posted = await browser.post(
        form.action, data=form.data(name=name, scope=scope, expires=expires)
    )
    return await _follow(browser, posted)


async def _follow(browser: httpx.AsyncClient, posted: httpx.Response) -> httpx.Response:
    """The page a made key's redirect leads to; any other answer as it is."""
    if posted.status_code != 303 or not posted.headers["Location"].endswith("/created"):
        return posted
    assert _WHOLE_TOKEN.search(posted.headers["Location"]) is None  # never in a URL
    return await browser.get(posted.headers["Location"])


def _token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.url.path.endswith("/created"), response.url
    token = parse(response.text).by_id["token"]
    assert _WHOLE_TOKEN.fullmatch(token), token
    return token


async def _api_status(browser: httpx.AsyncClient, token: str) -> int:
    response = await browser.get("/api/v1/events", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


async def _key_named(db: Database, slug: str, name: str) -> ApiKey:
    found = [k for k in await list_keys(db, slug) if k.name == name]
    assert len(found) == 1, found
    return found[0]


def _when(moment: datetime | None, never: str) -> str:
    return never if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def _expected_row(key: ApiKey, emails: dict[str, str] | None = None) -> list[str]:
    """Name, prefix, scope, kind, creator, created, last used, expiry, status; an AI client's
    key approved before approvals recorded e-mails names its approver by e-mail."""
    creator = key.created_by
    if creator.startswith("OAuth approval by user ") and emails and key.user_id in emails:
        creator = emails[key.user_id]
    return [
        key.name,
        f"{key.prefix}…",
        key.scope,
        key.kind,
        creator,
        _when(key.created, "?"),
        _when(key.last_used, "never"),
        _when(key.expires, "no expiry"),
        key.status,
    ]


# -- who sees which keys ---------------------------------------------------------------------


@pytest.fixture
async def every_kind(acme: Acme, db: Database, new_browser: NewBrowser) -> list[ApiKey]:
    """A key of each kind in acme: a service account's, the owner's (expiring), the member's,
    and one minted by an OAuth approval. The service account's has been used."""
    ci_token = await make_key(db, acme.org, scope="read-write", name="ci deploys")
    assert await _api_status(new_browser(), ci_token) == 200
    _token(
        await _create_key(acme.owner, acme.slug, "ada laptop", scope="read-write", expires="90d")
    )
    _token(await _create_key(acme.member, acme.slug, "bob notebook"))
    await create_key(
        db,
        acme.slug,
        name="MCP — Claude.ai",
        scope="READ_ONLY",
        created_by=f"OAuth approval by user {acme.member_id}",
        user_id=acme.member_id,
        oauth_client_id="claude-client",
    )
    return await list_keys(db, acme.slug)


async def test_an_owner_sees_every_key_of_the_organization_with_its_details(
    acme: Acme, every_kind: list[ApiKey]
) -> None:
    response = await acme.owner.get(f"/orgs/{acme.slug}/keys")
    assert response.status_code == 200
    for heading in ("Name", "Prefix", "Scope", "Kind", "Creator", "Created", "Last used"):
        assert f"<th>{heading}</th>" in response.text
    assert "<th>Expires</th>" in response.text
    rows = parse(response.text).rows
    assert set(rows) == {k.id for k in every_kind}
    emails = {acme.member_id: MEMBER}
    for key in every_kind:
        assert rows[key.id][:9] == _expected_row(key, emails)
    by_name = {k.name: k for k in every_kind}
    assert {k.kind for k in every_kind} == {"manual", "service account", "MCP"}
    assert by_name["ci deploys"].kind == "service account"
    assert by_name["MCP — Claude.ai"].kind == "MCP"
    assert by_name["ada laptop"].created_by == OWNER
    assert by_name["bob notebook"].created_by == MEMBER
    assert rows[by_name["ci deploys"].id][6] != "never"  # it was used
    assert rows[by_name["ada laptop"].id][7] != "no expiry"  # it expires in 90 days
    assert rows[by_name["bob notebook"].id][7] == "no expiry"
    # The owner may revoke any of them.
    hrefs = parse(response.text).hrefs()
    for key in every_kind:
        assert f"/orgs/{acme.slug}/keys/{key.id}/revoke" in hrefs


async def test_a_member_sees_only_their_own_keys(acme: Acme, every_kind: list[ApiKey]) -> None:
    response = await acme.member.get(f"/orgs/{acme.slug}/keys")
    assert response.status_code == 200
    rows = parse(response.text).rows
    own = [k for k in every_kind if k.user_id == acme.member_id]
    assert {k.name for k in own} == {"bob notebook", "MCP — Claude.ai"}
    assert set(rows) == {k.id for k in own}
    for key in own:
        assert rows[key.id][:9] == _expected_row(key, {acme.member_id: MEMBER})
    for key in every_kind:
        if key not in own:
            assert key.name not in response.text
            assert key.prefix not in response.text


# -- creating a key --------------------------------------------------------------------------


async def test_a_new_key_is_shown_once_with_a_copy_button_and_works_on_the_api(
    acme: Acme, db: Database
) -> None:
    created = await _create_key(acme.owner, acme.slug, "ada laptop", scope="read-only")
    token = _token(created)
    page = parse(created.text)
    # The copy button, shown by the script, copies the element with id=token.
    assert re.search(r"<button type=button data-copy=token hidden>Copy</button>", created.text)
    assert "/console/copy.js" in page.scripts
    assert f"/orgs/{acme.slug}/keys" in page.hrefs()
    assert created.headers["Cache-Control"] == "no-store"

    script = await acme.owner.get("/console/copy.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "data-copy" in script.text

    assert await _api_status(acme.owner, token) == 200
    key = await _key_named(db, acme.slug, "ada laptop")
    assert key.scope == "READ_ONLY"
    assert token.startswith(key.prefix)

    again = await acme.owner.get(f"/orgs/{acme.slug}/keys")
    assert again.status_code == 200
    assert token not in again.text
    assert _WHOLE_TOKEN.search(again.text) is None
    assert "token" not in parse(again.text).by_id
    assert key.id in parse(again.text).rows


async def test_a_made_key_redirects_and_its_page_shows_the_token_once_and_makes_nothing_again(
    acme: Acme, db: Database
) -> None:
    form = (await _open(acme.owner, f"/orgs/{acme.slug}/keys")).form(f"/orgs/{acme.slug}/keys")
    posted = await acme.owner.post(form.action, data=form.data(name="once", scope="read-only"))
    assert posted.status_code == 303
    assert posted.headers["Location"] == f"/orgs/{acme.slug}/keys/created"
    assert _WHOLE_TOKEN.search(posted.text) is None
    assert len(await list_keys(db, acme.slug)) == 1

    # Another person's browser, even a member's of the organization, is shown no token.
    assert "token" not in parse((await acme.member.get(posted.headers["Location"])).text).by_id

    shown = await acme.owner.get(posted.headers["Location"])
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "no-store"
    token = _token(shown)
    assert token.startswith((await _key_named(db, acme.slug, "once")).prefix)
    assert "trailmap_new_token=" in shown.headers["set-cookie"]  # deleted as it is shown

    again = await acme.owner.get(posted.headers["Location"])  # the reload
    assert again.status_code == 200
    assert "shown once already" in again.text
    assert "token" not in parse(again.text).by_id
    assert _WHOLE_TOKEN.search(again.text) is None
    assert [k.name for k in await list_keys(db, acme.slug)] == ["once"]


async def test_a_token_cookie_for_a_key_of_another_organization_shows_nothing(
    acme: Acme, db: Database
) -> None:
    theirs = _token(await _create_key(acme.outsider, "other", "carol's key"))
    [key] = await list_keys(db, "other")
    acme.owner.cookies.set("trailmap_new_token", f"{key.id}:{theirs}")
    shown = await acme.owner.get(f"/orgs/{acme.slug}/keys/created")
    assert shown.status_code == 200
    assert theirs not in shown.text
    assert "token" not in parse(shown.text).by_id


async def test_creating_a_key_without_the_csrf_is_refused_and_makes_no_key(
    acme: Acme, db: Database
) -> None:
    refused = await acme.owner.post(
        f"/orgs/{acme.slug}/keys", data={"name": "sneaky", "scope": "read-write"}
    )
    assert refused.status_code == 403
    assert _WHOLE_TOKEN.search(refused.text) is None
    assert await list_keys(db, acme.slug) == []


@pytest.mark.parametrize(("name", "expires"), [("", ""), ("ok", "soon"), ("ok", "-5d")])
async def test_a_key_form_with_a_mistake_says_so_and_shows_no_token(
    acme: Acme, db: Database, name: str, expires: str
) -> None:
    response = await _create_key(acme.owner, acme.slug, name, expires=expires)
    assert 400 <= response.status_code < 500
    page = parse(response.text)
    assert page.errors
    assert "token" not in page.by_id
    assert _WHOLE_TOKEN.search(response.text) is None
    assert page.form(f"/orgs/{acme.slug}/keys").inputs["expires"] == expires  # kept for fixing
    assert await list_keys(db, acme.slug) == []


# -- revoking a key --------------------------------------------------------------------------


async def test_revoking_asks_first_and_then_the_token_stops_working(
    acme: Acme, db: Database
) -> None:
    token = _token(await _create_key(acme.owner, acme.slug, "ada laptop"))
    key = await _key_named(db, acme.slug, "ada laptop")
    revoke = f"/orgs/{acme.slug}/keys/{key.id}/revoke"
    assert revoke in (await _open(acme.owner, f"/orgs/{acme.slug}/keys")).hrefs()

    question = await _open(acme.owner, revoke)  # asking revokes nothing
    assert await _api_status(acme.owner, token) == 200
    form = question.form(revoke)
    assert form.method == "post"
    assert [(b.name, b.value) for b in form.buttons] == [("confirm", "yes")]
    assert f"/orgs/{acme.slug}/keys" in question.hrefs()  # and a way back

    done = await acme.owner.post(revoke, data=form.data(confirm="yes"))
    assert done.status_code == 303
    assert done.headers["Location"] == f"/orgs/{acme.slug}/keys"
    assert await _api_status(acme.owner, token) == 401
    listed = await _open(acme.owner, f"/orgs/{acme.slug}/keys")
    assert listed.rows[key.id][8] == "revoked"
    assert revoke not in listed.hrefs()


async def test_revoking_without_saying_yes_goes_back_to_the_question(
    acme: Acme, db: Database
) -> None:
    token = _token(await _create_key(acme.owner, acme.slug, "ada laptop"))
    key = await _key_named(db, acme.slug, "ada laptop")
    revoke = f"/orgs/{acme.slug}/keys/{key.id}/revoke"
    form = (await _open(acme.owner, revoke)).form(revoke)
    response = await acme.owner.post(revoke, data=form.data())
    assert response.status_code == 303
    assert response.headers["Location"] == revoke
    assert await _api_status(acme.owner, token) == 200


@pytest.mark.parametrize("csrf", ["missing", "another session's"])
async def test_revoking_without_the_session_csrf_is_refused_and_the_key_keeps_working(
    acme: Acme, db: Database, csrf: str
) -> None:
    token = _token(await _create_key(acme.owner, acme.slug, "ada laptop"))
    key = await _key_named(db, acme.slug, "ada laptop")
    revoke = f"/orgs/{acme.slug}/keys/{key.id}/revoke"
    data = {"confirm": "yes"}
    if csrf != "missing":
        data["csrf"] = (await _open(acme.member, f"/orgs/{acme.slug}/keys")).csrf
    refused = await acme.owner.post(revoke, data=data)
    assert refused.status_code == 403
    assert await _api_status(acme.owner, token) == 200
    assert (await _key_named(db, acme.slug, "ada laptop")).status == "active"


async def test_a_member_cannot_revoke_someone_elses_key_but_the_owner_can(
    acme: Acme, db: Database
) -> None:
    owners = _token(await _create_key(acme.owner, acme.slug, "ada laptop"))
    members = _token(await _create_key(acme.member, acme.slug, "bob notebook"))
    owners_key = await _key_named(db, acme.slug, "ada laptop")
    members_key = await _key_named(db, acme.slug, "bob notebook")

    revoke = f"/orgs/{acme.slug}/keys/{owners_key.id}/revoke"
    assert (await acme.member.get(revoke)).status_code == 404
    member_csrf = (await _open(acme.member, f"/orgs/{acme.slug}/keys")).csrf
    refused = await acme.member.post(revoke, data={"csrf": member_csrf, "confirm": "yes"})
    assert refused.status_code == 404
    assert await _api_status(acme.member, owners) == 200

    # The owner manages every key, the member's included.
    revoke = f"/orgs/{acme.slug}/keys/{members_key.id}/revoke"
    form = (await _open(acme.owner, revoke)).form(revoke)
    done = await acme.owner.post(revoke, data=form.data(confirm="yes"))
    assert done.status_code == 303
    assert await _api_status(acme.owner, members) == 401
    assert await _api_status(acme.owner, owners) == 200


async def test_a_key_of_another_organization_cannot_be_revoked_through_this_one(
    acme: Acme, db: Database
) -> None:
    theirs = _token(await _create_key(acme.outsider, "other", "carol's key"))
    key = await _key_named(db, "other", "carol's key")
    revoke = f"/orgs/{acme.slug}/keys/{key.id}/revoke"
    assert (await acme.owner.get(revoke)).status_code == 404
    csrf = (await _open(acme.owner, f"/orgs/{acme.slug}/keys")).csrf
    refused = await acme.owner.post(revoke, data={"csrf": csrf, "confirm": "yes"})
    assert refused.status_code == 404
    assert await _api_status(acme.owner, theirs) == 200


# -- who may open the pages at all -----------------------------------------------------------


@pytest.mark.parametrize("page", ["keys", "service-accounts", "keys/0123/revoke"])
async def test_an_organization_one_is_not_a_member_of_looks_like_one_that_does_not_exist(
    acme: Acme, page: str
) -> None:
    theirs = await acme.outsider.get(f"/orgs/{acme.slug}/{page}")
    nothing = await acme.outsider.get(f"/orgs/no-such-org/{page}")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.text == nothing.text
    assert "acme" not in theirs.text


async def test_a_non_member_cannot_create_keys_or_service_accounts_in_the_organization(
    acme: Acme, db: Database
) -> None:
    csrf = (await _open(acme.outsider, "/orgs/other/keys")).csrf
    key = await acme.outsider.post(
        f"/orgs/{acme.slug}/keys", data={"csrf": csrf, "name": "mine now", "scope": "read-write"}
    )
    account = await acme.outsider.post(
        f"/orgs/{acme.slug}/service-accounts", data={"csrf": csrf, "name": "mine-now"}
    )
    assert key.status_code == account.status_code == 404
    assert await list_keys(db, acme.slug) == []
    assert await list_service_accounts(db, acme.slug) == []


@pytest.mark.parametrize(
    "path", ["/orgs/acme/keys", "/orgs/acme/service-accounts", "/orgs/acme/keys/0123/revoke"]
)
async def test_a_signed_out_browser_is_sent_to_sign_in_and_then_back(
    acme: Acme, new_browser: NewBrowser, path: str
) -> None:
    browser = new_browser()
    away = await browser.get(path)
    assert away.status_code == 303
    location = away.headers["Location"]
    assert location == "/login?next=" + path.replace("/", "%2F")
    form = (await _open(browser, location)).form("/login")
    assert form.hidden["next"] == path
    back = await browser.post("/login", data=form.data(email=OWNER, password=PASSWORD))
    assert back.status_code == 303
    assert back.headers["Location"] == path


async def test_a_signed_out_browser_cannot_create_a_key(
    acme: Acme, db: Database, new_browser: NewBrowser
) -> None:
    response = await new_browser().post(
        f"/orgs/{acme.slug}/keys", data={"name": "anonymous", "scope": "read-write"}
    )
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/login?next=")
    assert await list_keys(db, acme.slug) == []


# -- service accounts ------------------------------------------------------------------------


async def test_an_owner_creates_a_service_account_and_a_token_that_works_on_the_api(
    acme: Acme, db: Database
) -> None:
    accounts = f"/orgs/{acme.slug}/service-accounts"
    form = (await _open(acme.owner, accounts)).form(accounts)
    created = await acme.owner.post(accounts, data=form.data(name="github-actions"))
    assert created.status_code == 303
    assert created.headers["Location"] == accounts
    [account] = await list_service_accounts(db, acme.slug)
    assert account.name == "github-actions"

    page = await _open(acme.owner, accounts)
    tokens = page.form(f"{accounts}/{account.id}/tokens")
    assert {o.value for o in tokens.selects["scope"]} == {"read-write", "read-only", "admin"}
    generated = await acme.owner.post(tokens.action, data=tokens.data(scope="read-write"))
    generated = await _follow(acme.owner, generated)
    token = _token(generated)
    assert "/console/copy.js" in parse(generated.text).scripts

    sent = await acme.owner.post(
        "/api/v1/events", json=event(), headers={"Authorization": f"Bearer {token}"}
    )
    assert sent.status_code == 201, sent.text
    assert await _api_status(acme.owner, token) == 200

    key = next(k for k in await list_keys(db, acme.slug) if k.service_account_id == account.id)
    assert key.kind == "service account"
    assert key.scope == "READ_WRITE"
    again = await acme.owner.get(accounts)
    assert token not in again.text
    assert key.id in parse(again.text).rows
    keys_page = await _open(acme.owner, f"/orgs/{acme.slug}/keys")
    assert keys_page.rows[key.id][3] == "service account"


async def test_a_member_cannot_create_a_service_account_or_generate_its_tokens(
    acme: Acme, db: Database
) -> None:
    accounts = f"/orgs/{acme.slug}/service-accounts"
    form = (await _open(acme.owner, accounts)).form(accounts)
    assert (await acme.owner.post(accounts, data=form.data(name="ci"))).status_code == 303
    [account] = await list_service_accounts(db, acme.slug)

    opened = await acme.member.get(accounts)
    assert opened.status_code == 200
    assert "<h2>ci</h2>" in opened.text  # a member sees the accounts
    page = parse(opened.text)
    assert not page.has_form(accounts)
    assert not page.has_form(f"{accounts}/{account.id}/tokens")
    refused = await acme.member.post(accounts, data={"csrf": page.csrf, "name": "members-ci"})
    assert refused.status_code == 403
    assert [a.name for a in await list_service_accounts(db, acme.slug)] == ["ci"]
    token = await acme.member.post(
        f"{accounts}/{account.id}/tokens", data={"csrf": page.csrf, "scope": "read-write"}
    )
    assert token.status_code == 403
    assert _WHOLE_TOKEN.search(token.text) is None
    assert await list_keys(db, acme.slug) == []


# -- the plan's key limit --------------------------------------------------------------------


@pytest.fixture
async def on_free_plan(db: Database, new_browser: NewBrowser) -> tuple[str, httpx.AsyncClient]:
    org = await make_org(db, plan="free", slug="tiny")
    assert org.plan.api_keys == 2
    await add_user(db, "dee@tiny.example", org_slug=org.slug, role="owner", password=PASSWORD)
    browser = new_browser()
    done = await sign_in(browser, "dee@tiny.example", PASSWORD)
    assert done.status_code == 303
    return org.slug, browser


async def test_keys_beyond_the_plans_limit_are_refused_with_an_error_and_no_token(
    on_free_plan: tuple[str, httpx.AsyncClient], db: Database
) -> None:
    slug, owner = on_free_plan
    first = _token(await _create_key(owner, slug, "one"))
    _token(await _create_key(owner, slug, "two"))

    refused = await _create_key(owner, slug, "three", scope="read-write")
    assert 400 <= refused.status_code < 500
    page = parse(refused.text)
    assert page.errors
    assert "plan" in page.errors[0]
    assert "token" not in page.by_id
    assert _WHOLE_TOKEN.search(refused.text) is None
    assert page.form(f"/orgs/{slug}/keys").inputs["name"] == "three"
    assert sorted(k.name for k in await list_keys(db, slug)) == ["one", "two"]

    # Revoking one makes room again.
    key = await _key_named(db, slug, "one")
    revoke = f"/orgs/{slug}/keys/{key.id}/revoke"
    form = (await _open(owner, revoke)).form(revoke)
    assert (await owner.post(revoke, data=form.data(confirm="yes"))).status_code == 303
    assert await _api_status(owner, first) == 401
    _token(await _create_key(owner, slug, "three"))


async def test_service_account_tokens_count_against_the_plans_key_limit(
    on_free_plan: tuple[str, httpx.AsyncClient], db: Database
) -> None:
    slug, owner = on_free_plan
    _token(await _create_key(owner, slug, "one"))
    _token(await _create_key(owner, slug, "two"))
    accounts = f"/orgs/{slug}/service-accounts"
    form = (await _open(owner, accounts)).form(accounts)
    assert (await owner.post(accounts, data=form.data(name="ci"))).status_code == 303
    [account] = await list_service_accounts(db, slug)
    tokens = (await _open(owner, accounts)).form(f"{accounts}/{account.id}/tokens")
    refused = await owner.post(tokens.action, data=tokens.data(scope="read-write"))
    assert 400 <= refused.status_code < 500
    assert parse(refused.text).errors
    assert _WHOLE_TOKEN.search(refused.text) is None
    assert len(await list_keys(db, slug)) == 2
