"""Time travel and the read-only role, on real dbt builds against a real Postgres.

1. **No model sees the future.** Generated data is loaded and the whole pipeline (dbt upstream,
   similarity, dbt downstream; as `aisle run` does, minus the dbt tests) is built as of a
   cutoff T into the backtest schemas. Every table
   there is snapshot. Then events and property snapshots at and after T are inserted into raw —
   for existing visitors, items and open sessions, for new ones, and for items whose only
   category or availability snapshot comes after T (the "earliest known snapshot applies" trap)
   — and the pipeline is rebuilt as of T, incrementally as a user would. Every table must be
   identical, row for row (EXCEPT ALL both ways over the rows' text), and the production
   schemas, built before the backtest, must be untouched (same tables, same oids, same rows).
2. **Backtest schema names.** The build as of T writes exactly the schemas named with
   ``aisle.config.schema_suffix(T)``, and dbt's macro gives the same suffix as Python for
   other spellings of a cutoff.
3. **The reader role** (NOLOGIN) can SELECT the marts but can neither read raw, staging or
   intermediate nor write anything; it is checked with ``set role`` in a superuser session. Its
   creation is idempotent, also when two builds race to create it (roles are cluster-wide and
   test databases run concurrently).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import throwaway_database
from psycopg import sql

from aisle.config import Target, schema_suffix
from aisle.db import connect
from aisle.dbt import dbt_args, run_dbt
from aisle.pipeline import DOWNSTREAM
from aisle.similarity import compute_similarity

pytestmark = [pytest.mark.server, pytest.mark.slow]

SCALE = 0.01
SEED = 11
BASE_SCHEMAS = ("seeds", "staging", "intermediate", "marts", "recs")
READER = "aisle_reader"
SNAPSHOT_SCHEMA = "leak_check"
# Written by `aisle similarity` with timings and a creation time: not a function of the data.
RUN_LOG_TABLES = {"category_similarity_runs"}


@dataclass(frozen=True)
class Backtest:
    """The database after the production build, the backtest build, the future rows and the rebuild."""

    target: Target
    as_of: str
    suffix: str
    tables: list[tuple[str, str]]         # (schema, table) snapshot after the first backtest build
    changed: list[tuple[str, str, int]]   # (schema, table, differing rows) after the rebuild
    production_before: dict[tuple[str, str], tuple[int, str]]
    production_after: dict[tuple[str, str], tuple[int, str]]
    future_rows: dict[str, int]


# --------------------------------------------------------------------------- helpers


def _pipeline(target: Target, as_of: str | None) -> None:
    """The production pipeline's three steps (aisle.pipeline.run_pipeline), without the dbt tests.

    Every model and the similarity step run exactly as in `aisle run`; the data tests are left
    out because they write nothing and cost most of the time (dbt build covers them elsewhere).
    """
    vars_ = {"as_of": as_of} if as_of else None
    no_tests = ["--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
    run_dbt(["build", "--exclude", DOWNSTREAM, *no_tests], vars=vars_, quiet=True)
    compute_similarity(target=target, as_of=as_of)
    run_dbt(["build", "--select", DOWNSTREAM, *no_tests], vars=vars_, quiet=True)


def _cutoff(conn: psycopg.Connection) -> str:
    """A cutoff date about three quarters into the data (midnight UTC), as an ISO date."""
    ms = conn.execute("select percentile_disc(0.75) within group (order by \"timestamp\") from raw.events"
                      ).fetchone()[0]
    return conn.execute("select to_char(to_timestamp(%s / 1000.0) at time zone 'UTC', 'YYYY-MM-DD')",
                        (ms,)).fetchone()[0]


def _tables(conn: psycopg.Connection, schemas: list[str], views_of: str | None = None) -> list[tuple[str, str]]:
    """Tables (ordinary, partitioned, materialized views) of the given schemas, and the views of
    schema `views_of` (the recommendation views compute served rows on read)."""
    return [tuple(r) for r in conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any(%s) and (c.relkind in ('r', 'p', 'm') or (c.relkind = 'v' and n.nspname = %s)) "
        "order by 1, 2", (schemas, views_of)).fetchall()]


def _schemas(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute(
        "select nspname from pg_namespace where nspname not like 'pg\\_%' "
        "and nspname not in ('information_schema', 'public')").fetchall()}


def _fingerprints(conn: psycopg.Connection, schemas: list[str]) -> dict[tuple[str, str], tuple[int, str]]:
    """Per table: its oid (a rebuilt table gets a new one) and an order-independent hash of its rows."""
    out = {}
    for schema, table in _tables(conn, schemas):
        oid, digest = conn.execute(sql.SQL(
            "select {rel}::regclass::oid, md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) "
            "from {tbl} t").format(rel=sql.Literal(f'"{schema}"."{table}"'), tbl=sql.Identifier(schema, table))
        ).fetchone()
        out[(schema, table)] = (oid, digest)
    return out


def _snapshot_name(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(SNAPSHOT_SCHEMA, f"{schema}.{table}")


def _snapshot(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> None:
    """Copy every table's rows, as text, into the snapshot schema."""
    conn.execute(sql.SQL("create schema {}").format(sql.Identifier(SNAPSHOT_SCHEMA)))
    for schema, table in tables:
        conn.execute(sql.SQL("create table {snap} as select t::text as row_text from {tbl} t").format(
            snap=_snapshot_name(schema, table), tbl=sql.Identifier(schema, table)))


