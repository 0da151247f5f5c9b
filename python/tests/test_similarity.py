"""Category–category similarity: formulas against brute force, edges, the atomic swap, the runs log.

Every expected value comes from an independent computation: a dense, loop-per-pair numpy
version of the formulas in aisle/similarity.py's docstring, or a hand-worked example.
The affinity mart is created by hand in the throwaway database's recs schema.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from aisle import similarity as sim_mod
from aisle.config import Target
from aisle.db import connect
from aisle.similarity import (
    CoOccurrenceBuilder,
    Neighbours,
    SimilarityError,
    _BinaryCopyParser,
    _copy_binary,
    compute_similarity,
    cooccurrence,
)

Row = tuple[int, int, float | None]

# --------------------------------------------------------------------------- helpers


def brute_force(rows: list[Row], measure: str, binary: bool, shrinkage: float, min_support: int, k: int
                ) -> list[tuple[int, int, float, int, int]]:
    """The documented formulas, one pair at a time on a dense matrix: (cat, neighbour, sim, support, rank)."""
    valid = [(u, c, a) for u, c, a in rows if a is not None and math.isfinite(a) and a > 0]
    users = sorted({u for u, _, _ in valid})
    cats = sorted({c for _, c, _ in valid})
    x = np.zeros((len(users), len(cats)))
    for u, c, a in valid:
        x[users.index(u), cats.index(c)] += a
    b = (x > 0).astype(float)
    v = b if binary else x
    n = len(users)
    out = []
    for i in range(len(cats)):
        for j in range(len(cats)):
            if i == j:
                continue
            s = int(np.sum(b[:, i] * b[:, j]))
            if s < max(min_support, 1):
                continue
            g = float(v[:, i] @ v[:, j])
            gii, gjj = float(v[:, i] @ v[:, i]), float(v[:, j] @ v[:, j])
            if measure == "cosine":
                val = g / math.sqrt(gii * gjj)
            elif measure == "jaccard":
                val = g / (gii + gjj - g)
            else:
                val = n * g / (float(v[:, i].sum()) * float(v[:, j].sum()))
            val *= s / (s + shrinkage)
            out.append((cats[i], cats[j], val, s))
    out.sort(key=lambda r: (r[0], -round(r[2], 9), r[1]))
    result, rank, prev = [], 0, None
    for c, nb, val, s in out:
        rank = rank + 1 if c == prev else 1
        prev = c
        if rank <= k:
            result.append((c, nb, val, s, rank))
    return result


def create_affinity(target: Target, rows: list[Row], schema: str = "recs") -> None:
    """(Re)create schema.rec_user_category_affinity with the contract's columns and these rows."""
    tbl = sql.Identifier(schema, "rec_user_category_affinity")
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("drop table if exists {}").format(tbl))
        cur.execute(sql.SQL(
            "create table {} (user_id bigint not null, category_id bigint not null, "
            "affinity_score double precision, n_views bigint, n_carts bigint, n_purchases bigint, "
            "n_events bigint, last_event_ts timestamptz)").format(tbl))
        with cur.copy(sql.SQL("copy {} (user_id, category_id, affinity_score) from stdin").format(tbl)) as cp:
            for row in rows:
                cp.write_row(row)


def read_similarity(target: Target, schema: str = "recs") -> list[tuple[int, int, float, int, int]]:
    with connect(target) as conn:
        return conn.execute(sql.SQL(
            "select category_id, neighbor_category_id, similarity, support, rank from {} "
            "order by category_id, rank").format(sql.Identifier(schema, "category_similarity"))).fetchall()


def assert_same(got: list[tuple], expected: list[tuple]) -> None:
    assert [(c, nb, s, r) for c, nb, _, s, r in got] == [(c, nb, s, r) for c, nb, _, s, r in expected]
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], rtol=1e-9, atol=1e-12)


