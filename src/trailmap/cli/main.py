"""The `trailmap` command: parses arguments and calls the application, nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from trailmap import __version__
from trailmap.invocation import command
from trailmap.settings import Settings

if TYPE_CHECKING:
    from trailmap.demo.load import Repository

__all__ = ["cli", "main"]

T = TypeVar("T")


class _State:
    def __init__(self, database: str | None) -> None:
        self.database = database

    def settings(self, **overrides: Any) -> Settings:
        """The settings from the environment, with the command line's `--database` and
        `overrides` (options given) on top."""
        given = {name: value for name, value in overrides.items() if value is not None}
        if self.database:
            given["database_url"] = self.database
        return Settings(**given)

    def public_url(self, handle: Any) -> str:
        """The base of the links a command prints: TRAILMAP_PUBLIC_URL (or TRAILMAP_HOST and
        TRAILMAP_PORT) when set, else the URL the latest `serve` on this database named (it
        may have been moved with --port), else the default."""
        from trailmap.accounts.installation import served_public_url  # noqa: PLC0415

        settings = self.settings()
        if {"public_url", "host", "port"} & settings.model_fields_set:
            return settings.public_url
        return _run(served_public_url(handle)) or settings.public_url

    def database_handle(self) -> Any:
        from trailmap.app import open_database  # noqa: PLC0415 - keep `trailmap --help` fast

        return open_database(self.settings())

    def ready_database(self) -> Any:
        """`database_handle()`, once its schema is the one this version of Trailmap reads: a
        command that reads or writes data then fails with a sentence saying what to run,
        not with a traceback about a missing table."""
        from trailmap.storage import migrate  # noqa: PLC0415

        handle = self.database_handle()
        try:
            current, head = migrate.current_revision(handle), migrate.head_revision(handle)
        except Exception:
            handle.close()
            raise
        if current == head:
            return handle
        where = _redact(self.settings().database_url)
        handle.close()
        if current is None:
            problem = f"The database at {where} has no Trailmap tables yet"
        else:
            problem = (
                f"The database at {where} is at schema revision {current}; this version of "
                f"Trailmap needs {head}"
            )
        raise click.ClickException(
            f"{problem}: run `{command('db upgrade')}` first (`{command('serve')}` applies "
            "migrations on start unless --no-migrate)."
        )


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from trailmap.errors import TrailmapError  # noqa: PLC0415

    try:
        return asyncio.run(coro)
    except TrailmapError as error:
        raise click.ClickException(error.message) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="trailmap")
@click.option(
    "--database",
    envvar="TRAILMAP_DATABASE_URL",
    default=None,
    help="Database URL (default sqlite:///./trailmap.db; env TRAILMAP_DATABASE_URL).",
)
@click.pass_context
def cli(ctx: click.Context, database: str | None) -> None:
    """Trailmap: what changed in production, and how things connect."""
    ctx.obj = _State(database)


# -- serve ------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--host", default=None, help="Address to listen on (default 127.0.0.1; env TRAILMAP_HOST)."
)
@click.option(
    "--port", default=None, type=int, help="Port to listen on (default 8000; env TRAILMAP_PORT)."
)
@click.option("--database", "database_option", default=None, help="Database URL for this server.")
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations on start.")
@click.option(
    "--demo",
    is_flag=True,
    help="Load the demo organization on start, or run its shop on to now, and keep it running "
    "(traffic, deployments and other changes) while the server runs.",
)
@click.pass_obj
def serve(
    state: _State,
    host: str | None,
    port: int | None,
    database_option: str | None,
    no_migrate: bool,
    demo: bool,
) -> None:
    """Run the server; migrates the database on start unless --no-migrate. Without
    TRAILMAP_PUBLIC_URL, OAuth and the links it prints name the address it listens on."""
    import uvicorn  # noqa: PLC0415

    from trailmap.app import create_app  # noqa: PLC0415
    from trailmap.storage import migrate  # noqa: PLC0415

    if database_option:
        state.database = database_option
    settings = state.settings(host=host, port=port)
    db = state.database_handle()
    if not no_migrate:
        migrate.upgrade(db)
    report = None
    if demo:
        from trailmap.demo.load import load_demo  # noqa: PLC0415

        report = _run(load_demo(db, _DEMO, repository=_demo_repository(settings)))
    _print_welcome(db, settings, demo=_DEMO if report is not None else None, loaded=report)
    app = create_app(settings, database=db, live_demo=_DEMO if demo else None)
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            # X-Forwarded-For names the client only when it comes from a proxy trusted here.
            proxy_headers=True,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
    finally:
        db.close()


_DEMO = "demo"


def _print_welcome(
    db: Any, settings: Settings, *, demo: str | None, loaded: str | None = None
) -> None:
    """The banner: where the server is, and the one way in (docs: README, Quick start)."""
    from trailmap.accounts import list_orgs  # noqa: PLC0415
    from trailmap.accounts.installation import remember_public_url  # noqa: PLC0415
    from trailmap.accounts.setup import issue_setup_token  # noqa: PLC0415
    from trailmap.errors import TrailmapError, Unavailable  # noqa: PLC0415

    public = settings.public_url
    say = partial(click.echo, err=True)
    say(
        f"Trailmap {__version__} listening on http://{_host_in_url(settings.host)}:"
        f"{settings.port}  (database: {_redact(settings.database_url)})"
    )
    say(f"  Console:   {public}/console")
    say(f"  MCP:       {public}/mcp")
    say(f"  API docs:  {public}/docs")
    if note := _public_url_note(settings):
        say(f"  {note}")
    if loaded is not None:
        say(f"  Loaded the {loaded}.")
    try:
        token = asyncio.run(issue_setup_token(db, also_join=(demo,) if demo else ()))
    except Unavailable:
        # Started with --no-migrate while the database is down: serve anyway, unready, so
        # an orchestrator sees a live process and waits on /readyz instead of restarting it.
        say(
            "  The database does not answer yet: /readyz answers 503 until it does. A first "
            "start's setup link is printed by a start that reaches the database."
        )
        return
    except TrailmapError as error:
        raise click.ClickException(error.message) from None
    _run(remember_public_url(db, public))
    if token is not None:
        also = f" and an owner of the {demo} organization" if demo else ""
        say(
            "  First start: open this one-time link to create your account (the owner of your "
            f"organization{also}):\n    {public}/setup?token={token}"
        )
        say(f"  Then sign in at {public}/login and connect an assistant to {public}/mcp.")
    else:
        org = demo or "SLUG"
        whom = f"Not a member of {demo} yet?" if demo else "To add an account to an organization:"
        say(
            f"  Sign in at {public}/login. {whom}\n"
            f"    {command(f'user create you@example.com --org {org}')}\n"
            "  adds you, and prints a one-time link to choose a password if you are new."
        )
    if not _run(list_orgs(db)):
        say(
            "  Or create an organization and a key to send events with from the command line:\n"
            f"    {command('org create acme')}\n"
            f"    {command('key create --org acme --name ci --scope read-write')}"
        )


def _host_in_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _public_url_note(settings: Settings) -> str | None:
    """One line when OAuth and the links name another address than the one this server
    listens on: nothing is wrong behind a proxy, and everything is when it is a mistake."""
    from trailmap.settings import WILDCARD_HOSTS  # noqa: PLC0415

    public, local = settings.public_url, settings.listening_url
    if public != local:
        return (
            f"Public URL {public} (TRAILMAP_PUBLIC_URL) is not where this server listens "
            f"({local}): OAuth and links name it, so it must lead here."
        )
    if settings.host.strip() in WILDCARD_HOSTS:
        return (
            f"Listening on every address, but OAuth and links name {public}: set "
            "TRAILMAP_PUBLIC_URL to the URL other machines use (http://<this host>:"
            f"{settings.port})."
        )
    return None


def _demo_hint(report: str, slug: str, mcp_url: str) -> str:
    """What the demo holds, and the two ways to ask it."""

    return (
        f"  Loaded the {report}.\n"
        "  To ask it from an assistant, be a member of it (the account the setup link of\n"
        "  `serve --demo` makes is an owner; this adds you, and prints a password link if new),\n"
        f"    {command(f'user create you@example.com --org {slug}')}\n"
        "  and sign in with OAuth, or make a read-only key for a client without OAuth,\n"
        f"    {command(f'key create --org {slug} --name assistant --scope read-only')}\n"
        f"  then connect the assistant to {mcp_url} (docs/connect.md)."
    )


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}" if ":" in creds else url
    return url


# -- db ---------------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Apply or check database migrations."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(state: _State) -> None:
    """Apply every migration the database has not seen."""
    from trailmap.storage import migrate  # noqa: PLC0415

    handle = state.database_handle()
    try:
        migrate.upgrade(handle)
        click.echo(f"database at revision {migrate.current_revision(handle)}", err=True)
    finally:
        handle.close()


@db.command("check")
@click.pass_obj
def db_check(state: _State) -> None:
    """Fail when the database is not at head or the models and migrations differ."""
    from trailmap.storage import migrate  # noqa: PLC0415

    handle = state.database_handle()
    try:
        migrate.schema_check(handle)
    except migrate.SchemaDrift as error:
        raise click.ClickException(f"schema drift: {error}") from None
    finally:
        handle.close()
    click.echo("models and migrations agree", err=True)


@db.command("purge")
@click.pass_obj
def db_purge(state: _State) -> None:
    """Delete now what is past its time: events, metric points and span minutes older than
    each organization's retention window, and expired OAuth requests, codes and tokens and
    unused OAuth clients."""
    from trailmap.jobs.retention import purge_expired  # noqa: PLC0415

    handle = state.ready_database()
    try:
        report = _run(purge_expired(handle))
    finally:
        handle.close()
    click.echo(
        f"deleted {report.deleted} events across {report.organizations} organizations", err=True
    )
    oauth = report.oauth
    click.echo(
        f"deleted {oauth.requests} expired OAuth requests, {oauth.codes} codes, "
        f"{oauth.tokens} tokens and {oauth.clients} unused clients",
        err=True,
    )


# -- org --------------------------------------------------------------------------------


@cli.group()
def org() -> None:
    """Create and list organizations."""


@org.command("create")
@click.argument("slug")
@click.option("--name", default=None, help="Display name (default: the slug).")
@click.option(
    "--plan",
    type=click.Choice(["self-hosted", "free", "starter", "pro"]),
    default="self-hosted",
    show_default=True,
)
@click.pass_obj
def org_create(state: _State, slug: str, name: str | None, plan: str) -> None:
    """Create an organization."""
    from trailmap.accounts import create_org  # noqa: PLC0415

    handle = state.ready_database()
    try:
        created = _run(create_org(handle, slug, name=name, plan=plan))
    finally:
        handle.close()
    click.echo(
        f"created organization {created.slug} ({created.plan.name}, "
        f"retention {created.retention_days} days)",
        err=True,
    )


@org.command("list")
@click.pass_obj
def org_list(state: _State) -> None:
    """List organizations."""
    from trailmap.accounts import list_orgs  # noqa: PLC0415

    handle = state.ready_database()
    try:
        for found in _run(list_orgs(handle)):
            click.echo(f"{found.slug}\t{found.plan.name}\t{found.retention_days}d\t{found.name}")
    finally:
        handle.close()


@org.command("retention")
@click.argument("slug")
@click.argument("days", type=int)
@click.pass_obj
def org_retention(state: _State, slug: str, days: int) -> None:
    """Set a self-hosted organization's retention window in days."""
    from trailmap.accounts.organizations import set_retention  # noqa: PLC0415

    handle = state.ready_database()
    try:
        updated = _run(set_retention(handle, slug, days))
    finally:
        handle.close()
    click.echo(f"{updated.slug} keeps events {updated.retention_days} days", err=True)


