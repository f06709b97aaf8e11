"""The connection to Trailmap's database: SQLite (embedded) or PostgreSQL, behind one interface.
How reads and writes are run, and when a write counts as stored: docs/internals.md."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import anyio.to_thread
import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from trailmap.errors import Unavailable

__all__ = ["Connection", "Database", "normalize_url"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# How many queued writes one SQLite transaction may take at most.
_MAX_GROUP = 128
# Execution option: this connection runs one statement and needs no BEGIN (SQLite).
_SINGLE_STATEMENT = "trailmap_single_statement"
# PostgreSQL's SQLSTATE for "relation does not exist".
_UNDEFINED_TABLE = "42P01"
# libpq's connection parameters, unless the database URL sets them (`?keepalives_idle=30`).
# A partition is then noticed by the kernel too: an idle connection after 10 + 3 x 5 s of
# unanswered keepalives, one with data unacknowledged after 25 s (tcp_user_timeout, in ms,
# set to the keepalives' total as it caps them). docs/operations.md, "When the network fails".
_LIBPQ_DEFAULTS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 25_000,
}
# /readyz waits on the database this long at most: probes give up after a second or two.
_READY_TIMEOUT_S = 2.0
# `close` waits this long at most for calls still running on worker threads.
_CLOSE_WAIT_S = 10.0


def normalize_url(url: str) -> str:
    """Accept the URLs people paste (postgres://, postgresql://) and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


class _Abandoned(Exception):
    """The request gave up on this call (its deadline passed): run nothing more for it."""


class _Call:
    """One database call on a worker thread, which the request waiting for it may abandon.

    While the call holds a connection its socket is known, so abandoning it shuts the socket
    down: the thread, blocked in libpq on a database that went silent (a partition), wakes
    with an error at once and gives its pool slot back, instead of waiting for TCP to give up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: int | None = None
        self.abandoned = False

    @contextmanager
    def holding(self, conn: Connection) -> Iterator[None]:
        """While `conn` serves this call (from checkout to before its return to the pool)."""
        fd = _socket_of(conn)
        with self._lock:
            if self.abandoned:
                raise _Abandoned
            self._socket = fd
        try:
            yield
        finally:
            with self._lock:
                self._socket = None

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            if self._socket is not None:
                _shut_down(self._socket)


@contextmanager
def _holding(call: _Call | None, conn: Connection) -> Iterator[None]:
    if call is None:
        yield
        return
    with call.holding(conn):
        yield


def _socket_of(conn: Connection) -> int | None:
    dbapi = conn.connection.dbapi_connection
    pgconn = getattr(dbapi, "pgconn", None)  # psycopg's; SQLite has no socket
    fd = getattr(pgconn, "socket", None)
    return fd if isinstance(fd, int) and fd >= 0 else None


def _shut_down(fd: int) -> None:
    """Shut the connection's socket down (both ways) without closing its descriptor, which
    libpq still owns: its blocked read returns at once, and the connection is discarded."""
    try:
        with socket.socket(fileno=os.dup(fd)) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing is waiting on it


@dataclass(eq=False)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)


class _SqliteWriter:
    """One thread, one connection, every write: queued jobs are committed together."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="trailmap-sqlite-writer", daemon=True
        )
        self._thread.start()

    def submit(self, job: _Job) -> concurrent.futures.Future[Any]:
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _take_group(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs = [first]
        while len(jobs) < _MAX_GROUP:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._take_group(first)
            self._commit_group(jobs)

    def _commit_group(self, jobs: list[_Job]) -> None:
        # A write whose caller gave up before it started is not made; once started, the
        # caller's cancellation no longer reaches its future, so giving the outcome to a
        # caller gone meanwhile cannot fail (and end this thread, and every write after it).
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        results: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}
        try:
            with self._engine.connect() as conn, conn.begin():
                if len(jobs) == 1:
                    job = jobs[0]
                    results[0] = job.fn(conn, *job.args, **job.kwargs)
                else:
                    # A savepoint per job: one failing request leaves the others' writes intact.
                    for i, job in enumerate(jobs):
                        try:
                            with conn.begin_nested():
                                results[i] = job.fn(conn, *job.args, **job.kwargs)
                        except Exception as error:  # noqa: BLE001 - handed to the waiting request
                            errors[i] = error
        except BaseException as error:  # noqa: BLE001 - every waiter must hear of the failure
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        for i, job in enumerate(jobs):
            if i in errors:
                job.future.set_exception(errors[i])
            else:
                job.future.set_result(results.get(i))


