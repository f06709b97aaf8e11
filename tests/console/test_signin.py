"""Signing in to the console: the CSRF-guarded form, the session cookie, the back-off against
password guessing, `next` that never leaves the server, signing out, and no framing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import httpx
import pytest

from tests.factories import make_org
from tests.forms import parse, set_cookies, sign_in
from trailmap import clock
from trailmap.accounts import add_user
from trailmap.accounts.passwords import PasswordHashing
from trailmap.accounts.signin import FREE_FAILURES
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio

EMAIL = "ada@acme.example"
PASSWORD = "correct horse battery"
SESSION = "trailmap_session"
LOGIN_CSRF = "trailmap_login_csrf"


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    org: str


@pytest.fixture
async def account(db: Database) -> Account:
    org = await make_org(db, slug="acme")
    await add_user(db, EMAIL, org_slug=org.slug, role="owner", password=PASSWORD)
    return Account(EMAIL, PASSWORD, org.slug)


@pytest.fixture
async def https_client(database_url: str, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        database_url=database_url,
        public_url="https://trailmap.example",
        retention_purge_interval_seconds=0,
    )
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://trailmap.example") as http:
        yield http


class Clock:
    """`trailmap.clock.now_us`, moved forward by however far a test says time has passed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._real = clock.now_us
        self._offset_us = 0
        monkeypatch.setattr(clock, "now_us", self.now_us)

    def now_us(self) -> int:
        return self._real() + self._offset_us

    def advance(self, seconds: float) -> None:
        self._offset_us += int(seconds * 1_000_000)


async def _signed_in(client: httpx.AsyncClient, account: Account) -> None:
    done = await sign_in(client, account.email, account.password)
    assert done.status_code == 303, done.text


# -- the form and the session cookie ---------------------------------------------------------


async def test_the_sign_in_form_carries_a_csrf_field_matching_a_strict_http_only_cookie(
    client: httpx.AsyncClient, account: Account
) -> None:
    opened = await client.get("/login")
    assert opened.status_code == 200
    form = parse(opened.text).form("/login")
    assert form.method == "post"
    assert set(form.inputs) == {"email", "password"}
    assert form.hidden["csrf"]
    cookie = set_cookies(opened)[LOGIN_CSRF]
    assert cookie.value == form.hidden["csrf"]
    assert cookie.has("HttpOnly")
    assert (cookie.get("SameSite") or "").lower() == "strict"
    assert cookie.get("Path") == "/"
    assert opened.headers["Cache-Control"] == "no-store"


async def test_signing_in_sets_an_http_only_lax_session_cookie_and_goes_to_next(
    client: httpx.AsyncClient, account: Account
) -> None:
    done = await sign_in(client, account.email, account.password, next_path="/orgs/acme/keys")
    assert done.status_code == 303, done.text
    assert done.headers["Location"] == "/orgs/acme/keys"
    cookie = set_cookies(done)[SESSION]
    assert cookie.value
    assert cookie.has("HttpOnly")
    assert (cookie.get("SameSite") or "").lower() == "lax"
    assert cookie.get("Path") == "/"
    assert not cookie.has("Secure")  # served over plain http here
    # The session is real: the page that sent the browser to sign in now opens.
    keys = await client.get("/orgs/acme/keys")
    assert keys.status_code == 200
    assert EMAIL in keys.text


async def test_signing_in_with_the_address_in_another_case_works(
    client: httpx.AsyncClient, account: Account
) -> None:
    done = await sign_in(client, "  ADA@Acme.Example ", account.password)
    assert done.status_code == 303
    assert done.headers["Location"] == "/console"


