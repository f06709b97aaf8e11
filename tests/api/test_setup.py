"""First-run setup: the one-time link creates the owner, the organization and a first key."""

from __future__ import annotations

import re

import anyio
import httpx
import pytest

from tests.factories import event, make_org
from tests.forms import sign_in
from trailmap.accounts import list_orgs
from trailmap.accounts.setup import issue_setup_token, setup_also_joins, setup_is_open
from trailmap.accounts.users import user_exists
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database

pytestmark = pytest.mark.anyio


def _form_value(page: str, name: str) -> str:
    match = re.search(rf'name={name} value="([^"]*)"', page)
    assert match, f"no hidden field {name} in the page"
    return match.group(1)


async def _open_form(client: httpx.AsyncClient, token: str) -> dict[str, str]:
    page = await client.get(f"/setup?token={token}")
    assert page.status_code == 200
    assert "<form method=post action=/setup>" in page.text
    return {"token": _form_value(page.text, "token"), "csrf": _form_value(page.text, "csrf")}


async def test_the_setup_link_creates_the_owner_and_a_working_first_key(
    client: httpx.AsyncClient, db: Database
) -> None:
    token = await issue_setup_token(db)
    assert token is not None
    hidden = await _open_form(client, token)
    done = await client.post(
        "/setup",
        data={
            **hidden,
            "organization": "acme",
            "name": "Acme Inc.",
            "email": "Owner@Example.com",
            "password": "correct horse battery",
        },
    )
    assert done.status_code == 201, done.text
    key = re.search(r"<pre id=token>(tmk_[0-9A-Za-z]+)</pre>", done.text)
    assert key is not None
    sent = await client.post(
        "/api/v1/events", json=event(), headers={"Authorization": f"Bearer {key.group(1)}"}
    )
    assert sent.status_code == 201
    assert "owner@example.com" in done.text
    # The key and the command that sends an event can each be copied; the next step is linked.
    assert "<button type=button data-copy=token hidden>Copy the key</button>" in done.text
    assert "<button type=button data-copy=send hidden>Copy the command</button>" in done.text
    assert "<script src=/console/copy.js defer></script>" in done.text
    assert "<a href=/login>sign in</a>" in done.text


async def test_the_setup_link_works_only_once(client: httpx.AsyncClient, db: Database) -> None:
    token = await issue_setup_token(db)
    assert token is not None
    hidden = await _open_form(client, token)
    form = {
        **hidden,
        "organization": "acme",
        "name": "",
        "email": "a@example.com",
        "password": "0123456789",
    }
    assert (await client.post("/setup", data=form)).status_code == 201
    again = await client.post("/setup", data={**form, "organization": "other"})
    assert again.status_code == 403
    assert (await client.get(f"/setup?token={token}")).status_code == 403
    assert await issue_setup_token(db) is None


async def test_a_wrong_or_missing_setup_token_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    assert await issue_setup_token(db) is not None
    assert (await client.get("/setup?token=guess")).status_code == 403
    assert (await client.get("/setup")).status_code == 403


async def test_a_setup_form_without_its_csrf_cookie_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    token = await issue_setup_token(db)
    assert token is not None
    hidden = await _open_form(client, token)
    client.cookies.clear()
    response = await client.post(
        "/setup",
        data={**hidden, "organization": "acme", "email": "a@example.com", "password": "0123456789"},
    )
    assert response.status_code == 403
    assert "security check" in response.text


async def test_a_bad_setup_form_is_shown_again_with_the_problem(
    client: httpx.AsyncClient, db: Database
) -> None:
    token = await issue_setup_token(db)
    assert token is not None
    hidden = await _open_form(client, token)
    response = await client.post(
        "/setup",
        data={
            **hidden,
            "organization": "Not A Slug!",
            "email": "a@example.com",
            "password": "0123456789",
        },
    )
    assert response.status_code == 400
    assert "lower-case letters" in response.text
    assert 'value="Not A Slug!"' in response.text
    # The link still works after a mistake.
    assert (await client.get(f"/setup?token={token}")).status_code == 200


async def test_behind_https_the_setup_forms_csrf_cookie_is_secure_and_host_only(
    db: Database, database_url: str
) -> None:
    settings = Settings(
        database_url=database_url,
        public_url="https://trailmap.example",
        retention_purge_interval_seconds=0,
    )
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="https://trailmap.example") as https:
        token = await issue_setup_token(db)
        assert token is not None
        opened = await https.get(f"/setup?token={token}")
        cookie = opened.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        # __Host-: only this host may set or read it, over https, for the whole site.
        assert cookie.startswith("__Host-trailmap_csrf="), cookie
        assert {"secure", "httponly", "path"} <= attributes, cookie
        assert "path=/;" in cookie.lower().replace(" ", "") + ";", cookie
        assert "domain" not in attributes, cookie
        hidden = {
            "token": _form_value(opened.text, "token"),
            "csrf": _form_value(opened.text, "csrf"),
        }
        done = await https.post(
            "/setup",
            data={
                **hidden,
                "organization": "acme",
                "email": "a@example.com",
                "password": "0123456789",
            },
        )
        assert done.status_code == 201, done.text
        # The cookie is removed with the attributes it was set with, or a browser keeps it.
        removed = done.headers["set-cookie"]
        assert removed.startswith("__Host-trailmap_csrf="), removed
        assert "secure" in removed.lower(), removed


