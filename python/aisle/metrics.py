"""Ranking metrics for top-K recommendation lists, exactly as docs/evaluation.md defines them.

Why a module of its own: libraries disagree on these definitions (RecTools' MAP divides by |R|,
``implicit`` micro-averages precision), so aisle fixes them here, states each formula in its
docstring and tests them against hand-worked examples.

Representation (built once per model and user set, then every metric is a few numpy reductions):

* ``hits``: an ``n_users x K`` bool matrix; ``hits[u, r]`` is True when the item at rank ``r + 1``
  of user ``u``'s list is in ``u``'s truth set ``R`` (and is the first occurrence of that item in
  the list, see below).
* ``present``: an ``n_users x K`` bool matrix; True when the list has an item at that rank.
* ``items``: an ``n_users x K`` int64 matrix of the listed item ids (only meaningful where
  ``present``), for catalog coverage.
* ``truth_size``: ``|R|`` per user (distinct items).

Every metric is returned **per user** as a float array, because the bootstrap and McNemar's test
need per-user values; the segment value is the mean over users.

Conventions that the definitions leave open, fixed here:

* **Order comes from ranks only.** The metrics depend on the ranks given (1 = top) and on nothing
  else: not the row order of the input, not scores. Ties in score must be broken upstream (the SQL
  uses ``order by score desc, item_id``), so a user's ranks must be unique; a repeated
  ``(user, rank)`` raises ``ValueError`` because the order would be ambiguous. A gap in the ranks
  (1, 2, 4) leaves an empty slot at rank 3: it is not a hit and is not compacted.
* **Duplicate items in one list** count once: only the first (best-ranked) occurrence can be a hit.
  The repeated entry still occupies its rank, so it costs a slot (precision's denominator stays K).
* **Duplicate truth rows** are collapsed: R is a set.
* **A list shorter than K** simply has fewer hits; Precision@K still divides by K.
* **An empty truth** (|R| = 0) has nothing to hit, so by the protocol such a user is not a test user
  and must be left out of the segment upstream (this matters for the novelty variant, where the
  truth can become empty). The per-user functions return NaN for every ranking metric of such a
  user, so an average that includes one is NaN instead of silently diluted; ``summarize`` and
  ``HitMatrix.valid`` exclude them explicitly and report how many were excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Names of the per-user ranking metrics, in report order.
RANKING_METRICS: tuple[str, ...] = ("hr", "precision", "recall", "ndcg", "map", "mrr")


# --------------------------------------------------------------------------- helpers


def _check_k(hits: np.ndarray, k: int) -> np.ndarray:
    """The first k columns of a hit matrix, after checking that k is in range."""
    if k < 1 or k > hits.shape[1]:
        raise ValueError(f"k={k} is outside 1..{hits.shape[1]} (the hit matrix's width)")
    return hits[:, :k]


def _undefined_where_empty(values: np.ndarray, truth_size: np.ndarray) -> np.ndarray:
    """Set NaN for users whose truth is empty (they are not test users; see the module docstring)."""
    values = values.astype(np.float64, copy=False)
    values[np.asarray(truth_size) <= 0] = np.nan
    return values


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


# --------------------------------------------------------------------------- per-user metrics


def hit_rate_at_k(hits: np.ndarray, truth_size: np.ndarray, k: int) -> np.ndarray:
    """HR@K per user: 1 if |L ∩ R| > 0 else 0 (L = top-K list, R = truth set).

    NaN where |R| = 0.
    """
    h = _check_k(hits, k)
    return _undefined_where_empty(h.any(axis=1), truth_size)


def precision_at_k(hits: np.ndarray, truth_size: np.ndarray, k: int) -> np.ndarray:
    """Precision@K per user: |L ∩ R| / K.

    The denominator is K even when the list is shorter than K (a short list is not rewarded for
    being short). NaN where |R| = 0.
    """
    h = _check_k(hits, k)
    return _undefined_where_empty(h.sum(axis=1) / float(k), truth_size)


def recall_at_k(hits: np.ndarray, truth_size: np.ndarray, k: int) -> np.ndarray:
    """Recall@K per user: |L ∩ R| / |R|.

    When |R| > K the maximum reachable recall is K/|R| < 1 (kept as defined, not capped).
    Undefined (NaN) where |R| = 0.
    """
    h = _check_k(hits, k)
    size = np.asarray(truth_size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = h.sum(axis=1) / size
    return _undefined_where_empty(values, truth_size)


def ndcg_at_k(hits: np.ndarray, truth_size: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K per user with binary gains.

    DCG = Σ_{hits at rank i ≤ K} 1 / log2(i + 1);
    IDCG = Σ_{i=1}^{min(|R|, K)} 1 / log2(i + 1);  NDCG = DCG / IDCG.
    NaN where |R| = 0 (IDCG = 0).
    """
    h = _check_k(hits, k)
    disc = _discounts(k)
    dcg = h @ disc
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    idcg = ideal[np.minimum(np.asarray(truth_size, dtype=np.int64).clip(min=0), k)]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = dcg / idcg
    return _undefined_where_empty(values, truth_size)