@org.command("keys")
@click.argument("slug")
@click.option(
    "--members-write-keys/--no-members-write-keys",
    default=None,
    help="Whether members (not only owners and admins) may create read-write keys.",
)
@click.option(
    "--max-key-days",
    default=None,
    help="The longest a new API key may live, in days; 'none' lifts the limit.",
)
@click.pass_obj
def org_keys(
    state: _State, slug: str, members_write_keys: bool | None, max_key_days: str | None
) -> None:
    """Set an organization's rules for API keys, and print them."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY, set_org_key_rules  # noqa: PLC0415

    days: int | bool | None = False
    if max_key_days is not None:
        try:
            days = None if max_key_days.lower() == "none" else int(max_key_days)
        except ValueError:
            raise click.BadParameter(
                "a number of days, or none", param_hint="--max-key-days"
            ) from None
    handle = state.ready_database()
    try:
        updated = _run(
            set_org_key_rules(
                handle,
                slug,
                who=OPERATOR_AUTHORITY,
                by=OPERATOR,
                members_write_keys=members_write_keys,
                max_key_days=days,
            )
        )
    finally:
        handle.close()
    longest = "no limit" if updated.max_key_days is None else f"{updated.max_key_days} days"
    writers = "everyone" if updated.members_write_keys else "owners and admins"
    click.echo(f"{updated.slug}: read-write keys by {writers}; keys live at most {longest}")


# -- user -------------------------------------------------------------------------------


@cli.group()
def user() -> None:
    """Create users and memberships."""


@user.command("create")
@click.argument("email")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option(
    "--role", type=click.Choice(["owner", "admin", "member"]), default="member", show_default=True
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def user_create(state: _State, email: str, org_slug: str, role: str, password_stdin: bool) -> None:
    """Create a user (or find them) and add them to an organization. Without
    --password-stdin, a new user gets a one-time link to choose their password."""
    from trailmap.accounts import add_user  # noqa: PLC0415
    from trailmap.accounts.users import user_exists  # noqa: PLC0415

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    handle = state.ready_database()
    try:
        if password is not None and _run(user_exists(handle, email)):
            raise click.ClickException(
                f"{email} has an account already, with a password of their own; add them "
                "without --password-stdin, or give them a reset link "
                f"({command(f'user reset-password {email}')})."
            )
        added = _run(add_user(handle, email, org_slug=org_slug, role=role, password=password))
        verb = "created" if added.created else "added existing user"
        click.echo(f"{verb} {added.email} as {added.role} of {added.org_slug}", err=True)
        if added.created and password is None:
            _print_reset_link(state, handle, added.email, "to choose a password and sign in")
        elif not added.created:
            login = f"{state.public_url(handle)}/login"
            click.echo(f"{added.email} signs in with their own password at {login}", err=True)
    finally:
        handle.close()


def _print_reset_link(state: _State, handle: Any, email: str, purpose: str) -> None:
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.mail import mail_configured, send_mail  # noqa: PLC0415
    from trailmap.accounts.team import issue_password_reset  # noqa: PLC0415

    settings = state.settings()
    minutes = settings.reset_link_minutes
    token = _run(issue_password_reset(handle, email, minutes=minutes, by=OPERATOR))
    if token is None:
        raise click.ClickException(f"No enabled user has the address {email}.")
    link = f"{state.public_url(handle)}/reset/{token}"
    if mail_configured(settings):
        text = f"Open this link {purpose} (it works once, for {minutes} minutes):\n\n{link}\n"
        _run(send_mail(settings, email, "Your Trailmap password", text))
        click.echo(f"e-mailed the link to {email}", err=True)
    click.echo(
        f"send {email} this link {purpose} (it works once, for {minutes} minutes):", err=True
    )
    click.echo(link)


@user.command("reset-password")
@click.argument("email")
@click.pass_obj
def user_reset_password(state: _State, email: str) -> None:
    """Print a one-time link that sets a new password (and e-mail it, when a mail server is
    configured); every session of the user ends when it is used."""
    handle = state.ready_database()
    try:
        _print_reset_link(state, handle, email, "to set a new password")
    finally:
        handle.close()


@user.command("disable")
@click.argument("email")
@click.pass_obj
def user_disable(state: _State, email: str) -> None:
    """Disable a user everywhere: no sign-in, sessions ended now, personal API keys (and the
    AI clients connected through them) revoked; service-account keys stay."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import disable_user  # noqa: PLC0415

    handle = state.ready_database()
    try:
        revoked = _run(disable_user(handle, email, by=OPERATOR))
    finally:
        handle.close()
    click.echo(f"disabled {email}; {len(revoked)} personal keys revoked", err=True)
    for found in revoked:
        click.echo(f"{found['id']}\t{found['name']}\t{found['prefix']}")