def random_rows(seed: int = 7) -> list[Row]:
    """40 users × 10 categories at random, plus the edge cases, with ids far apart."""
    rng = np.random.default_rng(seed)
    cats = [3, 17, 18, 100, 205, 206, 999, 1338, 2001, 65536]
    users = sorted(rng.choice(10**12, size=40, replace=False).tolist())
    rows: list[Row] = []
    for u in users:
        for c in cats:
            if rng.random() < 0.3:
                # few distinct values in weighted mode too, so ties happen there as well
                rows.append((u, c, float(rng.choice([0.5, 1.0, 2.0, rng.uniform(0.01, 5.0)]))))
    rows += [
        (7, 4000, 1.5), (8, 4000, 2.5),  # category 4000: its users have nothing else -> no rows
        (-3, 3, 1.0), (-3, 17, 2.0), (-67, 3, 0.5), (-67, 18, 1.0),  # negative ids, one COPY bucket
        (users[0], 777, 3.0),  # single-user category
        (users[1], 888, 0.0), (users[2], 888, -1.0), (users[3], 888, None),  # never positive
        (users[4], 889, float("nan")), (users[5], 889, float("inf")),  # not finite: ignored
    ]
    return rows


# --------------------------------------------------------------------------- no database


def test_batches_add_up_to_one_batch() -> None:
    rows = random_rows(3)
    u = np.array([r[0] for r in rows], dtype=np.int64)
    c = np.array([r[1] for r in rows], dtype=np.int64)
    a = np.array([np.nan if r[2] is None else r[2] for r in rows])
    whole = cooccurrence(u, c, a)
    builder = CoOccurrenceBuilder(flush_nnz=16)  # several flushes
    for bucket in range(5):  # every user's rows in one batch, categories discovered out of order
        sel = (u % 5) == bucket
        builder.add(u[sel][::-1], c[sel][::-1], a[sel][::-1])
    parts = builder.finish()
    assert sorted(parts.category_ids.tolist()) == sorted(whole.category_ids.tolist()) \
        == sorted(set(c.tolist()) - {888, 889})
    assert (parts.n_users, parts.n_rows) == (whole.n_users, whole.n_rows) == (whole.n_users, len(rows))
    p = np.argsort(parts.category_ids)
    w = np.argsort(whole.category_ids)
    np.testing.assert_array_equal(parts.support[np.ix_(p, p)], whole.support[np.ix_(w, w)])
    np.testing.assert_array_equal(parts.count[p], whole.count[w])
    np.testing.assert_allclose(parts.gram[np.ix_(p, p)], whole.gram[np.ix_(w, w)], rtol=1e-12)
    for name in ("sumsq", "colsum"):
        np.testing.assert_allclose(getattr(parts, name)[p], getattr(whole, name)[w], rtol=1e-12)


def test_duplicates_are_summed_and_non_positive_scores_dropped() -> None:
    co = cooccurrence(np.array([1, 1, 1, 2, 3, 3]), np.array([10, 10, 20, 20, 10, 30]),
                      np.array([1.0, 2.0, 1.0, 0.5, 0.0, np.nan]))
    assert co.category_ids.tolist() == [10, 20] and co.n_users == 2 and co.n_rows == 6
    assert co.count.tolist() == [1, 2] and co.colsum.tolist() == [3.0, 1.5] and co.sumsq.tolist() == [9.0, 1.25]
    assert co.support.tolist()[0][1] == co.support.tolist()[1][0] == 1
    assert co.gram.tolist()[0][1] == 3.0


def test_too_many_categories_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_mod, "MAX_CATEGORIES", 300)
    with pytest.raises(SimilarityError, match="more than 300 categories"):
        cooccurrence(np.arange(301), np.arange(301), np.ones(301))


def test_binary_copy_parser_handles_any_chunking() -> None:
    nb = Neighbours(np.array([1, 1, 2], dtype=np.int64), np.array([2, 3, 1], dtype=np.int64),
                    np.array([0.5, 0.25, 1 / 3]), np.array([4, 2, 4], dtype=np.int64),
                    np.array([1, 2, 1], dtype=np.int32))
    payload = _copy_binary(nb)
    for size in (1, 3, 7, 38, len(payload)):
        parser = _BinaryCopyParser()
        rows = []
        for i in range(0, len(payload), size):
            rows += parser.feed(payload[i:i + size])
        assert parser.finished
        assert [int.from_bytes(r[0], "big") for r in rows] == [1, 1, 2]
        assert [np.frombuffer(r[2], ">f8")[0] for r in rows] == [0.5, 0.25, 1 / 3]
        assert [int.from_bytes(r[4], "big") for r in rows] == [1, 2, 1]