async def test_the_servers_address_leads_to_sign_in_then_to_the_console(
    client: httpx.AsyncClient, account: Account
) -> None:
    anonymous = await client.get("/")
    assert (anonymous.status_code, anonymous.headers["Location"]) == (303, "/login")
    # Following it, a person signs in and lands where `/` now leads: the console home.
    done = await sign_in(client, account.email, account.password)
    assert done.headers["Location"] == "/console"
    signed_in = await client.get("/")
    assert (signed_in.status_code, signed_in.headers["Location"]) == (303, "/console")
    # A member of one organization is led on to its Home.
    home = await client.get("/console")
    assert (home.status_code, home.headers["Location"]) == (303, "/orgs/acme")
    assert "You are an owner of <b>acme</b>" in (await client.get("/orgs/acme")).text


@pytest.mark.parametrize("csrf", ["missing", "mismatched", "no cookie"])
async def test_a_sign_in_without_the_matching_csrf_is_refused_and_opens_no_session(
    client: httpx.AsyncClient, account: Account, csrf: str
) -> None:
    opened = await client.get("/login")
    data = parse(opened.text).form("/login").data(email=account.email, password=account.password)
    if csrf == "missing":
        del data["csrf"]
    elif csrf == "mismatched":
        # One character off (never the same one: a token starting with "x" once passed).
        data["csrf"] = ("y" if data["csrf"].startswith("x") else "x") + data["csrf"][1:]
    else:
        client.cookies.clear()  # the field is right, but no cookie vouches for it
    refused = await client.post("/login", data=data)
    assert refused.status_code == 403
    assert SESSION not in set_cookies(refused)
    assert SESSION not in client.cookies
    assert parse(refused.text).errors  # the page says why
    home = await client.get("/console")
    assert home.status_code == 303
    assert home.headers["Location"].startswith("/login")