@user.command("enable")
@click.argument("email")
@click.pass_obj
def user_enable(state: _State, email: str) -> None:
    """Let a disabled user sign in again (their revoked keys stay revoked)."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import enable_user  # noqa: PLC0415

    handle = state.ready_database()
    try:
        _run(enable_user(handle, email, by=OPERATOR))
    finally:
        handle.close()
    click.echo(f"enabled {email}", err=True)


# -- member -----------------------------------------------------------------------------


@cli.group()
def member() -> None:
    """An organization's members: list, invite, change roles, remove."""


@member.command("list")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.pass_obj
def member_list(state: _State, org_slug: str) -> None:
    """List members: e-mail, role, last sign-in, status."""
    from trailmap.accounts.team import OPERATOR_AUTHORITY, list_members  # noqa: PLC0415

    handle = state.ready_database()
    try:
        members = _run(list_members(handle, org_slug, who=OPERATOR_AUTHORITY))
    finally:
        handle.close()
    for found in members:
        seen = "never" if found.last_sign_in is None else found.last_sign_in.isoformat()
        status = "disabled" if found.disabled else "active"
        click.echo(f"{found.email}\t{found.role}\t{seen}\t{status}")


@member.command("invite")
@click.argument("email")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option(
    "--role", type=click.Choice(["owner", "admin", "member"]), default="member", show_default=True
)
@click.pass_obj
def member_invite(state: _State, email: str, org_slug: str, role: str) -> None:
    """Invite someone: prints the one-time link (and e-mails it when a mail server is
    configured). Accepting it sets their password and makes them a member."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.mail import mail_configured, send_mail  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY, invite  # noqa: PLC0415

    settings = state.settings()
    handle = state.ready_database()
    try:
        invitation = _run(
            invite(
                handle,
                org_slug,
                email,
                role,
                who=OPERATOR_AUTHORITY,
                by=OPERATOR,
                days=settings.invitation_days,
            )
        )
        link = invitation.link(state.public_url(handle))
        if mail_configured(settings):
            message = invitation.message(link)
            _run(send_mail(settings, invitation.email, invitation.subject, message))
            click.echo(f"e-mailed the invitation to {invitation.email}", err=True)
    finally:
        handle.close()
    click.echo(
        f"invited {invitation.email} as {invitation.role} of {invitation.org_slug}; the link "
        f"works once, until {invitation.expires:%Y-%m-%d %H:%M} UTC:",
        err=True,
    )
    click.echo(link)


@member.command("role")
@click.argument("email")
@click.argument("role", type=click.Choice(["owner", "admin", "member"]))
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.pass_obj
def member_role(state: _State, email: str, role: str, org_slug: str) -> None:
    """Change a member's role (an organization keeps at least one owner)."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY, change_role  # noqa: PLC0415

    handle = state.ready_database()
    try:
        _run(change_role(handle, org_slug, email, role, who=OPERATOR_AUTHORITY, by=OPERATOR))
    finally:
        handle.close()
    click.echo(f"{email} is now {role} of {org_slug}", err=True)


