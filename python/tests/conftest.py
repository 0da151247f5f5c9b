"""Shared fixtures: real PostgreSQL databases, one throwaway database per use.

The tests run against the embedded PostgreSQL 18 by default, or against any
external server with ``AISLE_TARGET=server`` (CI does both). Each fixture creates
a database named ``aisle_test_...`` and drops it afterwards, so tests never touch
the ``aisle`` database a user works in. ``AISLE_DBNAME`` is pointed at the
throwaway database while it is in use, so dbt (which reads the same profile)
builds into it too.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from aisle.config import Target, resolve_target
from aisle.db import drop_database, ensure_database, server_status, start_server


def _new_database_name(tag: str) -> str:
    return f"aisle_test_{tag}_{uuid.uuid4().hex[:8]}"


@contextmanager
def throwaway_database(base: Target, tag: str) -> Iterator[Target]:
    """A fresh database on the base target's server, current for dbt, dropped afterwards."""
    target = replace(base, dbname=_new_database_name(tag))
    ensure_database(target)
    previous = os.environ.get("AISLE_DBNAME")
    os.environ["AISLE_DBNAME"] = target.dbname
    try:
        yield target
    finally:
        if previous is None:
            os.environ.pop("AISLE_DBNAME", None)
        else:
            os.environ["AISLE_DBNAME"] = previous
        if not os.environ.get("AISLE_KEEP_TEST_DB"):
            drop_database(target)


@pytest.fixture(scope="session")
def base_target() -> Target:
    """The target under test; starts the embedded server when that is the target."""
    if resolve_target().name == "dev" and not server_status().running:
        start_server()
    return resolve_target()


@pytest.fixture(scope="session", autouse=True)
def _dbt_paths(tmp_path_factory: pytest.TempPathFactory) -> None:
    """dbt writes target/ and logs/ under a temp folder, so tests never clobber the user's."""
    root = tmp_path_factory.mktemp("dbt")
    os.environ.setdefault("DBT_TARGET_PATH", str(root / "target"))
    os.environ.setdefault("DBT_LOG_PATH", str(root / "logs"))


@pytest.fixture(scope="session")
def pg_target(base_target: Target) -> Iterator[Target]:
    """One throwaway database for the whole session."""
    with throwaway_database(base_target, "s") as target:
        yield target


@pytest.fixture
def fresh_target(base_target: Target) -> Iterator[Target]:
    """A new throwaway database for one test."""
    with throwaway_database(base_target, "f") as target:
        yield target
