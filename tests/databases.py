"""Real databases for tests: a migrated SQLite file per test, and PostgreSQL when one answers.

PostgreSQL comes from `TRAILMAP_TEST_DATABASE_URL` (a server URL whose user may create
databases) or from 127.0.0.1:5432. Each test run creates its own database and drops it at the
end. Under `CI=true` a missing PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from trailmap.storage import Database, migrate
from trailmap.storage.database import normalize_url

__all__ = ["PostgresServer", "find_postgres", "migrated_sqlite_template", "truncate_all"]

_DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str  # libpq form, e.g. postgresql://postgres@127.0.0.1:5432/postgres

    def url_for(self, name: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    def create_database(self, prefix: str = "trailmap_test") -> str:
        name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def find_postgres() -> PostgresServer | None:
    url = os.environ.get("TRAILMAP_TEST_DATABASE_URL") or _DEFAULT_SERVER
    url = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return None
    return PostgresServer(url)


def migrated_sqlite_template(directory: Path) -> Path:
    """Build the schema once with `alembic upgrade head`; tests copy the file."""
    path = directory / "template.db"
    db = Database(f"sqlite:///{path}")
    try:
        migrate.upgrade(db)
    finally:
        db.close()  # the last connection to close checkpoints the WAL into the file
    if path.with_name(path.name + "-wal").exists():
        raise RuntimeError("the template's WAL was not checkpointed; copying it would lose data")
    return path


def copy_sqlite(template: Path, target: Path) -> str:
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def truncate_all(url: str) -> None:
    """Empty every table but Alembic's, fast enough to run before each test."""
    with psycopg.connect(
        normalize_url(url).replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    ) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        ).fetchall()
        if rows:
            names = ", ".join(f'"{r[0]}"' for r in rows)
            conn.execute(f"TRUNCATE {names} CASCADE")