def _differences(conn: psycopg.Connection, schema: str, table: str) -> int:
    """Rows in the snapshot but not in the table, plus the reverse (EXCEPT ALL: duplicates count)."""
    return conn.execute(sql.SQL(
        "select (select count(*) from (select row_text from {snap} except all select t::text from {tbl} t) a) "
        "     + (select count(*) from (select t::text from {tbl} t except all select row_text from {snap}) b)"
    ).format(snap=_snapshot_name(schema, table), tbl=sql.Identifier(schema, table))).fetchone()[0]


def _new_batch(conn: psycopg.Connection, kind: str, name: str, rows: int) -> int:
    """Register a finished load batch, as the loader would for a file of `rows` rows."""
    return conn.execute(
        "insert into raw.load_batches (file_name, file_path, file_kind, sha256, size_bytes, rows_read, "
        "rows_loaded, rows_rejected, started_at, finished_at, status) "
        "values (%s, %s, %s, md5(%s) || md5(%s), 0, %s, %s, 0, now(), now(), 'finished') returning batch_id",
        (name, f"/nonexistent/{name}", kind, name, kind, rows, rows)).fetchone()[0]


def _insert_future(conn: psycopg.Connection, as_of: str) -> dict[str, int]:
    """Insert events and property snapshots at and after the cutoff into raw; returns row counts.

    Events: the 300 latest (visitor, item) pairs before T again from T on (the first exactly at
    T, so many extend a session still open at T), as views, carts and purchases; and events of
    new visitors on new items. Properties: a new category and a flipped availability from T on
    for items that had snapshots before T; and a first-ever category and availability after T
    for items that had events before T but no snapshot before T (a leaky "earliest known
    snapshot" rule would use them for the past); plus a snapshot exactly at T.
    """
    t_ms = conn.execute("select (extract(epoch from %s::timestamp at time zone 'UTC') * 1000)::bigint",
                        (as_of,)).fetchone()[0]
    events_batch = _new_batch(conn, "events", "future_events.csv", 0)
    conn.execute("""
        insert into raw.events (batch_id, line_no, "timestamp", visitorid, event, itemid, transactionid)
        with recent as (
            select visitorid, itemid,
                   row_number() over (order by "timestamp" desc, visitorid, itemid) as k
            from raw.events
            where "timestamp" < %(t)s
            order by "timestamp" desc, visitorid, itemid
            limit 300
        )
        select %(b)s, 1 + k, %(t)s + (k - 1) * 20000, visitorid,
               (array['view', 'addtocart', 'transaction'])[1 + (k %% 3)::int], itemid,
               case when k %% 3 = 2 then 990000000 + k end
        from recent
        union all
        select %(b)s, 1000 + g, %(t)s + g * 3600000,
               (select max(visitorid) from raw.events) + g, 'view',
               (select max(itemid) from raw.events) + g, null
        from generate_series(1, 50) as g
    """, {"t": t_ms, "b": events_batch})
    n_events = conn.execute("select count(*) from raw.events where batch_id = %s", (events_batch,)).fetchone()[0]

    props_batch = _new_batch(conn, "item_properties", "future_item_properties.csv", 0)
    conn.execute("""
        insert into raw.item_properties (batch_id, line_no, "timestamp", itemid, property, value)
        with known as (  -- items with a category snapshot before T: move them, flip availability
            select itemid, row_number() over (order by itemid) as k
            from raw.item_properties
            where property = 'categoryid' and "timestamp" < %(t)s
            group by itemid
            order by itemid
            limit 200
        ),
        unseen as (  -- items with events before T but no snapshot before T
            select e.itemid, row_number() over (order by e.itemid) as k
            from raw.events as e
            where e."timestamp" < %(t)s
              and not exists (select 1 from raw.item_properties as p
                              where p.itemid = e.itemid and p."timestamp" < %(t)s)
            group by e.itemid
            order by e.itemid
            limit 100
        ),
        cats as (
            select categoryid, row_number() over (order by categoryid) as k, count(*) over () as n
            from raw.category_tree
        )
        select %(b)s, k, %(t)s + (k %% 2) * 86400000, itemid, 'categoryid',
               (select categoryid::text from cats where cats.k = 1 + known.k %% cats.n)
        from known
        union all
        select %(b)s, 1000 + k, %(t)s + 3600000 * (1 + k %% 3), itemid, 'available', (k %% 2)::text
        from known
        union all
        select %(b)s, 2000 + k, %(t)s + 3600000, itemid, 'categoryid',
               (select categoryid::text from cats where cats.k = 1 + unseen.k %% cats.n)
        from unseen
        union all
        select %(b)s, 3000 + k, %(t)s + 7200000, itemid, 'available', '0'
        from unseen
    """, {"t": t_ms, "b": props_batch})
    n_props = conn.execute("select count(*) from raw.item_properties where batch_id = %s",
                           (props_batch,)).fetchone()[0]
    for batch, n in ((events_batch, n_events), (props_batch, n_props)):
        conn.execute("update raw.load_batches set rows_read = %s, rows_loaded = %s where batch_id = %s",
                     (n, n, batch))
    n_unseen = conn.execute("select count(distinct itemid) from raw.item_properties where batch_id = %s "
                            "and line_no >= 2000", (props_batch,)).fetchone()[0]
    return {"events": n_events, "item_properties": n_props, "items_first_seen_after_t": n_unseen}


