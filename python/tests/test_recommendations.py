"""The serving marts (rec_user_recommendations, rec_default_recommendations, rec_user_cf_candidates).

Small data from the project's generator is loaded, the warehouse and the similarity table are
built, then the serving models with ``dbt build --select source:similarity+`` (their data and
unit tests included). The lists are recomputed here by brute force, in plain Python, from the
serving models' inputs (the similarity table, the trending/popularity/affinity marts, fct_events,
dim_items, dim_users and the event-weights seed), following the definitions documented in
models/marts/recommendations/serving/_serving__models.yml, macros/recs_serving.sql and
macros/recs_hybrid.sql, and
compared for every visitor: items, ranks, sources and reasons exactly, scores to 1e-9.

A second build with other vars (top_n 5, recommend_viewed_items false) checks the exclusions of
touched items and the pure CF list under them; a third, with var evaluation_users (as `aisle
evaluate` sets it), checks that the build is restricted to those users' lists, unchanged.
`aisle recommend` is run for a known and for an unknown visitor, with and without the root
category the visitor browses, and the analysis
analyses/lookup_user_recommendations.sql is checked to be the query `aisle recommend` runs.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from conftest import throwaway_database

from aisle.config import Target
from aisle.db import connect
from aisle.dbt import run_dbt

pytestmark = [pytest.mark.server, pytest.mark.slow]

SCALE = 0.004
SEED = 11
UPSTREAM = ["build", "--exclude", "source:similarity+",
            "--exclude-resource-type", "test", "--exclude-resource-type", "unit_test"]
DOWNSTREAM = ["build", "--select", "source:similarity+"]
UNIT = 2.0 ** 32          # the 2^-32 fixed point of aisle_exact_sum
SOURCES = {"category_cf", "category_trending", "trending", "popularity"}


@dataclass(frozen=True)
class Settings:
    top_n: int = 10
    candidates_per_category: int = 50
    similar_categories_per_user: int = 20
    known_user_min_events: int = 1
    recommend_viewed_items: bool = True
    recent_intent_candidates: bool = True
    affinity_half_life_days: float = 30.0

    @property
    def recent_intent(self) -> bool:
        return self.recommend_viewed_items and self.recent_intent_candidates

    @property
    def exclude_touched(self) -> bool:
        return self.recent_intent or not self.recommend_viewed_items

    def vars(self) -> dict:
        return {"top_n": self.top_n, "recommend_viewed_items": self.recommend_viewed_items,
                "recent_intent_candidates": self.recent_intent_candidates}


DEFAULT = Settings()
VARIANT = Settings(top_n=5, recommend_viewed_items=False)


@dataclass(frozen=True)
class Built:
    target: Target


@pytest.fixture(scope="module")
def built(base_target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """Generate, load, build the warehouse and the similarity table, then the serving models."""
    from aisle.generate import generate
    from aisle.load import load_paths
    from aisle.similarity import compute_similarity

    data = tmp_path_factory.mktemp("serving_data")
    generate(Path(data), scale=SCALE, seed=SEED, progress=False)
    with throwaway_database(base_target, "serving") as target:
        load_paths([Path(data)], target=target, progress=False)
        run_dbt(UPSTREAM, quiet=True)
        compute_similarity(target=target)
        run_dbt(DOWNSTREAM, quiet=True)
        yield Built(target)


# --------------------------------------------------------------------------- brute force


@dataclass
class Inputs:
    similarity: list[tuple[int, int, float, int]]
    categories: list[int]
    trending: dict[int, tuple[int, int, float, bool | None]]     # item -> category, root, score, available
    popularity: dict[int, tuple[float, bool | None]]              # item -> weighted events, available
    affinity: dict[int, dict[int, float]]                         # user -> category -> score
    events: list[tuple[int, int, str, int]]                       # user, item, type, epoch microseconds
    weights: dict[str, float]
    available: dict[int, bool | None]                             # dim_items
    n_events: dict[int, int]                                      # dim_users


def read_inputs(conn: psycopg.Connection) -> Inputs:
    q = conn.execute
    return Inputs(
        similarity=q("select category_id, neighbor_category_id, similarity, rank "
                     "from recs.category_similarity").fetchall(),
        categories=[r[0] for r in q("select category_id from marts.dim_categories where category_id <> -1")],
        trending={r[0]: r[1:] for r in q(
            "select item_id, category_id, root_category_id, trending_score, is_available from recs.rec_item_trending")},
        popularity={r[0]: r[1:] for r in q(
            "select item_id, weighted_events, is_available from recs.rec_item_popularity")},
        affinity=_nested(q("select user_id, category_id, affinity_score from recs.rec_user_category_affinity")),
        events=q("select user_id, item_id, event_type, (extract(epoch from event_ts) * 1000000)::bigint "
                 "from marts.fct_events").fetchall(),
        weights={k: float(v) for k, v in q("select event_type, weight from seeds.event_weights")},
        available=dict(q("select item_id, is_available from marts.dim_items").fetchall()),
        n_events=dict(q("select user_id, n_events from marts.dim_users").fetchall()),
    )


def _nested(rows) -> dict[int, dict[int, float]]:
    out: dict[int, dict[int, float]] = defaultdict(dict)
    for user, category, score in rows:
        out[user][category] = score
    return out


def _fixed(x: float) -> float:
    """A term rounded to a multiple of 2^-32 (Postgres round(): half away from zero)."""
    return math.floor(x * UNIT + 0.5) / UNIT


def candidate_lists(inp: Inputs, s: Settings) -> dict[int, list[tuple[int, float]]]:
    """rec_category_candidates: category -> [(item, cf_weight)] in list order."""
    by_category: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for item, (category, _root, score, available) in inp.trending.items():
        if category != -1 and available is not False:
            pop = inp.popularity.get(item, (0.0, None))[0]
            by_category[category].append((score, pop, item))
    own: dict[int, list[tuple[int, int, float]]] = {}
    for category, rows in by_category.items():
        rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
        best = rows[0][0]
        own[category] = [(rank, item, (score / best) if best > 0 else 0.0)
                         for rank, (score, _pop, item) in enumerate(rows[: s.candidates_per_category], start=1)]
    neighbours: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for category, neighbour, sim, rank in inp.similarity:
        if rank <= s.similar_categories_per_user and category != neighbour:
            neighbours[category].append((neighbour, sim))
    lists = {}
    for category in inp.categories:
        entries = []
        for item_category, sim in [(category, 1.0), *neighbours[category]]:
            for rank, item, weight in own.get(item_category, []):
                entries.append((sim * weight, sim, rank, item))
        entries.sort(key=lambda e: (-e[0], -e[1], e[2], e[3]))
        if entries:
            lists[category] = [(item, cf) for cf, _sim, _rank, item in entries[: s.candidates_per_category]]
    return lists


@dataclass
class Touched:
    purchased: bool = False
    carted: bool = False
    intent_units: int = 0


def interactions(inp: Inputs, s: Settings) -> dict[int, dict[int, Touched]]:
    """user -> item -> what the visitor did (the intent score in 2^-32 units, summed exactly)."""
    anchor = max(e[3] for e in inp.events)
    out: dict[int, dict[int, Touched]] = defaultdict(lambda: defaultdict(Touched))
    for user, item, kind, ts in inp.events:
        t = out[user][item]
        if kind == "transaction":
            t.purchased = True
            continue
        t.carted |= kind == "addtocart"
        # date_part('epoch', anchor - ts): the interval's microseconds / 1e6, as Postgres does
        decay = 0.5 ** (((anchor - ts) / 1000000.0) / (s.affinity_half_life_days * 86400.0))
        t.intent_units += math.floor(inp.weights.get(kind, 0.0) * decay * UNIT + 0.5)
    return out


def expected_lists(inp: Inputs, s: Settings, pure: bool = False) -> dict[int, list[tuple[int, float, str, str]]]:
    """user -> [(item, score, source, reason)] in rank order: the hybrid, or category CF alone."""
    lists = candidate_lists(inp, s)
    touched = interactions(inp, s)
    n = s.top_n
    trending_order = sorted((i for i, t in inp.trending.items() if t[3] is not False),
                            key=lambda i: (-inp.trending[i][2], i))
    popularity_order = sorted((i for i, p in inp.popularity.items() if p[1] is not False),
                              key=lambda i: (-inp.popularity[i][0], i))
    in_category: dict[int, list[int]] = defaultdict(list)
    for item in sorted(trending_order, key=lambda i: (-inp.trending[i][2], -inp.popularity.get(i, (0.0,))[0], i)):
        in_category[inp.trending[item][0]].append(item)

    out = {}
    for user, n_events in inp.n_events.items():
        if n_events < s.known_user_min_events:
            continue
        items = touched.get(user, {})
        exclude_touched = (not s.recommend_viewed_items) if pure else s.exclude_touched
        excluded = {i for i, t in items.items() if exclude_touched or t.purchased}
        rows: list[tuple[int, float, str, str]] = []
        if s.recent_intent and not pure:
            intent = sorted((i for i, t in items.items() if not t.purchased and inp.available.get(i) is not False),
                            key=lambda i: (-items[i].intent_units, i))[:n]
            rows += [(i, items[i].intent_units / UNIT, "category_cf",
                      "you added this to your cart recently" if items[i].carted else "you viewed this recently")
                     for i in intent]
        room = n - len(rows)
        browsed = inp.affinity.get(user, {})
        terms: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for category, affinity in browsed.items():
            taken = [(i, cf) for i, cf in lists.get(category, []) if i not in excluded][:room]
            for item, cf in taken:
                term = affinity * cf
                terms[item].append((_fixed(term) if len(browsed) > 1 else term, category))
        scored = []
        for item, ts in terms.items():
            best = min(ts, key=lambda t: (-t[0], t[1]))
            scored.append((sum(t[0] for t in ts), item, best[1]))
        scored.sort(key=lambda r: (-r[0], r[1]))
        rows += [(item, score, "category_cf", f"because you browsed category {category}")
                 for score, item, category in scored[:room]]
        if not pure and len(rows) < n:
            seen = {r[0] for r in rows} | excluded
            tiers = []
            for category in sorted(browsed, key=lambda c: (-browsed[c], c)):
                tiers += [(i, inp.trending[i][2], "category_trending", f"trending in category {category}")
                          for i in in_category.get(category, [])]
            tiers += [(i, inp.trending[i][2], "trending", "trending now") for i in trending_order]
            tiers += [(i, inp.popularity[i][0], "popularity", "popular overall") for i in popularity_order]
            for row in tiers:
                if len(rows) == n:
                    break
                if row[0] not in seen:
                    rows.append(row)
                    seen.add(row[0])
        if rows:
            out[user] = rows
    return out


def expected_defaults(inp: Inputs, s: Settings) -> dict[int | None, list[tuple[int, float, str, str]]]:
    trending = sorted((i for i, t in inp.trending.items() if t[3] is not False),
                      key=lambda i: (-inp.trending[i][2], i))
    popular = sorted((i for i, p in inp.popularity.items() if p[1] is not False),
                     key=lambda i: (-inp.popularity[i][0], i))
    roots = sorted({inp.trending[i][1] for i in trending} - {-1})
    out = {}
    for root in [None, *roots]:
        tiers = []
        if root is not None:
            tiers += [(i, inp.trending[i][2], "category_trending", f"trending in category {root}")
                      for i in trending if inp.trending[i][1] == root]
        tiers += [(i, inp.trending[i][2], "trending", "trending now") for i in trending]
        tiers += [(i, inp.popularity[i][0], "popularity", "popular overall") for i in popular]
        rows, seen = [], set()
        for row in tiers:
            if row[0] not in seen and len(rows) < s.top_n:
                rows.append(row)
                seen.add(row[0])
        out[root] = rows
    return out


def actual_lists(conn: psycopg.Connection, relation: str, key: str = "user_id", has_source: bool = True) -> dict:
    source = "source" if has_source else "'category_cf'"
    out: dict = defaultdict(list)
    for k, rank, item, score, src, reason in conn.execute(
            f"select {key}, rank, item_id, score, {source}, reason from {relation} order by {key}, rank"):
        assert rank == len(out[k]) + 1, (k, rank)
        out[k].append((item, score, src, reason))
    return dict(out)


def assert_same_lists(actual: dict, expected: dict, what: str) -> None:
    assert actual.keys() == expected.keys(), f"{what}: different visitors"
    for key, rows in expected.items():
        got = actual[key]
        assert [(r[0], r[2], r[3]) for r in got] == [(r[0], r[2], r[3]) for r in rows], f"{what} {key}"
        for (_, g, _, _), (_, e, _, _) in zip(got, rows):
            assert g == pytest.approx(e, rel=1e-9, abs=1e-9), f"{what} {key}"


# --------------------------------------------------------------------------- tests


def test_hybrid_and_pure_lists_equal_brute_force(built: Built):
    with connect(built.target) as conn:
        inp = read_inputs(conn)
        hybrid = actual_lists(conn, "recs.rec_user_recommendations")
        pure = actual_lists(conn, "recs.rec_user_cf_candidates", has_source=False)
        defaults = actual_lists(conn, "recs.rec_default_recommendations", key="root_category_id")
    expected = expected_lists(inp, DEFAULT)
    assert_same_lists(hybrid, expected, "hybrid")
    # every known visitor has exactly top_n distinct items
    assert len(hybrid) == sum(1 for n in inp.n_events.values() if n >= 1)
    assert all(len(rows) == DEFAULT.top_n and len({r[0] for r in rows}) == DEFAULT.top_n for rows in hybrid.values())
    assert {r[2] for rows in hybrid.values() for r in rows} <= SOURCES
    # the data exercise every path: recent intent, category CF, and at least one top-up tier
    reasons = {r[3].split(" category")[0] for rows in hybrid.values() for r in rows}
    assert {"you viewed this recently", "because you browsed", "trending now"} <= reasons
    assert any(len(inp.affinity.get(u, {})) > 1 for u in hybrid), "no multi-category visitor in the sample"
    assert_same_lists(pure, expected_lists(inp, DEFAULT, pure=True), "pure CF")
    assert_same_lists(defaults, expected_defaults(inp, DEFAULT), "defaults")


def test_other_vars_exclude_touched_items(built: Built):
    """top_n 5 and recommend_viewed_items false: no recent intent, nothing the visitor touched."""
    run_dbt(DOWNSTREAM, vars=VARIANT.vars(), quiet=True)
    try:
        with connect(built.target) as conn:
            inp = read_inputs(conn)
            hybrid = actual_lists(conn, "recs.rec_user_recommendations")
            pure = actual_lists(conn, "recs.rec_user_cf_candidates", has_source=False)
        expected = expected_lists(inp, VARIANT)
        assert_same_lists(hybrid, expected, "hybrid")
        assert_same_lists(pure, expected_lists(inp, VARIANT, pure=True), "pure CF")
        touched = {(u, i) for u, i, _, _ in inp.events}
        assert not any((u, r[0]) in touched for u, rows in hybrid.items() for r in rows)
    finally:
        run_dbt(DOWNSTREAM, quiet=True)


def test_completeness_tests_fail_on_broken_lists(built: Built):
    """recs_hybrid_lists_are_complete fails, naming the fault, for lists broken on purpose: a
    fast-path list one row short, a duplicate item in fast-path lists, and in the general table a
    repeated rank, an unavailable item and a known visitor without a list. The fast route is a
    view, so its rows are broken through the tables it reads."""
    with connect(built.target) as conn:
        q = conn.execute
        short_user = q("select user_id from recs.rec_user_profiles where is_fast and n_intent = 0 "
                       "order by user_id limit 1").fetchone()[0]
        q("update recs.rec_user_profiles set bound = bound - 1 where user_id = %s", (short_user,))
        # a duplicate: the second entry of one list becomes its first item, for every fast visitor
        # of that category whose list reads both positions
        category, first_item = q(
            "select c.category_id, c.item_id from recs.rec_category_candidates c "
            "join recs.rec_user_profiles p on p.category_id = c.category_id and p.is_fast and p.skip_mask = 0 "
            "and p.user_id <> %s where c.list_rank = 1 order by c.category_id limit 1", (short_user,)).fetchone()
        q("update recs.rec_category_candidates set item_id = %s where category_id = %s and list_rank = 2",
          (first_item, category))
        # the visitors whose (fast-path) list now holds an item twice, counted here in Python
        seen: dict[int, list[int]] = {}
        for u, i in q("select r.user_id, r.item_id from recs.rec_user_recs_fast_path r "
                      "join recs.rec_user_profiles p using (user_id) where p.category_id = %s", (category,)):
            seen.setdefault(u, []).append(i)
        dup_users = {u for u, items in seen.items() if len(set(items)) < len(items)}
        rank_user, unavailable_user, missing_user = [u for (u,) in q(
            "select user_id from recs.rec_user_recs_general_path group by user_id order by user_id limit 3")]
        q("update recs.rec_user_recs_general_path set rank = 1 where user_id = %s and rank = 2", (rank_user,))
        q("delete from recs.rec_user_recs_general_path where user_id = %s", (missing_user,))
        unavailable_item = q("select item_id from marts.dim_items where is_available = false and item_id not in "
                             "(select item_id from recs.rec_user_recs_general_path where user_id = %s) "
                             "order by item_id limit 1", (unavailable_user,)).fetchone()[0]
        q("update recs.rec_user_recs_general_path set item_id = %s where user_id = %s and rank = %s",
          (unavailable_item, unavailable_user, DEFAULT.top_n))
        conn.commit()
    assert dup_users - {short_user}, "no fast visitor reads both positions of the broken list"
    try:
        run = run_dbt(["test", "--select", "test_name:recs_hybrid_lists_are_complete", "--store-failures"],
                      quiet=True, check=False)
        tests = [n for n in run.nodes if n.resource_type == "test"]
        assert len(tests) == 2 and {n.status for n in tests} == {"fail"}, [(n.name, n.status) for n in tests]
        with connect(built.target) as conn:
            problems = {}
            for (table,) in conn.execute(
                    "select table_schema || '.' || table_name from information_schema.tables "
                    "where table_name like 'recs_hybrid_lists_are_complete%%'").fetchall():
                problems.update(dict(conn.execute(f"select user_id, problem from {table}").fetchall()))
    finally:
        run_dbt(DOWNSTREAM, quiet=True)
    n = DEFAULT.top_n
    assert problems == {
        short_user: f"not exactly {n} rows",
        **{u: f"not {n} distinct items (a duplicate, or a null item)" for u in dup_users - {short_user}},
        rank_user: f"ranks are not 1..{n}, each once",
        unavailable_user: "a row with a null score, an item known to be unavailable, or an unknown source",
        missing_user: "known visitor without a list",
    }


def test_evaluation_users_restrict_the_build_to_their_lists(built: Built):
    """Var evaluation_users (as `aisle evaluate` sets it): the serving models hold only the known
    visitors among those users, with the same rows as the unrestricted build; dbt's tests of the
    restricted build (lists complete for every known visitor among them) pass."""
    profile_columns = ("user_id, n_events, n_touched, n_purchased, n_intent_candidates, category_id, "
                       "affinity_score, skip_mask, is_fast, bound, skip_mask_pure, is_fast_pure, bound_pure")
    with connect(built.target) as conn:
        full = actual_lists(conn, "recs.rec_user_recommendations")
        full_pure = actual_lists(conn, "recs.rec_user_cf_candidates", has_source=False)
        full_profiles = conn.execute(f"select {profile_columns} from recs.rec_user_profiles").fetchall()
        multi = [u for (u,) in conn.execute(
            "select user_id from recs.rec_user_profiles where not is_fast order by user_id").fetchall()]
        unknown = conn.execute("select max(user_id) + 1 from marts.dim_users").fetchone()[0]
    topped_up = sorted(u for u, rows in full.items() if any(r[2] != "category_cf" for r in rows))
    chosen = {u for u in full if u % 4 == 0} | set(multi[:25]) | set(topped_up[:10])
    assert topped_up and multi and chosen < full.keys()
    users = sorted(chosen | {unknown})
    with connect(built.target) as conn:
        conn.execute("create schema if not exists evaluation_test")
        conn.execute("drop table if exists evaluation_test.test_users")
        conn.execute("create table evaluation_test.test_users (user_id bigint primary key)")
        with conn.cursor().copy("copy evaluation_test.test_users (user_id) from stdin") as copy:
            for user in users:
                copy.write_row((user,))
        conn.commit()
    run_dbt(DOWNSTREAM, vars={"evaluation_users": "evaluation_test.test_users"}, quiet=True)
    try:
        with connect(built.target) as conn:
            hybrid = actual_lists(conn, "recs.rec_user_recommendations")
            pure = actual_lists(conn, "recs.rec_user_cf_candidates", has_source=False)
            profiles = conn.execute(f"select {profile_columns} from recs.rec_user_profiles").fetchall()
            n_interacting = conn.execute(
                "select count(distinct user_id) from recs.rec_user_item_interactions").fetchone()[0]
        assert hybrid == {u: rows for u, rows in full.items() if u in chosen}
        assert pure == {u: rows for u, rows in full_pure.items() if u in chosen}
        assert sorted(profiles) == sorted(r for r in full_profiles if r[0] in chosen)
        assert n_interacting == len(chosen)
    finally:
        run_dbt(DOWNSTREAM, quiet=True)
        with connect(built.target) as conn:
            conn.execute("drop schema evaluation_test cascade")
            conn.commit()


def test_contracts_indexes_and_grants(built: Built):
    with connect(built.target) as conn:
        columns = conn.execute(
            "select table_name, string_agg(column_name || ' ' || data_type, ', ' order by ordinal_position) "
            "from information_schema.columns where table_schema = 'recs' and table_name in "
            "('rec_user_recommendations', 'rec_default_recommendations', 'rec_user_cf_candidates') "
            "group by table_name").fetchall()
        kinds = dict(conn.execute(
            "select c.relname, c.relkind::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'recs' and c.relname in ('rec_user_recs_fast_path', 'rec_user_recs_general_path')"
        ).fetchall())
        general_indexes = [d for (d,) in conn.execute(
            "select indexdef from pg_indexes where schemaname = 'recs' and tablename = 'rec_user_recs_general_path'")]
        granted = conn.execute(
            "select has_table_privilege('aisle_reader', 'recs.rec_user_recommendations', 'select')").fetchone()[0]
        # The served relation is a view over the fast route (a view over the profiles, the category
        # lists and the interactions) and the general table: a lookup by user_id must reach every
        # table through an index, never by a scan (even where the planner would prefer one).
        conn.execute("set enable_seqscan = off; set enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "explain select * from recs.rec_user_recommendations where user_id = 1"))
    assert dict(columns) == {
        "rec_user_recommendations": "user_id bigint, rank integer, item_id bigint, score double precision, "
                                    "source text, reason text",
        "rec_default_recommendations": "root_category_id bigint, rank integer, item_id bigint, "
                                       "score double precision, source text, reason text",
        "rec_user_cf_candidates": "user_id bigint, rank integer, item_id bigint, score double precision, "
                                  "reason text",
    }
    assert kinds == {"rec_user_recs_fast_path": "v", "rec_user_recs_general_path": "r"}
    assert any("UNIQUE INDEX" in d and "(user_id, item_id)" in d for d in general_indexes), general_indexes
    for table in ("rec_user_recs_general_path", "rec_user_profiles", "rec_category_candidates",
                  "rec_user_item_interactions"):
        assert re.search(rf"Index (Only )?Scan using \S+ on {table}", plan), (table, plan)
    assert "Seq Scan" not in plan, plan
    assert granted


def test_aisle_recommend_known_and_unknown_visitor(built: Built):
    from aisle.cli import cli

    with connect(built.target) as conn:
        known = conn.execute("select user_id from recs.rec_user_recommendations where source = 'category_cf' "
                             "and reason like 'because%%' group by user_id order by user_id limit 1").fetchone()[0]
        unknown = conn.execute("select max(user_id) + 1 from marts.dim_users").fetchone()[0]
        mine = conn.execute("select item_id from recs.rec_user_recommendations where user_id = %s order by rank",
                            (known,)).fetchall()
        default = conn.execute("select item_id from recs.rec_default_recommendations "
                               "where root_category_id is null order by rank").fetchall()
    runner = CliRunner()
    wide = {"COLUMNS": "200"}  # Rich reads the width from the environment: no wrapped reasons
    result = runner.invoke(cli, ["recommend", str(known)], env=wide)
    assert result.exit_code == 0, result.output
    assert "because you browsed category" in result.output and "category_cf" in result.output
    assert "unknown" not in result.output
    assert str(mine[0][0]) in result.output
    result = runner.invoke(cli, ["recommend", str(unknown), "--n", "3"], env=wide)
    assert result.exit_code == 0, result.output
    assert f"user {unknown} is unknown or cold" in result.output and "the global default list" in result.output
    assert "trending now" in result.output
    assert all(str(item) in result.output for (item,) in default[:3])


def test_lookup_in_a_root_category_context(built: Built):
    """A visitor without a list who browses a root category gets that root's default list; one
    with a list keeps it; a root without a list (not a root category) falls back to the global one."""
    from aisle.cli import cli
    from aisle.pipeline import lookup_recommendations

    with connect(built.target) as conn:
        lists: dict[int | None, list[tuple]] = defaultdict(list)
        for root, rank, item, source, reason in conn.execute(
                "select root_category_id, rank, item_id, source, reason from recs.rec_default_recommendations"):
            lists[root].append((rank, item, source, reason))
        known = conn.execute("select min(user_id) from recs.rec_user_recommendations").fetchone()[0]
        mine = [r[0] for r in conn.execute(
            "select item_id from recs.rec_user_recommendations where user_id = %s order by rank", (known,))]
        unknown = conn.execute("select max(user_id) + 1 from marts.dim_users").fetchone()[0]
        not_a_root = conn.execute(
            "select min(category_id) from marts.dim_categories where parent_category_id is not null").fetchone()[0]
    roots = sorted(r for r in lists if r is not None)
    assert len(roots) >= 2 and not_a_root is not None and not_a_root not in lists
    for root in roots:
        rows = lookup_recommendations(unknown, target=built.target, root_category_id=root)
        expected = sorted(lists[root])
        assert [(r["rank"], r["item_id"], r["source"], r["reason"]) for r in rows] == expected
        assert all(r["is_default"] and r["context_root_category_id"] == root for r in rows)
    rows = lookup_recommendations(unknown, target=built.target, root_category_id=not_a_root)
    assert [(r["rank"], r["item_id"]) for r in rows] == [(x[0], x[1]) for x in sorted(lists[None])]
    assert all(r["is_default"] and r["context_root_category_id"] is None for r in rows)
    rows = lookup_recommendations(known, target=built.target, root_category_id=roots[0])
    assert [r["item_id"] for r in rows] == mine and not any(r["is_default"] for r in rows)

    runner = CliRunner()
    wide = {"COLUMNS": "200"}
    result = runner.invoke(cli, ["recommend", str(unknown), "--n", "3", "--root-category", str(roots[0])], env=wide)
    assert result.exit_code == 0, result.output
    assert f"the default list of root category {roots[0]}" in result.output
    assert all(str(x[1]) in result.output for x in sorted(lists[roots[0]])[:3])
    result = runner.invoke(cli, ["recommend", str(unknown), "--n", "3", "--root-category", str(not_a_root)],
                           env=wide)
    assert result.exit_code == 0, result.output
    assert "the global default list" in result.output and f"no list for root category {not_a_root}" in result.output


def test_lookup_analysis_is_the_query_aisle_recommend_runs(built: Built):
    """dbt compiles analyses/lookup_user_recommendations.sql to the query `aisle recommend` runs
    (pipeline.lookup_sql, read from that file), and it returns what `aisle recommend` returns."""
    import os

    from aisle.pipeline import lookup_recommendations, lookup_sql

    run_dbt(["compile", "--select", "lookup_user_recommendations"], quiet=True)
    path = next(Path(os.environ["DBT_TARGET_PATH"]).rglob("lookup_user_recommendations.sql"))
    compiled = path.read_text()

    def normalized(text: str) -> str:
        text = re.sub(r"--[^\n]*", "", text)
        text = re.sub(r'"[^"]+"\."(recs)"\.', r"\1.", text).replace('"', "")
        return " ".join(text.split())

    assert normalized(compiled) == normalized(lookup_sql().replace("{recs}", "recs"))
    with connect(built.target) as conn:
        known = conn.execute("select min(user_id) from recs.rec_user_recommendations").fetchone()[0]
        root = conn.execute("select min(root_category_id) from recs.rec_default_recommendations").fetchone()[0]
        for user in (known, -1):
            for context in (None, root):
                rows = conn.execute(compiled, {"user_id": user, "n": 10, "root_category_id": context}).fetchall()
                assert [r[1] for r in rows] == [r["item_id"] for r in lookup_recommendations(
                    user, target=built.target, root_category_id=context)]
                assert len(rows) == 10 and rows[0][5] is (user == -1)
                assert rows[0][6] == (context if user == -1 else None)
