"""``aisle evaluate``: the pure-Python parts on hand-made data, and the whole backtest on generated data.

Expected values come from independent computations: per-user Python loops over explicit lists
and truth sets for the metrics, explicit sums over neighbours for the user-user CF, hand-worked
dates for the cutoff, and SQL over the loaded raw events for the end-to-end truth.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest
import scipy.sparse as sp

from aisle.config import schema_suffix
from aisle.evaluate import (
    BASELINE,
    SEGMENTS,
    TREATMENT,
    EvaluateError,
    ModelLists,
    TestSet,
    UserCF,
    Window,
    _sqrt_norm_scaled,
    bootstrap_columns,
    build_hit_matrix,
    build_report,
    categories_to_items,
    clean_json,
    default_cutoff_ms,
    format_as_of,
    global_hits,
    parse_cutoff,
    resolve_window,
    score_all,
    sparse_bootstrap,
    top_categories,
    user_cf_from_cooccurrence,
    write_report,
)
from aisle.metrics import HitMatrix, bootstrap_ci

UTC = timezone.utc


def ms(ts: datetime) -> int:
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1000)


# --------------------------------------------------------------------------- cutoff and window


def test_default_cutoff_is_last_event_minus_test_days_floored_to_midnight():
    last = datetime(2015, 9, 18, 2, 59, 59, 999000, tzinfo=UTC)
    # 2015-09-18 02:59:59.999 - 14 days = 2015-09-04 02:59:59.999 -> floor -> 2015-09-04 00:00
    assert default_cutoff_ms(ms(last), 14) == ms(datetime(2015, 9, 4, tzinfo=UTC))
    # exactly at midnight: nothing to floor
    assert default_cutoff_ms(ms(datetime(2015, 9, 18, tzinfo=UTC)), 14) == ms(datetime(2015, 9, 4, tzinfo=UTC))
    # one millisecond before midnight floors to the previous day
    assert default_cutoff_ms(ms(datetime(2015, 9, 18, tzinfo=UTC)) - 1, 1) == ms(datetime(2015, 9, 16, tzinfo=UTC))

    w = resolve_window(None, 14, ms(last))
    assert w.cutoff == datetime(2015, 9, 4, tzinfo=UTC)
    assert w.end == datetime(2015, 9, 18, tzinfo=UTC)
    assert w.as_of == "2015-09-04"
    assert schema_suffix(w.as_of) == "_bt_20150904"
    assert w.cutoff_ms == ms(datetime(2015, 9, 4, tzinfo=UTC))
    assert w.end_ms == ms(datetime(2015, 9, 18, tzinfo=UTC))
    assert w.to_dict()["last_event"] == "2015-09-18T02:59:59.999000Z"


def test_cutoff_option_is_utc_and_formats_as_the_dbt_var():
    assert parse_cutoff("2015-09-04") == datetime(2015, 9, 4, tzinfo=UTC)
    assert parse_cutoff("2015-09-04T12:30:00+02:00") == datetime(2015, 9, 4, 10, 30, tzinfo=UTC)
    assert parse_cutoff("2015-09-04 10:30Z") == datetime(2015, 9, 4, 10, 30, tzinfo=UTC)
    assert format_as_of(datetime(2015, 9, 4, tzinfo=UTC)) == "2015-09-04"
    assert format_as_of(datetime(2015, 9, 4, 10, 30, tzinfo=UTC)) == "2015-09-04T10:30:00"
    assert format_as_of(datetime(2015, 9, 4, 10, 30, 0, 1500, tzinfo=UTC)) == "2015-09-04T10:30:00.001500"
    w = resolve_window("2015-09-04T10:30:00.0015", 7, None)
    assert w.cutoff_ms == ms(datetime(2015, 9, 4, 10, 30, tzinfo=UTC)) + 2  # ceil: 1.5 ms -> 2 ms
    assert w.rule == "given with --cutoff"
    with pytest.raises(EvaluateError, match="ISO date"):
        parse_cutoff("yesterday")
    with pytest.raises(EvaluateError, match="test-days"):
        resolve_window(None, 0, 123)
    with pytest.raises(EvaluateError, match="load data first"):
        resolve_window(None, 14, None)


# --------------------------------------------------------------------------- hit matrices


def _materialised(lists: ModelLists, n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The long (user, rank, item) arrays with the default list written out for every other user."""
    own = np.zeros(n_users, dtype=bool)
    own[lists.user] = True
    u, r, i = [lists.user], [lists.rank], [lists.item]
    if lists.default is not None:
        rest = np.flatnonzero(~own)
        d = lists.default
        u.append(np.repeat(rest, d.size))
        r.append(np.tile(np.arange(1, d.size + 1), rest.size))
        i.append(np.tile(d, rest.size))
    return np.concatenate(u), np.concatenate(r), np.concatenate(i)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_and_mixed_lists_equal_from_long_on_materialised_lists(seed):
    rng = np.random.default_rng(seed)
    n, k, n_items = 60, 6, 25
    tu = rng.integers(0, n, 200)
    ti = rng.integers(0, n_items, 200)  # repeated pairs on purpose: R is a set
    default = np.array([3, 7, 3, 11, 0, 19, 4, 5])  # a duplicate and more than K items
    hits = global_hits(n, k, default, tu, ti)
    ref = HitMatrix.from_long(n, k, np.repeat(np.arange(n), default.size), np.tile(np.arange(1, 9), n),
                              np.tile(default, n), tu, ti)
    np.testing.assert_array_equal(hits, ref.hits)

    own_users = np.sort(rng.choice(n, 20, replace=False))
    lu = np.repeat(own_users, 5)
    lr = np.tile([1, 2, 3, 5, 7], own_users.size)  # a gap at rank 4 and a rank beyond K
    li = rng.integers(0, n_items, lu.size)
    for d in (default, None):
        lists = ModelLists("m", lu, lr, li, d)
        got = build_hit_matrix(lists, n, k, tu, ti)
        mu, mr, mi = _materialised(lists, n)
        want = HitMatrix.from_long(n, k, mu, mr, mi, tu, ti)
        np.testing.assert_array_equal(got.hits, want.hits)
        np.testing.assert_array_equal(got.present, want.present)
        np.testing.assert_array_equal(np.where(got.present, got.items, -1), np.where(want.present, want.items, -1))
        np.testing.assert_array_equal(got.truth_size, want.truth_size)