# --------------------------------------------------------------------------- the scenario


@pytest.fixture(scope="module")
def backtest(base_target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backtest]:
    """Production build, backtest build as of T, snapshot, future rows, backtest rebuild."""
    from aisle.generate import generate
    from aisle.load import load_paths

    data = tmp_path_factory.mktemp("time_travel_data")
    generate(Path(data), scale=SCALE, seed=SEED, progress=False)
    with throwaway_database(base_target, "tt") as target:
        load_paths([Path(data)], target=target, progress=False)
        with connect(target, autocommit=True) as conn:
            as_of = _cutoff(conn)
        suffix = schema_suffix(as_of)

        _pipeline(target, None)
        with connect(target, autocommit=True) as conn:
            production_before = _fingerprints(conn, list(BASE_SCHEMAS))

        _pipeline(target, as_of)
        with connect(target, autocommit=True) as conn:
            tables = [t for t in _tables(conn, [s + suffix for s in BASE_SCHEMAS], views_of="recs" + suffix)
                      if t[1] not in RUN_LOG_TABLES]
            _snapshot(conn, tables)
        with connect(target) as conn:  # one transaction: the future arrives at once
            future_rows = _insert_future(conn, as_of)

        _pipeline(target, as_of)
        with connect(target, autocommit=True) as conn:
            after = [t for t in _tables(conn, [s + suffix for s in BASE_SCHEMAS], views_of="recs" + suffix)
                     if t[1] not in RUN_LOG_TABLES]
            assert after == tables, "the rebuild as of T created or dropped tables"
            changed = [(s, t, n) for s, t in tables if (n := _differences(conn, s, t))]
            production_after = _fingerprints(conn, list(BASE_SCHEMAS))
        yield Backtest(target, as_of, suffix, tables, changed, production_before, production_after, future_rows)