@member.command("remove")
@click.argument("email")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.pass_obj
def member_remove(state: _State, email: str, org_slug: str) -> None:
    """Remove a member; their personal keys in the organization are revoked at once."""
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY, remove_member  # noqa: PLC0415

    handle = state.ready_database()
    try:
        revoked = _run(remove_member(handle, org_slug, email, who=OPERATOR_AUTHORITY, by=OPERATOR))
    finally:
        handle.close()
    click.echo(f"removed {email} from {org_slug}; {len(revoked)} keys revoked", err=True)
    for found in revoked:
        click.echo(f"{found['id']}\t{found['name']}\t{found['prefix']}")


# -- audit ------------------------------------------------------------------------------


@cli.group()
def audit() -> None:
    """An organization's audit log."""


@audit.command("list")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 500))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def audit_list(state: _State, org_slug: str, limit: int, as_json: bool) -> None:
    """The latest entries, newest first: time, action, who, target, from where."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.audit import list_audit  # noqa: PLC0415

    handle = state.ready_database()
    try:
        entries = _run(list_audit(handle, _run(get_org(handle, org_slug)).id, limit=limit))
    finally:
        handle.close()
    for entry in entries:
        row = entry.as_json()
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                "\t".join(
                    str(row[k] or "") for k in ("time", "action", "actor", "target", "client")
                )
            )


# -- key --------------------------------------------------------------------------------


@cli.group()
def key() -> None:
    """Create, list and revoke API keys."""


@key.command("create")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--name", required=True, help="What the key is for, e.g. ci-deploys.")
@click.option("--scope", type=click.Choice(["read-only", "read-write", "admin"]), required=True)
@click.option("--expires", default=None, help="Lifetime such as 90d, 12h or 2w (default: never).")
@click.option(
    "--service-account",
    default="cli",
    show_default=True,
    help="Service account that owns the key (created when missing).",
)
@click.pass_obj
def key_create(
    state: _State, org_slug: str, name: str, scope: str, expires: str | None, service_account: str
) -> None:
    """Create an API key; prints the token alone on stdout, once."""
    from trailmap.accounts import create_key  # noqa: PLC0415
    from trailmap.accounts.keys import parse_scope  # noqa: PLC0415

    expires_in = _duration(expires) if expires else None
    handle = state.ready_database()
    try:
        created, token = _run(
            create_key(
                handle,
                org_slug,
                name=name,
                scope=parse_scope(scope),
                expires_in=expires_in,
                created_by=f"cli (service account {service_account})",
                service_account=service_account,
            )
        )
    finally:
        handle.close()
    click.echo(
        f"created {created.scope} key {created.id} ({created.name}) for {created.org_slug}; "
        "the token below is shown only now:",
        err=True,
    )
    click.echo(token)


def _duration(text: str, option: str = "--expires") -> timedelta:
    from trailmap.timeline.times import (  # noqa: PLC0415
        TimeExpressionError,
        parse_duration,
    )

    try:
        return parse_duration(text)
    except TimeExpressionError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


@key.command("list")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def key_list(state: _State, org_slug: str, as_json: bool) -> None:
    """List keys (never the secret)."""
    from trailmap.accounts import list_keys  # noqa: PLC0415

    handle = state.ready_database()
    try:
        keys = _run(list_keys(handle, org_slug))
    finally:
        handle.close()
    for found in keys:
        row = {
            "id": found.id,
            "name": found.name,
            "prefix": found.prefix,
            "scope": found.scope,
            "kind": found.kind,
            "status": found.status,
            "created_by": found.created_by,
            "created": found.created.isoformat(),
            "last_used": found.last_used.isoformat() if found.last_used else None,
            "expires": found.expires.isoformat() if found.expires else None,
        }
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{found.id}  {found.prefix}…  {found.scope:<10}  {found.status:<7}  "
                f"{found.name}  (last used {row['last_used'] or 'never'})"
            )


_TOKEN_PREFIXES = ("tmk_", "tma_", "tmr_")


@key.command("revoke")
@click.argument("key_id", required=False)
@click.option(
    "--token",
    "by_token",
    is_flag=True,
    help="Read a token from stdin (never the command line, which shell history keeps) and "
    "revoke the key it belongs to, in whatever organization: an API key (tmk_), or an OAuth "
    "access (tma_) or refresh (tmr_) token, whose key all the client's tokens die with.",
)
@click.pass_obj
def key_revoke(state: _State, key_id: str | None, by_token: bool) -> None:
    """Revoke a key, by KEY_ID or by a leaked token (--token); it is refused from the next
    request on.

    \b
    Examples:
      trailmap key revoke 0193f0a2-...
      pbpaste | trailmap key revoke --token
      trailmap key revoke --token < leaked.txt
    """
    if key_id is not None and key_id.startswith(_TOKEN_PREFIXES):
        # Not looked up, and not repeated: it is a secret, and now in the shell's history.
        raise click.UsageError(
            "That is a token, not a key id. Give it on stdin instead: "
            f"`{command('key revoke --token')}`, then paste it (and clear it from your shell "
            "history)."
        )
    if by_token and key_id is not None:
        raise click.UsageError("Give a KEY_ID or --token, not both.")
    if by_token:
        _revoke_by_token(state)
        return
    if key_id is None:
        raise click.UsageError("Give a KEY_ID, or --token with the token on stdin.")
    from trailmap.accounts import revoke_key  # noqa: PLC0415

    handle = state.ready_database()
    try:
        revoked = _run(revoke_key(handle, key_id))
    finally:
        handle.close()
    click.echo(f"revoked key {revoked.id} ({revoked.name}) of {revoked.org_slug}", err=True)


def _revoke_by_token(state: _State) -> None:
    from trailmap.accounts.keys import revoke_key_by_token  # noqa: PLC0415

    if sys.stdin.isatty():
        token = click.prompt("Token (not shown)", hide_input=True, err=True)
    else:
        token = sys.stdin.read()
    handle = state.ready_database()
    try:
        revoked, now_revoked = _run(revoke_key_by_token(handle, token))
    finally:
        handle.close()
    named = f"key {revoked.id} ({revoked.name}) of organization {revoked.org_slug}"
    if now_revoked:
        click.echo(f"revoked {named}; it is refused from the next request on", err=True)
    else:
        when = revoked.revoked.isoformat() if revoked.revoked else "earlier"
        click.echo(f"{named} was already revoked ({when}); nothing to do", err=True)


# -- integration ------------------------------------------------------------------------


@cli.group()
def integration() -> None:
    """An organization's integrations (GitHub and GitLab webhooks): make, list, rotate the
    secret, read the deliveries, remove. The secret is encrypted with TRAILMAP_SECRET_KEY."""


def _service_map(pairs: tuple[str, ...]) -> dict[str, str]:
    services: dict[str, str] = {}
    for pair in pairs:
        repo, sep, service = pair.partition("=")
        if not sep or not repo.strip() or not service.strip():
            raise click.BadParameter(
                f"{pair!r}: give owner/name=service", param_hint="--service-map"
            )
        services[repo.strip()] = service.strip()
    return services


def _pair(pair: str, option: str) -> tuple[str, str]:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise click.BadParameter(f"{pair!r}: give NAME=VALUE", param_hint=option)
    return key.strip(), value.strip()


@integration.command("create")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option(
    "--kind",
    type=click.Choice(["github", "gitlab", "kubernetes", "eks", "repository", "backstage"]),
    required=True,
)
@click.option("--name", required=True, help="What it is, e.g. acme-github (unique in the org).")
@click.option(
    "--service-map",
    "service_map",
    multiple=True,
    metavar="REPO=SERVICE",
    help="A repository's full name and its service (repeatable; unmapped repositories are "
    "services of their own name).",
)
@click.option(
    "--set",
    "settings_given",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting (repeatable): service (of every repository not mapped), branch (the "
    "default branch), url, context, region, cluster, default_env.",
)
@click.option(
    "--kubeconfig-file",
    "kubeconfig_file",
    type=click.File("r"),
    help="A kubernetes integration's kubeconfig, read from this file (or - for stdin) and "
    "stored encrypted; a bearer token or client certificate, no exec plugin or file paths.",
)
@click.option(
    "--env-map",
    "env_map",
    multiple=True,
    metavar="NS=ENV",
    help="A cluster's namespace and its environment, the events' subject (repeatable).",
)
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    metavar="NS",
    help="A cluster's namespace to watch (repeatable; every namespace when none is given).",
)
@click.pass_obj
def integration_create(
    state: _State,
    org_slug: str,
    kind: str,
    name: str,
    service_map: tuple[str, ...],
    settings_given: tuple[str, ...],
    kubeconfig_file: Any,
    env_map: tuple[str, ...],
    namespaces: tuple[str, ...],
) -> None:
    """Make an integration; prints it as JSON on stdout, with its webhook URL and its
    secret, which is shown only now."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.integrations.integrations import create_integration  # noqa: PLC0415

    settings: dict[str, object] = {"services": _service_map(service_map)}
    for pair in settings_given:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: give KEY=VALUE", param_hint="--set")
        settings[key.strip()] = value
    if kubeconfig_file is not None:
        settings["kubeconfig"] = kubeconfig_file.read()
    if env_map:
        settings["env_map"] = dict(_pair(p, "--env-map") for p in env_map)
    if namespaces:
        settings["namespaces"] = list(namespaces)
    handle = state.ready_database()
    try:
        made, secret = _run(
            create_integration(
                handle,
                _run(get_org(handle, org_slug)).id,
                who=OPERATOR_AUTHORITY,
                by=OPERATOR,
                kind=kind,
                name=name,
                settings=settings,
                secret_key=state.settings().encryption_secret,
            )
        )
        shown = made.as_json(state.public_url(handle))
    finally:
        handle.close()
    click.echo(
        f"created {made.kind} integration {made.id} ({made.name}) for {org_slug}; its secret "
        "is shown only now:",
        err=True,
    )
    click.echo(json.dumps(shown | {"secret": secret}))