# --------------------------------------------------------------------------- user-user CF


def test_user_cf_equals_an_explicit_sum_over_every_other_user():
    x = np.array([
        [1.0, 0.0, 2.0, 0.0],
        [0.5, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # an empty row scores 0
        [3.0, 0.0, 1.0, 4.0],
        [0.0, 2.0, 0.0, 1.0],
    ])
    model = UserCF.fit(sp.csr_matrix(x))
    got = model.scores(sp.csr_matrix(x))
    want = np.zeros_like(x)
    for u in range(5):
        for v in range(5):
            nu, nv = np.linalg.norm(x[u]), np.linalg.norm(x[v])
            if u == v or nu == 0 or nv == 0:
                continue
            want[u] += (x[u] @ x[v]) / (nu * nv) * x[v]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)

    # The streamed path: rows rescaled to x / sqrt(|x|) and folded by the similarity step's
    # accumulator give the same G (category ids deliberately out of order, users in any order).
    from aisle.similarity import cooccurrence

    users, cols = np.nonzero(x)
    ids = np.array([40, 10, 30, 20])
    perm = np.random.default_rng(0).permutation(users.size)
    users, cols = users[perm], cols[perm]
    y = _sqrt_norm_scaled(users + 1000, x[users, cols])
    streamed = user_cf_from_cooccurrence(cooccurrence(users + 1000, ids[cols], y))
    order = np.argsort(ids)
    np.testing.assert_array_equal(streamed.category_ids, ids[order])
    np.testing.assert_allclose(streamed.gram, model.gram[np.ix_(order, order)], rtol=1e-12, atol=1e-12)


def test_top_categories_orders_by_score_then_id_and_skips_non_positive():
    ids = np.array([10, 20, 30, 40])
    scores = np.array([
        [0.5, 0.9, 0.5, 0.0],  # tie 10/30 broken by id; 40 scores 0
        [1e-15, -1.0, 0.0, 0.0],  # 1e-15 is rounding noise next to |-1|: nothing
        [0.0, 0.0, 0.0, 0.0],
    ])
    got = top_categories(scores, ids, 3)
    np.testing.assert_array_equal(got, [[1, 0, 2], [-1, -1, -1], [-1, -1, -1]])