# --------------------------------------------------------------------------- 1. no leakage


def test_no_model_sees_the_future(backtest: Backtest) -> None:
    """Rows at and after T change nothing in any backtest table, upstream to recommendations."""
    assert backtest.future_rows["events"] == 350
    assert backtest.future_rows["items_first_seen_after_t"] > 0, "the generated data has no item to trap"
    snapped = {t for _, t in backtest.tables}
    # The check covers every layer, not just whatever happened to build.
    for expected in ("int_events_sessionized", "fct_sessions", "dim_items", "dim_users", "dim_categories",
                     "rec_item_popularity", "rec_item_trending", "rec_user_category_affinity",
                     "category_similarity", "rec_default_recommendations",
                     # the served view, and the two routes it unions (a view and a table)
                     "rec_user_recommendations", "rec_user_recs_fast_path", "rec_user_recs_general_path"):
        assert expected in snapped, expected
    assert {s for s, _ in backtest.tables} >= {"intermediate" + backtest.suffix, "marts" + backtest.suffix,
                                               "recs" + backtest.suffix}
    assert backtest.changed == []


def test_the_backtest_leaves_production_untouched(backtest: Backtest) -> None:
    """The production tables keep their oids and rows through two backtest builds."""
    assert backtest.production_before, "the production build made no tables"
    assert backtest.production_after == backtest.production_before


# --------------------------------------------------------------------------- 2. schema names


def test_backtest_schemas_are_named_with_the_python_suffix(backtest: Backtest) -> None:
    """The build as of T wrote exactly base + schema_suffix(T), next to the production schemas."""
    assert backtest.suffix == "_bt_" + backtest.as_of.replace("-", "")
    with connect(backtest.target, autocommit=True) as conn:
        schemas = _schemas(conn)
    assert {s for s in schemas if "_bt_" in s} == {s + backtest.suffix for s in BASE_SCHEMAS}
    assert schemas - {SNAPSHOT_SCHEMA} == set(BASE_SCHEMAS) | {"raw"} | {s + backtest.suffix for s in BASE_SCHEMAS}


def _compile(inline: str, vars: dict) -> str:
    """Render a Jinja snippet with the project's macros and vars (dbt compile --inline)."""
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(dbt_args(["compile", "--quiet", "--inline", inline], vars=vars))
    assert result.success, result.exception
    return result.result.results[0].node.compiled_code


@pytest.mark.parametrize("as_of", ["2015-09-04T12:30:00Z", "2015-09-04 12:30:00+02:00"])
def test_dbt_and_python_agree_on_the_suffix(backtest: Backtest, as_of: str) -> None:
    """generate_schema_name with as_of set equals base + aisle.config.schema_suffix(as_of)."""
    compiled = _compile("{{ generate_schema_name('recs', none) }}", {"as_of": as_of})
    assert compiled.strip() == "recs" + schema_suffix(as_of)


# --------------------------------------------------------------------------- 3. the reader role