@integration.command("list")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def integration_list(state: _State, org_slug: str, as_json: bool) -> None:
    """List integrations (never a secret): id, kind, status, name, last delivery."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.integrations.integrations import list_integrations  # noqa: PLC0415

    handle = state.ready_database()
    try:
        org_id = _run(get_org(handle, org_slug)).id
        found = _run(list_integrations(handle, org_id, who=OPERATOR_AUTHORITY))
        public_url = state.public_url(handle)
    finally:
        handle.close()
    for one in found:
        row = one.as_json(public_url)
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                f"{one.id}  {one.kind:<10}  {one.status:<8}  {one.name}  "
                f"(last delivery {row['last_delivery'] or 'never'})"
            )


@integration.command("rotate-secret")
@click.argument("integration_id")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option(
    "--overlap",
    default="24h",
    show_default=True,
    help="How long the previous secret is still accepted (0 ends it now; at most 7d).",
)
@click.pass_obj
def integration_rotate(state: _State, integration_id: str, org_slug: str, overlap: str) -> None:
    """A new secret, printed once on stdout; the previous one works for the overlap."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.integrations.integrations import rotate_secret  # noqa: PLC0415

    window = (
        timedelta(0) if overlap.strip() in ("0", "0s", "0h") else _duration(overlap, "--overlap")
    )
    handle = state.ready_database()
    try:
        rotated, secret = _run(
            rotate_secret(
                handle,
                _run(get_org(handle, org_slug)).id,
                integration_id,
                who=OPERATOR_AUTHORITY,
                by=OPERATOR,
                secret_key=state.settings().encryption_secret,
                overlap=window,
            )
        )
    finally:
        handle.close()
    until = rotated.previous_secret_until
    kept = (
        f"the previous one works until {until:%Y-%m-%d %H:%M} UTC"
        if until
        else "the previous one no longer works"
    )
    click.echo(
        f"rotated the secret of {rotated.name}; {kept}. The new secret, shown only now:", err=True
    )
    click.echo(secret)