def test_categories_to_items_round_robin():
    cat_items = np.array([
        [100, 101, 102],
        [200, -1, -1],  # a category with one item
        [300, 301, 302],
    ])
    cat_rank = np.array([[2, 1, 0], [0, -1, -1]])
    rows, ranks, items = categories_to_items(cat_rank, cat_items, 5)
    assert list(zip(rows.tolist(), ranks.tolist(), items.tolist(), strict=True)) == [
        (0, 1, 300), (0, 2, 200), (0, 3, 100), (0, 4, 301), (0, 5, 101),
        (1, 1, 100), (1, 2, 101), (1, 3, 102),
    ]


# --------------------------------------------------------------------------- scoring


def test_bootstrap_columns_equals_bootstrap_ci_on_dense_columns():
    rng = np.random.default_rng(3)
    a = (rng.random(500) < 0.2).astype(float)
    cols = {"a": a, "const": np.full(500, 0.25), "b": rng.random(500), "a_again": a.copy(), "zero": np.zeros(500)}
    got = bootstrap_columns(cols, n_resamples=300, seed=7, alpha=0.05)
    ref = bootstrap_ci(cols, n_resamples=300, seed=7).to_dict()["metrics"]
    assert list(got) == list(cols)
    for name in cols:
        for key in ("estimate", "low", "high"):
            assert got[name][key] == pytest.approx(ref[name][key], rel=1e-12, abs=1e-15)
    assert got["const"] == {"estimate": 0.25, "low": 0.25, "high": 0.25}


def test_sparse_bootstrap_draws_the_same_distribution_as_resampling_every_user():
    rng = np.random.default_rng(11)
    n = 3000
    values = np.zeros((n, 3))
    hit = rng.random(n) < 0.04
    values[hit, 0] = 1.0
    values[hit, 1] = rng.choice([0.5, 1.0, 1 / 3], hit.sum())
    values[rng.random(n) < 0.01, 2] = 0.2
    low, high = sparse_bootstrap(values, n_resamples=4000, seed=5, alpha=0.05)
    again = sparse_bootstrap(values, n_resamples=4000, seed=5, alpha=0.05)
    np.testing.assert_array_equal(low, again[0])
    np.testing.assert_array_equal(high, again[1])
    ref = bootstrap_ci(values, n_resamples=4000, seed=6)
    width = ref.high - ref.low
    # Monte Carlo error of a 2.5% quantile with 4,000 resamples is ~1% of the CI width per method.
    assert np.all(np.abs(low - ref.low) < 0.08 * width), (low, ref.low, width)
    assert np.all(np.abs(high - ref.high) < 0.08 * width), (high, ref.high, width)
    # and bootstrap_columns uses it for mostly-zero data, with the plain mean as the estimate
    cols = {"a": values[:, 0], "b": values[:, 1], "c": values[:, 2]}
    got = bootstrap_columns(cols, n_resamples=4000, seed=5, alpha=0.05)
    for j, name in enumerate(cols):
        assert got[name]["estimate"] == pytest.approx(values[:, j].mean(), rel=1e-15)
        assert got[name]["low"] == pytest.approx(low[j], rel=1e-9)
        assert got[name]["high"] == pytest.approx(high[j], rel=1e-9)


def brute_force_metrics(lst: list[int], truth: set[int], k: int) -> dict[str, float]:
    """The definitions of docs/evaluation.md, one user at a time."""
    top = lst[:k]
    hit_ranks = [r + 1 for r, it in enumerate(top) if it in truth and it not in top[:r]]
    n_hit = len(hit_ranks)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(truth), k) + 1))
    return {
        "hr": float(n_hit > 0),
        "precision": n_hit / k,
        "recall": n_hit / len(truth),
        "ndcg": sum(1 / math.log2(r + 1) for r in hit_ranks) / ideal,
        "map": sum((j + 1) / r for j, r in enumerate(hit_ranks)) / min(len(truth), k),
        "mrr": 1 / hit_ranks[0] if hit_ranks else 0.0,
    }


