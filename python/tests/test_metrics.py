"""Ranking metrics against hand-worked examples and a brute-force per-user implementation.

The hand-worked values are derived in the comments (log2(3) = 1.5849625, log2(5) = 2.3219281,
log2(6) = 2.5849625), so each expected number can be checked with a pocket calculator.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from aisle.metrics import (
    RANKING_METRICS,
    HitMatrix,
    bootstrap_ci,
    catalog_coverage_at_k,
    hit_rate_at_k,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    summarize,
)

L3 = 1 / math.log2(3)  # discount at rank 2
L4 = 1 / math.log2(4)  # rank 3 = 0.5
L5 = 1 / math.log2(5)  # rank 4
L6 = 1 / math.log2(6)  # rank 5


def build(lists: dict[int, list[int]], truth: dict[int, list[int]], n_users: int, k: int,
          shuffle_seed: int | None = None) -> HitMatrix:
    """A HitMatrix from {user: [items by rank]} and {user: [truth items]} (rank = position + 1)."""
    rows = [(u, r + 1, it) for u, items in lists.items() for r, it in enumerate(items)]
    trows = [(u, it) for u, items in truth.items() for it in items]
    if shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
        rows = [rows[i] for i in rng.permutation(len(rows))]
        trows = [trows[i] for i in rng.permutation(len(trows))]
    lu, lr, li = (np.array([r[i] for r in rows], dtype=np.int64) for i in range(3))
    tu, ti = (np.array([r[i] for r in trows], dtype=np.int64) for i in range(2))
    return HitMatrix.from_long(n_users, k, lu, lr, li, tu, ti)


# The worked example, K = 5:
#   user 0: L = [10, 20, 30, 40, 50], R = {20, 50, 99}     hits at ranks 2 and 5
#   user 1: L = [7, 8] (shorter than K), R = {8}           hit at rank 2
#   user 2: L = [1, 2, 3, 100, 4], R = {1..8} (|R| > K)    hits at ranks 1, 2, 3, 5
#   user 3: L = [] (model cannot serve), R = {5}           a miss
#   user 4: L = [9, 9, 3] (duplicate 9), R = {9, 3}        hits at ranks 1 and 3; rank 2 repeats 9
#   user 5: L = [1, 2], R = {} (empty truth)               undefined
LISTS = {0: [10, 20, 30, 40, 50], 1: [7, 8], 2: [1, 2, 3, 100, 4], 4: [9, 9, 3], 5: [1, 2]}
TRUTH = {0: [20, 50, 99], 1: [8], 2: [1, 2, 3, 4, 5, 6, 7, 8], 3: [5], 4: [9, 3, 3]}  # 3 twice: a set
NAN = float("nan")

EXPECTED_AT_5 = {
    "hr": [1, 1, 1, 0, 1, NAN],
    # |L ∩ R| / K, denominator 5 even for the 2-item list of user 1
    "precision": [2 / 5, 1 / 5, 4 / 5, 0, 2 / 5, NAN],
    # |L ∩ R| / |R|; user 2 can reach at most 5/8
    "recall": [2 / 3, 1, 4 / 8, 0, 1, NAN],
    # DCG / IDCG with IDCG over min(|R|, 5) ranks
    "ndcg": [
        (L3 + L6) / (1 + L3 + L4),  # 1.01778 / 2.13093 = 0.47763
        L3 / 1,  # 0.63093
        (1 + L3 + L4 + L6) / (1 + L3 + L4 + L5 + L6),  # 2.51778 / 2.94846 = 0.85393
        0,
        (1 + L4) / (1 + L3),  # 1.5 / 1.63093 = 0.91972
        NAN,
    ],
    # (1 / min(|R|, K)) * sum of precision@k at the hit ranks
    "map": [
        (1 / 2 + 2 / 5) / 3,  # 0.3
        (1 / 2) / 1,
        (1 + 1 + 1 + 4 / 5) / 5,  # 0.76
        0,
        (1 + 2 / 3) / 2,  # 0.83333
        NAN,
    ],
    "mrr": [1 / 2, 1 / 2, 1, 0, 1, NAN],
}

EXPECTED_AT_3 = {
    "hr": [1, 1, 1, 0, 1, NAN],
    "precision": [1 / 3, 1 / 3, 1, 0, 2 / 3, NAN],
    "recall": [1 / 3, 1, 3 / 8, 0, 1, NAN],
    "ndcg": [L3 / (1 + L3 + L4), L3, 1, 0, (1 + L4) / (1 + L3), NAN],
    "map": [(1 / 2) / 3, 1 / 2, 3 / 3, 0, (1 + 2 / 3) / 2, NAN],
    "mrr": [1 / 2, 1 / 2, 1, 0, 1, NAN],
}


@pytest.fixture(scope="module")
def worked() -> HitMatrix:
    return build(LISTS, TRUTH, n_users=6, k=5)


@pytest.mark.parametrize("k,expected", [(5, EXPECTED_AT_5), (3, EXPECTED_AT_3)])
def test_worked_example(worked: HitMatrix, k: int, expected: dict[str, list[float]]) -> None:
    per_user = worked.per_user(k)
    for name in RANKING_METRICS:
        np.testing.assert_allclose(per_user[name], expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_hand_computed_decimals(worked: HitMatrix) -> None:
    """The same numbers as decimals, as a reader would work them out by hand."""
    pu = worked.per_user(5)
    assert pu["ndcg"][0] == pytest.approx(0.47763, abs=1e-5)
    assert pu["ndcg"][2] == pytest.approx(0.85393, abs=1e-5)
    assert pu["ndcg"][4] == pytest.approx(0.91972, abs=1e-5)
    assert pu["map"][0] == pytest.approx(0.3)
    assert pu["map"][2] == pytest.approx(0.76)


def test_hit_matrix_layout(worked: HitMatrix) -> None:
    assert worked.hits.tolist() == [
        [False, True, False, False, True],
        [False, True, False, False, False],
        [True, True, True, False, True],
        [False] * 5,
        [True, False, True, False, False],  # the repeated 9 at rank 2 is not a second hit
        [False] * 5,
    ]
    assert worked.truth_size.tolist() == [3, 1, 8, 1, 2, 0]  # duplicate truth rows collapse
    assert worked.present.sum(axis=1).tolist() == [5, 2, 5, 0, 3, 2]
    assert worked.valid.tolist() == [True, True, True, True, True, False]


def test_empty_truth_is_undefined_and_excluded(worked: HitMatrix) -> None:
    """Users with an empty truth are not test users: NaN per user, excluded by summarize."""
    for name, value in worked.per_user(5).items():
        if name == "user_coverage":
            assert value[5] == 1.0  # coverage describes the list, so it stays defined
        else:
            assert math.isnan(value[5]), name
    summary = summarize(worked, [5], n_catalog=100, n_resamples=50, seed=0)
    assert summary["n_users"] == 5 and summary["n_excluded_empty_truth"] == 1
    # mean over users 0..4 only
    assert summary["at_k"]["5"]["hr"]["estimate"] == pytest.approx(4 / 5)
    assert summary["at_k"]["5"]["precision"]["estimate"] == pytest.approx((0.4 + 0.2 + 0.8 + 0 + 0.4) / 5)
    # user coverage over every user given: 5 of 6 have a list
    assert summary["at_k"]["5"]["user_coverage"] == pytest.approx(5 / 6)


def test_metric_functions_take_plain_arrays() -> None:
    """The standalone functions work on any bool hit matrix and truth sizes."""
    hits = np.array([[False, False, True], [False, False, False]])
    size = np.array([2, 4])
    assert hit_rate_at_k(hits, size, 3).tolist() == [1, 0]
    assert precision_at_k(hits, size, 3).tolist() == [1 / 3, 0]
    assert recall_at_k(hits, size, 3).tolist() == [1 / 2, 0]
    assert ndcg_at_k(hits, size, 3)[0] == pytest.approx(0.5 / (1 + L3))
    assert map_at_k(hits, size, 3)[0] == pytest.approx((1 / 3) / 2)
    assert mrr_at_k(hits, size, 3).tolist() == [1 / 3, 0]
    assert hit_rate_at_k(hits, size, 2).tolist() == [0, 0]
    with pytest.raises(ValueError):
        hit_rate_at_k(hits, size, 4)


def test_catalog_and_user_coverage(worked: HitMatrix) -> None:
    # distinct items in the top 5: {10,20,30,40,50, 7,8, 1,2,3,100,4, 9, 3(dup)} -> 13 items
    assert worked.catalog_coverage(5, n_catalog=26) == pytest.approx(13 / 26)
    # top 1 only: {10, 7, 1, 9, 1} -> 4 items
    assert catalog_coverage_at_k(worked.items, worked.present, 1, 8) == pytest.approx(4 / 8)
    assert worked.per_user(5)["user_coverage"].tolist() == [1, 1, 1, 0, 1, 1]
    with pytest.raises(ValueError):
        worked.catalog_coverage(5, n_catalog=0)


def test_metrics_depend_only_on_ranks() -> None:
    """Input row order does not matter; swapping the ranks of two items does."""
    a = build(LISTS, TRUTH, 6, 5)
    b = build(LISTS, TRUTH, 6, 5, shuffle_seed=7)
    for name in RANKING_METRICS:
        np.testing.assert_array_equal(a.per_user(5)[name], b.per_user(5)[name])
    # two items tied in score: whichever the upstream tie-break ranks first gets the better discount
    first = build({0: [1, 2]}, {0: [2]}, 1, 2).per_user(2)
    second = build({0: [2, 1]}, {0: [2]}, 1, 2).per_user(2)
    assert first["ndcg"][0] == pytest.approx(L3) and second["ndcg"][0] == 1.0
    assert first["mrr"][0] == 0.5 and second["mrr"][0] == 1.0


def test_repeated_rank_is_rejected() -> None:
    with pytest.raises(ValueError, match="two items at rank 1"):
        HitMatrix.from_long(1, 3, np.array([0, 0]), np.array([1, 1]), np.array([5, 6]),
                            np.array([0]), np.array([5]))


def test_rank_gap_is_an_empty_slot() -> None:
    hm = HitMatrix.from_long(1, 3, np.array([0, 0]), np.array([1, 3]), np.array([5, 6]),
                             np.array([0]), np.array([6]))
    assert hm.hits.tolist() == [[False, False, True]]
    assert hm.per_user(3)["mrr"][0] == pytest.approx(1 / 3)
    assert hm.per_user(2)["hr"][0] == 0


def test_ranks_beyond_k_are_ignored_and_bad_input_rejected() -> None:
    hm = HitMatrix.from_long(1, 2, np.array([0, 0, 0]), np.array([1, 2, 3]), np.array([5, 6, 7]),
                             np.array([0]), np.array([7]))
    assert hm.hits.sum() == 0 and hm.present.sum() == 2
    with pytest.raises(ValueError, match="rank < 1"):
        HitMatrix.from_long(1, 2, np.array([0]), np.array([0]), np.array([5]), np.array([0]), np.array([5]))
    with pytest.raises(ValueError, match="outside"):
        HitMatrix.from_long(1, 2, np.array([1]), np.array([1]), np.array([5]), np.array([0]), np.array([5]))


def test_from_frames_uses_the_given_users() -> None:
    """Users without a list are misses; rows of other users are ignored; order follows `users`."""
    lists = pd.DataFrame({"user_id": [100, 100, 200, 999], "rank": [1, 2, 1, 1], "item_id": [5, 6, 7, 5]})
    truth = pd.DataFrame({"user_id": [100, 200, 300, 999], "item_id": [6, 8, 5, 5]})
    hm = HitMatrix.from_frames([300, 100, 200], lists, truth, k=2)
    assert hm.per_user(2)["hr"].tolist() == [0, 1, 0]
    assert hm.per_user(2)["user_coverage"].tolist() == [0, 1, 1]
    assert hm.truth_size.tolist() == [1, 1, 1]
    segment = hm.subset(np.array([False, True, True]))
    assert segment.n_users == 2 and segment.per_user(2)["mrr"].tolist() == [0.5, 0]


def _brute_force(lists: list[list[int]], truths: list[set[int]], k: int) -> dict[str, list[float]]:
    """The definitions written out literally, one user at a time."""
    out: dict[str, list[float]] = {m: [] for m in RANKING_METRICS}
    for lst, r in zip(lists, truths, strict=True):
        top = lst[:k]
        seen: set[int] = set()
        hit_ranks = []
        for i, it in enumerate(top, start=1):
            if it in r and it not in seen:
                hit_ranks.append(i)
            seen.add(it)
        n_hit = len(hit_ranks)
        out["hr"].append(float(n_hit > 0))
        out["precision"].append(n_hit / k)
        out["recall"].append(n_hit / len(r))
        dcg = sum(1 / math.log2(i + 1) for i in hit_ranks)
        idcg = sum(1 / math.log2(i + 1) for i in range(1, min(len(r), k) + 1))
        out["ndcg"].append(dcg / idcg)
        out["map"].append(sum((j + 1) / i for j, i in enumerate(hit_ranks)) / min(len(r), k))
        out["mrr"].append(1 / hit_ranks[0] if hit_ranks else 0.0)
    return out


def test_matches_brute_force_on_random_lists() -> None:
    rng = np.random.default_rng(11)
    n, k = 300, 10
    lists = [list(rng.integers(0, 40, size=rng.integers(0, k + 3))) for _ in range(n)]  # dups, short, long
    truths = [set(rng.integers(0, 40, size=rng.integers(1, 15)).tolist()) for _ in range(n)]
    hm = build(dict(enumerate(lists)), {u: sorted(t) for u, t in enumerate(truths)}, n, k, shuffle_seed=3)
    for kk in (1, 5, 10):
        expected = _brute_force(lists, truths, kk)
        got = hm.per_user(kk)
        for name in RANKING_METRICS:
            np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-12, err_msg=f"{name}@{kk}")


def test_item_ids_that_cannot_key_directly_are_recoded() -> None:
    """Huge or negative item ids take the np.unique re-coding path and give the same hits."""
    base = build(LISTS, TRUTH, 6, 5)
    for shift in (10**17, -(10**6)):
        lists = {u: [i + shift for i in items] for u, items in LISTS.items()}
        truth = {u: [i + shift for i in items] for u, items in TRUTH.items()}
        other = build(lists, truth, 6, 5)
        np.testing.assert_array_equal(other.hits, base.hits)
        np.testing.assert_array_equal(other.truth_size, base.truth_size)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_reproducible() -> None:
    rng = np.random.default_rng(0)
    values = {"hr": (rng.random(5000) < 0.2).astype(float), "ndcg": rng.random(5000) * 0.3}
    a = bootstrap_ci(values, n_resamples=300, seed=42)
    b = bootstrap_ci(values, n_resamples=300, seed=42)
    c = bootstrap_ci(values, n_resamples=300, seed=43)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict() != c.to_dict()
    assert a.n_resamples == 300 and a.to_dict()["n_resamples"] == 300 and a.seed == 42
    for est, low, high in zip(a.estimate, a.low, a.high, strict=True):
        assert low < est < high
    assert a.estimate[0] == pytest.approx(values["hr"].mean())
    # the chunking does not change the result
    small_chunks = bootstrap_ci(values, n_resamples=300, seed=42, chunk_elements=7 * 5000)
    np.testing.assert_allclose(small_chunks.low, a.low)
    np.testing.assert_allclose(small_chunks.high, a.high)


def test_bootstrap_equals_a_naive_loop() -> None:
    """Same draws as resampling users one resample at a time, so the same percentiles."""
    rng = np.random.default_rng(5)
    values = rng.random((200, 3))
    res = bootstrap_ci(values, n_resamples=100, seed=9, alpha=0.1)
    draw = np.random.default_rng(9)
    means = np.array([values[draw.integers(0, 200, size=200)].mean(axis=0) for _ in range(100)])
    np.testing.assert_allclose(res.low, np.quantile(means, 0.05, axis=0), rtol=1e-12)
    np.testing.assert_allclose(res.high, np.quantile(means, 0.95, axis=0), rtol=1e-12)
    assert res.names == ("0", "1", "2")


def test_bootstrap_rejects_nan_and_mismatched_columns() -> None:
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci({"a": np.zeros(3), "b": np.zeros(4)})


def test_summarize_is_json_ready(worked: HitMatrix) -> None:
    import json

    s = summarize(worked, [3, 5], n_catalog=26, n_resamples=100, seed=1)
    text = json.dumps(s, allow_nan=False)
    assert json.loads(text)["bootstrap"]["n_resamples"] == 100
    assert set(s["at_k"]) == {"3", "5"}
    assert s["at_k"]["5"]["catalog_coverage"] == pytest.approx(13 / 26)