@integration.command("deliveries")
@click.argument("integration_id")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 200))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_obj
def integration_deliveries(
    state: _State, integration_id: str, org_slug: str, limit: int, as_json: bool
) -> None:
    """The newest deliveries first: time, delivery id, event, outcome, reason, events made."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.integrations.deliveries import list_deliveries  # noqa: PLC0415

    handle = state.ready_database()
    try:
        org_id = _run(get_org(handle, org_slug)).id
        found = _run(
            list_deliveries(handle, org_id, integration_id, who=OPERATOR_AUTHORITY, limit=limit)
        )
    finally:
        handle.close()
    for one in found:
        row = one.as_json()
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(
                "\t".join(
                    [
                        row["received"],
                        one.delivery_id,
                        one.event_name or "",
                        one.outcome,
                        one.reason or "",
                        ",".join(one.event_ids),
                    ]
                )
            )


@integration.command("update")
@click.argument("integration_id")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.option("--name", default=None, help="A new name.")
@click.option("--status", type=click.Choice(["active", "disabled"]), default=None)
@click.option(
    "--service-map",
    "service_map",
    multiple=True,
    metavar="REPO=SERVICE",
    help="Replaces the repositories' services (repeatable).",
)
@click.option(
    "--set",
    "settings_given",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting to change (repeatable); KEY= with nothing after it removes it.",
)
@click.pass_obj
def integration_update(
    state: _State,
    integration_id: str,
    org_slug: str,
    name: str | None,
    status: str | None,
    service_map: tuple[str, ...],
    settings_given: tuple[str, ...],
) -> None:
    """Change an integration's name, status (a disabled one's webhook answers 404) or
    settings; prints it as JSON (never a secret)."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.integrations.integrations import update_integration  # noqa: PLC0415

    changes: dict[str, object] = {}
    if name is not None:
        changes["name"] = name
    if status is not None:
        changes["status"] = status
    settings: dict[str, object] = {}
    if service_map:
        settings["services"] = _service_map(service_map)
    for pair in settings_given:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: give KEY=VALUE", param_hint="--set")
        settings[key.strip()] = value or None
    if settings:
        changes["settings"] = settings
    if not changes:
        raise click.UsageError(
            "Name something to change: --name, --status, --service-map or --set."
        )
    handle = state.ready_database()
    try:
        changed = _run(
            update_integration(
                handle,
                _run(get_org(handle, org_slug)).id,
                integration_id,
                changes,
                who=OPERATOR_AUTHORITY,
                by=OPERATOR,
                secret_key=state.settings().encryption_secret,
            )
        )
        shown = changed.as_json(state.public_url(handle))
    finally:
        handle.close()
    click.echo(json.dumps(shown))