async def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(
    client: httpx.AsyncClient, account: Account
) -> None:
    wrong = await sign_in(client, account.email, "not the password")
    unknown = await sign_in(client, "nobody@acme.example", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert parse(wrong.text).errors == parse(unknown.text).errors
    assert parse(wrong.text).errors  # and there is a message
    assert SESSION not in set_cookies(wrong)
    assert SESSION not in set_cookies(unknown)
    # The form comes back ready for another try.
    assert parse(wrong.text).form("/login").hidden["csrf"]


async def test_repeated_failures_block_even_the_right_password_and_each_new_failure_longer(
    client: httpx.AsyncClient, account: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    time = Clock(monkeypatch)
    for _ in range(FREE_FAILURES):
        failed = await sign_in(client, account.email, "not the password")
        assert failed.status_code == 401

    blocked = await sign_in(client, account.email, account.password)
    assert blocked.status_code == 429
    first_wait = int(blocked.headers["Retry-After"])
    assert 1 <= first_wait <= 2  # the FREE_FAILURES-th failure blocks for 2 s
    assert SESSION not in set_cookies(blocked)
    assert parse(blocked.text).errors

    time.advance(first_wait + 0.1)
    failed = await sign_in(client, account.email, "not the password")
    assert failed.status_code == 401  # the block is over: this one was checked, and failed

    blocked = await sign_in(client, account.email, account.password)
    assert blocked.status_code == 429
    second_wait = int(blocked.headers["Retry-After"])
    assert second_wait > first_wait
    assert 3 <= second_wait <= 4  # one failure more: twice as long

    # Blocked attempts are not counted: waiting out the block lets the right password in.
    time.advance(second_wait + 0.1)
    done = await sign_in(client, account.email, account.password)
    assert done.status_code == 303
    assert SESSION in set_cookies(done)


async def test_wrong_passwords_sent_at_once_get_no_more_checks_than_one_after_another(
    settings: Settings, db: Database, account: Account
) -> None:
    # Twelve browsers each open the form, then all post a wrong password at the same moment.
    # Checked one after another, the sixth would already be refused; sent together, no more
    # than FREE_FAILURES of them may reach the password check either.
    app = create_app(settings, database=db)
    transport = httpx.ASGITransport(app=app)
    statuses: list[int] = []
    async with AsyncExitStack() as stack:
        posts = []
        for _ in range(12):
            browser = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://testserver")
            )
            opened = await browser.get("/login")
            data = parse(opened.text).form("/login").data(email=EMAIL, password="not it")
            posts.append((browser, data))

        async def post(browser: httpx.AsyncClient, data: dict[str, str]) -> None:
            statuses.append((await browser.post("/login", data=data)).status_code)

        async with anyio.create_task_group() as group:
            for browser, data in posts:
                group.start_soon(post, browser, data)
    assert set(statuses) <= {401, 429}
    assert statuses.count(401) <= FREE_FAILURES, sorted(statuses)


async def test_failures_for_one_address_do_not_block_another(
    client: httpx.AsyncClient, account: Account, db: Database
) -> None:
    await add_user(db, "bob@acme.example", org_slug=account.org, password="bobs password")
    for _ in range(FREE_FAILURES + 1):
        await sign_in(client, account.email, "not the password")
    assert (await sign_in(client, account.email, account.password)).status_code == 429
    assert (await sign_in(client, "bob@acme.example", "bobs password")).status_code == 303


# -- where the browser goes afterwards -------------------------------------------------------

_ELSEWHERE = [
    "https://evil.example/",
    "//evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "\\\\evil.example",
    "javascript:alert(1)",
    "/\t/evil.example",
]


@pytest.mark.parametrize("target", _ELSEWHERE)
async def test_next_never_sends_the_browser_to_another_site(
    client: httpx.AsyncClient, account: Account, target: str
) -> None:
    opened = await client.get("/login", params={"next": target})
    form = parse(opened.text).form("/login")
    assert form.hidden["next"] == "/console"
    # A forged hidden field is checked again on the way in.
    data = form.data(email=account.email, password=account.password, next=target)
    done = await client.post("/login", data=data)
    assert done.status_code == 303
    assert done.headers["Location"] == "/console"
    # Already signed in, /login sends the browser on at once: still not elsewhere.
    again = await client.get("/login", params={"next": target})
    assert again.status_code == 303
    assert again.headers["Location"] == "/console"


async def test_next_keeps_a_path_on_this_server_with_its_query(
    client: httpx.AsyncClient, account: Account
) -> None:
    done = await sign_in(client, account.email, account.password, next_path="/console?tab=keys")
    assert done.headers["Location"] == "/console?tab=keys"


# -- behind https ----------------------------------------------------------------------------


async def test_behind_https_the_session_cookie_is_host_prefixed_secure_and_path_wide(
    https_client: httpx.AsyncClient, account: Account
) -> None:
    opened = await https_client.get("/login")
    csrf_cookie = set_cookies(opened)[f"__Host-{LOGIN_CSRF}"]
    assert csrf_cookie.has("Secure")
    assert csrf_cookie.get("Path") == "/"
    assert not csrf_cookie.has("Domain")
    form = parse(opened.text).form("/login")
    done = await https_client.post(
        "/login", data=form.data(email=account.email, password=account.password)
    )
    assert done.status_code == 303, done.text
    cookies = set_cookies(done)
    assert SESSION not in cookies
    session = cookies[f"__Host-{SESSION}"]
    assert session.value
    assert session.has("Secure")
    assert session.has("HttpOnly")
    assert session.get("Path") == "/"
    assert not session.has("Domain")
    assert (session.get("SameSite") or "").lower() == "lax"
    assert (await https_client.get("/console", follow_redirects=True)).status_code == 200


async def test_behind_https_signing_in_clears_the_login_csrf_cookie_so_a_browser_accepts_it(
    https_client: httpx.AsyncClient, account: Account
) -> None:
    # A browser ignores any Set-Cookie for a __Host- name that lacks Secure (RFC 6265bis
    # 4.1.3.2), so a deletion without it leaves the cookie in place.
    done = await sign_in(https_client, account.email, account.password)
    assert done.status_code == 303
    cleared = set_cookies(done)[f"__Host-{LOGIN_CSRF}"]
    assert cleared.deletes
    assert cleared.get("Path") == "/"
    assert cleared.has("Secure")


async def test_behind_https_signing_out_clears_the_session_cookie_so_a_browser_accepts_it(
    https_client: httpx.AsyncClient, account: Account
) -> None:
    await _signed_in(https_client, account)
    home = await https_client.get("/console", follow_redirects=True)
    out = await https_client.post("/logout", data={"csrf": parse(home.text).csrf})
    assert out.status_code == 303
    cleared = set_cookies(out)[f"__Host-{SESSION}"]
    assert cleared.deletes
    assert cleared.get("Path") == "/"
    assert cleared.has("Secure")


# -- signing out -----------------------------------------------------------------------------


async def test_signing_out_with_the_session_csrf_ends_the_session(
    client: httpx.AsyncClient, account: Account
) -> None:
    await _signed_in(client, account)
    keys = await client.get("/orgs/acme/keys")
    assert keys.status_code == 200
    session = client.cookies[SESSION]
    logout = parse(keys.text).form("/logout")
    out = await client.post("/logout", data=logout.data())
    assert out.status_code == 303
    assert out.headers["Location"] == "/login"
    assert set_cookies(out)[SESSION].deletes
    after = await client.get("/orgs/acme/keys")
    assert after.status_code == 303
    assert after.headers["Location"] == "/login?next=%2Forgs%2Facme%2Fkeys"
    # Ended on the server too: the old cookie, replayed, opens nothing.
    client.cookies.set(SESSION, session)
    replayed = await client.get("/orgs/acme/keys")
    assert replayed.status_code == 303


@pytest.mark.parametrize("csrf", ["missing", "wrong"])
async def test_signing_out_without_the_session_csrf_leaves_the_session_alone(
    client: httpx.AsyncClient, account: Account, csrf: str
) -> None:
    await _signed_in(client, account)
    data = {} if csrf == "missing" else {"csrf": "0" * 64}
    out = await client.post("/logout", data=data)
    assert out.status_code == 403
    assert SESSION not in set_cookies(out)
    assert (await client.get("/orgs/acme/keys")).status_code == 200


async def test_the_session_csrf_is_not_the_session_cookie(
    client: httpx.AsyncClient, account: Account
) -> None:
    await _signed_in(client, account)
    page = parse((await client.get("/console", follow_redirects=True)).text)
    assert page.csrf
    assert page.csrf != client.cookies[SESSION]


# -- framing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/login",
        "/orgs/acme",
        "/orgs/acme/connect",
        "/orgs/acme/quickstart",
        "/orgs/acme/keys",
        "/orgs/acme/service-accounts",
        "/orgs/no-such-org/keys",
        "/oauth/consent",
    ],
)
async def test_console_pages_cannot_be_framed(
    client: httpx.AsyncClient, account: Account, path: str
) -> None:
    if path != "/login":
        await _signed_in(client, account)
    response = await client.get(path)
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["X-Frame-Options"] == "DENY"
    csp = [p.strip() for p in response.headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- password hashes, a few at a time ---------------------------------------------------------


@asynccontextmanager
async def _every_hash_turn_taken(hashing: PasswordHashing) -> AsyncIterator[None]:
    """Hold every turn to hash, as a flood of sign-ins would, until the block ends."""
    taken, done = anyio.Event(), anyio.Event()

    async def hold() -> None:
        async with hashing.turn():
            taken.set()
            await done.wait()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(hold)
        await taken.wait()
        yield
        done.set()


async def test_a_sign_in_that_gets_no_turn_to_hash_in_time_is_answered_503_with_retry_after(
    settings: Settings, db: Database, account: Account
) -> None:
    flooded = settings.model_copy(
        update={"password_hashes_at_once": 1, "password_hash_wait_seconds": 0.05}
    )
    app = create_app(flooded, database=db)
    hashing = app.state.trailmap.passwords
    assert hashing.at_once == 1
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        async with _every_hash_turn_taken(hashing):
            refused = await sign_in(client, account.email, account.password)
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert "try again" in " ".join(parse(refused.text).errors)
        assert SESSION not in set_cookies(refused)
        # Once the flood is over, the same password signs in.
        assert (await sign_in(client, account.email, account.password)).status_code == 303