WRITES = [
    "insert into {recs}.rec_item_popularity select * from {recs}.rec_item_popularity limit 1",
    "update {recs}.rec_item_trending set n_events = n_events",
    "delete from {marts}.dim_items",
    "truncate {marts}.fct_sessions",
    "drop table {marts}.dim_items",
    "alter table {marts}.dim_users add column x int",
    "create table {recs}.reader_was_here (i int)",
    "create table {marts}.reader_was_here (i int)",
    "create table public.reader_was_here (i int)",
    "create schema reader_was_here",
    "insert into raw.events select * from raw.events limit 1",
    "create view {marts}.reader_was_here as select 1 as i",
]
READS_DENIED = [
    "select count(*) from raw.events",
    "select count(*) from raw.load_batches",
    "select count(*) from {intermediate}.int_events_sessionized",
    "select count(*) from {intermediate}.int_user_category_affinity",
    "select count(*) from {staging}.stg_retailrocket__events",
]


def _as_reader(target: Target) -> psycopg.Connection:
    """A superuser session switched to the reader role (NOLOGIN, so it cannot connect itself)."""
    conn = connect(target, autocommit=True)
    conn.execute(sql.SQL("set role {}").format(sql.Identifier(READER)))
    assert conn.execute("select current_user").fetchone()[0] == READER
    return conn


@pytest.mark.parametrize("suffix_of", ["production", "backtest"])
def test_reader_can_select_the_marts(backtest: Backtest, suffix_of: str) -> None:
    sfx = "" if suffix_of == "production" else backtest.suffix
    with _as_reader(backtest.target) as conn:
        for schema, table in [("marts", "fct_events"), ("marts", "dim_items"), ("recs", "rec_item_popularity"),
                              ("recs", "rec_item_trending"), ("recs", "rec_user_category_affinity")]:
            n = conn.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema + sfx, table))
                             ).fetchone()[0]
            assert n > 0, (schema + sfx, table)


@pytest.mark.parametrize("statement", READS_DENIED + WRITES)
def test_reader_cannot_read_raw_or_write(backtest: Backtest, statement: str) -> None:
    names = {"recs": "recs", "marts": "marts", "intermediate": "intermediate", "staging": "staging"}
    with _as_reader(backtest.target) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement.format(**names))


def test_reader_role_is_nologin_and_not_privileged(backtest: Backtest) -> None:
    with connect(backtest.target, autocommit=True) as conn:
        row = conn.execute("select rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolinherit "
                           "from pg_roles where rolname = %s", (READER,)).fetchone()
    assert row is not None
    assert row[:4] == (False, False, False, False)


def test_reader_role_creation_is_idempotent_under_a_race(backtest: Backtest) -> None:
    """Two sessions run the on-run-start statement for a new role at once; both succeed, one role exists.

    The second CREATE ROLE waits for the first transaction and then fails with unique_violation
    (not duplicate_object); the statement must swallow both. A uniquely named role keeps this
    from touching the real reader role, which other test databases on the server share.
    """
    role = f"aisle_test_reader_{uuid.uuid4().hex[:8]}"
    statement = _compile("{{ aisle_ensure_reader_role() }}", {"reader_role": role})
    assert role in statement
    with connect(backtest.target, autocommit=True) as conn:
        assert conn.execute("select count(*) from pg_roles where rolname = %s", (role,)).fetchone()[0] == 0
    first = connect(backtest.target)
    second = connect(backtest.target)
    errors: list[BaseException] = []
    try:
        first.execute(statement)  # created, not committed: the second session will wait on it

        def race() -> None:
            try:
                second.execute(statement)
                second.commit()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        waiter = threading.Thread(target=race)
        waiter.start()
        waiter.join(timeout=1.0)  # blocked on the first session's uncommitted role
        first.commit()
        waiter.join(timeout=30)
        assert not waiter.is_alive()
        assert errors == []
        with connect(backtest.target, autocommit=True) as conn:
            conn.execute(statement)  # and once more when it exists
            assert conn.execute("select rolcanlogin from pg_roles where rolname = %s", (role,)).fetchall() == [
                (False,)]
    finally:
        first.close()
        second.close()
        with connect(backtest.target, autocommit=True) as conn:
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
