"""The recommendation-input marts (popularity, trending, user–category affinity) on generated data.

The warehouse is built by dbt on data from the project's own generator and loader; each mart
is then recomputed by brute force in numpy/pandas from its inputs (fct_events, dim_items and
the event_weights seed, read back from the database) and compared row by row:

- counts, weighted counts of integer weights, last-event times and ranks exactly;
- decayed scores to within the documented rounding (each term to 2^-32, see macros/recs.sql).

The contract columns are checked against the names and types agreed in the contracts, and
the physical design (indexes, comments written by persist_docs) is checked in the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from conftest import throwaway_database

from aisle.config import Target
from aisle.db import connect
from aisle.dbt import run_dbt

pytestmark = [pytest.mark.server, pytest.mark.slow]

SCALE = 0.01
SEED = 7
# Models that read the Python similarity table are not part of these tests, nor are dbt's own
# tests (`dbt build` runs them elsewhere; here the marts are checked against brute force).
EXCLUDE_DOWNSTREAM = ["--exclude", "source:similarity+",
                      "--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
RECS_MARTS = ["rec_item_popularity", "rec_item_trending", "rec_user_category_affinity"]
DAY_US = 86_400 * 1_000_000
# Each decayed term is rounded to a multiple of 2^-32 before the exact sum.
TERM_ROUNDING = 2.0 ** -32

# The agreed columns (notes/contracts.md), in order, with the types Postgres reports.
CONTRACTS: dict[str, list[tuple[str, str]]] = {
    "rec_item_popularity": [
        ("item_id", "bigint"), ("category_id", "bigint"), ("root_category_id", "bigint"),
        ("weighted_events", "double precision"), ("n_users", "bigint"), ("n_events", "bigint"),
        ("rank_overall", "integer"), ("rank_in_category", "integer"), ("rank_in_root", "integer"),
        ("is_available", "boolean"),
    ],
    "rec_item_trending": [
        ("item_id", "bigint"), ("category_id", "bigint"), ("root_category_id", "bigint"),
        ("trending_score", "double precision"), ("n_events", "bigint"),
        ("last_event_ts", "timestamp with time zone"),
        ("rank_overall", "integer"), ("rank_in_category", "integer"), ("rank_in_root", "integer"),
        ("is_available", "boolean"),
    ],
    "rec_user_category_affinity": [
        ("user_id", "bigint"), ("category_id", "bigint"), ("affinity_score", "double precision"),
        ("n_views", "bigint"), ("n_carts", "bigint"), ("n_purchases", "bigint"), ("n_events", "bigint"),
        ("last_event_ts", "timestamp with time zone"),
    ],
}


# --------------------------------------------------------------------------- fixtures and helpers


@dataclass(frozen=True)
class Warehouse:
    """A throwaway database with generated data loaded and the warehouse built (production schemas)."""

    target: Target


@pytest.fixture(scope="module")
def warehouse(base_target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """Generate and load a small dataset into a fresh database, then build the warehouse (no as_of)."""
    from aisle.generate import generate
    from aisle.load import load_paths

    data = tmp_path_factory.mktemp("recs_data")
    generate(Path(data), scale=SCALE, seed=SEED, progress=False)
    with throwaway_database(base_target, "recs") as target:
        load_paths([Path(data)], target=target, progress=False)
        run_dbt(["build", *EXCLUDE_DOWNSTREAM], quiet=True)
        yield Warehouse(target)


def _frame(conn: psycopg.Connection, query: str) -> pd.DataFrame:
    cur = conn.execute(query)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def _epoch_us(series: pd.Series) -> np.ndarray:
    """Timestamps as integer microseconds since the epoch (exact, unlike float seconds)."""
    return (pd.to_datetime(series, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)


def _inputs(conn: psycopg.Connection) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """fct_events, dim_items and the seed's weights, as the marts' inputs."""
    events = _frame(conn, "select event_id, event_ts, user_id, item_id, event_type, category_id "
                          "from marts.fct_events")
    events["ts_us"] = _epoch_us(events["event_ts"])
    items = _frame(conn, "select item_id, category_id, root_category_id, is_available from marts.dim_items")
    weights = dict(conn.execute("select event_type, weight from seeds.event_weights").fetchall())
    return events, items, weights


def _decay(ts_us: np.ndarray, anchor_us: int, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life), the age in exact integer microseconds."""
    age_days = (anchor_us - ts_us.astype(np.int64)) / DAY_US
    return np.power(0.5, age_days / half_life_days)


def _expected_ranks(frame: pd.DataFrame, score: str) -> pd.DataFrame:
    """row_number() over (order by score desc, item_id), overall, per category and per root."""
    out = frame.sort_values([score, "item_id"], ascending=[False, True]).copy()
    out["exp_rank_overall"] = np.arange(1, len(out) + 1)
    out["exp_rank_in_category"] = out.groupby("category_id").cumcount() + 1
    out["exp_rank_in_root"] = out.groupby("root_category_id").cumcount() + 1
    return out.sort_values("item_id").reset_index(drop=True)