class Database:
    """The database a Trailmap process works on; see the module docstring for how writes flow."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        sqlite_synchronous: str = "NORMAL",
        statement_timeout_ms: int = 15000,
        pool_timeout_s: float = 5.0,
        call_timeout_s: float | None = None,
    ) -> None:
        """`call_timeout_s`: how long a request waits for one database call on PostgreSQL
        before it gets 503 and the call's connection is closed; None: the statement timeout
        plus 5 s (no limit when that is 0); 0: no limit."""
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        self._writer: _SqliteWriter | None = None
        self._writer_lock = threading.Lock()
        # Calls on worker threads whose caller may have gone (cancelled, or timed out):
        # `close` waits for them, or a connection they still hold would come back to a pool
        # already disposed, and never be closed.
        self._in_flight = 0
        self._settled = threading.Condition()
        if call_timeout_s is None:
            call_timeout_s = statement_timeout_ms / 1000 + 5 if statement_timeout_ms else 0
        self.call_timeout_s: float | None = call_timeout_s or None
        if self.is_sqlite:
            self._check_sqlite_url()
            self.engine = self._sqlite_engine(begin="BEGIN", synchronous=sqlite_synchronous)
            self.write_engine = self._sqlite_engine(
                begin="BEGIN IMMEDIATE", synchronous=sqlite_synchronous, single=True
            )
        else:
            options = f"-c statement_timeout={statement_timeout_ms}" if statement_timeout_ms else ""
            in_url = make_url(self.url).query
            libpq = {k: v for k, v in _LIBPQ_DEFAULTS.items() if k not in in_url}
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size * 2,
                pool_timeout=pool_timeout_s,
                # No pre-ping: it costs a round trip on every checkout. A connection found
                # dead invalidates the pool instead, and reads are retried once (below).
                json_serializer=_json_dumps,
                json_deserializer=orjson.loads,
                connect_args={**libpq, "options": options},
            )
            self.write_engine = self.engine
        # The same pool, for single statements: no BEGIN on SQLite, autocommit on PostgreSQL.
        self._single_engine = self.engine.execution_options(
            **({_SINGLE_STATEMENT: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        )

    def _check_sqlite_url(self) -> None:
        database = make_url(self.url).database
        if not database or database == ":memory:":
            raise ValueError(
                "Trailmap needs a SQLite file, not an in-memory database: "
                "use a URL such as sqlite:///./trailmap.db"
            )

    def _sqlite_engine(self, *, begin: str, synchronous: str, single: bool = False) -> Engine:
        engine = create_engine(
            self.url,
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            # The writer keeps its one connection open; readers share a pool.
            pool_size=1 if single else 20,
            max_overflow=0 if single else 20,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control from the sqlite3 module so BEGIN is ours to issue.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            if not conn.get_execution_options().get(_SINGLE_STATEMENT, False):
                conn.exec_driver_sql(begin)

        return engine

    # -- running work -------------------------------------------------------------------

    def read_sync(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn` in one read transaction: its statements see one snapshot."""
        with _unavailable_on_outage():
            return _retry_on_lost_connection(lambda: self._read(fn, args, kwargs, single=False))

    def read_one_sync(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run `fn`, which issues a single SELECT, without a transaction around it.

        One statement sees one snapshot anyway; BEGIN and COMMIT would only add two more
        statements (two more round trips on PostgreSQL) to the hottest reads.
        """
        with _unavailable_on_outage():
            return _retry_on_lost_connection(lambda: self._read(fn, args, kwargs, single=True))

    def _read(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        single: bool,
        call: _Call | None = None,
    ) -> T:
        engine = self._single_engine if single else self.engine
        with engine.connect() as conn, _holding(call, conn):
            if single:
                return fn(conn, *args, **kwargs)
            with conn.begin():
                return fn(conn, *args, **kwargs)

    def _bounded_read(
        self,
        call: _Call,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        single: bool,
    ) -> T:
        with _unavailable_on_outage():
            return _retry_on_lost_connection(
                lambda: self._read(fn, args, kwargs, single=single, call=call),
                unless=lambda: call.abandoned,
            )

    def _bounded_write(
        self, call: _Call, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        with (
            _unavailable_on_outage(),
            self.engine.connect() as conn,
            _holding(call, conn),
            conn.begin(),
        ):
            return fn(conn, *args, **kwargs)

    async def _within_deadline(
        self, work: Callable[[_Call], T], *, timeout_s: float | None = None
    ) -> T:
        """`work` on a worker thread, given up after the call timeout with 503: a database
        that stops answering (a partition) must not hold the request, or its connection."""
        limit = self.call_timeout_s if timeout_s is None else timeout_s
        call = _Call()
        if limit is None:
            return await anyio.to_thread.run_sync(lambda: self._counted(work, call))
        with anyio.move_on_after(limit):
            return await anyio.to_thread.run_sync(
                lambda: self._counted(work, call), abandon_on_cancel=True
            )
        call.abandon()
        log.warning("database call abandoned after %.1f s", limit)
        raise Unavailable(
            f"The database did not answer within {limit:g} s; retry in a few seconds."
        )

    def _counted(self, work: Callable[[_Call], T], call: _Call) -> T:
        with self._settled:
            self._in_flight += 1
        try:
            return work(call)
        finally:
            with self._settled:
                self._in_flight -= 1
                self._settled.notify_all()

    def write_sync(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self.is_sqlite:
            future = self._sqlite_writer().submit(_Job(fn, args, kwargs))
            with _unavailable_on_outage():
                result: T = future.result()
            return result
        with _unavailable_on_outage(), self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    async def read(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self.is_sqlite:
            return await anyio.to_thread.run_sync(lambda: self.read_sync(fn, *args, **kwargs))
        return await self._within_deadline(
            lambda call: self._bounded_read(call, fn, args, kwargs, single=False)
        )

    async def read_one(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`read_one_sync` on a worker thread: for one SELECT, such as a page of events."""
        if self.is_sqlite:
            return await anyio.to_thread.run_sync(lambda: self.read_one_sync(fn, *args, **kwargs))
        return await self._within_deadline(
            lambda call: self._bounded_read(call, fn, args, kwargs, single=True)
        )

    async def read_point(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """A single SELECT by unique key, such as finding an API key by its hash.

        SQLite answers one in microseconds, less than a hop to a worker thread costs, so on
        SQLite it runs right here; PostgreSQL answers over the network, so there it is an
        ordinary `read_one`. Use it only for reads an index bounds: a lookup of one row, or
        the first rows of an index range with no filter to check on the way.
        """
        if self.is_sqlite:
            return self.read_one_sync(fn, *args, **kwargs)
        return await self.read_one(fn, *args, **kwargs)

    async def write(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self.is_sqlite:
            future = self._sqlite_writer().submit(_Job(fn, args, kwargs))
            with _unavailable_on_outage():
                result: T = await asyncio.wrap_future(future)
            return result
        return await self._within_deadline(lambda call: self._bounded_write(call, fn, args, kwargs))

    def _sqlite_writer(self) -> _SqliteWriter:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = _SqliteWriter(self.write_engine)
        return self._writer

    async def write_in_chunks(
        self, fn: Callable[Concatenate[Connection, P], int], *args: P.args, **kwargs: P.kwargs
    ) -> int:
        """Repeat `fn`, a write of one chunk that returns how many rows it touched, each in
        its own short transaction (so other writes go on between), until it touches none;
        returns the total."""
        total = 0
        while removed := await self.write(fn, *args, **kwargs):
            total += removed
        return total

    def ping(self) -> None:
        """Raise `Unavailable` unless the database answers and holds the schema this code
        reads (its migration revision, read in one round trip like a `SELECT 1`)."""
        _check_schema(*self.read_one_sync(_schema_revision))

    async def check_ready(self) -> None:
        """`ping`, for /readyz: on PostgreSQL within a couple of seconds at most."""
        if self.is_sqlite:
            await anyio.to_thread.run_sync(self.ping)
            return
        limit = min(self.call_timeout_s or _READY_TIMEOUT_S, _READY_TIMEOUT_S)
        found = await self._within_deadline(
            lambda call: self._bounded_read(call, _schema_revision, (), {}, single=True),
            timeout_s=limit,
        )
        _check_schema(*found)

    def pool_status(self) -> dict[str, int]:
        """The readers' connection pool (on PostgreSQL, every request's): size, in use and
        opened beyond its size right now."""
        pool = self.engine.pool
        size = pool.size() if isinstance(pool, QueuePool) else 0
        checked_out = pool.checkedout() if isinstance(pool, QueuePool) else 0
        # QueuePool counts overflow from -size up; only connections past the size count.
        overflow = max(0, pool.overflow()) if isinstance(pool, QueuePool) else 0
        return {"size": size, "checked_out": checked_out, "overflow": overflow}

    def close(self) -> None:
        """Finish with the database: wait (a bounded while) for calls still running on worker
        threads for callers that went away, so their connections are back in the pool, then
        close every connection."""
        with self._settled:
            if not self._settled.wait_for(lambda: not self._in_flight, timeout=_CLOSE_WAIT_S):
                log.warning("closing with %d database calls still running", self._in_flight)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.engine.dispose()
        if self.write_engine is not self.engine:
            self.write_engine.dispose()


@contextmanager
def _unavailable_on_outage() -> Iterator[None]:
    """Turn "the database is down or overloaded" into a 503 the client may retry."""
    try:
        yield
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
        if isinstance(error, exc.OperationalError) and _is_sqlite_schema_error(error):
            raise
        log.warning("database unavailable: %s", type(error).__name__)
        raise Unavailable(
            "The database is not answering right now; retry in a few seconds."
        ) from error
    except exc.DBAPIError as error:
        if error.connection_invalidated:
            raise Unavailable(
                "The database connection was lost; retry in a few seconds."
            ) from error
        raise


def _retry_on_lost_connection(read: Callable[[], T], *, unless: Callable[[], bool] = bool) -> T:
    """Run a read, and once more if its pooled connection turned out to be dead (and
    `unless()` is false: a call its request abandoned is not tried again).

    After a database restart every pooled connection is stale; the first use of one
    invalidates the whole pool, and the retry gets a fresh connection. Only reads are
    retried: they are safe to repeat.
    """
    try:
        return read()
    except exc.DBAPIError as error:
        if not error.connection_invalidated or unless():
            raise
    return read()


def _check_schema(has_table: bool, revision: str | None) -> None:
    # migrate imports this module; the revisions it knows are read once, then cached.
    from trailmap.storage.migrate import schema_problem  # noqa: PLC0415

    problem = schema_problem(revision, has_table=has_table)
    if problem is not None:
        raise Unavailable(problem)


def _schema_revision(conn: Connection) -> tuple[bool, str | None]:
    """(whether Alembic's table is there, the revision it holds)."""
    try:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (exc.OperationalError, exc.ProgrammingError) as error:
        missing = getattr(error.orig, "sqlstate", None) == _UNDEFINED_TABLE or (
            isinstance(error, exc.OperationalError) and _is_sqlite_schema_error(error)
        )
        if not missing:
            raise
        return False, None
    return True, None if revision is None else str(revision)


def _is_sqlite_schema_error(error: exc.OperationalError) -> bool:
    # "no such table" is a missing migration, not an outage: let it surface as a bug.
    return "no such table" in str(error.orig) or "no such column" in str(error.orig)