def small_scenario(seed: int = 0, n: int = 300) -> tuple[TestSet, dict[str, ModelLists]]:
    """Random test users, truth and lists shaped like the real ones (global lists, per-user lists)."""
    rng = np.random.default_rng(seed)
    n_items, k = 40, 10
    user_ids = np.sort(rng.choice(100_000, n, replace=False)).astype(np.int64)
    known = rng.random(n) < 0.4
    pairs = sorted({(u, int(rng.zipf(1.6)) % n_items) for u in range(n) for _ in range(int(rng.integers(1, 5)))})
    tu = np.array([p[0] for p in pairs], dtype=np.int64)
    ti = np.array([p[1] for p in pairs], dtype=np.int64)
    test = TestSet(user_ids=user_ids, is_known=known, truth_user=tu, truth_item=ti,
                   truth_intent=rng.random(tu.size) < 0.3, truth_novel=rng.random(tu.size) < 0.7,
                   n_catalog=n_items, data={"test_users": n})
    ku = np.flatnonzero(known)
    per_user = [(u, r + 1, int(it)) for u in ku for r, it in enumerate(rng.permutation(n_items)[:k])]
    lu, lr, li = (np.array([p[j] for p in per_user], dtype=np.int64) for j in range(3))
    half = lu < n // 2
    lists = {
        "popularity": ModelLists.global_list("popularity", np.arange(k)),
        "trending": ModelLists.global_list("trending", np.arange(5, 5 + k)),
        "category_cf": ModelLists("category_cf", lu, lr, li, None),
        "hybrid": ModelLists("hybrid", lu, lr, li, np.arange(5, 5 + k)),
        "user_cf": ModelLists("user_cf", lu[half], lr[half], (li[half] + 1) % n_items, None),
    }
    return test, lists


def explicit_lists(lists: ModelLists, n_users: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n_users)]
    own = set(lists.user.tolist())
    for u, r, i in sorted(zip(lists.user.tolist(), lists.rank.tolist(), lists.item.tolist(), strict=True)):
        out[u].append(i)
        assert len(out[u]) == r
    for u in range(n_users):
        if u not in own and lists.default is not None:
            out[u] = lists.default.tolist()
    return out


def test_score_all_matches_brute_force_on_the_same_users():
    test, lists = small_scenario()
    ks = [3, 5, 10]
    scored, hms = score_all(test, lists, ("all", "intent", "all_novel", "intent_novel"), ks, seed=1, n_resamples=50)
    n = test.n_users
    for variant in ("all", "intent", "all_novel", "intent_novel"):
        mask = test.variant_mask(variant)
        truth = [set() for _ in range(n)]
        for u, i in zip(test.truth_user[mask].tolist(), test.truth_item[mask].tolist(), strict=True):
            truth[u].add(i)
        for segment in SEGMENTS:
            users = [u for u in range(n) if truth[u] and (segment == "all" or (segment == "known") == test.is_known[u])]
            res = scored["metrics"][variant][segment]
            assert res["n_users"] == len(users)
            # every model is scored on the same users
            assert set(res["models"]) == set(lists)
            for m, lst in lists.items():
                per_user = explicit_lists(lst, n)
                served = sum(1 for u in users if per_user[u]) / len(users)
                assert res["models"][m]["user_coverage"]["estimate"] == pytest.approx(served, abs=1e-12)
                for k in ks:
                    bf = [brute_force_metrics(per_user[u], truth[u], k) for u in users]
                    for metric in ("hr", "precision", "recall", "ndcg", "map", "mrr"):
                        want = sum(b[metric] for b in bf) / len(users)
                        got = res["models"][m]["at_k"][str(k)][metric]
                        assert got["estimate"] == pytest.approx(want, abs=1e-12), (variant, segment, m, k, metric)
                        assert got["low"] <= got["high"]
                    catalog = {i for u in users for i in per_user[u][:k]}
                    assert res["models"][m]["at_k"][str(k)]["catalog_coverage"] == pytest.approx(
                        len(catalog) / test.n_catalog)
                    if m != BASELINE:
                        vs = res["models"][m]["vs_baseline"][str(k)]
                        base = explicit_lists(lists[BASELINE], n)
                        only_m = sum(1 for u in users if bf[users.index(u)]["hr"] and not
                                     brute_force_metrics(base[u], truth[u], k)["hr"])
                        assert vs["mcnemar"]["a_only"] == only_m
                        assert vs["mcnemar"]["n"] == len(users)
    # cold users cannot be served by the pure CF models: coverage 0, and every metric exactly 0
    cold = scored["metrics"]["all"]["cold"]["models"]["category_cf"]
    assert cold["user_coverage"]["estimate"] == 0.0
    assert cold["at_k"]["10"]["hr"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}


