"""The database layer: SQLite's single writer groups writes without letting one spoil another,
and the schema comes from the migrations on both databases."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable
from typing import Any

import anyio
import psycopg
import pytest

from tests import databases
from tests.tcp_proxy import TcpProxy, port_of, through
from trailmap.errors import Unavailable
from trailmap.storage import Connection, Database, instance, migrate

pytestmark = pytest.mark.anyio

# A call to a silent database ends by then: the call timeout (1 s) plus a busy machine's lag.
_PARTITION_BOUND_S = 8.0


def _insert_setting(conn: Connection, name: str) -> str:
    conn.exec_driver_sql(
        "INSERT INTO instance_settings (name, value) VALUES (?, 'v')"
        if conn.dialect.name == "sqlite"
        else "INSERT INTO instance_settings (name, value) VALUES (%s, 'v')",
        (name,),
    )
    return name


def _fail_after_insert(conn: Connection, name: str) -> None:
    _insert_setting(conn, name)
    raise RuntimeError("this request fails after writing")


def _setting_names(conn: Connection) -> list[str]:
    rows: Any = conn.exec_driver_sql("SELECT name FROM instance_settings ORDER BY name")
    return [r[0] for r in rows]


async def test_concurrent_writes_are_all_committed(db: Database) -> None:
    names = [f"n{i:03d}" for i in range(200)]
    await asyncio.gather(*(db.write(_insert_setting, n) for n in names))
    assert await db.read(_setting_names) == names


async def test_a_failing_write_leaves_the_writes_grouped_with_it_intact(db: Database) -> None:
    jobs: list[Awaitable[object]] = [db.write(_insert_setting, f"ok{i:02d}") for i in range(20)]
    jobs.insert(10, db.write(_fail_after_insert, "doomed"))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], RuntimeError)
    stored = await db.read(_setting_names)
    assert "doomed" not in stored
    assert stored == [f"ok{i:02d}" for i in range(20)]


def _slow_insert(conn: Connection, name: str) -> str:
    time.sleep(0.3)
    return _insert_setting(conn, name)


async def test_a_sqlite_write_whose_caller_gives_up_leaves_the_next_writes_working(
    db: Database,
) -> None:
    # Cancelled while the write runs (a request that ended, a job stopped at shutdown): the
    # writes after it are made and acknowledged all the same. SQLite's one writer thread
    # makes every write; PostgreSQL's are each on a connection of their own.
    if not db.is_sqlite:
        pytest.skip("PostgreSQL has no single writer to lose")
    with anyio.move_on_after(0.05) as scope:
        await db.write(_slow_insert, "abandoned")
    assert scope.cancelled_caught
    with anyio.fail_after(10):
        await db.write(_insert_setting, "next")
        assert "next" in await db.read(_setting_names)


async def test_a_write_is_visible_to_reads_once_it_is_acknowledged(db: Database) -> None:
    await db.write(_insert_setting, "seen")
    assert await db.read(_setting_names) == ["seen"]


def test_the_migrated_schema_matches_the_models(db: Database) -> None:
    migrate.schema_check(db)  # raises SchemaDrift otherwise


def test_a_database_that_was_never_migrated_fails_the_schema_check(tmp_path: Any) -> None:
    empty = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(migrate.SchemaDrift, match="trailmap db upgrade"):
            migrate.schema_check(empty)
    finally:
        empty.close()


def test_upgrading_twice_is_harmless(db: Database) -> None:
    migrate.upgrade(db)
    assert migrate.current_revision(db) == migrate.head_revision(db)


def test_an_in_memory_sqlite_database_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=re.escape("sqlite:///./trailmap.db")):
        Database("sqlite:///:memory:")


async def test_a_database_that_does_not_answer_is_reported_unavailable() -> None:
    nowhere = Database("postgresql://postgres@127.0.0.1:1/nothing")
    try:
        with pytest.raises(Unavailable):
            await nowhere.read(_setting_names)
        with pytest.raises(Unavailable):
            nowhere.ping()
    finally:
        nowhere.close()


async def test_reads_survive_the_database_dropping_every_pooled_connection(
    db: Database, database_url: str
) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no server to drop connections")
    await db.write(_insert_setting, "before")
    assert await db.read(_setting_names) == ["before"]  # the pool now holds a live connection
    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(database_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
    assert killed is not None
    assert killed[0] >= 1
    # The first read meets a dead connection; it is retried on a fresh one, not failed.
    assert await db.read(_setting_names) == ["before"]
    assert await db.read_one(_setting_names) == ["before"]


def _slow_read_holding(conn: Connection, held: list[Any], started: threading.Event) -> int:
    held.append(conn.connection.dbapi_connection)
    started.set()
    conn.exec_driver_sql("SELECT pg_sleep(0.5)")
    return 1


async def test_closing_waits_for_a_call_whose_caller_was_cancelled_and_closes_its_connection(
    database_url: str,
) -> None:
    # A background loop cancelled at shutdown leaves its call running on a worker thread; its
    # connection must be closed with the rest, not handed back to a pool already disposed.
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite calls are not abandoned: a cancelled one is waited for")
    database = Database(database_url)
    held: list[Any] = []
    started = threading.Event()
    task = asyncio.create_task(database.read_one(_slow_read_holding, held, started))
    await anyio.to_thread.run_sync(started.wait, 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not held[0].closed  # still running its statement
    database.close()
    assert held[0].closed


async def test_the_first_value_stored_for_a_setting_is_the_one_every_caller_gets(
    db: Database,
) -> None:
    candidates = [f"secret-{n}" for n in range(8)]
    got = await asyncio.gather(
        *(db.write(instance.first_setting, "shared", value) for value in candidates)
    )
    assert len(set(got)) == 1
    assert got[0] in candidates
    assert await db.write(instance.first_setting, "shared", "later") == got[0]


def _socket_options(conn: Connection) -> dict[str, int]:
    fd = conn.connection.dbapi_connection.pgconn.socket  # type: ignore[union-attr]
    with socket.socket(fileno=os.dup(fd)) as sock:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }


def _statement_timeout(conn: Connection) -> str:
    return str(conn.exec_driver_sql("SHOW statement_timeout").scalar())


async def test_every_postgresql_connection_has_tcp_keepalives_and_the_statement_timeout(
    postgres_url: str | None,
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    db = Database(postgres_url, statement_timeout_ms=4321)
    try:
        # Both ways a request reads (a transaction; one statement in autocommit), and a write.
        for _ in range(2):
            assert await db.read(_socket_options) == {
                "keepalive": 1,
                "idle": 10,
                "interval": 5,
                "count": 3,
                "user_timeout_ms": 25_000,
            }
            assert await db.read(_statement_timeout) == "4321ms"
            assert await db.read_one(_statement_timeout) == "4321ms"
            assert await db.write(_statement_timeout) == "4321ms"
            db.engine.dispose()  # and on fresh connections too
    finally:
        db.close()
    # A libpq parameter in the URL wins over Trailmap's default.
    tuned = Database(f"{postgres_url}?keepalives_idle=33")
    try:
        assert (await tuned.read_one(_socket_options))["idle"] == 33
    finally:
        tuned.close()


async def test_a_call_to_a_partitioned_postgresql_is_given_up_with_503_and_its_connection_freed(
    postgres_url: str | None,
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    with TcpProxy(port_of(postgres_url)) as proxy:
        db = Database(through(postgres_url, proxy.port), call_timeout_s=1.0)
        try:
            await db.read_one(_setting_names)  # the pool now holds a live connection
            proxy.partition()
            # Without a bound the read would wait for as long as the partition lasts.
            with anyio.fail_after(_PARTITION_BOUND_S):
                with pytest.raises(Unavailable, match="did not answer within 1 s"):
                    await db.read_one(_setting_names)
                with pytest.raises(Unavailable):
                    await db.write(_insert_setting, "during")
            # The abandoned calls' connections were shut, not left to hang: the pool is free.
            deadline = time.monotonic() + _PARTITION_BOUND_S
            while db.pool_status()["checked_out"]:
                assert time.monotonic() < deadline, db.pool_status()
                await anyio.sleep(0.05)  # polling the pool, bounded by the deadline
            proxy.heal()
            await db.write(_insert_setting, "after")
            assert "after" in await db.read(_setting_names)
        finally:
            proxy.heal()
            db.close()


def test_a_migration_waiting_for_another_nodes_is_not_cut_short_by_the_statement_timeout(
    postgres_url: str | None,
) -> None:
    if postgres_url is None:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    server = databases.find_postgres()
    assert server is not None
    name = server.create_database(prefix="trailmap_migrate")
    url = server.url_for(name)
    db = Database(url, statement_timeout_ms=200)
    try:
        with psycopg.connect(url, autocommit=True) as other_node:
            # Another node is migrating: it holds the migration lock.
            other_node.execute("SELECT pg_advisory_lock(7254839021)")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                upgrading = pool.submit(migrate.upgrade, db)
                deadline = time.monotonic() + 10
                waiting = (
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = %s)"
                )
                while other_node.execute(waiting, (name,)).fetchone() != (1,):
                    assert not upgrading.done(), upgrading.result()
                    assert time.monotonic() < deadline, "the upgrade never waited for the lock"
                    time.sleep(0.02)  # polling pg_locks, bounded by the deadline
                # Waiting longer than the statement timeout is no failure for a migration
                # (an index built on a large table takes minutes too).
                time.sleep(0.5)  # the wait itself is what is tested: longer than 200 ms
                other_node.execute("SELECT pg_advisory_unlock(7254839021)")
                upgrading.result(timeout=60)
        assert migrate.current_revision(db) == migrate.head_revision(db)
    finally:
        db.close()
        server.drop_database(name)
