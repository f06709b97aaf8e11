"""A PostgreSQL cluster of a test's own: `initdb` into a temporary folder, trust auth, on a
free port of 127.0.0.1, so that a test may stop it, start it again or starve it without
touching the machine's PostgreSQL (5432 is never stopped, nor even connected to).

The binaries come from /usr/lib/postgresql/*/bin (the newest); without them the test is
skipped, or fails under `CI=true`. initdb and the server refuse to run as root, so as root
they run as the `postgres` user (`runuser -u postgres --`) in a folder that user owns.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest

from tests.server import free_port

__all__ = ["PostgresCluster", "find_binaries", "postgres_cluster"]

_SUPERUSER = "postgres"
_PG_CTL_TIMEOUT_S = 30
_SYSTEM_USER = "postgres"


def find_binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and pg_ctl."""
    candidates = [
        found.parent
        for found in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if found.with_name("pg_ctl").exists()
    ]

    def _version(path: Path) -> tuple[int, ...]:
        digits = path.parent.name.split(".")
        return tuple(int(d) for d in digits if d.isdigit())

    return max(candidates, key=_version, default=None)


def _as_root() -> bool:
    return os.geteuid() == 0


class PostgresCluster:
    """One PostgreSQL server in `directory` on `port`; `stop()` and `start()` make an outage."""

    def __init__(self, binaries: Path, directory: Path, port: int, *, fsync: bool) -> None:
        self.binaries = binaries
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        self.log = directory / "postgresql.log"
        self._fsync = fsync

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, name: str) -> str:
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            _SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",  # a throwaway cluster: no need to wait for the disk
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections (`pg_ctl -w`)."""
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.directory}",  # its Unix socket stays in our folder
                "-c listen_addresses=127.0.0.1",
                # fsync off only makes the scale-out and outage tests faster: they stop
                # PostgreSQL cleanly (pg_ctl stop) and never crash the machine. The crash
                # tests kill Trailmap's process, not PostgreSQL's, where fsync plays no part.
                f"-c fsync={'on' if self._fsync else 'off'}",
                "-c max_connections=200",  # several trailmap processes, each with its pool
            ]
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            str(_PG_CTL_TIMEOUT_S),
            "-o",
            options,
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: clients are disconnected, as a restart or failover does;
        `immediate`: as a crash of PostgreSQL does) and wait until it is down."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def is_running(self) -> bool:
        status = subprocess.run(
            self._command("pg_ctl", "-D", str(self.data), "status"),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def create_database(self, prefix: str = "trailmap") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def _command(self, program: str, *args: str) -> list[str]:
        command = [str(self.binaries / program), *args]
        if _as_root():
            return ["runuser", "-u", _SYSTEM_USER, "--", *command]
        return command

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            self._command(program, *args),
            capture_output=True,
            check=False,
            timeout=_PG_CTL_TIMEOUT_S + 30,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
                f"\n{log}"
            )


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _owned_folder() -> Path:
    """A private folder the server's user may write: as root, handed to `postgres` (and made
    in /tmp, because pytest's own tmp folders are root's alone and closed to others)."""
    directory = Path(tempfile.mkdtemp(prefix="trailmap-pg-"))
    if _as_root():
        user = pwd.getpwnam(_SYSTEM_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)
    directory.chmod(0o700)
    return directory


@contextmanager
def postgres_cluster(*, fsync: bool = False) -> Iterator[PostgresCluster]:
    """A started cluster of the test's own; stopped (immediately) and deleted afterwards."""
    binaries = find_binaries()
    if binaries is None:
        _unavailable("no PostgreSQL binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin")
    if _as_root():
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run initdb as")
    directory = _owned_folder()
    cluster = PostgresCluster(binaries, directory, free_port(), fsync=fsync)
    try:
        cluster.initdb()
        cluster.start()
        yield cluster
    finally:
        try:
            if cluster.is_running():
                cluster.stop("immediate")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