def test_simulated_ab_scores_each_arm_with_its_own_model():
    from aisle.stats import hash_split

    test, lists = small_scenario(seed=5, n=400)
    scored, _ = score_all(test, lists, ("all", "intent"), [5, 10], seed=3, n_resamples=20)
    ab = scored["ab_test"]
    treat = hash_split(test.user_ids, salt="aisle-evaluate-ab-3")
    assert (ab["n_control"], ab["n_treatment"]) == (int((~treat).sum()), int(treat.sum()))
    n = test.n_users
    for outcome in ("all", "intent"):
        mask = test.variant_mask(outcome)
        truth = [set() for _ in range(n)]
        for u, i in zip(test.truth_user[mask].tolist(), test.truth_item[mask].tolist(), strict=True):
            truth[u].add(i)
        c_lists, t_lists = explicit_lists(lists[BASELINE], n), explicit_lists(lists[TREATMENT], n)
        for k in (5, 10):
            conv_c = sum(1 for u in range(n) if not treat[u] and set(c_lists[u][:k]) & truth[u])
            conv_t = sum(1 for u in range(n) if treat[u] and set(t_lists[u][:k]) & truth[u])
            r = ab["outcomes"][outcome][str(k)]
            assert (r["control"]["conversions"], r["treatment"]["conversions"]) == (conv_c, conv_t)
            assert (r["control"]["n"], r["treatment"]["n"]) == (ab["n_control"], ab["n_treatment"])


def test_clean_json_rounds_and_nulls():
    got = clean_json({"a": np.float64(0.1 + 0.2), "b": float("nan"), "c": np.int64(3), "d": [np.bool_(True), -0.0],
                      "e": (1.0, float("inf"))})
    assert got == {"a": 0.3, "b": None, "c": 3, "d": [True, 0.0], "e": [1.0, None]}
    assert json.dumps(got)