def _assert_ranks(mart: pd.DataFrame, score: str) -> None:
    """The mart's ranks are exactly the row numbers of its own scores, ties to the lower item_id."""
    ranked = _expected_ranks(mart, score)
    for col in ("rank_overall", "rank_in_category", "rank_in_root"):
        assert (ranked[col].to_numpy() == ranked["exp_" + col].to_numpy()).all(), col


def _assert_close(actual: np.ndarray, expected: np.ndarray, n_terms: np.ndarray) -> None:
    """Equal up to the per-term rounding to 2^-32 (plus float noise on the brute-force side)."""
    tolerance = n_terms * TERM_ROUNDING + 1e-12 * np.abs(expected)
    assert np.all(np.abs(actual - expected) <= tolerance), float(np.max(np.abs(actual - expected) - tolerance))


def _popularity(conn: psycopg.Connection, window_days: float | None) -> None:
    """rec_item_popularity equals a brute-force groupby over fct_events (within the window)."""
    events, items, weights = _inputs(conn)
    if window_days is not None:
        anchor = int(events["ts_us"].max())
        events = events[events["ts_us"] >= anchor - int(window_days * DAY_US)]
    events = events.assign(w=events["event_type"].map(weights).fillna(0.0))
    expected = (events.groupby("item_id")
                .agg(weighted_events=("w", "sum"), n_users=("user_id", "nunique"), n_events=("event_id", "size"))
                .reset_index()
                .merge(items, on="item_id", how="left"))
    expected[["category_id", "root_category_id"]] = expected[["category_id", "root_category_id"]].fillna(-1)
    mart = _frame(conn, "select * from recs.rec_item_popularity order by item_id")

    assert mart["item_id"].tolist() == expected["item_id"].tolist()
    for col in ("category_id", "root_category_id", "n_users", "n_events"):
        assert mart[col].astype("int64").tolist() == expected[col].astype("int64").tolist(), col
    # Integer weights sum exactly.
    assert mart["weighted_events"].tolist() == expected["weighted_events"].tolist()
    assert mart["is_available"].tolist() == expected["is_available"].tolist()
    # Exact scores, so the brute-force ranks are the expected ranks.
    ranked = _expected_ranks(expected, "weighted_events")
    for col in ("rank_overall", "rank_in_category", "rank_in_root"):
        assert mart[col].tolist() == ranked["exp_" + col].tolist(), col


def _trending(conn: psycopg.Connection, half_life_days: float) -> None:
    """rec_item_trending equals sum(weight * 0.5^(age/half-life)) anchored at the latest event."""
    events, items, weights = _inputs(conn)
    anchor = int(events["ts_us"].max())
    events = events.assign(term=events["event_type"].map(weights).fillna(0.0)
                           * _decay(events["ts_us"].to_numpy(), anchor, half_life_days))
    expected = (events.groupby("item_id")
                .agg(trending_score=("term", "sum"), n_events=("event_id", "size"), last_us=("ts_us", "max"))
                .reset_index()
                .merge(items, on="item_id", how="left"))
    mart = _frame(conn, "select * from recs.rec_item_trending order by item_id")

    assert mart["item_id"].tolist() == expected["item_id"].tolist()
    assert mart["n_events"].tolist() == expected["n_events"].tolist()
    assert _epoch_us(mart["last_event_ts"]).tolist() == expected["last_us"].tolist()
    assert mart["category_id"].tolist() == expected["category_id"].fillna(-1).astype("int64").tolist()
    assert mart["is_available"].tolist() == expected["is_available"].tolist()
    _assert_close(mart["trending_score"].to_numpy(), expected["trending_score"].to_numpy(),
                  expected["n_events"].to_numpy())
    _assert_ranks(mart, "trending_score")
    # The latest event is the anchor: some item has a full-weight, undecayed term.
    assert mart["trending_score"].max() >= min(w for w in weights.values() if w > 0)


def _affinity(conn: psycopg.Connection, half_life_days: float) -> None:
    """rec_user_category_affinity equals a brute-force groupby by (user, category at event time)."""
    events, _, weights = _inputs(conn)
    anchor = int(events["ts_us"].max())
    known = events[events["category_id"] != -1]
    known = known.assign(
        term=known["event_type"].map(weights).fillna(0.0) * _decay(known["ts_us"].to_numpy(), anchor, half_life_days),
        is_view=known["event_type"] == "view",
        is_cart=known["event_type"] == "addtocart",
        is_purchase=known["event_type"] == "transaction",
    )
    expected = (known.groupby(["user_id", "category_id"])
                .agg(affinity_score=("term", "sum"), n_views=("is_view", "sum"), n_carts=("is_cart", "sum"),
                     n_purchases=("is_purchase", "sum"), n_events=("event_id", "size"), last_us=("ts_us", "max"))
                .reset_index())
    mart = _frame(conn, "select * from recs.rec_user_category_affinity order by user_id, category_id")

    assert len(mart) == len(expected) > 0
    assert (mart["category_id"] != -1).all()
    for col in ("user_id", "category_id", "n_views", "n_carts", "n_purchases", "n_events"):
        assert mart[col].astype("int64").tolist() == expected[col].astype("int64").tolist(), col
    assert _epoch_us(mart["last_event_ts"]).tolist() == expected["last_us"].tolist()
    _assert_close(mart["affinity_score"].to_numpy(), expected["affinity_score"].to_numpy(),
                  expected["n_events"].to_numpy())