@pytest.mark.parametrize("kwargs", [{"measure": "pearson"}, {"k": 0}, {"shrinkage": -1.0},
                                    {"shrinkage": float("nan")}, {"min_support": 0}])
def test_bad_parameters_are_rejected(kwargs: dict) -> None:
    params = {"measure": "cosine", "k": 5, "shrinkage": 0.0, "min_support": 1, **kwargs}
    with pytest.raises(SimilarityError):
        sim_mod.validate_parameters(**params)


# --------------------------------------------------------------------------- against brute force


# Tests on the shared session database use their own backtest schemas (dates no build uses), so
# they never touch another test's recs schema.
RANDOM_AS_OF, RANDOM_SCHEMA = "1999-01-01", "recs_bt_19990101"


@pytest.fixture(scope="module")
def random_target(pg_target: Target) -> Target:
    create_affinity(pg_target, random_rows(), RANDOM_SCHEMA)
    return pg_target


VARIANTS = [  # (shrinkage, min_support, k)
    (0.0, 1, 4),
    (5.0, 1, 4),
    (0.0, 3, 4),
    (2.5, 2, 50),
]


@pytest.mark.server
@pytest.mark.parametrize("measure", ["cosine", "jaccard", "lift"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "weighted"])
@pytest.mark.parametrize("shrinkage,min_support,k", VARIANTS)
def test_equals_brute_force(random_target: Target, measure: str, binary: bool, shrinkage: float,
                            min_support: int, k: int) -> None:
    run = compute_similarity(random_target, RANDOM_AS_OF, measure=measure, k=k, binary=binary,
                             shrinkage=shrinkage, min_support=min_support)
    expected = brute_force(random_rows(), measure, binary, shrinkage, min_support, k)
    got = read_similarity(random_target, RANDOM_SCHEMA)
    assert_same(got, expected)
    assert run.n_pairs == len(expected)
    valid = [(u, c) for u, c, a in random_rows() if a is not None and math.isfinite(a) and a > 0]
    assert run.n_users == len({u for u, _ in valid})
    assert run.n_categories == len({c for _, c in valid}) == 10 + 2  # 888 and 889 never have a valid score
    cats_out = {r[0] for r in got} | {r[1] for r in got}
    assert 4000 not in cats_out and 888 not in cats_out and 889 not in cats_out
    # the single-user category has its user's other categories as neighbours, at support 1
    assert (777 in {r[0] for r in got}) == (min_support == 1)


# --------------------------------------------------------------------------- hand-worked examples

# u1: A=1, B=2; u2: A=3, B=1; u3: A=2. N = 3, n_A = 3, n_B = 2, s_AB = 2.
# weighted: G_AB = 1*2 + 3*1 = 5, G_AA = 1 + 9 + 4 = 14, G_BB = 4 + 1 = 5, m_A = 6, m_B = 3.
HAND_ROWS: list[Row] = [(1, 10, 1.0), (1, 20, 2.0), (2, 10, 3.0), (2, 20, 1.0), (3, 10, 2.0)]
HAND = {
    ("cosine", True): 2 / math.sqrt(6), ("jaccard", True): 2 / 3, ("lift", True): 1.0,
    ("cosine", False): 5 / math.sqrt(70), ("jaccard", False): 5 / 14, ("lift", False): 5 / 6,
}


@pytest.mark.server
def test_hand_worked_values(pg_target: Target) -> None:
    as_of, schema = "2001-01-01", "recs_bt_20010101"  # one schema per test in the session database
    create_affinity(pg_target, HAND_ROWS, schema)
    for (measure, binary), value in HAND.items():
        for shrinkage, factor in ((0.0, 1.0), (2.0, 0.5)):  # s / (s + lambda) = 2 / 4
            compute_similarity(pg_target, as_of, measure=measure, binary=binary, shrinkage=shrinkage)
            got = read_similarity(pg_target, schema)
            assert [(c, nb, s, r) for c, nb, _, s, r in got] == [(10, 20, 2, 1), (20, 10, 2, 1)]
            assert got[0][2] == pytest.approx(value * factor, rel=1e-12)
            assert got[1][2] == pytest.approx(value * factor, rel=1e-12)
    compute_similarity(pg_target, as_of, min_support=3)
    assert read_similarity(pg_target, schema) == []


