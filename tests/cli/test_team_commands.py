"""The team's lifecycle from the command line, with the console for the invited person's
side: invite, join, sign in, remove, disable, reset a password, read the audit log."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from click.testing import Result

from tests.cli.test_commands import invoke
from tests.forms import parse, sign_in
from trailmap.accounts import create_key
from trailmap.app import create_app
from trailmap.settings import Settings
from trailmap.storage import Database
from trailmap.storage import accounts as store

pytestmark = pytest.mark.anyio

_LINK = re.compile(r"^http://testserver/(invite|reset)/[\w-]{43}$")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        retention_purge_interval_seconds=0,
        public_url="http://testserver",
    )


@pytest.fixture
async def browser(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(settings, database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _run(database_url: str, *args: str, stdin: str | None = None) -> Result:
    """Run a command as the operator would (on a thread of its own: the CLI runs its own
    event loop), with the public URL set."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAILMAP_PUBLIC_URL", "http://testserver")
        return await anyio.to_thread.run_sync(
            functools.partial(invoke, database_url, *args, stdin=stdin)
        )


async def _cli(database_url: str, *args: str, stdin: str | None = None) -> str:
    """`_run`, which must succeed; its stdout."""
    result = await _run(database_url, *args, stdin=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


async def _choose_password(browser: httpx.AsyncClient, link: str, password: str) -> int:
    path = link.removeprefix("http://testserver")
    opened = await browser.get(path)
    assert opened.status_code == 200, opened.text
    form = parse(opened.text).form(path)
    sent = await browser.post(path, data=form.data(password=password, confirm=password))
    return sent.status_code


async def test_invite_join_and_remove_from_the_cli_locks_the_person_out_at_once(
    database_url: str, db: Database, browser: httpx.AsyncClient
) -> None:
    await _cli(database_url, "org", "create", "acme")
    link = await _cli(database_url, "member", "invite", "carol@acme.example", "--org", "acme")
    assert _LINK.match(link), link

    assert await _choose_password(browser, link, "carols own password") == 303
    assert (await browser.get("/orgs/acme/keys")).status_code == 200
    listed = await _cli(database_url, "member", "list", "--org", "acme")
    assert listed.startswith("carol@acme.example\tmember\t")
    carol = await db.read(store.get_user_by_email, "carol@acme.example")
    assert carol is not None
    _key, token = await create_key(
        db, "acme", name="carol's", scope="READ_ONLY", created_by="carol", user_id=carol["id"]
    )

    removed = await _cli(database_url, "member", "remove", "carol@acme.example", "--org", "acme")
    assert "carol's" in removed
    assert (await browser.get("/orgs/acme/keys")).status_code == 404
    auth = {"Authorization": f"Bearer {token}"}
    assert (await browser.get("/api/v1/events", headers=auth)).status_code == 401
    log = await _cli(database_url, "audit", "list", "--org", "acme")
    actions = [line.split("\t")[1] for line in log.splitlines()]
    assert actions[:2] == ["member.removed", "key.created"]
    assert {"member.invited", "member.joined", "sign_in"} <= set(actions)


async def test_a_user_created_without_a_password_gets_a_link_to_choose_one(
    database_url: str, browser: httpx.AsyncClient
) -> None:
    await _cli(database_url, "org", "create", "acme")
    link = await _cli(database_url, "user", "create", "dan@acme.example", "--org", "acme")
    assert _LINK.match(link), link
    assert await _choose_password(browser, link, "dans chosen password") == 303
    assert (await sign_in(browser, "dan@acme.example", "dans chosen password")).status_code == 303


async def test_a_password_for_an_existing_user_is_refused_not_silently_ignored(
    database_url: str,
) -> None:
    await _cli(database_url, "org", "create", "acme")
    await _cli(database_url, "org", "create", "other")
    await _cli(
        database_url,
        "user",
        "create",
        "eve@acme.example",
        "--org",
        "acme",
        "--password-stdin",
        stdin="eves first password\n",
    )
    again = await _run(
        database_url,
        "user",
        "create",
        "eve@acme.example",
        "--org",
        "other",
        "--password-stdin",
        stdin="another password!!\n",
    )
    assert again.exit_code != 0
    assert "has an account already" in again.output


async def test_reset_password_and_disable_from_the_cli(
    database_url: str, browser: httpx.AsyncClient
) -> None:
    await _cli(database_url, "org", "create", "acme")
    await _cli(
        database_url,
        "user",
        "create",
        "fay@acme.example",
        "--org",
        "acme",
        "--password-stdin",
        stdin="fays first password\n",
    )
    assert (await sign_in(browser, "fay@acme.example", "fays first password")).status_code == 303

    link = await _cli(database_url, "user", "reset-password", "fay@acme.example")
    assert _LINK.match(link), link
    assert await _choose_password(browser, link, "fays second password") == 303
    # The reset ended the session; the new password works, the old one does not.
    assert (await browser.get("/console")).headers["Location"].startswith("/login")
    assert (await sign_in(browser, "fay@acme.example", "fays first password")).status_code == 401
    assert (await sign_in(browser, "fay@acme.example", "fays second password")).status_code == 303

    await _cli(database_url, "user", "disable", "fay@acme.example")
    assert (await browser.get("/console")).headers["Location"].startswith("/login")
    assert (await sign_in(browser, "fay@acme.example", "fays second password")).status_code == 401
    await _cli(database_url, "user", "enable", "fay@acme.example")
    assert (await sign_in(browser, "fay@acme.example", "fays second password")).status_code == 303