@integration.command("delete")
@click.argument("integration_id")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.pass_obj
def integration_delete(state: _State, integration_id: str, org_slug: str) -> None:
    """Remove an integration and its deliveries; its webhook answers 404 from now on (the
    events it made stay on the timeline)."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.audit import OPERATOR  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.graph.learn.declared import forget_source  # noqa: PLC0415
    from trailmap.integrations.integrations import delete_integration  # noqa: PLC0415

    handle = state.ready_database()
    try:
        org_id = _run(get_org(handle, org_slug)).id
        removed = _run(
            delete_integration(handle, org_id, integration_id, who=OPERATOR_AUTHORITY, by=OPERATOR)
        )
        # What it declared (a cluster's, a catalog's, a repository's) goes from the graph.
        _run(forget_source(handle, org_id, removed.id))
    finally:
        handle.close()
    click.echo(f"deleted integration {removed.id} ({removed.name}) of {org_slug}", err=True)


@integration.command("index")
@click.argument("integration_id")
@click.option("--org", "org_slug", required=True, help="Organization slug.")
@click.pass_obj
def integration_index(state: _State, integration_id: str, org_slug: str) -> None:
    """Index a repository integration now, in this process: its remote is fetched and read
    within the server's limits (TRAILMAP_REPOSITORY_*), and what it declares recorded. Prints
    the commit and what changed as JSON; exits 1 when it could not be read."""
    from trailmap.accounts import get_org  # noqa: PLC0415
    from trailmap.accounts.team import OPERATOR_AUTHORITY  # noqa: PLC0415
    from trailmap.ingest.repository_indexer import IndexOptions, index_now  # noqa: PLC0415
    from trailmap.integrations.integrations import get_integration  # noqa: PLC0415
    from trailmap.integrations.repositories import REPOSITORY_KIND  # noqa: PLC0415

    settings = state.settings()
    handle = state.ready_database()
    try:
        org_id = _run(get_org(handle, org_slug)).id
        found = _run(get_integration(handle, org_id, integration_id, who=OPERATOR_AUTHORITY))
        if found.kind != REPOSITORY_KIND:
            raise click.ClickException(
                f"{found.name} is a {found.kind} integration, not a repository"
            )
        outcome = _run(index_now(handle, found, IndexOptions.from_settings(settings)))
    finally:
        handle.close()
    if outcome is None:
        raise click.ClickException("another node is indexing it now; try again in a while")
    click.echo(json.dumps(outcome.as_json(), indent=2))
    if outcome.error is not None:
        raise click.ClickException(outcome.error)


# -- send -------------------------------------------------------------------------------


@cli.command()
@click.option("--type", "type_", required=True, help="deployment, rollback, config-change, ...")
@click.option("--source", required=True, help="Where it comes from, e.g. //github.com/acme/api.")
@click.option("--subject", default=None, help="The environment, e.g. production.")
@click.option("--service", default=None, help="The service it is about (default: from source).")
@click.option("--version", "version_", default=None, help="The version deployed.")
@click.option(
    "--severity", type=click.Choice(["LOW", "MINOR", "MAJOR", "CRITICAL"], case_sensitive=False)
)
@click.option("--description", default=None, help="A sentence for people.")
@click.option("--data", default=None, help="Extra JSON data.")
@click.option("--time", "time_", default=None, help="When it happened (default: now).")
@click.option("--id", "event_id", default=None, help="Event id (default: a new UUID).")
@click.option(
    "--url",
    envvar="TRAILMAP_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Server URL (env TRAILMAP_URL).",
)
@click.option(
    "--api-key",
    envvar="TRAILMAP_API_KEY",
    required=True,
    help="A read-write key (env TRAILMAP_API_KEY).",
)
@click.option(
    "--attempts",
    default=8,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Give up after this many tries.",
)
def send(
    type_: str,
    source: str,
    subject: str | None,
    service: str | None,
    version_: str | None,
    severity: str | None,
    description: str | None,
    data: str | None,
    time_: str | None,
    event_id: str | None,
    url: str,
    api_key: str,
    attempts: int,
) -> None:
    """Send one event to TRAILMAP_URL with TRAILMAP_API_KEY, retrying 429/5xx."""
    from trailmap.cli.send import RetryPolicy, SendFailed, build_event, send_event  # noqa: PLC0415

    parsed: Any = None
    if data is not None:
        try:
            parsed = json.loads(data)
        except ValueError as error:
            raise click.BadParameter(f"not valid JSON: {error}", param_hint="--data") from None
    event = build_event(
        type_=type_,
        source=source,
        subject=subject,
        version=version_,
        severity=severity.upper() if severity else None,
        description=description,
        data=parsed,
        time_=time_,
        service=service,
        event_id=event_id,
    )

    def on_retry(attempt: int, problem: str, wait: float) -> None:
        click.echo(f"attempt {attempt} failed ({problem}); retrying in {wait:.1f}s", err=True)

    try:
        result = send_event(
            url, api_key, event, policy=RetryPolicy(attempts=attempts), on_retry=on_retry
        )
    except SendFailed as error:
        raise click.ClickException(str(error)) from None
    data_out = result.body.get("data", {})
    stored = (data_out.get("accepted") or data_out.get("duplicates") or [{}])[0]
    state = "stored" if data_out.get("accepted") else "already stored (duplicate)"
    click.echo(
        f"{state}: {stored.get('id')}  (source {event['source']}, id {event['id']})", err=True
    )
    click.echo(stored.get("id") or "")


# -- agent ------------------------------------------------------------------------------


@cli.group()
def agent() -> None:
    """Watch a cluster from beside it and push its changes to a remote Trailmap."""


def _agent_options(function: Any) -> Any:
    options = [
        click.option(
            "--url",
            envvar="TRAILMAP_URL",
            required=True,
            help="The Trailmap server to push to (env TRAILMAP_URL).",
        ),
        click.option(
            "--key-env",
            default="TRAILMAP_API_KEY",
            show_default=True,
            help="The environment variable holding a READ_WRITE key (never the key itself).",
        ),
        click.option(
            "--namespace",
            "namespaces",
            multiple=True,
            help="Watch only this namespace (repeatable; default: all).",
        ),
        click.option(
            "--env-map",
            "env_map",
            multiple=True,
            metavar="NS=ENV",
            help="Namespace NS is environment ENV (repeatable).",
        ),
        click.option(
            "--default-env",
            default=None,
            help="The environment of unmapped namespaces (default: the namespace's name).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _agent_setup(
    url: str,
    key_env: str,
    namespaces: tuple[str, ...],
    env_map: tuple[str, ...],
    default: str | None,
) -> tuple[Any, Any]:
    from trailmap.cli.agent import Remote  # noqa: PLC0415
    from trailmap.ingest.kubernetes import EnvironmentMap  # noqa: PLC0415
    from trailmap.ingest.kubernetes_watch import WatchOptions  # noqa: PLC0415

    api_key = os.environ.get(key_env, "").strip()
    if not api_key:
        raise click.UsageError(f"set {key_env} to a READ_WRITE key of the remote Trailmap")
    try:
        environments = EnvironmentMap.parse(env_map, default=default)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--env-map") from None
    options = WatchOptions(environments=environments, namespaces=namespaces)
    return Remote(url=url, api_key=api_key), options


def _agent_report(line: str) -> None:
    click.echo(line, err=True)


@agent.command("kubernetes")
@_agent_options
@click.option("--kubeconfig", default=None, help="A kubeconfig file (default: ~/.kube/config).")
@click.option("--context", "kube_context", default=None, help="The kubeconfig context to use.")
@click.option("--in-cluster", is_flag=True, help="Use the pod's service account.")
@click.option("--cluster", "cluster_name", default=None, help="The cluster's name in events.")
@click.option(
    "--state-file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the watch state is kept, to resume without reporting old changes.",
)
def agent_kubernetes(
    url: str,
    key_env: str,
    namespaces: tuple[str, ...],
    env_map: tuple[str, ...],
    default_env: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    in_cluster: bool,
    cluster_name: str | None,
    state_file: Path,
) -> None:
    """Watch a Kubernetes cluster's rollouts, crash loops and ConfigMaps; push them to URL."""
    from dataclasses import replace  # noqa: PLC0415

    from trailmap.cli.agent import run_kubernetes_agent, run_until_stopped  # noqa: PLC0415

    if in_cluster and (kubeconfig or kube_context):
        raise click.UsageError("--in-cluster takes no --kubeconfig or --context")
    remote, options = _agent_setup(url, key_env, namespaces, env_map, default_env)
    options = replace(options, cluster=cluster_name or kube_context or "kubernetes")
    run_until_stopped(
        run_kubernetes_agent(
            remote,
            options,
            state_file,
            kubeconfig=kubeconfig,
            context=kube_context,
            in_cluster=in_cluster,
            report=_agent_report,
        )
    )