@pytest.mark.server
def test_ties_and_top_k_cut(pg_target: Target) -> None:
    as_of, schema = "2001-01-02", "recs_bt_20010102"
    # Category 10 shares one user with each of 40, 30 and 20: equal similarity, so ids decide.
    rows: list[Row] = [(1, 10, 1.0), (1, 40, 1.0), (2, 10, 1.0), (2, 30, 1.0), (3, 10, 1.0), (3, 20, 1.0),
                       (4, 50, 1.0)]  # 50: a user with one category only
    create_affinity(pg_target, rows, schema)
    run = compute_similarity(pg_target, as_of, measure="cosine", k=2, binary=True)
    sim = 1 / math.sqrt(3)
    got = read_similarity(pg_target, schema)
    assert [(c, nb, s, r) for c, nb, _, s, r in got] == [
        (10, 20, 1, 1), (10, 30, 1, 2),  # 40 ties with them but falls past k = 2
        (20, 10, 1, 1), (30, 10, 1, 1), (40, 10, 1, 1),
    ]
    assert [g[2] for g in got] == pytest.approx([sim] * 5, rel=1e-12)
    assert run.n_pairs == 5 and run.n_candidate_pairs == 6 and run.n_categories == 5


@pytest.mark.server
def test_empty_affinity_gives_empty_table(pg_target: Target) -> None:
    create_affinity(pg_target, [(1, 10, 0.0)], "recs_bt_20010103")
    run = compute_similarity(pg_target, "2001-01-03")
    assert read_similarity(pg_target, "recs_bt_20010103") == []
    assert (run.n_users, run.n_categories, run.n_pairs) == (0, 0, 0)


# --------------------------------------------------------------------------- schemas, runs, errors


@pytest.mark.server
def test_as_of_writes_to_backtest_schema_and_logs_the_run(fresh_target: Target) -> None:
    create_affinity(fresh_target, HAND_ROWS, schema="recs_bt_20150904")
    run = compute_similarity(fresh_target, as_of="2015-09-04", measure="lift", k=7, binary=True,
                             shrinkage=1.5, min_support=2)
    assert run.schema == "recs_bt_20150904"
    assert read_similarity(fresh_target, "recs_bt_20150904") == [
        (10, 20, pytest.approx(1.0 * 2 / 3.5), 2, 1), (20, 10, pytest.approx(1.0 * 2 / 3.5), 2, 1)]
    with connect(fresh_target) as conn:
        assert conn.execute("select to_regclass('recs.category_similarity')").fetchone()[0] is None
        runs = conn.execute(
            'select run_id, measure, k, "binary", shrinkage, min_support, as_of, n_users, n_categories, '
            "n_pairs, seconds_read >= 0 and seconds_compute >= 0 and seconds_write >= 0, created_at is not null "
            "from recs_bt_20150904.category_similarity_runs").fetchall()
    assert runs == [(run.run_id, "lift", 7, True, 1.5, 2, "2015-09-04", 3, 2, 2, True, True)]
    run2 = compute_similarity(fresh_target, as_of="2015-09-04")
    assert run2.run_id == run.run_id + 1
    assert "run 2 as of 2015-09-04" in run2.summary()


@pytest.mark.server
def test_missing_affinity_mart_is_a_clear_error(pg_target: Target) -> None:
    with pytest.raises(SimilarityError, match="recs_bt_20200101.rec_user_category_affinity does not exist"):
        compute_similarity(pg_target, as_of="2020-01-01")