def map_at_k(hits: np.ndarray, truth_size: np.ndarray, k: int) -> np.ndarray:
    """Average precision at K per user (its mean over users is MAP@K).

    AP@K = (1 / min(|R|, K)) · Σ_{k' ≤ K : L_k' ∈ R} Precision@k', with Precision@k' = hits in the
    top k' / k'. The normaliser min(|R|, K) makes a perfect list score 1 even when |R| > K
    (RecTools divides by |R| instead; we do not). NaN where |R| = 0.
    """
    h = _check_k(hits, k)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    prec_at_hits = np.where(h, np.cumsum(h, axis=1) / ranks, 0.0)
    denom = np.minimum(np.asarray(truth_size, dtype=np.float64), k)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = prec_at_hits.sum(axis=1) / denom
    return _undefined_where_empty(values, truth_size)


def mrr_at_k(hits: np.ndarray, truth_size: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank at K per user (its mean over users is MRR@K).

    RR@K = 1 / (rank of the first hit within the top K), or 0 when there is none.
    NaN where |R| = 0.
    """
    h = _check_k(hits, k)
    first = np.argmax(h, axis=1)
    values = np.where(h.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return _undefined_where_empty(values, truth_size)


def user_coverage_at_k(present: np.ndarray, k: int) -> np.ndarray:
    """User coverage per user: 1 if the list has at least one item in its top K, else 0.

    Its mean is "users with a non-empty list / test users". Defined for every user, including
    those with an empty truth (it describes the list, not the truth).
    """
    return _check_k(present, k).any(axis=1).astype(np.float64)


def catalog_coverage_at_k(items: np.ndarray, present: np.ndarray, k: int, n_catalog: int) -> float:
    """Catalog coverage@K = distinct items recommended in the top K across the users / n_catalog.

    ``n_catalog`` is the number of items with at least one event before the cutoff. This is a
    population count, not a per-user average, so it has no per-user values and no bootstrap CI.
    """
    if n_catalog <= 0:
        raise ValueError("n_catalog must be > 0 (items with at least one event before the cutoff)")
    p = _check_k(present, k)
    return float(np.unique(items[:, :k][p]).size / n_catalog)


_METRIC_FUNCS = {
    "hr": hit_rate_at_k,
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "map": map_at_k,
    "mrr": mrr_at_k,
}


# --------------------------------------------------------------------------- hit matrix


@dataclass(frozen=True)
class HitMatrix:
    """Top-K lists of one model for a fixed, ordered set of users, reduced to what metrics need.

    Row ``u`` is the same user in every HitMatrix built for the same ``users`` order, which is what
    makes per-user values of two models pairable (McNemar, paired bootstrap).
    """

    hits: np.ndarray  # (n_users, k) bool
    present: np.ndarray  # (n_users, k) bool
    items: np.ndarray  # (n_users, k) int64, meaningful where present
    truth_size: np.ndarray  # (n_users,) int64

    @property
    def n_users(self) -> int:
        return int(self.hits.shape[0])

    @property
    def k(self) -> int:
        return int(self.hits.shape[1])

    @property
    def valid(self) -> np.ndarray:
        """Users with a non-empty truth: the ones the ranking metrics are defined for."""
        return self.truth_size > 0

    # ---- construction

    @classmethod
    def from_long(
        cls,
        n_users: int,
        k: int,
        list_user: np.ndarray,
        list_rank: np.ndarray,
        list_item: np.ndarray,
        truth_user: np.ndarray,
        truth_item: np.ndarray,
    ) -> HitMatrix:
        """Build from long-format arrays, with no Python loop per user.

        ``list_user``/``truth_user`` are row indices 0..n_users-1; ``list_rank`` is 1-based; items
        are integer ids. Ranks above ``k`` are ignored (only the top K matter). Raises ValueError
        on a rank < 1, a user index out of range, or a repeated (user, rank).

        Method (all numpy, O(rows · log)): each (user, item) pair becomes one int64 key (items
        are re-coded densely with ``np.unique`` only when their ids are too large to key
        directly); list keys are looked up in the sorted, de-duplicated truth keys with
        ``np.searchsorted``; repeated items are searched for only among the rows that are in the
        truth (a lexsort on (key, rank)), since a repeat can only matter when it would be a hit.
        """
        if k < 1:
            raise ValueError("k must be >= 1")
        lu = np.asarray(list_user, dtype=np.int64)
        lr = np.asarray(list_rank, dtype=np.int64)
        li = np.asarray(list_item, dtype=np.int64)
        tu = np.asarray(truth_user, dtype=np.int64)
        ti = np.asarray(truth_item, dtype=np.int64)
        if not (lu.shape == lr.shape == li.shape) or tu.shape != ti.shape:
            raise ValueError("list_user/list_rank/list_item and truth_user/truth_item must have equal lengths")
        for name, arr in (("list_user", lu), ("truth_user", tu)):
            if arr.size and (arr.min() < 0 or arr.max() >= n_users):
                raise ValueError(f"{name} has an index outside 0..{n_users - 1}")
        if lr.size and lr.min() < 1:
            raise ValueError("ranks are 1-based; found a rank < 1")

        keep = lr <= k
        if not keep.all():
            lu, lr, li = lu[keep], lr[keep], li[keep]

        slot = lu * k + (lr - 1)
        per_slot = np.bincount(slot, minlength=n_users * k)
        if per_slot.size and per_slot.max() > 1:
            u, r = divmod(int(np.argmax(per_slot > 1)), k)
            raise ValueError(f"user row {u} has two items at rank {r + 1}; ranks must be unique per user "
                             "(break score ties upstream, e.g. order by score desc, item_id)")

        # one int64 key per (user, item): item ids directly when they fit, else dense codes
        lo = min(int(li.min()) if li.size else 0, int(ti.min()) if ti.size else 0)
        hi = max(int(li.max()) if li.size else 0, int(ti.max()) if ti.size else 0)
        if lo >= 0 and n_users * (hi + 1) < 2**62:
            base, lcode, tcode = hi + 1, li, ti
        else:
            all_items, codes = np.unique(np.concatenate([li, ti]), return_inverse=True)
            base = max(int(all_items.size), 1)
            if n_users * base >= 2**62:
                raise ValueError("too many users x items to key as int64")
            lcode, tcode = codes[: li.size], codes[li.size:]
        list_key = lu * base + lcode
        truth_key = np.sort(tu * base + tcode, kind="stable")
        if truth_key.size:
            truth_key = truth_key[np.concatenate([[True], truth_key[1:] != truth_key[:-1]])]  # R is a set
        truth_size = np.bincount(truth_key // base, minlength=n_users).astype(np.int64)

        if truth_key.size:
            pos = np.searchsorted(truth_key, list_key)
            pos[pos == truth_key.size] = 0
            is_hit = truth_key[pos] == list_key
        else:
            is_hit = np.zeros(list_key.size, dtype=bool)
        # a repeated item is not a second hit: keep only the best-ranked occurrence
        cand = np.flatnonzero(is_hit)
        if cand.size:
            order = cand[np.lexsort((lr[cand], list_key[cand]))]
            ck = list_key[order]
            is_hit[order[1:][ck[1:] == ck[:-1]]] = False

        hits = np.zeros((n_users, k), dtype=bool)
        present = np.zeros((n_users, k), dtype=bool)
        items = np.zeros((n_users, k), dtype=np.int64)
        hits[lu, lr - 1] = is_hit
        present[lu, lr - 1] = True
        items[lu, lr - 1] = li
        return cls(hits=hits, present=present, items=items, truth_size=truth_size)

    @classmethod
    def from_frames(
        cls,
        users: Sequence | np.ndarray | pd.Index,
        lists: pd.DataFrame,
        truth: pd.DataFrame,
        k: int,
        user_col: str = "user_id",
        item_col: str = "item_id",
        rank_col: str = "rank",
    ) -> HitMatrix:
        """Build from data frames keyed by user id, for the users given (in that order).

        ``users`` defines the rows (and so the denominator): a user with no rows in ``lists`` has
        an empty list, which counts as a miss. Rows of ``lists`` or ``truth`` for users not in
        ``users`` are ignored, so a segment is built by passing its users.
        """
        index = pd.Index(users)
        if not index.is_unique:
            raise ValueError("users must be unique")
        lu = index.get_indexer(lists[user_col])
        tu = index.get_indexer(truth[user_col])
        lm, tm = lu >= 0, tu >= 0
        return cls.from_long(
            n_users=len(index),
            k=k,
            list_user=lu[lm],
            list_rank=lists[rank_col].to_numpy()[lm],
            list_item=lists[item_col].to_numpy()[lm],
            truth_user=tu[tm],
            truth_item=truth[item_col].to_numpy()[tm],
        )

    # ---- views and metrics

    def subset(self, mask: np.ndarray) -> HitMatrix:
        """The rows selected by a bool mask or an index array (e.g. a segment, or ``valid``)."""
        return HitMatrix(hits=self.hits[mask], present=self.present[mask], items=self.items[mask],
                         truth_size=self.truth_size[mask])

    def per_user(self, k: int) -> dict[str, np.ndarray]:
        """All per-user values at K: the ranking metrics plus ``user_coverage``."""
        out = {name: fn(self.hits, self.truth_size, k) for name, fn in _METRIC_FUNCS.items()}
        out["user_coverage"] = user_coverage_at_k(self.present, k)
        return out

    def catalog_coverage(self, k: int, n_catalog: int) -> float:
        """Catalog coverage@K over these users (see ``catalog_coverage_at_k``)."""
        return catalog_coverage_at_k(self.items, self.present, k, n_catalog)


# --------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """Percentile bootstrap CIs of the means of several per-user columns, from shared resamples."""

    names: tuple[str, ...]
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_resamples: int
    n_users: int
    seed: int
    alpha: float

    def to_dict(self) -> dict:
        """JSON-serialisable: {"n_resamples", "seed", "alpha", "n_users", "metrics": {name: {...}}}.

        The CI bounds are rounded to 10 significant digits: they come from a BLAS matrix product
        whose last bits depend on the thread count, and rounding keeps the report byte-identical
        across machines. The estimate is the plain mean (no BLAS) and is not rounded.
        """
        return {
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "alpha": self.alpha,
            "n_users": self.n_users,
            "metrics": {
                n: {"estimate": float(e), "low": _sig(lo), "high": _sig(hi)}
                for n, e, lo, hi in zip(self.names, self.estimate, self.low, self.high, strict=True)
            },
        }


def _sig(x: float, digits: int = 10) -> float:
    """x rounded to ``digits`` significant digits, as a Python float."""
    return float(f"{float(x):.{digits}g}")


def bootstrap_ci(
    per_user_values: dict[str, np.ndarray] | np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    chunk_elements: int = 16_000_000,
) -> BootstrapResult:
    """Percentile bootstrap CI of the mean of each per-user column, resampling users.

    ``per_user_values`` is a dict name -> 1-D array (all of the same users, in the same order) or
    an array of shape (n_users,) or (n_users, n_columns). All columns share the same resamples, so
    a column of per-user differences between two models gives a paired CI.

    Vectorised: each chunk of resamples draws an index matrix (chunk x n_users) with one
    ``rng.integers`` call, turns each row into counts (the resample's weight per user) with
    ``np.bincount``, and gets every resampled mean of every column with one matrix product
    ``counts @ values / n_users``. There is no Python loop over users, only over resamples.
    Seeded with ``np.random.default_rng(seed)``: the same input and seed give identical results
    (numpy draws the same index stream whatever the chunk split).

    NaN values are rejected: exclude users with an empty truth first (``HitMatrix.valid``).
    Returns the point estimate (the plain mean), the alpha/2 and 1 - alpha/2 percentiles, and the
    resample count.
    """
    if isinstance(per_user_values, dict):
        names = tuple(per_user_values)
        cols = [np.asarray(per_user_values[n], dtype=np.float64) for n in names]
        if not cols:
            raise ValueError("no columns to bootstrap")
        if any(c.ndim != 1 or c.shape != cols[0].shape for c in cols):
            raise ValueError("every per-user array must be 1-D with the same length")
        values = np.column_stack(cols)
    else:
        values = np.asarray(per_user_values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2:
            raise ValueError("per_user_values must be 1-D or 2-D (n_users x n_columns)")
        names = tuple(str(i) for i in range(values.shape[1]))
    n = values.shape[0]
    if n == 0:
        raise ValueError("no users to bootstrap")
    if np.isnan(values).any():
        raise ValueError("per-user values contain NaN (users with an empty truth?); exclude them first")
    if n_resamples < 1:
        raise ValueError("n_resamples must be >= 1")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")

    rng = np.random.default_rng(seed)
    # ~16M cells per chunk (~100 resamples at 150K users, ~260 MB for indices + counts): BLAS is slow on very
    # skinny products, so chunks should not be too small either.
    chunk = max(1, min(n_resamples, chunk_elements // n))
    values = np.ascontiguousarray(values)
    means = np.empty((n_resamples, values.shape[1]), dtype=np.float64)
    counts = np.empty((chunk, n), dtype=np.float64)
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        for r in range(m):  # one bincount per resample (cache-friendly), never per user
            counts[r] = np.bincount(idx[r], minlength=n)
        means[start:start + m] = counts[:m] @ values / n

    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    return BootstrapResult(names=names, estimate=values.mean(axis=0), low=low, high=high,
                           n_resamples=int(n_resamples), n_users=int(n), seed=int(seed), alpha=float(alpha))


# --------------------------------------------------------------------------- summary


def summarize(
    hm: HitMatrix,
    ks: Sequence[int],
    n_catalog: int,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Every metric at every K for one model and user set, with bootstrap CIs (JSON-serialisable).

    Users with an empty truth are excluded from the ranking metrics (and counted in
    ``n_excluded_empty_truth``); user and catalog coverage use every user given. Returns
    {"n_users", "n_excluded_empty_truth", "bootstrap": {...}, "at_k": {K: {metric: {estimate, low,
    high}, "catalog_coverage": value}}}.
    """
    valid = hm.valid
    n_valid = int(valid.sum())
    cols: dict[str, np.ndarray] = {}
    for k in ks:
        pu = hm.per_user(k)
        for name in RANKING_METRICS:
            cols[f"{name}@{k}"] = pu[name][valid]
    at_k: dict[str, dict] = {}
    boot = bootstrap_ci(cols, n_resamples=n_resamples, seed=seed, alpha=alpha) if n_valid else None
    boot_dict = boot.to_dict() if boot else None
    for k in ks:
        entry: dict = {}
        for name in RANKING_METRICS:
            entry[name] = boot_dict["metrics"][f"{name}@{k}"] if boot_dict else None
        entry["user_coverage"] = float(user_coverage_at_k(hm.present, k).mean()) if hm.n_users else None
        entry["catalog_coverage"] = hm.catalog_coverage(k, n_catalog)
        at_k[str(k)] = entry
    return {
        "n_users": n_valid,
        "n_excluded_empty_truth": int(hm.n_users - n_valid),
        "bootstrap": {k: v for k, v in (boot_dict or {}).items() if k != "metrics"},
        "at_k": at_k,
    }