def test_report_files_are_written_and_identical_for_the_same_seed(tmp_path):
    test, lists = small_scenario(seed=2)
    window = Window(datetime(2015, 9, 4, tzinfo=UTC), 14, "given with --cutoff", None)
    texts = []
    for run in range(2):
        scored, _ = score_all(test, lists, ("all", "intent", "all_novel", "intent_novel"), [5, 10, 20], seed=4,
                              n_resamples=100)
        report = build_report(window, test, lists, scored, [5, 10, 20], seed=4, n_resamples=100)
        paths = write_report(report, tmp_path / f"run{run}")
        texts.append((tmp_path / f"run{run}" / "evaluation.json").read_text())
        md = (tmp_path / f"run{run}" / "evaluation.md").read_text()
        assert "## Protocol, in plain words" in md and "per 10,000" in md.lower()
        assert [p.rsplit("/", 1)[1] for p in paths["charts"]] == [
            "evaluation_hr.png", "evaluation_ndcg.png", "evaluation_lift.png"]
        for chart in paths["charts"]:
            with open(chart, "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert texts[0] == texts[1]
    data = json.loads(texts[0])
    assert data["protocol"]["cutoff"] == "2015-09-04T00:00:00Z"
    assert "timings" not in data and "paths" not in data


def test_report_renders_with_one_truth_variant_and_an_empty_segment(tmp_path):
    test, lists = small_scenario(seed=9, n=120)
    test = TestSet(user_ids=test.user_ids, is_known=np.zeros(test.n_users, dtype=bool),  # nobody is known
                   truth_user=test.truth_user, truth_item=test.truth_item, truth_intent=test.truth_intent,
                   truth_novel=test.truth_novel, n_catalog=test.n_catalog, data=test.data)
    scored, _ = score_all(test, lists, ("intent", "intent_novel"), [5, 10], seed=0, n_resamples=50)
    assert scored["metrics"]["intent"]["known"]["n_users"] == 0
    assert list(scored["ab_test"]["outcomes"]) == ["intent"]
    window = Window(datetime(2015, 9, 4, tzinfo=UTC), 7, "given with --cutoff", None)
    report = build_report(window, test, lists, scored, [5, 10], seed=0, n_resamples=50)
    paths = write_report(report, tmp_path)
    md = (tmp_path / "evaluation.md").read_text()
    assert "No users in this segment." in md
    assert len(paths["charts"]) == 3
    from rich.console import Console

    from aisle.report import print_summary

    console = Console(record=True, width=160)
    print_summary(clean_json(report), console)
    text = console.export_text()
    assert "HR@10" in text and "Per 10,000 visitors" in text


# --------------------------------------------------------------------------- end to end on generated data

SCALE = 0.01
SEED = 7
KS = [5, 10, 20]
RESAMPLES = 200


def _snapshot(conn) -> dict[tuple[str, str], tuple[int, int, str]]:
    """Every table outside the backtest schemas: (oid, rows, md5 of the rows' text)."""
    rows = conn.execute(
        "select n.nspname, c.relname, c.oid::bigint from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where c.relkind in ('r', 'p', 'm', 'v') and n.nspname not like 'pg\\_%' and n.nspname <> "
        "'information_schema' and n.nspname not like '%\\_bt\\_%' order by 1, 2").fetchall()
    out = {}
    for schema, table, oid in rows:
        from psycopg import sql as psql

        count, digest = conn.execute(psql.SQL(
            "select count(*), coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from {} t"
        ).format(psql.Identifier(schema, table))).fetchone()
        out[(schema, table)] = (oid, count, digest)
    return out


@pytest.fixture(scope="module")
def evaluated(base_target, tmp_path_factory):
    """Generated data, loaded; a production sentinel; then `evaluate` twice with the same seed.

    Prints the first run's step timings (pytest -s) to keep an eye on the suite's duration.
    """
    from conftest import throwaway_database

    from aisle.db import connect
    from aisle.evaluate import evaluate
    from aisle.generate import generate
    from aisle.load import load_paths

    with throwaway_database(base_target, "eval") as target:
        data = tmp_path_factory.mktemp("eval_data")
        generate(data, scale=SCALE, seed=SEED, progress=False)
        load_paths([data], target=target, progress=False)
        with connect(target) as conn:
            # A stand-in for production marts: evaluate must leave it (and raw) exactly as it is.
            conn.execute("create schema recs")
            conn.execute("create table recs.rec_item_popularity (item_id bigint, note text)")
            conn.execute("insert into recs.rec_item_popularity values (1, 'production'), (2, 'untouched')")
            schemas_before = {r[0] for r in conn.execute("select nspname from pg_namespace").fetchall()}
            before = _snapshot(conn)
        out = tmp_path_factory.mktemp("eval_reports")
        first = evaluate(target=target, ks=KS, seed=3, out_dir=out / "first", n_resamples=RESAMPLES)
        # The second run re-scores the same backtest build: the build itself is deterministic (a
        # rebuild as of T gives identical tables: test_time_travel_and_roles.py), so this checks
        # the rest, the scoring, bootstrap, tests and report, in a third of the time.
        second = evaluate(target=target, ks=KS, seed=3, out_dir=out / "second", n_resamples=RESAMPLES,
                          build=False)
        print({name: round(sec, 1) for name, sec in first["timings"].items()})
        with connect(target) as conn:
            schemas_after = {r[0] for r in conn.execute("select nspname from pg_namespace").fetchall()}
            after = _snapshot(conn)
        yield {"target": target, "first": first, "second": second, "out": out, "before": before, "after": after,
               "new_schemas": schemas_after - schemas_before}


@pytest.mark.server
@pytest.mark.slow
def test_the_report_is_reproducible_and_complete(evaluated):
    first, out = evaluated["first"], evaluated["out"]
    assert (out / "first" / "evaluation.json").read_bytes() == (out / "second" / "evaluation.json").read_bytes()
    data = json.loads((out / "first" / "evaluation.json").read_text())
    assert data["protocol"]["ks"] == KS and data["protocol"]["seed"] == 3
    assert data["protocol"]["bootstrap"]["n_resamples"] == RESAMPLES
    md = (out / "first" / "evaluation.md").read_text()
    for heading in ("## What it means for a shop", "## Protocol, in plain words", "## Simulated randomized A/B test"):
        assert heading in md
    assert "Per 10,000 visitors" in md
    assert len(first["paths"]["charts"]) == 3
    for chart in first["paths"]["charts"]:
        with open(chart, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert set(first["timings"]) >= {"total"}


@pytest.mark.server
@pytest.mark.slow
def test_production_and_raw_are_untouched(evaluated):
    assert evaluated["after"] == evaluated["before"]
    suffix = schema_suffix(evaluated["first"]["protocol"]["as_of"])
    new = {s for s in evaluated["new_schemas"] if not s.startswith(("pg_temp_", "pg_toast_temp_"))}
    assert new and all(s.endswith(suffix) for s in new), new


def _sql_truth(conn, cutoff: str, end: str) -> tuple[list[int], dict, set[int]]:
    """Test users, their truth per variant and the known ones, straight from raw.events in SQL."""
    rows = conn.execute(
        """
        with w as (
            select visitorid, itemid, event from raw.events
            where to_timestamp("timestamp" / 1000.0) >= %(t)s::timestamptz
              and to_timestamp("timestamp" / 1000.0) < %(e)s::timestamptz
        )
        select w.visitorid, w.itemid, bool_or(w.event in ('addtocart', 'transaction')),
               exists (select 1 from raw.events p where p.visitorid = w.visitorid and p.itemid = w.itemid
                       and to_timestamp(p."timestamp" / 1000.0) < %(t)s::timestamptz)
        from w group by 1, 2
        """, {"t": cutoff, "e": end}).fetchall()
    users = sorted({r[0] for r in rows})
    truth: dict[str, dict[int, set[int]]] = {v: {u: set() for u in users}
                                             for v in ("all", "intent", "all_novel", "intent_novel")}
    for u, i, intent, seen in rows:
        truth["all"][u].add(i)
        if intent:
            truth["intent"][u].add(i)
        if not seen:
            truth["all_novel"][u].add(i)
            if intent:
                truth["intent_novel"][u].add(i)
    known = {r[0] for r in conn.execute(
        "select distinct visitorid from raw.events where to_timestamp(\"timestamp\" / 1000.0) < %(t)s::timestamptz "
        "and visitorid = any(%(u)s)", {"t": cutoff, "u": users}).fetchall()}
    return users, truth, known


def _sql_lists(conn, recs: str, users: list[int], k: int) -> dict[str, dict[int, list[int]]]:
    """Trending and the hybrid (own list, else the global default list) from the backtest marts."""
    from psycopg import sql as psql

    trending = [r[0] for r in conn.execute(psql.SQL(
        "select item_id from {} where is_available is null or is_available order by rank_overall limit %s"
    ).format(psql.Identifier(recs, "rec_item_trending")), (k,)).fetchall()]
    default = [r[0] for r in conn.execute(psql.SQL(
        "select item_id from {} where root_category_id is null order by rank limit %s"
    ).format(psql.Identifier(recs, "rec_default_recommendations")), (k,)).fetchall()]
    own: dict[int, list[int]] = {}
    for u, i in conn.execute(psql.SQL(
            "select user_id, item_id from {} where user_id = any(%s) and rank <= %s order by user_id, rank"
    ).format(psql.Identifier(recs, "rec_user_recommendations")), (users, k)).fetchall():
        own.setdefault(u, []).append(i)
    return {"trending": {u: trending for u in users}, "hybrid": {u: own.get(u, default) for u in users}}


@pytest.mark.server
@pytest.mark.slow
def test_metrics_equal_a_brute_force_recomputation_from_sql(evaluated):
    from aisle.db import connect

    report = evaluated["first"]
    proto = report["protocol"]
    recs = "recs" + schema_suffix(proto["as_of"])
    with connect(evaluated["target"]) as conn:
        users, truth, known = _sql_truth(conn, proto["cutoff"], proto["test_window_end"])
        lists = _sql_lists(conn, recs, users, max(KS))
    assert report["data"]["test_users"] == len(users)
    assert report["data"]["known_test_users"] == len(known)
    assert known, "the generated data should have returning visitors"
    for variant in ("all", "intent", "all_novel", "intent_novel"):
        for segment in ("all", "known", "cold"):
            seg_users = [u for u in users if truth[variant][u]
                         and (segment == "all" or (u in known) == (segment == "known"))]
            res = report["metrics"][variant][segment]
            assert res["n_users"] == len(seg_users), (variant, segment)
            if not seg_users:
                continue
            # every model is scored on exactly these users
            assert set(res["models"]) == {"popularity", "trending", "category_cf", "hybrid", "user_cf"}
            for m, r in res["models"].items():
                for k in KS:
                    if m != "trending":
                        assert r["vs_baseline"][str(k)]["mcnemar"]["n"] == len(seg_users)
            for model in ("trending", "hybrid"):
                for k in KS:
                    bf = [brute_force_metrics(lists[model][u], truth[variant][u], k) for u in seg_users]
                    for metric in ("hr", "precision", "recall", "ndcg", "map", "mrr"):
                        want = sum(b[metric] for b in bf) / len(seg_users)
                        got = res["models"][model]["at_k"][str(k)][metric]["estimate"]
                        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (variant, segment, model, k, metric)
    # the simulated A/B arms split every test user, and their outcomes come from their own model
    ab = report["ab_test"]
    assert ab["n_control"] + ab["n_treatment"] == len(users)
    assert not ab["srm"]["mismatch"]


@pytest.mark.server
@pytest.mark.slow
def test_user_cf_equals_a_brute_force_over_every_neighbour(evaluated):
    """The classic user-user CF reference, recomputed with an explicit loop over neighbours from SQL rows."""
    from psycopg import sql as psql

    from aisle.db import connect
    from aisle.evaluate import USER_CF_CATEGORIES, quantize

    report = evaluated["first"]
    proto = report["protocol"]
    recs = "recs" + schema_suffix(proto["as_of"])
    kmax = max(KS)
    with connect(evaluated["target"]) as conn:
        users, truth, known = _sql_truth(conn, proto["cutoff"], proto["test_window_end"])
        aff = conn.execute(psql.SQL("select user_id, category_id, affinity_score from {} where affinity_score > 0")
                           .format(psql.Identifier(recs, "rec_user_category_affinity"))).fetchall()
        trending = conn.execute(psql.SQL(
            "select category_id, item_id from {} where is_available is null or is_available "
            "order by category_id, rank_in_category").format(psql.Identifier(recs, "rec_item_trending"))).fetchall()
    user_index = {u: i for i, u in enumerate(sorted({r[0] for r in aff}))}
    cats = sorted({r[1] for r in aff})
    cat_index = {c: j for j, c in enumerate(cats)}
    x = np.zeros((len(user_index), len(cats)))
    for u, c, score in aff:
        x[user_index[u], cat_index[c]] = score
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    items_of: dict[int, list[int]] = {}
    for c, i in trending:
        if len(items_of.setdefault(c, [])) < kmax:
            items_of[c].append(i)
    lists: dict[int, list[int]] = {}
    for u in users:
        if u not in user_index:
            lists[u] = []
            continue
        r = user_index[u]
        scores = np.zeros(len(cats))
        for v in range(len(user_index)):  # every neighbour but the user
            if v != r:
                scores += (unit[r] @ unit[v]) * x[v]
        scores = quantize(scores)
        best = sorted((c for c in range(len(cats)) if scores[c] > 1e-9 * np.abs(scores).max()),
                      key=lambda c: (-scores[c], cats[c]))[:USER_CF_CATEGORIES]
        columns = [items_of.get(cats[c], []) for c in best]
        lists[u] = [col[d] for d in range(kmax) for col in columns if d < len(col)][:kmax]
    seg_users = [u for u in users if truth["all"][u] and u in known]
    res = report["metrics"]["all"]["known"]["models"]["user_cf"]
    assert res["users_served"] == sum(1 for u in seg_users if lists[u])
    for k in KS:
        bf = [brute_force_metrics(lists[u], truth["all"][u], k) for u in seg_users]
        for metric in ("hr", "precision", "recall", "ndcg", "map", "mrr"):
            want = sum(b[metric] for b in bf) / len(seg_users)
            assert res["at_k"][str(k)][metric]["estimate"] == pytest.approx(want, rel=1e-9, abs=1e-12), (k, metric)