# --------------------------------------------------------------------------- tests


def test_marts_match_the_contracts(warehouse: Warehouse) -> None:
    """Column names, order and types are exactly the agreed contracts, and the marts are not empty."""
    with connect(warehouse.target) as conn:
        for table, columns in CONTRACTS.items():
            got = conn.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = 'recs' and table_name = %s order by ordinal_position", (table,)).fetchall()
            assert got == columns, table
            assert conn.execute(f"select count(*) from recs.{table}").fetchone()[0] > 0, table


def test_lookup_indexes_and_comments(warehouse: Warehouse) -> None:
    """Each mart has unique indexes on its grain and ranks, and persist_docs wrote the descriptions."""
    item_indexes = {(("item_id",), True), (("rank_overall",), True), (("category_id", "rank_in_category"), True),
                    (("root_category_id", "rank_in_root"), True)}
    # The affinity mart is a view over the intermediate table that holds its rows: that table
    # is unique on the grain, and its leading user_id serves the per-visitor lookups.
    expected = {
        "recs.rec_item_popularity": item_indexes,
        "recs.rec_item_trending": item_indexes,
        "intermediate.int_user_category_affinity": {(("user_id", "category_id"), True)},
    }
    with connect(warehouse.target) as conn:
        for table, indexes in expected.items():
            got = conn.execute(
                "select array_agg(a.attname::text order by k.ord), i.indisunique from pg_index i "
                "cross join lateral unnest(i.indkey::int2[]) with ordinality as k(attnum, ord) "
                "join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum "
                "where i.indrelid = %s::regclass group by i.indexrelid, i.indisunique",
                (table,)).fetchall()
            assert {(tuple(cols), unique) for cols, unique in got} == indexes, table
        for mart in RECS_MARTS:
            assert conn.execute("select obj_description(%s::regclass)", (f"recs.{mart}",)).fetchone()[0], mart
            assert conn.execute("select col_description(%s::regclass, 1)", (f"recs.{mart}",)).fetchone()[0], mart
        # A visitor's affinity rows are read through that index, not by scanning the table (the
        # one Seq Scan allowed reads a single row under a Limit: the frame of the sums).
        plan = "\n".join(r[0] for r in conn.execute(
            "explain (analyze, timing off, costs off, summary off) "
            "select * from recs.rec_user_category_affinity where user_id = 1").fetchall())
        assert "Index Scan using" in plan and "on int_user_category_affinity pairs" in plan, plan
        seq_rows = [int(float(line.split("rows=")[1].split()[0])) for line in plan.splitlines() if "Seq Scan" in line]
        assert all(rows <= 1 for rows in seq_rows), plan


def test_popularity_matches_brute_force(warehouse: Warehouse) -> None:
    with connect(warehouse.target) as conn:
        _popularity(conn, window_days=None)


def test_trending_matches_brute_force(warehouse: Warehouse) -> None:
    with connect(warehouse.target) as conn:
        _trending(conn, half_life_days=7.0)


def test_affinity_matches_brute_force(warehouse: Warehouse) -> None:
    with connect(warehouse.target) as conn:
        _affinity(conn, half_life_days=30.0)


def test_the_vars_change_the_marts(warehouse: Warehouse) -> None:
    """A popularity window and other half-lives, passed as vars, give the brute-force results for them."""
    # The popularity window and the trending half-life are applied in int_item_event_totals
    # (the one pass over the events that both item marts read), so it is rebuilt with them.
    # Both intermediate tables are incremental: a run with other vars finds sums stored with
    # another half-life (or window) and recomputes every row, which this checks too.
    models = ["int_item_event_totals", "int_user_category_affinity", *RECS_MARTS]
    run_dbt(["run", "--select", *models], quiet=True,
            vars={"popularity_window_days": 10, "trending_half_life_days": 2.5, "affinity_half_life_days": 3})
    try:
        with connect(warehouse.target) as conn:
            _popularity(conn, window_days=10)
            _trending(conn, half_life_days=2.5)
            _affinity(conn, half_life_days=3.0)
    finally:
        run_dbt(["run", "--select", *models], quiet=True)
