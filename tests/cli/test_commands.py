"""The `trailmap` commands through click's runner, on a real database of each backend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests import databases
from tests.server import free_port, running_server
from tests.tcp_proxy import TcpProxy, port_of, through
from trailmap.accounts import authenticate
from trailmap.cli.main import cli
from trailmap.errors import Unauthorized
from trailmap.invocation import command
from trailmap.storage import Connection, Database

_TOKEN = re.compile(r"^tmk_[0-9A-Za-z]{49}$")


def invoke(database_url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--database", database_url, *args], input=stdin)


def create_key(database_url: str, org: str, name: str = "ci", *extra: str) -> Result:
    return invoke(
        database_url, "key", "create", "--org", org, "--name", name, "--scope", "read-write", *extra
    )


def listed_keys(database_url: str, org: str) -> list[dict[str, Any]]:
    result = invoke(database_url, "key", "list", "--org", org, "--json")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture
def empty_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of the same backend as `database_url` that was never migrated."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server = databases.find_postgres()
    assert server is not None
    name = server.create_database(prefix="trailmap_empty")
    try:
        yield server.url_for(name)
    finally:
        server.drop_database(name)


# -- db -----------------------------------------------------------------------------------


def test_db_upgrade_then_db_check_succeed(database_url: str) -> None:
    upgraded = invoke(database_url, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert "database at revision" in upgraded.stderr

    checked = invoke(database_url, "db", "check")
    assert checked.exit_code == 0, checked.output
    assert "models and migrations agree" in checked.stderr


def test_db_check_fails_on_a_database_that_was_never_migrated_and_says_what_to_do(
    empty_database_url: str,
) -> None:
    checked = invoke(empty_database_url, "db", "check")
    assert checked.exit_code != 0
    assert "schema drift" in checked.stderr
    assert "at revision none" in checked.stderr
    assert "run `trailmap db upgrade`" in checked.stderr

    assert invoke(empty_database_url, "db", "upgrade").exit_code == 0
    fixed = invoke(empty_database_url, "db", "check")
    assert fixed.exit_code == 0, fixed.output


def test_the_database_url_can_come_from_the_environment(database_url: str) -> None:
    runner = CliRunner()
    created = runner.invoke(
        cli, ["org", "create", "from-env"], env={"TRAILMAP_DATABASE_URL": database_url}
    )
    assert created.exit_code == 0, created.output
    assert invoke(database_url, "org", "list").stdout.startswith("from-env\t")


# -- org ------------------------------------------------------------------------------------


def test_org_create_on_the_free_plan_then_org_list_shows_it(database_url: str) -> None:
    created = invoke(database_url, "org", "create", "acme", "--name", "Acme Inc", "--plan", "free")
    assert created.exit_code == 0, created.output
    assert "created organization acme (free, retention 7 days)" in created.stderr
    assert created.stdout == ""

    assert invoke(database_url, "org", "create", "zeta").exit_code == 0
    listed = invoke(database_url, "org", "list")
    assert listed.exit_code == 0, listed.output
    assert sorted(listed.stdout.splitlines()) == [
        "acme\tfree\t7d\tAcme Inc",
        "zeta\tself-hosted\t365d\tzeta",
    ]


@pytest.mark.parametrize("slug", ["Acme", "acme_corp", "-acme", "acme-", "a" * 65, "acme prod"])
def test_org_create_refuses_a_bad_slug_with_a_clear_message(database_url: str, slug: str) -> None:
    result = invoke(database_url, "org", "create", "--", slug)
    assert result.exit_code != 0
    assert "slug: use 1 to 64 lower-case letters, digits and hyphens" in result.stderr
    assert invoke(database_url, "org", "list").stdout == ""


def test_org_create_refuses_a_slug_that_is_taken(database_url: str) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    again = invoke(database_url, "org", "create", "acme", "--plan", "pro")
    assert again.exit_code != 0
    assert "An organization with the slug 'acme' already exists." in again.stderr
    assert invoke(database_url, "org", "list").stdout.splitlines() == [
        "acme\tself-hosted\t365d\tacme"
    ]


def test_org_create_refuses_an_unknown_plan(database_url: str) -> None:
    result = invoke(database_url, "org", "create", "acme", "--plan", "gold")
    assert result.exit_code != 0
    assert "'gold' is not one of" in result.stderr


# -- user -------------------------------------------------------------------------------------


def test_user_create_stores_an_argon2id_hash_and_never_the_password(
    database_url: str, db: Database
) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    password = "correct horse battery staple"
    result = invoke(
        database_url,
        "user",
        "create",
        "Ada@Example.com",
        "--org",
        "acme",
        "--role",
        "owner",
        "--password-stdin",
        stdin=password + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "created ada@example.com as owner of acme" in result.stderr
    assert password not in result.output

    stored = db.read_sync(
        lambda conn: conn.exec_driver_sql("SELECT password_hash FROM users").scalar_one()
    )
    assert stored.startswith("$argon2id$")
    assert password not in stored


def test_user_create_refuses_a_password_that_is_too_short(database_url: str, db: Database) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    result = invoke(
        database_url,
        "user",
        "create",
        "ada@example.com",
        "--org",
        "acme",
        "--password-stdin",
        stdin="short\n",
    )
    assert result.exit_code != 0
    assert "password: use at least 10 characters" in result.stderr
    users = db.read_sync(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM users").scalar())
    assert users == 0


def test_user_create_in_an_unknown_organization_says_how_to_find_one(database_url: str) -> None:
    result = invoke(database_url, "user", "create", "ada@example.com", "--org", "nope")
    assert result.exit_code != 0
    assert "No organization has the slug 'nope'; see `trailmap org list`." in result.stderr


# -- key ---------------------------------------------------------------------------------------


def test_key_create_prints_the_token_alone_on_stdout_and_the_rest_on_stderr(
    database_url: str,
) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    result = create_key(database_url, "acme")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert result.stdout == lines[0] + "\n"
    assert _TOKEN.match(lines[0])
    assert "created READ_WRITE key" in result.stderr
    assert "shown only now" in result.stderr
    assert lines[0] not in result.stderr


def test_key_list_never_shows_the_secret_nor_its_hash(database_url: str) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    token = create_key(database_url, "acme", "ci-deploys").stdout.strip()
    digest = hashlib.sha256(token.encode()).hexdigest()

    for args in (("key", "list", "--org", "acme"), ("key", "list", "--org", "acme", "--json")):
        listed = invoke(database_url, *args)
        assert listed.exit_code == 0, listed.output
        assert "ci-deploys" in listed.stdout
        assert token not in listed.output
        assert token[:20] not in listed.output
        assert digest not in listed.output
        assert digest[:16] not in listed.output

    (row,) = listed_keys(database_url, "acme")
    assert set(row) == {
        "id",
        "name",
        "prefix",
        "scope",
        "kind",
        "status",
        "created_by",
        "created",
        "last_used",
        "expires",
    }
    assert token.startswith(row["prefix"])
    assert len(row["prefix"]) == 12
    assert row["status"] == "active"
    assert row["scope"] == "READ_WRITE"
    assert row["kind"] == "service account"  # the CLI's keys belong to one


def test_a_revoked_key_is_refused(database_url: str, db: Database) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    token = create_key(database_url, "acme").stdout.strip()
    principal = asyncio.run(authenticate(db, token))
    assert principal.org_slug == "acme"
    (row,) = listed_keys(database_url, "acme")

    revoked = invoke(database_url, "key", "revoke", row["id"])
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked key {row['id']} (ci) of acme" in revoked.stderr

    with pytest.raises(Unauthorized, match="revoked"):
        asyncio.run(authenticate(db, token))
    assert listed_keys(database_url, "acme")[0]["status"] == "revoked"


def test_revoking_an_unknown_key_id_is_refused(database_url: str) -> None:
    result = invoke(database_url, "key", "revoke", "00000000-0000-0000-0000-000000000000")
    assert result.exit_code != 0
    assert "No API key has the id" in result.stderr


def test_key_create_with_expires_90d_sets_an_expiry_ninety_days_out(database_url: str) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    before = datetime.now(UTC)
    result = create_key(database_url, "acme", "ci", "--expires", "90d")
    after = datetime.now(UTC)
    assert result.exit_code == 0, result.output
    (row,) = listed_keys(database_url, "acme")
    expires = datetime.fromisoformat(row["expires"])
    assert before + timedelta(days=90) <= expires <= after + timedelta(days=90)


@pytest.mark.parametrize("expires", ["soon", "-5d", "0d", "90"])
def test_key_create_refuses_an_expiry_that_is_not_a_positive_duration(
    database_url: str, expires: str
) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    result = create_key(database_url, "acme", "ci", "--expires", expires)
    assert result.exit_code == 2
    assert "Invalid value for --expires" in result.stderr
    assert result.stdout == ""
    assert listed_keys(database_url, "acme") == []


def test_a_free_organization_allows_two_api_keys_and_refuses_the_third_naming_the_plan(
    database_url: str,
) -> None:
    assert invoke(database_url, "org", "create", "acme", "--plan", "free").exit_code == 0
    assert create_key(database_url, "acme", "one").exit_code == 0
    assert create_key(database_url, "acme", "two").exit_code == 0

    third = create_key(database_url, "acme", "three")
    assert third.exit_code != 0
    assert third.stdout == ""
    assert "The free plan allows 2 active API keys and acme has 2" in third.stderr
    assert "trailmap key revoke KEY_ID" in third.stderr
    assert len(listed_keys(database_url, "acme")) == 2

    # A revoked key no longer counts against the plan.
    first_id = listed_keys(database_url, "acme")[0]["id"]
    assert invoke(database_url, "key", "revoke", first_id).exit_code == 0
    assert create_key(database_url, "acme", "three").exit_code == 0


def test_the_token_is_stored_only_as_its_sha256(database_url: str, db: Database) -> None:
    assert invoke(database_url, "org", "create", "acme").exit_code == 0
    token = create_key(database_url, "acme").stdout.strip()

    def every_value(conn: Connection) -> list[str]:
        rows = conn.exec_driver_sql("SELECT * FROM api_keys").fetchall()
        return [str(value) for row in rows for value in row]

    stored = db.read_sync(every_value)
    assert not any(token in value for value in stored)
    assert not any(token[len("tmk_") :] in value for value in stored)
    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_the_commands_open_the_database_with_the_configured_statement_timeout(
    postgres_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    from trailmap.cli.main import _State  # noqa: PLC0415 - the handle `serve` runs on

    monkeypatch.setenv("TRAILMAP_DB_STATEMENT_TIMEOUT_MS", "1234")
    db = _State(postgres_url).database_handle()
    try:
        shown = db.read_one_sync(
            lambda conn: conn.exec_driver_sql("SHOW statement_timeout").scalar()
        )
    finally:
        db.close()
    assert shown == "1234ms"


# -- an unmigrated database -------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("org", "list"),
        ("org", "create", "acme"),
        ("key", "list", "--org", "acme"),
        ("db", "purge"),
    ],
)
def test_a_data_command_on_a_database_never_migrated_says_to_run_db_upgrade(
    empty_database_url: str, args: tuple[str, ...]
) -> None:
    result = invoke(empty_database_url, *args)
    assert result.exit_code == 1
    # The command to run, as it runs from here (tests/test_invocation.py).
    assert f"has no Trailmap tables yet: run `{command('db upgrade')}` first" in result.stderr
    assert "Traceback" not in result.output
    # The refusal is click's own exit, not an exception the runner caught on its way out.
    assert isinstance(result.exception, SystemExit)
    # Nothing was created behind the refusal: the database is still unmigrated.
    assert "at revision none" in invoke(empty_database_url, "db", "check").stderr


def test_demo_on_a_database_never_migrated_migrates_it_and_loads_the_demo(
    empty_database_url: str,
) -> None:
    loaded = invoke(empty_database_url, "demo")
    assert loaded.exit_code == 0, loaded.output
    assert invoke(empty_database_url, "db", "check").exit_code == 0
    assert invoke(empty_database_url, "org", "list").stdout.startswith("demo\t")
    # Nobody is a member of the demo: it says how to reach it.
    assert "Loaded the demo organization demo:" in loaded.stderr
    assert command("user create you@example.com --org demo") in loaded.stderr
    assert command("key create --org demo --name assistant --scope read-only") in loaded.stderr


# -- serve --------------------------------------------------------------------------------


def test_serve_no_migrate_starts_unready_while_postgresql_is_down_and_is_ready_once_it_answers(
    postgres_url: str | None, tmp_path: Path
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    # The server reaches PostgreSQL only through a proxy that is not listening yet: down.
    port = free_port()
    log = tmp_path / "server.log"
    proxied = through(postgres_url, port)
    with (
        running_server(proxied, log_path=log, args=("--no-migrate",)) as url,
        httpx.Client(base_url=url, timeout=30) as http,
    ):
        assert http.get("/healthz").status_code == 200
        unready = http.get("/readyz")
        assert unready.status_code == 503, unready.text
        assert unready.json()["code"] == "UNAVAILABLE"
        assert unready.headers["retry-after"].isdigit()
        with TcpProxy(port_of(postgres_url), port=port):
            deadline = time.monotonic() + 20
            while (ready := http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.05)  # polling readiness, bounded by the deadline
    assert "does not answer" in log.read_text()