async def test_a_setup_whose_password_gets_no_turn_to_hash_leaves_the_link_working(
    settings: Settings, db: Database
) -> None:
    """The password is hashed before the link is spent: a 503 (and Retry-After) for want of
    a turn leaves no organization without an owner, and the link works once the flood ends."""
    flooded = settings.model_copy(
        update={"password_hashes_at_once": 1, "password_hash_wait_seconds": 0.05}
    )
    app = create_app(flooded, database=db)
    hashing = app.state.trailmap.passwords
    token = await issue_setup_token(db)
    assert token is not None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        hidden = await _open_form(client, token)
        form = {
            **hidden,
            "organization": "acme",
            "name": "",
            "email": "a@example.com",
            "password": "0123456789",
        }
        taken, done = anyio.Event(), anyio.Event()

        async def flood() -> None:
            async with hashing.turn():
                taken.set()
                await done.wait()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(flood)
            await taken.wait()
            refused = await client.post("/setup", data=form)
            done.set()
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1
        assert (await client.post("/setup", data=form)).status_code == 201


# -- a failing form spends nothing ------------------------------------------------------------


async def test_a_setup_form_whose_organization_is_taken_leaves_the_link_working(
    client: httpx.AsyncClient, db: Database
) -> None:
    """As after `serve --demo` or the README's `org create acme`: the slug is taken, the
    form says so, and the corrected form (same link, same page) creates the owner."""
    await make_org(db, slug="acme")
    token = await issue_setup_token(db)
    assert token is not None
    hidden = await _open_form(client, token)
    form = {
        **hidden,
        "organization": "acme",
        "name": "",
        "email": "owner@example.com",
        "password": "correct horse battery",
    }
    taken = await client.post("/setup", data=form)
    assert taken.status_code == 409, taken.text
    assert "An organization with the slug &#x27;acme&#x27; already exists." in taken.text
    assert "this link still works" in taken.text
    assert await setup_is_open(db, token)
    assert not await user_exists(db, "owner@example.com")
    # The re-rendered form carries the same token and CSRF value: correcting it is enough.
    again = {
        **form,
        "token": _form_value(taken.text, "token"),
        "csrf": _form_value(taken.text, "csrf"),
    }
    done = await client.post("/setup", data={**again, "organization": "acme-prod"})
    assert done.status_code == 201, done.text
    assert (await sign_in(client, "owner@example.com", "correct horse battery")).status_code == 303
    assert await _console_orgs(client) == ["acme-prod, owner"]


async def test_two_setup_forms_sent_at_once_make_one_owner(
    client: httpx.AsyncClient, db: Database
) -> None:
    token = await issue_setup_token(db)
    assert token is not None
    hidden = await _open_form(client, token)
    answers: dict[str, httpx.Response] = {}

    async def send(slug: str) -> None:
        answers[slug] = await client.post(
            "/setup",
            data={
                **hidden,
                "organization": slug,
                "email": f"{slug}@example.com",
                "password": "correct horse battery",
            },
        )

    async with anyio.create_task_group() as tasks:
        for slug in ("first", "second"):
            tasks.start_soon(send, slug)
    statuses = sorted(answer.status_code for answer in answers.values())
    assert statuses == [201, 403], {slug: a.text for slug, a in answers.items()}
    winner = next(slug for slug, answer in answers.items() if answer.status_code == 201)
    loser = "second" if winner == "first" else "first"
    assert "Setup link not valid" in answers[loser].text
    assert [org.slug for org in await list_orgs(db)] == [winner]
    assert await user_exists(db, f"{winner}@example.com")
    assert not await user_exists(db, f"{loser}@example.com")


async def test_the_owner_a_setup_link_of_serve_demo_makes_is_an_owner_of_the_demo_too(
    client: httpx.AsyncClient, db: Database
) -> None:
    await make_org(db, slug="demo")
    token = await issue_setup_token(db, also_join=("demo",))
    assert token is not None
    opened = await client.get(f"/setup?token={token}")
    assert "You will also be an owner of <b>demo</b>" in opened.text
    done = await client.post(
        "/setup",
        data={
            "token": _form_value(opened.text, "token"),
            "csrf": _form_value(opened.text, "csrf"),
            "organization": "acme",
            "email": "owner@example.com",
            "password": "correct horse battery",
        },
    )
    assert done.status_code == 201, done.text
    assert "You are an owner of <b>acme</b>, <b>demo</b>" in done.text
    assert (await sign_in(client, "owner@example.com", "correct horse battery")).status_code == 303
    assert sorted(await _console_orgs(client)) == ["acme, owner", "demo, owner"]


async def test_a_newer_setup_link_without_the_demo_forgets_the_demo(
    client: httpx.AsyncClient, db: Database
) -> None:
    """A restart without --demo prints a link whose owner joins nothing else."""
    await make_org(db, slug="demo")
    assert await issue_setup_token(db, also_join=("demo",)) is not None
    token = await issue_setup_token(db)
    assert token is not None
    opened = await client.get(f"/setup?token={token}")
    assert "also be an owner" not in opened.text
    assert await setup_also_joins(db) == []


async def _console_orgs(client: httpx.AsyncClient) -> list[str]:
    """The organizations the signed-in person's console lists, as `slug, role`."""
    home = await client.get("/console")
    if home.status_code == 303:  # one organization: /console leads to its Home
        home = await client.get(home.headers["Location"])
        assert home.status_code == 200, home.text
        found = re.findall(
            r"You are an? ([a-z]+) of <b>.*?</b> \(<code>([a-z0-9-]+)</code>\)", home.text
        )
        return [f"{slug}, {role}" for role, slug in found]
    assert home.status_code == 200, home.text
    return re.findall(r"</b> \(([a-z0-9-]+, [a-z]+)\)", home.text)
