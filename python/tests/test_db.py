"""The embedded server's lifecycle and the CLI's behaviour when a database is missing.

The lifecycle tests use their own data folder (AISLE_PGDATA), so they never stop
the server that the rest of the suite uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from aisle.config import resolve_target

AISLE = [sys.executable, "-m", "aisle.cli"]


def _aisle(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*AISLE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          input=input, timeout=120)


@pytest.fixture
def own_pgdata(tmp_path: Path):
    pgdata = tmp_path / "pgdata"
    env = {"AISLE_PGDATA": str(pgdata), "AISLE_SOCKET_DIR": str(pgdata), "AISLE_TARGET": "dev"}
    yield pgdata, env
    _aisle("db", "stop", env=env)


def test_lifecycle_start_status_stop_restart(own_pgdata):
    pgdata, env = own_pgdata
    status = _aisle("db", "status", env=env)
    assert status.returncode == 3 and "not created" in status.stdout

    first = _aisle("db", "start", env=env)
    assert first.returncode == 0, first.stderr
    assert "created and started" in first.stdout and "running" in first.stdout
    # Tuned at creation: the analytics settings are in effect after the restart.
    with psycopg.connect(host=str(pgdata), user="postgres", dbname="postgres") as conn:
        settings = dict(conn.execute(
            "select name, setting from pg_settings where name in ('wal_level', 'jit', 'synchronous_commit')"
        ).fetchall())
        version = conn.execute("show server_version_num").fetchone()[0]
    assert settings == {"wal_level": "minimal", "jit": "off", "synchronous_commit": "off"}
    assert int(version) >= 180000

    again = _aisle("db", "start", env=env)  # idempotent on a running server
    assert again.returncode == 0 and "created" not in again.stdout

    running = _aisle("db", "status", env=env)
    assert running.returncode == 0 and f"socket {pgdata}" in running.stdout

    stopped = _aisle("db", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    down = _aisle("db", "status", env=env)
    assert down.returncode == 3 and "initialised, stopped" in down.stdout

    restarted = _aisle("db", "start", env=env)  # existing folder: no re-creation
    assert restarted.returncode == 0 and "created" not in restarted.stdout
    assert _aisle("db", "status", env=env).returncode == 0


def test_stop_and_start_in_one_process(own_pgdata):
    """A stopped handle must not be reused from the wheel's in-process cache."""
    _, env = own_pgdata
    code = (
        "from aisle.db import start_server, stop_server, server_status\n"
        "start_server(); assert server_status().running\n"
        "assert stop_server(); assert not server_status().running\n"
        "start_server(); assert server_status().running\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_unreachable_database_is_one_clear_line(tmp_path: Path):
    """No server: exit 2, one line naming the target and the fix, no traceback."""
    missing = tmp_path / "nothing-here"
    missing.mkdir()
    result = _aisle("db", "psql", env={"AISLE_TARGET": "dev", "AISLE_SOCKET_DIR": str(missing)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "target 'dev'" in lines[0] and "aisle db start" in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_server_target_names_the_variables():
    result = _aisle("db", "psql", env={"AISLE_TARGET": "server", "AISLE_PGHOST": "127.0.0.1",
                                       "AISLE_PGPORT": "1"})
    assert result.returncode == 2
    assert "target 'server'" in result.stderr and "AISLE_PG" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.server
def test_url_connects(pg_target):
    """`aisle db url` prints a URI that psycopg accepts and that reaches the same database."""
    result = _aisle("db", "url", env={"AISLE_DBNAME": pg_target.dbname})
    assert result.returncode == 0
    with psycopg.connect(result.stdout.strip()) as conn:
        assert conn.execute("select current_database()").fetchone()[0] == pg_target.dbname


@pytest.mark.server
def test_psql_runs_the_wheels_psql(pg_target):
    result = _aisle("db", "psql", env={"AISLE_DBNAME": pg_target.dbname}, input="select 40 + 2 as answer;\n")
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout


def test_profile_targets_resolve(monkeypatch):
    monkeypatch.setenv("AISLE_PGHOST", "db.example.internal")
    monkeypatch.setenv("AISLE_PGPORT", "6543")
    monkeypatch.setenv("AISLE_PGUSER", "analyst")
    monkeypatch.setenv("AISLE_PGPASSWORD", "s3cret")
    monkeypatch.setenv("AISLE_DBNAME", "shop")
    server = resolve_target("server")
    assert (server.host, server.port, server.user, server.password, server.dbname) == (
        "db.example.internal", 6543, "analyst", "s3cret", "shop")
    assert server.uri() == "postgresql://analyst:s3cret@db.example.internal:6543/shop"
    monkeypatch.setenv("AISLE_SOCKET_DIR", "/some/socket dir")
    dev = resolve_target("dev")
    assert dev.is_socket and dev.host == "/some/socket dir" and dev.dbname == "shop"
    assert dev.uri() == "postgresql://postgres@/shop?host=/some/socket%20dir&port=5432"