@agent.command("eks")
@_agent_options
@click.option(
    "--region", envvar="AWS_REGION", required=True, help="The AWS region (env AWS_REGION)."
)
@click.option("--cluster", "clusters", multiple=True, help="An EKS cluster's name (repeatable).")
@click.option("--all", "all_clusters", is_flag=True, help="Every cluster of the region.")
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where each cluster's watch state is kept (one file per cluster).",
)
def agent_eks(
    url: str,
    key_env: str,
    namespaces: tuple[str, ...],
    env_map: tuple[str, ...],
    default_env: str | None,
    region: str,
    clusters: tuple[str, ...],
    all_clusters: bool,
    state_dir: Path,
) -> None:
    """Find EKS clusters with the AWS API (default credential chain) and watch each one."""
    from trailmap.cli.agent import run_eks_agent, run_until_stopped  # noqa: PLC0415

    if bool(clusters) == all_clusters:
        raise click.UsageError("name clusters with --cluster, or give --all (not both)")
    remote, options = _agent_setup(url, key_env, namespaces, env_map, default_env)
    try:
        run_until_stopped(
            run_eks_agent(
                remote, options, state_dir, region=region, clusters=clusters, report=_agent_report
            )
        )
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None


# -- mcp --------------------------------------------------------------------------------


@cli.command("mcp")
@click.option("--stdio", is_flag=True, required=True, help="Serve MCP over standard input/output.")
@click.option(
    "--api-key",
    envvar="TRAILMAP_API_KEY",
    required=True,
    help="The key whose organization the tools answer for (env TRAILMAP_API_KEY).",
)
@click.pass_obj
def mcp_command(state: _State, stdio: bool, api_key: str) -> None:
    """Serve the MCP tools over stdio for the organization of TRAILMAP_API_KEY."""
    del stdio  # stdio is the only transport this command serves; the flag says so explicitly
    from trailmap.accounts import authenticate  # noqa: PLC0415
    from trailmap.app import stdio_mcp_server  # noqa: PLC0415

    handle = state.ready_database()
    # Checked now so a bad key fails at start; the server checks it again on every call.
    _run(authenticate(handle, api_key))
    server = stdio_mcp_server(state.settings(), handle, api_key)
    try:
        server.run("stdio")
    finally:
        handle.close()


# -- demo -------------------------------------------------------------------------------


@cli.command()
@click.option("--org", "org_slug", default="demo", show_default=True)
@click.option(
    "--reset",
    is_flag=True,
    help="Delete the organization's events, graph and metrics (its members and keys stay) "
    "and load the demo afresh.",
)
@click.pass_obj
def demo(state: _State, org_slug: str, reset: bool) -> None:
    """Load the demo organization: a small shop's architecture graph, learned from traces made
    with the OpenTelemetry SDK, and a week of deployments and other changes. Run again, it adds
    the shop's traffic and changes since the last time (at most the last 6 hours of traffic);
    `trailmap serve --demo` keeps the shop running. Applies the database's migrations first, as
    `trailmap serve` does."""
    from trailmap.demo.load import load_demo, reset_demo  # noqa: PLC0415
    from trailmap.storage import migrate  # noqa: PLC0415

    handle = state.database_handle()
    repository = _demo_repository(state.settings())
    try:
        migrate.upgrade(handle)
        report = _run((reset_demo if reset else load_demo)(handle, org_slug, repository=repository))
    finally:
        handle.close()
    click.echo(_demo_hint(report, org_slug, "<your server>/mcp"), err=True)


def _demo_repository(settings: Settings) -> Repository:
    """The demo's shop repository, read with the repository readers; its integration's
    secret is encrypted with the server's key (without one, no integration is made)."""
    from trailmap.demo.load import Repository  # noqa: PLC0415
    from trailmap.ingest.repository import read_repository  # noqa: PLC0415

    return Repository(read=read_repository, secret_key=settings.encryption_secret)


# `trailmap check` and `trailmap guardrail`, in a module of their own (it calls back `_run`).
from trailmap.cli.guardrails import check, guardrail  # noqa: E402

cli.add_command(check)
cli.add_command(guardrail)


def main() -> None:
    cli(prog_name="trailmap", auto_envvar_prefix=None)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