@pytest.mark.server
def test_cli_exit_codes(fresh_target: Target) -> None:
    env = {**os.environ, "AISLE_DBNAME": fresh_target.dbname, "AISLE_TARGET": fresh_target.name}
    aisle = str(Path(sys.executable).with_name("aisle"))
    missing = subprocess.run([aisle, "similarity"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    create_affinity(fresh_target, HAND_ROWS)
    ok = subprocess.run([aisle, "similarity", "--binary", "--k", "3"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "2 rows in recs.category_similarity" in ok.stdout


@pytest.mark.server
def test_reader_role_gets_select(pg_target: Target) -> None:
    with connect(pg_target, autocommit=True) as conn:  # idempotent, as dbt's macro does it
        conn.execute("do $$ begin if not exists (select 1 from pg_roles where rolname = 'aisle_reader') "
                     "then create role aisle_reader nologin; end if; "
                     "exception when duplicate_object then null; end $$")
    create_affinity(pg_target, HAND_ROWS, "recs_bt_20010104")
    compute_similarity(pg_target, "2001-01-04")
    with connect(pg_target) as conn:
        assert conn.execute(
            "select has_table_privilege('aisle_reader', 'recs_bt_20010104.category_similarity', 'select'), "
            "has_table_privilege('aisle_reader', 'recs_bt_20010104.category_similarity_runs', 'select'), "
            "has_schema_privilege('aisle_reader', 'recs_bt_20010104', 'usage')").fetchone() == (True, True, True)


# --------------------------------------------------------------------------- atomicity


def _wait_for_blocked_drop(conn: psycopg.Connection, table: str, timeout: float = 20.0) -> None:
    """Wait until another session waits for ACCESS EXCLUSIVE on the table (the writer's swap)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "select count(*) from pg_locks where not granted and mode = 'AccessExclusiveLock' "
            "and relation = %s::regclass", (table,)).fetchone()[0]
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("the similarity writer never reached the swap")


@pytest.mark.server
def test_swap_is_atomic_for_concurrent_readers(pg_target: Target) -> None:
    as_of, schema = "2001-02-01", "recs_bt_20010201"
    create_affinity(pg_target, HAND_ROWS, schema)
    compute_similarity(pg_target, as_of, binary=True)
    old = read_similarity(pg_target, schema)
    new_rows = HAND_ROWS + [(4, 30, 1.0), (4, 10, 1.0)]
    create_affinity(pg_target, new_rows, schema)

    with connect(pg_target) as reader, connect(pg_target, autocommit=True) as watcher:
        # The reader's open transaction holds ACCESS SHARE, so the writer's swap must wait for it.
        assert reader.execute(f"select count(*) from {schema}.category_similarity").fetchone()[0] == len(old)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                compute_similarity(pg_target, as_of, binary=True)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            _wait_for_blocked_drop(watcher, f"{schema}.category_similarity")
            # Mid-swap: the new table is filled but invisible; the old one still reads in full.
            assert watcher.execute("select to_regclass(%s)", (f"{schema}.category_similarity__new",)
                                   ).fetchone()[0] is None
            assert watcher.execute(f"select count(*) from {schema}.category_similarity_runs").fetchone()[0] == 1
            assert reader.execute(
                "select category_id, neighbor_category_id, similarity, support, rank "
                f"from {schema}.category_similarity order by category_id, rank").fetchall() == old
        finally:
            reader.commit()
            writer.join(timeout=60)
        assert not errors, errors
    assert_same(read_similarity(pg_target, schema), brute_force(new_rows, "cosine", True, 0.0, 1, 50))
    with connect(pg_target) as conn:
        assert conn.execute(f"select count(*) from {schema}.category_similarity_runs").fetchone()[0] == 2
        assert conn.execute("select to_regclass(%s)", (f"{schema}.category_similarity__new",)
                            ).fetchone()[0] is None


@pytest.mark.server
def test_failed_swap_leaves_old_table_intact(pg_target: Target) -> None:
    as_of, schema = "2001-02-02", "recs_bt_20010202"
    create_affinity(pg_target, HAND_ROWS, schema)
    compute_similarity(pg_target, as_of)
    old = read_similarity(pg_target, schema)
    with connect(pg_target) as conn:  # a dependent view makes the final DROP fail, after the COPY
        conn.execute(f"create view {schema}.sim_view as select * from {schema}.category_similarity")
    create_affinity(pg_target, HAND_ROWS + [(4, 30, 1.0), (4, 10, 1.0)], schema)
    with pytest.raises(SimilarityError, match="other objects depend on it"):
        compute_similarity(pg_target, as_of)
    assert read_similarity(pg_target, schema) == old
    with connect(pg_target) as conn:
        assert conn.execute(f"select count(*) from {schema}.category_similarity_runs").fetchone()[0] == 1
        assert conn.execute("select to_regclass(%s)", (f"{schema}.category_similarity__new",)
                            ).fetchone()[0] is None
        assert conn.execute(f"select count(*) from {schema}.sim_view").fetchone()[0] == len(old)
