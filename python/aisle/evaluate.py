"""Honest backtest of the recommenders: ``aisle evaluate`` (docs/evaluation.md, issue 5).

What it does, in order:

1. **Cutoff.** ``--cutoff`` (an ISO date or timestamp, UTC), or by default the last event in
   ``raw.events`` minus ``test_days`` days, floored to midnight UTC. The test window is
   ``[T, T + test_days)``. Because of the floor, up to one day of the latest events falls after
   the window; it is used by neither the models nor the truth.
2. **Backtest build.** The whole pipeline (dbt upstream, similarity, dbt downstream) is built
   ``as_of`` T into the backtest schemas (suffix ``_bt_<digits of T>``) by
   :func:`aisle.pipeline.run_pipeline`, with ``top_n = max(K)``. Production schemas are never
   written; every model only sees events before T, by construction of the dbt project. The
   window's visitors go to ``evaluation{suffix}.test_users`` first (dbt var ``evaluation_users``),
   so a model built only for the evaluation, the pure category-CF lists, can be restricted to them.
3. **Test users and truth, in SQL.** The window's events are read from ``raw.events`` (finished
   event batches only, as staging does; comparing epoch milliseconds is exactly the staging
   filter ``event_ts >= T``; duplicates do not matter because the truth is a set). Test users are
   the visitors with at least one event in the window; the truth is the set of distinct items
   they touched. ``intent`` truth keeps addtocart and transaction events. A user is *known* when
   the backtest's own staging (all events before T) has an event of theirs, else *cold*. The
   novelty variant drops the items the user touched before T. Only the per-user index, the
   truth pairs and the lists of the test users travel to Python, as numpy arrays over binary COPY.
4. **Models**, every one scored on the same users (an empty list is a miss):
   popularity and trending (global top-K from the backtest marts, items known unavailable at T
   skipped), category CF (pure; its own candidates only), the shipped hybrid (the user's row of
   ``rec_user_recommendations``, else the global ``rec_default_recommendations``, exactly the
   serving lookup), and the classic user–user cosine CF over category vectors
   (:class:`UserCF`), computed here for reference.
5. **Metrics** from :mod:`aisle.metrics` at each K, with a seeded percentile bootstrap over users
   (shared resamples for every model of a segment, so model differences get paired CIs; an exact
   sparse resampling when most users hit nothing, see :func:`sparse_bootstrap`), paired
   McNemar tests against the baseline with Holm's correction, and a simulated randomized A/B
   test from :mod:`aisle.stats`.
6. **Report**: a terminal table, ``evaluation.json`` (everything; reproducible: no timings, no
   paths, no clock), ``evaluation.md`` and PNG charts (:mod:`aisle.report`).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import psycopg
import scipy.sparse as sp
from psycopg import sql
from rich.console import Console

from aisle.config import ConfigError, Target, project_root, resolve_target, schema_suffix
from aisle.metrics import RANKING_METRICS, HitMatrix, bootstrap_ci, catalog_coverage_at_k

console = Console(highlight=False, soft_wrap=True)

#: Models in report order, with a label and one line on where their lists come from.
MODELS: dict[str, tuple[str, str]] = {
    "popularity": ("Popularity", "global top-K of rec_item_popularity (all history before T), available items"),
    "trending": ("Trending", "global top-K of rec_item_trending (time-decayed at T), available items"),
    "category_cf": ("Category CF (pure)",
                    "category-category CF candidates only (no fallback): empty for users it cannot serve"),
    "hybrid": ("Hybrid (shipped)",
               "rec_user_recommendations for the user, else the global rec_default_recommendations"),
    "user_cf": ("User-user CF (classic)",
                "user-user cosine over category vectors, all neighbours; top categories -> trending items"),
}
BASELINE = "trending"
TREATMENT = "hybrid"
SEGMENTS: tuple[str, ...] = ("all", "known", "cold")
TRUTH_CHOICES: dict[str, tuple[str, ...]] = {
    "all": ("all", "all_novel"),
    "intent": ("intent", "intent_novel"),
    "both": ("all", "intent", "all_novel", "intent_novel"),
}
VARIANT_LABELS: dict[str, str] = {
    "all": "any event (view, cart or purchase)",
    "intent": "intent (addtocart or transaction)",
    "all_novel": "any event, items new to the user",
    "intent_novel": "intent, items new to the user",
}
DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
N_RESAMPLES = 1000
ALPHA = 0.05
AB_SALT = "aisle-evaluate-ab"
DAY_MS = 86_400_000
#: Categories per user that the classic user-user CF turns into items (round-robin, see below).
USER_CF_CATEGORIES = 5
#: The pure CF candidates of the recommendation marts (see contracts.md, "Serving models").
CF_CANDIDATES_TABLE = "rec_user_cf_candidates"
JSON_DIGITS = 12


class EvaluateError(Exception):
    """A usage or input problem (bad cutoff, no data in the window); exit code 1."""


# --------------------------------------------------------------------------- the window


@dataclass(frozen=True)
class Window:
    """The cutoff T and the test window [T, T + test_days), in UTC."""

    cutoff: datetime
    test_days: int
    rule: str  # how T was chosen, in words
    last_event: datetime | None = None

    @property
    def end(self) -> datetime:
        return self.cutoff + timedelta(days=self.test_days)

    @property
    def as_of(self) -> str:
        """The dbt var ``as_of``: '2015-09-04' at midnight, else an ISO timestamp (UTC, no offset)."""
        return format_as_of(self.cutoff)

    @property
    def cutoff_ms(self) -> int:
        return _ceil_ms(self.cutoff)

    @property
    def end_ms(self) -> int:
        return _ceil_ms(self.end)

    def to_dict(self) -> dict:
        return {
            "cutoff": _iso(self.cutoff),
            "test_window_end": _iso(self.end),
            "test_days": self.test_days,
            "cutoff_rule": self.rule,
            "last_event": _iso(self.last_event) if self.last_event else None,
            "as_of": self.as_of,
            "backtest_schema_suffix": schema_suffix(self.as_of),
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ceil_ms(ts: datetime) -> int:
    """Epoch milliseconds of ``ts``, rounded up (``event_ts >= ts`` <=> ``ms >= this``)."""
    us = (ts - _EPOCH) // timedelta(microseconds=1)
    return -(-us // 1000)


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(ms))


def _iso(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def format_as_of(ts: datetime) -> str:
    """The cutoff as the dbt var: a date at midnight UTC, else ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` (UTC)."""
    ts = ts.astimezone(timezone.utc).replace(tzinfo=None)
    if ts.time() == datetime.min.time():
        return ts.date().isoformat()
    return ts.isoformat(timespec="microseconds" if ts.microsecond else "seconds")


def parse_cutoff(text: str) -> datetime:
    """An ISO date or timestamp as an aware UTC datetime; without an offset it is UTC."""
    try:
        ts = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise EvaluateError(f"--cutoff must be an ISO date or timestamp in UTC, like 2015-09-04 or "
                            f"2015-09-04T12:00:00Z; got {text!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def default_cutoff_ms(last_event_ms: int, test_days: int) -> int:
    """The default T: the last event minus ``test_days`` days, floored to midnight UTC (epoch ms)."""
    return ((int(last_event_ms) - test_days * DAY_MS) // DAY_MS) * DAY_MS


def resolve_window(cutoff: str | None, test_days: int, last_event_ms: int | None) -> Window:
    """The cutoff and window from the options and the last loaded event (epoch ms, None if no events)."""
    if isinstance(test_days, bool) or not isinstance(test_days, int) or test_days < 1:
        raise EvaluateError(f"--test-days must be a whole number of days >= 1, got {test_days!r}")
    last = _from_ms(last_event_ms) if last_event_ms is not None else None
    if cutoff is not None:
        return Window(parse_cutoff(cutoff), test_days, "given with --cutoff", last)
    if last_event_ms is None:
        raise EvaluateError("raw.events is empty: load data first (`aisle load FOLDER`)")
    t = default_cutoff_ms(last_event_ms, test_days)
    return Window(_from_ms(t), test_days,
                  f"last event minus {test_days} days, floored to midnight UTC", last)


# --------------------------------------------------------------------------- binary COPY into numpy


def copy_arrays(conn: psycopg.Connection, query: sql.Composable, columns: Sequence[tuple[str, str]]
                ) -> list[np.ndarray]:
    """Run ``query`` and return its columns as numpy arrays, through one binary COPY.

    ``columns`` is ``[(name, 'int8' | 'float8'), ...]``. The rows travel as one row of aligned
    arrays (``array_agg`` of each column over the same rows), which the similarity step's binary
    COPY reader decodes without a Python loop per row. Booleans: cast them to int8 in the query.
    """
    from aisle.similarity import _FLOAT8_OID, _INT8_OID, _BinaryCopyParser, _decode_array

    aggs = sql.SQL(", ").join(
        sql.SQL("coalesce(array_agg({c}::{t}), '{{}}'::{t}[])").format(c=sql.Identifier(name), t=sql.SQL(typ))
        for name, typ in columns)
    copy_sql = sql.SQL("copy (select {aggs} from ({q}) as q) to stdout (format binary)").format(aggs=aggs, q=query)
    parser = _BinaryCopyParser()
    parts: list[list[np.ndarray]] = [[] for _ in columns]
    with conn.cursor().copy(copy_sql) as copy:
        for chunk in copy:
            for fields in parser.feed(chunk):
                for i, (_, typ) in enumerate(columns):
                    oid, dt = (_INT8_OID, ">i8") if typ == "int8" else (_FLOAT8_OID, ">f8")
                    parts[i].append(_decode_array(fields[i], oid, dt))
    out = []
    for (_, typ), p in zip(columns, parts, strict=True):
        out.append(np.concatenate(p) if p else np.empty(0, dtype=np.int64 if typ == "int8" else np.float64))
    return out


# --------------------------------------------------------------------------- test users and truth


@dataclass(frozen=True)
class TestSet:
    """The test users (sorted ids) and their truth pairs, as index arrays."""

    __test__ = False  # not a pytest class, despite the name

    user_ids: np.ndarray  # int64, sorted; row index -> user_id
    is_known: np.ndarray  # bool per user: at least one event before T
    truth_user: np.ndarray  # int64 row index per truth pair
    truth_item: np.ndarray  # int64
    truth_intent: np.ndarray  # bool: an addtocart or transaction on the item in the window
    truth_novel: np.ndarray  # bool: the user never touched the item before T
    n_catalog: int  # items with at least one event before T
    data: dict = field(default_factory=dict)  # counts for the report

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    def variant_mask(self, variant: str) -> np.ndarray:
        """Which truth pairs a truth variant keeps."""
        masks = {
            "all": np.ones(self.truth_item.shape[0], dtype=bool),
            "intent": self.truth_intent,
            "all_novel": self.truth_novel,
            "intent_novel": self.truth_intent & self.truth_novel,
        }
        if variant not in masks:
            raise ValueError(f"unknown truth variant {variant!r}")
        return masks[variant]

    def segment_mask(self, segment: str) -> np.ndarray:
        if segment == "all":
            return np.ones(self.n_users, dtype=bool)
        if segment == "known":
            return self.is_known.copy()
        if segment == "cold":
            return ~self.is_known
        raise ValueError(f"unknown segment {segment!r}")


TEST_SET_SQL = """
drop table if exists eval_truth, eval_users, eval_prior;

-- The window's events, read from raw exactly as staging reads it (finished event batches);
-- the truth is a set of items, so staging's de-duplication makes no difference here.
create temp table eval_truth as
with batches as (
    select batch_id
    from raw.load_batches
    where file_kind = 'events'
        and status = 'finished'
),
window_events as (
    select
        events.visitorid as user_id,
        events.itemid as item_id,
        events.event as event_type
    from raw.events as events
    inner join batches
        on events.batch_id = batches.batch_id
    where events."timestamp" >= {t0}
        and events."timestamp" < {t1}
)
select
    user_id,
    item_id,
    bool_or(event_type in ('addtocart', 'transaction')) as is_intent,
    count(*) as n_events,
    true as is_novel
from window_events
group by user_id, item_id;

create temp table eval_users as
select
    user_id,
    (row_number() over (order by user_id) - 1)::bigint as idx,
    false as is_known
from (select distinct user_id from eval_truth) as users;
alter table eval_users add primary key (user_id);

-- What the test users touched before T: the backtest's own staging holds exactly the events
-- before T (deduplicated), the data every model was built from.
create temp table eval_prior as
select
    stg.user_id,
    stg.item_id
from {stg} as stg
inner join eval_users
    on stg.user_id = eval_users.user_id
group by stg.user_id, stg.item_id;

update eval_users set is_known = true
where user_id in (select user_id from eval_prior);

update eval_truth set is_novel = false
from eval_prior
where eval_prior.user_id = eval_truth.user_id
    and eval_prior.item_id = eval_truth.item_id;

analyze eval_truth;
analyze eval_users;
"""


def _relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    return conn.execute("select to_regclass(%s)", (f'"{schema}"."{name}"',)).fetchone()[0] is not None


def last_event_ms(conn: psycopg.Connection) -> int | None:
    """The latest loaded event (epoch ms) in finished batches of raw.events, or None."""
    if not _relation_exists(conn, "raw", "events"):
        raise EvaluateError("there is no raw.events table: load data first (`aisle load FOLDER`)")
    return conn.execute(
        "select max(e.\"timestamp\") from raw.events e join raw.load_batches b on b.batch_id = e.batch_id "
        "where b.file_kind = 'events' and b.status = 'finished'").fetchone()[0]


def write_evaluation_users(conn: psycopg.Connection, window: Window) -> str:
    """Write the test window's visitors to ``evaluation{sfx}.test_users`` and return its name.

    The backtest build receives it as the dbt var ``evaluation_users``: its serving step reads
    only these users' events, so the hybrid lists, the profiles and the pure category-CF lists
    are computed for the known visitors among them alone (the same rows as for every known
    visitor, python/tests/test_recommendations.py checks it) instead of for 1.4M visitors.
    Production builds leave the var null.
    """
    schema = "evaluation" + schema_suffix(window.as_of)
    table = sql.Identifier(schema, "test_users")
    conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("drop table if exists {}").format(table))
    conn.execute(sql.SQL(
        "create table {t} as select distinct e.visitorid as user_id from raw.events e "
        "join raw.load_batches b on b.batch_id = e.batch_id and b.file_kind = 'events' and b.status = 'finished' "
        "where e.\"timestamp\" >= {t0} and e.\"timestamp\" < {t1}"
    ).format(t=table, t0=sql.Literal(window.cutoff_ms), t1=sql.Literal(window.end_ms)))
    conn.execute(sql.SQL("alter table {} add primary key (user_id)").format(table))
    conn.execute(sql.SQL("analyze {}").format(table))
    return f"{schema}.test_users"


def load_test_set(conn: psycopg.Connection, window: Window) -> TestSet:
    """Create the temp tables ``eval_truth`` / ``eval_users`` and pull the test set into numpy."""
    sfx = schema_suffix(window.as_of)
    staging = "staging" + sfx
    if not _relation_exists(conn, staging, "stg_retailrocket__events"):
        raise EvaluateError(f"{staging}.stg_retailrocket__events is missing: the backtest build did not run")
    stg = sql.Identifier(staging, "stg_retailrocket__events")
    conn.execute(sql.SQL(TEST_SET_SQL).format(t0=sql.Literal(window.cutoff_ms), t1=sql.Literal(window.end_ms),
                                              stg=stg))
    user_ids, known = copy_arrays(conn, sql.SQL("select user_id, is_known::int as is_known from eval_users"),
                                  [("user_id", "int8"), ("is_known", "int8")])
    order = np.argsort(user_ids, kind="stable")
    user_ids, known = user_ids[order], known[order].astype(bool)
    tu, ti, intent, novel = copy_arrays(conn, sql.SQL(
        "select u.idx, t.item_id, t.is_intent::int as is_intent, t.is_novel::int as is_novel "
        "from eval_truth t join eval_users u on u.user_id = t.user_id"),
        [("idx", "int8"), ("item_id", "int8"), ("is_intent", "int8"), ("is_novel", "int8")])
    order = np.lexsort((ti, tu))
    before = conn.execute(sql.SQL(
        "select count(*), count(distinct user_id), count(distinct item_id) from {}").format(stg)).fetchone()
    in_window = conn.execute(
        "select coalesce(sum(n_events), 0), count(distinct item_id) from eval_truth").fetchone()
    data = {
        "events_before_cutoff": int(before[0]),
        "users_before_cutoff": int(before[1]),
        "items_before_cutoff": int(before[2]),
        "events_in_window": int(in_window[0]),
        "items_in_window": int(in_window[1]),
        "test_users": int(user_ids.shape[0]),
        "known_test_users": int(known.sum()),
        "cold_test_users": int((~known).sum()),
        "truth_pairs": int(tu.shape[0]),
        "intent_truth_pairs": int(intent.sum()),
        "novel_truth_pairs": int(novel.sum()),
    }
    return TestSet(user_ids=user_ids, is_known=known, truth_user=tu[order], truth_item=ti[order],
                   truth_intent=intent[order].astype(bool), truth_novel=novel[order].astype(bool),
                   n_catalog=int(before[2]), data=data)


# --------------------------------------------------------------------------- model lists


@dataclass(frozen=True)
class ModelLists:
    """One model's top-K lists for the test users.

    ``user``/``rank``/``item`` are long arrays of per-user rows (``user`` = test-user index,
    ``rank`` 1-based). Users without per-user rows get ``default`` (a global list, best first),
    or an empty list when ``default`` is None: a miss, as the protocol says.
    """

    name: str
    user: np.ndarray
    rank: np.ndarray
    item: np.ndarray
    default: np.ndarray | None = None
    note: str = ""

    @classmethod
    def global_list(cls, name: str, items: np.ndarray, note: str = "") -> ModelLists:
        empty = np.empty(0, dtype=np.int64)
        return cls(name, empty, empty, empty, np.asarray(items, dtype=np.int64), note)


def global_hits(n_users: int, k: int, items: np.ndarray, truth_user: np.ndarray, truth_item: np.ndarray
                ) -> np.ndarray:
    """Hit matrix (n_users x k) of one list shown to every user.

    Same rules as :meth:`HitMatrix.from_long` (only the first occurrence of an item can hit),
    without materialising n_users copies of the list: each truth pair looks its item up in the
    list once.
    """
    hits = np.zeros((n_users, k), dtype=bool)
    items = np.asarray(items, dtype=np.int64)[:k]
    if items.size == 0 or truth_item.size == 0:
        return hits
    uniq, first = np.unique(items, return_index=True)
    pos = np.searchsorted(uniq, truth_item)
    pos = np.minimum(pos, uniq.size - 1)
    found = uniq[pos] == truth_item
    hits[truth_user[found], first[pos[found]]] = True
    return hits


def build_hit_matrix(lists: ModelLists, n_users: int, k: int, truth_user: np.ndarray,
                     truth_item: np.ndarray, truth_size: np.ndarray | None = None) -> HitMatrix:
    """The model's HitMatrix over all test users at K (per-user rows via HitMatrix.from_long).

    ``truth_size`` (``truth_sizes`` of the same pairs) may be passed when several models share it.
    """
    truth_user = np.asarray(truth_user, dtype=np.int64)
    truth_item = np.asarray(truth_item, dtype=np.int64)
    has_own = np.zeros(n_users, dtype=bool)
    has_own[lists.user] = True
    hits = np.zeros((n_users, k), dtype=bool)
    present = np.zeros((n_users, k), dtype=bool)
    # Item ids are stored in 32 bits when they fit (RetailRocket's are < 500K): the matrix is
    # only read for catalog coverage, and it is the largest array the evaluation keeps.
    ids = [lists.item, np.asarray(lists.default if lists.default is not None else [], dtype=np.int64)]
    small = all(a.size == 0 or (a.min() >= np.iinfo(np.int32).min and a.max() <= np.iinfo(np.int32).max) for a in ids)
    items = np.zeros((n_users, k), dtype=np.int32 if small else np.int64)
    own = np.flatnonzero(has_own)
    if own.size:
        local = np.full(n_users, -1, dtype=np.int64)
        local[own] = np.arange(own.size)
        tmask = has_own[truth_user]
        sub = HitMatrix.from_long(own.size, k, local[lists.user], lists.rank, lists.item,
                                  local[truth_user[tmask]], truth_item[tmask])
        hits[own], present[own], items[own] = sub.hits, sub.present, sub.items
    if lists.default is not None and lists.default.size:
        rest = ~has_own
        d = np.asarray(lists.default, dtype=np.int64)[:k]
        present[rest, :d.size] = True
        items[rest, :d.size] = d
        tmask = rest[truth_user]
        hits |= global_hits(n_users, k, d, truth_user[tmask], truth_item[tmask])
    if truth_size is None:
        truth_size = truth_sizes(n_users, truth_user, truth_item)
    return HitMatrix(hits=hits, present=present, items=items, truth_size=truth_size)


def _has_own(lists: ModelLists, n_users: int) -> np.ndarray:
    """Which test users have a list of their own (the others get the default list, or nothing)."""
    mask = np.zeros(n_users, dtype=bool)
    mask[lists.user] = True
    return mask


def truth_sizes(n_users: int, truth_user: np.ndarray, truth_item: np.ndarray) -> np.ndarray:
    """|R| per user: distinct items per user (a repeated pair counts once)."""
    if truth_user.size == 0:
        return np.zeros(n_users, dtype=np.int64)
    order = np.lexsort((truth_item, truth_user))
    tu, ti = truth_user[order], truth_item[order]
    new = np.ones(tu.size, dtype=bool)
    new[1:] = (tu[1:] != tu[:-1]) | (ti[1:] != ti[:-1])
    return np.bincount(tu[new], minlength=n_users).astype(np.int64)


def _global_top(conn: psycopg.Connection, table: sql.Composable, k: int) -> np.ndarray:
    rows = conn.execute(sql.SQL(
        "select item_id from {t} where is_available is not false order by rank_overall limit {k}"
    ).format(t=table, k=sql.Literal(k))).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def _user_rows(conn: psycopg.Connection, table: sql.Composable, k: int) -> tuple[np.ndarray, ...]:
    """(test-user index, rank, item) of a per-user list table, rank <= k, for the known test users
    only (the per-user tables hold only visitors with events before T, so a cold user has no row)."""
    return tuple(copy_arrays(conn, sql.SQL(
        "select u.idx, r.rank, r.item_id from eval_users u join {t} r on r.user_id = u.user_id "
        "where u.is_known and r.rank <= {k}").format(t=table, k=sql.Literal(k)),
        [("idx", "int8"), ("rank", "int8"), ("item_id", "int8")]))


def load_model_lists(conn: psycopg.Connection, test: TestSet, as_of: str, k: int,
                     user_cf_categories: int = USER_CF_CATEGORIES) -> dict[str, ModelLists]:
    """Every model's lists for the test users, from the backtest marts (and user-user CF here)."""
    recs = "recs" + schema_suffix(as_of)
    ident = sql.Identifier
    out: dict[str, ModelLists] = {}
    out["popularity"] = ModelLists.global_list("popularity", _global_top(conn, ident(recs, "rec_item_popularity"), k))
    out["trending"] = ModelLists.global_list("trending", _global_top(conn, ident(recs, "rec_item_trending"), k))

    if _relation_exists(conn, recs, CF_CANDIDATES_TABLE):
        u, r, i = _user_rows(conn, ident(recs, CF_CANDIDATES_TABLE), k)
        out["category_cf"] = ModelLists("category_cf", u, r, i, None)
    else:
        empty = np.empty(0, dtype=np.int64)
        out["category_cf"] = ModelLists("category_cf", empty, empty, empty, None,
                                        note=f"{recs}.{CF_CANDIDATES_TABLE} is missing: every list is empty")

    u, r, i = _user_rows(conn, ident(recs, "rec_user_recommendations"), k)
    default = np.array([row[0] for row in conn.execute(sql.SQL(
        "select item_id from {t} where root_category_id is null order by rank limit {k}").format(
        t=ident(recs, "rec_default_recommendations"), k=sql.Literal(k))).fetchall()], dtype=np.int64)
    out["hybrid"] = ModelLists("hybrid", u, r, i, default)

    out["user_cf"] = user_cf_lists(conn, test, recs, k, user_cf_categories)
    return out


# --------------------------------------------------------------------------- classic user-user CF


@dataclass(frozen=True)
class UserCF:
    """Classic user-user cosine CF over category vectors, with every neighbour.

    With ``x_v`` user v's category vector (here: the affinity mart's row) and ``x̂_v = x_v / |x_v|``,
    user-user cosine CF scores category c for user u as

        score(u, c) = Σ_{v ≠ u} cos(u, v) · x_v[c] = Σ_{v ≠ u} (x̂_u · x̂_v) x_v[c]
                    = x̂_u · G[:, c] − x_u[c],   G = X̂ᵀ X = Σ_v x_v x_vᵀ / |x_v|

    (the v = u term is (x̂_u · x̂_u) x_u = x_u). So it needs only the C × C matrix G, never the
    U × U user similarities: with all neighbours this *is* the classic method, not an
    approximation. G is the plain Gram matrix YᵀY of the rows y_v = x_v / √|x_v|, which the
    similarity step's streaming accumulator computes in bounded memory. The usual normalisation
    by Σ_v |cos(u, v)| is one positive number per user: it changes no ranking and is left out.
    A top-k-neighbour variant would need the test users' U × U similarities (145K × 1.4M at full
    scale), and the write-ups this replicates used every neighbour.
    """

    category_ids: np.ndarray  # int64, column order of gram
    gram: np.ndarray  # dense C x C: X̂ᵀ X

    @classmethod
    def fit(cls, matrix: sp.csr_matrix, category_ids: np.ndarray | None = None) -> UserCF:
        """From an in-memory users × categories matrix (tests, small data)."""
        x = sp.csr_matrix(matrix, dtype=np.float64)
        inv = _inverse_norms(x)
        xhat = sp.csr_matrix(sp.diags(inv) @ x)
        ids = np.arange(x.shape[1], dtype=np.int64) if category_ids is None else np.asarray(category_ids)
        return cls(category_ids=ids, gram=np.asarray((xhat.T @ x).todense()))

    def scores(self, x: sp.csr_matrix) -> np.ndarray:
        """Dense scores of the users whose vectors are the rows of ``x`` (columns as ``category_ids``).

        An empty row scores 0 everywhere.
        """
        x = sp.csr_matrix(x, dtype=np.float64)
        xhat = sp.csr_matrix(sp.diags(_inverse_norms(x)) @ x)
        return np.asarray(xhat @ self.gram) - x.toarray()


def quantize(x: np.ndarray, bits: int = 40) -> np.ndarray:
    """Round to ``bits`` significant bits (relative 1e-12), so scores equal up to floating-point
    noise tie exactly and the tie rule (category id) decides, as in the similarity step."""
    mantissa, exponent = np.frexp(x)
    return np.ldexp(np.round(mantissa * 2.0**bits), exponent - bits)


def _inverse_norms(x: sp.csr_matrix) -> np.ndarray:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def _sqrt_norm_scaled(users: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """y = x / √|x_u| for rows (user, score) holding every row of their users."""
    _, inverse = np.unique(users, return_inverse=True)
    sumsq = np.bincount(inverse, weights=scores * scores)
    return scores / np.sqrt(np.sqrt(sumsq))[inverse]


def stream_user_cf(conn: psycopg.Connection, recs: str) -> UserCF:
    """G = X̂ᵀ X over every user of ``recs.rec_user_category_affinity``, streamed in bounded memory.

    The rows come out of a binary COPY in 64 batches, each holding all the rows of its users
    (``user_id % 64``), exactly like ``aisle similarity`` reads them; each batch is rescaled to
    y = x / √|x_u| and folded into the similarity step's :class:`CoOccurrenceBuilder`, whose
    weighted Gram off the diagonal and ``sumsq`` on it are YᵀY = G.
    """
    from aisle.similarity import (
        _FLOAT8_OID,
        _INT8_OID,
        AFFINITY_TABLE,
        READ_BUCKETS,
        CoOccurrenceBuilder,
        _BinaryCopyParser,
        _decode_array,
    )

    if not _relation_exists(conn, recs, AFFINITY_TABLE):
        raise EvaluateError(f"{recs}.{AFFINITY_TABLE} is missing: the backtest build did not run")
    query = sql.SQL(
        "copy (select array_agg(user_id::int8), array_agg(category_id::int8), array_agg(affinity_score::float8) "
        "from {tbl} where user_id is not null and category_id is not null "
        "and affinity_score > 0 and affinity_score < 'Infinity'::float8 "
        "group by user_id % {buckets}) to stdout (format binary)"
    ).format(tbl=sql.Identifier(recs, AFFINITY_TABLE), buckets=sql.Literal(READ_BUCKETS))
    parser = _BinaryCopyParser()
    builder = CoOccurrenceBuilder(weighted=True)
    with conn.cursor().copy(query) as copy:
        for chunk in copy:
            for fields in parser.feed(chunk):
                users = _decode_array(fields[0], _INT8_OID, ">i8")
                cats = _decode_array(fields[1], _INT8_OID, ">i8")
                scores = _decode_array(fields[2], _FLOAT8_OID, ">f8")
                builder.add(users, cats, _sqrt_norm_scaled(users, scores))
    if not parser.finished:
        raise EvaluateError("the affinity COPY stream ended early")
    return user_cf_from_cooccurrence(builder.finish())


def user_cf_from_cooccurrence(co) -> UserCF:
    """UserCF from the similarity step's statistics of the rows y = x / √|x_u|, sorted by category id."""
    gram = np.array(co.gram, dtype=np.float64, copy=True)
    np.fill_diagonal(gram, co.sumsq)
    order = np.argsort(co.category_ids, kind="stable")
    return UserCF(category_ids=co.category_ids[order], gram=gram[np.ix_(order, order)])


def top_categories(scores: np.ndarray, category_ids: np.ndarray, n: int, rel_tol: float = 1e-9) -> np.ndarray:
    """Per row, the column indices of the ``n`` best categories (score desc, then id asc); -1 pads.

    Only scores above ``rel_tol`` × the row's largest |score| count (a category only the user
    has scores 0 up to rounding, and must not be recommended by its neighbours).
    """
    m, c = scores.shape
    out = np.full((m, n), -1, dtype=np.int64)
    if m == 0 or c == 0 or n == 0:
        return out
    scale = np.abs(scores).max(axis=1, keepdims=True)
    valid = scores > rel_tol * scale
    key = np.where(valid, scores, -np.inf)
    order = np.lexsort((np.broadcast_to(category_ids, key.shape), -key), axis=1)[:, :n]
    taken = np.take_along_axis(valid, order, axis=1)
    w = order.shape[1]
    out[:, :w] = np.where(taken, order, -1)
    return out


def categories_to_items(cat_rank: np.ndarray, cat_items: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Round-robin the items of each user's ranked categories into a top-k list.

    ``cat_rank`` (m x n) holds category column indices, best first (-1 pads); ``cat_items``
    (C x depth) each category's items best first (-1 pads). The list takes the best item of every
    chosen category in category order, then the second of each, and so on: with 5 categories,
    a top-10 list has 2 items from each. Returns long arrays (row, rank, item).
    """
    m, n = cat_rank.shape
    depth = cat_items.shape[1]
    if m == 0 or n == 0 or depth == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e, e
    safe = np.where(cat_rank >= 0, cat_rank, 0)
    grid = cat_items[safe]  # m x n x depth
    grid = np.where((cat_rank >= 0)[:, :, None], grid, -1)
    flat = grid.transpose(0, 2, 1).reshape(m, depth * n)  # item depth first, then category order
    ok = flat >= 0
    rank = np.cumsum(ok, axis=1)
    keep = ok & (rank <= k)
    rows, cols = np.nonzero(keep)
    return rows.astype(np.int64), rank[rows, cols].astype(np.int64), flat[rows, cols].astype(np.int64)


def _lookup(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``ids`` in the sorted array ``sorted_ids``, and which ones are there."""
    ids = np.asarray(ids, dtype=np.int64)
    if sorted_ids.size == 0:
        return np.zeros(ids.shape, dtype=np.int64), np.zeros(ids.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return pos, sorted_ids[pos] == ids


def user_cf_lists(conn: psycopg.Connection, test: TestSet, recs: str, k: int,
                  n_categories: int = USER_CF_CATEGORIES) -> ModelLists:
    """Lists of the classic user-user CF for the test users it can serve (known, with affinity rows).

    Category vectors: the backtest's ``rec_user_category_affinity`` (the same input as the
    shipped CF). Each user's ``n_categories`` best categories (:class:`UserCF`,
    :func:`top_categories`) become items by round-robin over each category's trending items
    (available ones, by ``rec_item_trending.rank_in_category``), the item ranking the hybrid
    uses within a category.
    """
    model = stream_user_cf(conn, recs)
    ids = model.category_ids
    tu, tc, tx = copy_arrays(conn, sql.SQL(
        "select u.idx, a.category_id, a.affinity_score from {t} a join eval_users u on u.user_id = a.user_id "
        "where a.affinity_score > 0 and a.affinity_score < 'Infinity'::float8"
    ).format(t=sql.Identifier(recs, "rec_user_category_affinity")),
        [("idx", "int8"), ("category_id", "int8"), ("affinity_score", "float8")])
    col, ok = _lookup(ids, tc)
    tu, col, tx = tu[ok], col[ok], tx[ok]
    test_rows = np.unique(tu)
    local = np.searchsorted(test_rows, tu)
    x = sp.csr_matrix((tx, (local, col)), shape=(test_rows.size, ids.size))

    cat, rank_in_cat, item = copy_arrays(conn, sql.SQL(
        "select category_id, rank_in_category, item_id from ("
        " select category_id, item_id, row_number() over (partition by category_id order by rank_in_category)"
        " as rank_in_category from {t} where is_available is not false) as a where rank_in_category <= {k}"
    ).format(t=sql.Identifier(recs, "rec_item_trending"), k=sql.Literal(k)),
        [("category_id", "int8"), ("rank_in_category", "int8"), ("item_id", "int8")])
    cat_items = np.full((ids.size, k), -1, dtype=np.int64)
    cpos, ok = _lookup(ids, cat)
    cat_items[cpos[ok], rank_in_cat[ok] - 1] = item[ok]

    users, ranks, items = [], [], []
    chunk = 4096
    for start in range(0, test_rows.size, chunk):
        scores = quantize(model.scores(x[start:start + chunk]))
        cats = top_categories(scores, ids, n_categories)
        r, rk, it = categories_to_items(cats, cat_items, k)
        users.append(test_rows[start + r])
        ranks.append(rk)
        items.append(it)
    return ModelLists("user_cf", _concat(users), _concat(ranks), _concat(items), None)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------- scoring


#: Below this share of users with a non-zero value, the exact sparse resampling is used.
SPARSE_SHARE = 0.5


def bootstrap_columns(columns: dict[str, np.ndarray], n_resamples: int, seed: int, alpha: float
                      ) -> dict[str, dict[str, float]]:
    """Percentile bootstrap CIs of the mean of every column (all over the same users, shared resamples).

    Saves work without changing a number: a constant column's resampled means are all that
    constant (its CI is [c, c]), and identical columns (say, two models that show the cold users
    the same list) have identical resampled means, so each distinct, non-constant column is
    bootstrapped once. Dense data goes to :func:`aisle.metrics.bootstrap_ci`; when most users
    are zero in every column (most visitors hit nothing) :func:`sparse_bootstrap` draws the same
    distribution at a fraction of the cost, and only the non-zero rows are ever copied.
    """
    import hashlib

    out: dict[str, dict[str, float]] = {}
    live: dict[str, np.ndarray] = {}
    n = 0
    nz: np.ndarray | None = None
    for name, col in columns.items():
        col = np.asarray(col, dtype=np.float64)
        n = col.size
        lo, hi = (col.min(), col.max()) if n else (0.0, 0.0)
        if lo == hi:
            out[name] = {"estimate": float(lo), "low": float(lo), "high": float(hi)}
            continue
        live[name] = col
        nz = (col != 0) if nz is None else (nz | (col != 0))
    if live:
        sparse = nz.mean() <= SPARSE_SHARE
        rows = np.flatnonzero(nz) if sparse else slice(None)
        unique: dict[str, np.ndarray] = {}
        alias: dict[str, str] = {}
        seen: dict[bytes, str] = {}
        for name, col in live.items():
            part = np.ascontiguousarray(col[rows])  # outside the non-zero rows every column is 0
            key = hashlib.blake2b(part.tobytes(), digest_size=16).digest()
            if key in seen and np.array_equal(unique[seen[key]], part):
                alias[name] = seen[key]
                continue
            seen[key] = name
            unique[name] = part
        if sparse:
            values = np.column_stack(list(unique.values()))
            low, high = _sparse_rows_bootstrap(values, n, n_resamples=n_resamples, seed=seed, alpha=alpha)
            res = {name: {"estimate": float(live[name].mean()), "low": _sig(lo), "high": _sig(hi)}
                   for name, lo, hi in zip(unique, low, high, strict=True)}
        else:
            res = bootstrap_ci(unique, n_resamples=n_resamples, seed=seed, alpha=alpha).to_dict()["metrics"]
        out.update(res)
        for name, first in alias.items():
            out[name] = dict(res[first])
    return {name: out[name] for name in columns}


def _sig(x: float, digits: int = 10) -> float:
    """Rounded to 10 significant digits, like ``BootstrapResult.to_dict``: a BLAS product's last
    bits depend on the thread count, and the report must be identical across machines."""
    return float(f"{float(x):.{digits}g}")


def sparse_bootstrap(values: np.ndarray, n_resamples: int, seed: int, alpha: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of column means over users when most rows are all zero; exact.

    The bootstrap draws n users with replacement and averages; a resampled mean is
    Σ_u c_u v_u / n, where only the counts c_u of the n_nz rows with a non-zero value matter.
    Of n uniform draws, the number landing on those rows is T ~ Binomial(n, n_nz / n), and
    given T they are T uniform draws among them. So each resample draws T, then T indices
    among the non-zero rows (one ``bincount`` per chunk of resamples, one matrix product
    ``counts @ values[nz] / n``): the same distribution as resampling all n users, at a cost
    proportional to the non-zero rows (typically 5 to 20 times less here). Seeded with
    ``np.random.default_rng(seed)``. Returns the alpha/2 and 1 − alpha/2 percentiles per column.
    """
    values = np.asarray(values, dtype=np.float64)
    nz = np.flatnonzero(np.any(values != 0, axis=1))
    return _sparse_rows_bootstrap(values[nz], values.shape[0], n_resamples, seed, alpha)


def _sparse_rows_bootstrap(v: np.ndarray, n: int, n_resamples: int, seed: int, alpha: float,
                           chunk_cells: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sparse_bootstrap` given only the non-zero rows ``v`` of an n-row matrix."""
    k = int(v.shape[0])
    if n == 0 or k == 0:
        zero = np.zeros(v.shape[1])
        return zero, zero
    v = np.ascontiguousarray(v, dtype=np.float64)
    rng = np.random.default_rng(seed)
    totals = rng.binomial(n, k / n, size=n_resamples)
    means = np.empty((n_resamples, v.shape[1]), dtype=np.float64)
    chunk = max(1, min(n_resamples, chunk_cells // k))
    for start in range(0, n_resamples, chunk):
        t = totals[start:start + chunk]
        m = t.size
        draws = rng.integers(0, k, size=int(t.sum()))
        rid = np.repeat(np.arange(m, dtype=np.int64) * k, t)
        counts = np.bincount(rid + draws, minlength=m * k).reshape(m, k).astype(np.float64)
        means[start:start + m] = counts @ v / n
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    return low, high


def _hits_at(hm: HitMatrix, k: int) -> np.ndarray:
    return hm.hits[:, :k].any(axis=1)


def per_user_values(hms: dict[str, HitMatrix], ks: Sequence[int]) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """Per-user metric values of every model at every K, over all test users (NaN where |R| = 0)."""
    return {m: {k: hm.per_user(k) for k in ks} for m, hm in hms.items()}


def score_segment(hms: dict[str, HitMatrix], per_user: dict[str, dict[int, dict[str, np.ndarray]]],
                  users: np.ndarray, ks: Sequence[int], n_catalog: int, baseline: str, n_resamples: int, seed: int,
                  alpha: float, own: dict[str, np.ndarray] | None = None) -> dict:
    """Metrics with CIs, coverage and paired tests of every model on one user set.

    ``users`` is a bool mask over the test users (a segment's users with a non-empty truth);
    ``per_user`` comes from :func:`per_user_values`; ``own`` (optional) marks, per model, the users
    with a list of their own: all the others see the same default list, so one of them is enough
    to count the distinct recommended items (catalog coverage). One bootstrap call covers every model, metric
    and K plus the paired per-user differences HR(model) − HR(baseline) and NDCG(model) −
    NDCG(baseline), so all CIs of a segment come from the same resamples.
    """
    from aisle.stats import holm, paired_mcnemar

    n = int(users.sum())
    if n == 0:
        return {"n_users": 0, "models": {}}
    kmax = max(ks)
    every_user = bool(users.all())

    def pick(values: np.ndarray) -> np.ndarray:
        return values if every_user else values[users]  # no copy when the segment is everyone

    cols: dict[str, np.ndarray] = {}
    for m in hms:
        cols[f"{m}|user_coverage"] = pick(per_user[m][kmax]["user_coverage"])
        for k in ks:
            for metric in RANKING_METRICS:
                cols[f"{m}|{metric}@{k}"] = pick(per_user[m][k][metric])
    if baseline in hms:
        for m in hms:
            if m == baseline:
                continue
            for k in ks:
                for metric in ("hr", "ndcg"):
                    cols[f"{m}|{metric}_diff@{k}"] = cols[f"{m}|{metric}@{k}"] - cols[f"{baseline}|{metric}@{k}"]
    ci = bootstrap_columns(cols, n_resamples=n_resamples, seed=seed, alpha=alpha)

    models: dict[str, dict] = {}
    hits = {m: {k: _hits_at(hm, k)[users] for k in ks} for m, hm in hms.items()}
    for m, hm in hms.items():
        keep = users
        if own is not None:
            keep = users & own[m]
            shared = np.flatnonzero(users & ~own[m])
            if shared.size:
                keep[shared[0]] = True
        items, present = hm.items[keep], hm.present[keep]
        at_k: dict[str, dict] = {}
        for k in ks:
            entry = {metric: ci[f"{m}|{metric}@{k}"] for metric in RANKING_METRICS}
            entry["catalog_coverage"] = catalog_coverage_at_k(items, present, k, n_catalog) if n_catalog else None
            entry["hits"] = int(hits[m][k].sum())
            at_k[str(k)] = entry
        models[m] = {"user_coverage": ci[f"{m}|user_coverage"],
                     "users_served": int(hm.present[users].any(axis=1).sum()), "at_k": at_k}

    if baseline in hms:
        others = [m for m in hms if m != baseline]
        for k in ks:
            tests = [paired_mcnemar(hits[m][k], hits[baseline][k]) for m in others]
            adjusted, reject = holm([t["pvalue"] for t in tests], alpha=alpha)
            for m, t, p_adj, rej in zip(others, tests, adjusted, reject, strict=True):
                models[m].setdefault("vs_baseline", {})[str(k)] = {
                    "hr_difference": ci[f"{m}|hr_diff@{k}"],
                    "ndcg_difference": ci[f"{m}|ndcg_diff@{k}"],
                    "mcnemar": t,
                    "pvalue_holm": p_adj,
                    "significant": rej,
                }
    return {"n_users": n, "models": models}


def simulated_ab(test: TestSet, hms_by_variant: dict[str, dict[str, HitMatrix]], ks: Sequence[int], seed: int,
                 control: str = BASELINE, treatment: str = TREATMENT, alpha: float = ALPHA) -> dict:
    """A randomized A/B test simulated on the test users, each arm scored only with its own model.

    Every test user (a visitor in the window) is assigned by a salted hash of the user id
    (``aisle.stats.hash_split``, salt ``aisle-evaluate-ab-<seed>``, 50/50). A control user
    converts when the control model's top K holds an item of their truth; a treatment user when
    the treatment model's does. Outcomes: ``all`` (any event) and ``intent`` (cart or purchase),
    both over all visitors, as a live test would count them. Then the sample ratio check and
    ``two_proportion_test`` (z-test, Newcombe CI, lift CI with a delta-method check, extra
    conversions per 10,000 users, MDE) from :mod:`aisle.stats`.
    """
    from aisle.stats import hash_split, srm_check, two_proportion_test

    salt = f"{AB_SALT}-{seed}"
    treat = hash_split(test.user_ids, salt=salt)
    n_t, n_c = int(treat.sum()), int((~treat).sum())
    out: dict = {
        "population": "every test user (a visitor with at least one event in the test window)",
        "assignment": f"BLAKE2b hash of '{salt}:<user_id>' < 0.5 -> treatment",
        "salt": salt,
        "control": control,
        "treatment": treatment,
        "n_control": n_c,
        "n_treatment": n_t,
        "srm": srm_check([n_c, n_t]),
        "outcomes": {},
    }
    if n_c == 0 or n_t == 0:
        out["note"] = "an arm is empty: too few test users for an A/B test"
        return out
    for variant in ("all", "intent"):
        hms = hms_by_variant.get(variant)
        if not hms or control not in hms or treatment not in hms:
            continue
        res = {}
        for k in ks:
            conv_c = int(_hits_at(hms[control], k)[~treat].sum())
            conv_t = int(_hits_at(hms[treatment], k)[treat].sum())
            res[str(k)] = two_proportion_test(conv_c, n_c, conv_t, n_t, alpha=alpha)
        out["outcomes"][variant] = res
    return out


def primary_k(ks: Sequence[int]) -> int:
    """The K of the headline numbers: 10 (the shipped list length) when evaluated, else the middle K."""
    ks = sorted(ks)
    return 10 if 10 in ks else ks[len(ks) // 2]


def score_all(test: TestSet, lists: dict[str, ModelLists], variants: Sequence[str], ks: Sequence[int], seed: int,
              n_resamples: int = N_RESAMPLES, alpha: float = ALPHA, baseline: str = BASELINE,
              treatment: str = TREATMENT) -> tuple[dict, dict[str, dict[str, HitMatrix]]]:
    """Every metric, test and A/B figure for every truth variant and segment (the JSON's core)."""
    # statsmodels' multipletests (Holm) runs gc.collect() on every call: 0.1 s each once scipy and
    # statsmodels are imported. Freezing the heap (after those imports) keeps the collections cheap.
    import aisle.stats  # noqa: F401

    gc.freeze()
    try:
        return _score_all(test, lists, variants, ks, seed, n_resamples, alpha, baseline, treatment)
    finally:
        gc.unfreeze()


def _score_all(test: TestSet, lists: dict[str, ModelLists], variants: Sequence[str], ks: Sequence[int], seed: int,
               n_resamples: int, alpha: float, baseline: str, treatment: str
               ) -> tuple[dict, dict[str, dict[str, HitMatrix]]]:
    import copy
    import hashlib

    kmax = max(ks)
    hms_by_variant: dict[str, dict[str, HitMatrix]] = {}
    metrics: dict[str, dict] = {}
    done: dict[bytes, dict] = {}
    first_variant: dict[str, HitMatrix] = {}
    for variant in variants:
        mask = test.variant_mask(variant)
        tu, ti = test.truth_user[mask], test.truth_item[mask]
        size = truth_sizes(test.n_users, tu, ti)
        hms = {m: build_hit_matrix(lists[m], test.n_users, kmax, tu, ti, size) for m in lists}
        # A model's lists (present, items) do not depend on the truth: every variant shares the
        # first variant's copy, which keeps the process's memory flat in the number of variants.
        for m, hm in hms.items():
            first = first_variant.setdefault(m, hm)
            if first is not hm:
                hms[m] = HitMatrix(hits=hm.hits, present=first.present, items=first.items,
                                   truth_size=hm.truth_size)
        # The simulated A/B test needs only its two arms' hit matrices; the rest are dropped
        # with this variant.
        hms_by_variant[variant] = {m: hms[m] for m in (baseline, treatment) if m in hms}
        # Only users with a non-empty truth are test users of this variant: the per-user values
        # are computed for them alone (the intent variants keep ~4% of the users).
        valid = size > 0
        own = {m: _has_own(lists[m], test.n_users)[valid] for m in lists}
        hms_valid = hms if valid.all() else {m: hm.subset(valid) for m, hm in hms.items()}
        per_user = per_user_values(hms_valid, ks)
        metrics[variant] = {}
        for segment in SEGMENTS:
            seg = test.segment_mask(segment)
            users = seg & valid
            # The same users with the same truth give the same numbers (e.g. the cold users'
            # novelty truth is their whole truth): score them once.
            in_seg = users[tu]
            key = hashlib.blake2b(users.tobytes() + tu[in_seg].tobytes() + ti[in_seg].tobytes()).digest()
            if key not in done:
                done[key] = score_segment(hms_valid, per_user, seg[valid], ks, test.n_catalog, baseline,
                                          n_resamples, seed, alpha, own=own)
            res = copy.deepcopy(done[key])
            res["n_segment_users"] = int(seg.sum())
            res["n_excluded_empty_truth"] = res["n_segment_users"] - res["n_users"]
            metrics[variant][segment] = res
        del hms, hms_valid, per_user  # before the next variant allocates its own
    ab = simulated_ab(test, hms_by_variant, ks, seed, control=baseline, treatment=treatment, alpha=alpha)
    return {"metrics": metrics, "ab_test": ab}, hms_by_variant


# --------------------------------------------------------------------------- JSON


def clean_json(value: object, digits: int = JSON_DIGITS) -> object:
    """Make a report JSON-safe and byte-stable: floats rounded to ``digits`` significant digits
    (so last-bit noise cannot change the file), NaN/inf as null, numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {str(k): clean_json(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v, digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if not math.isfinite(x):
            return None
        return float(f"{x:.{digits}g}") + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, np.ndarray):
        return clean_json(value.tolist(), digits)
    return value


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(clean_json(report), indent=2, sort_keys=False, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- orchestration


@contextmanager
def _dbt_database(target: Target) -> Iterator[None]:
    """Make dbt (which reads the profile and $AISLE_DBNAME) build into ``target``'s database."""
    profile = resolve_target(target.name)
    if (profile.host, profile.port) != (target.host, target.port):
        raise ConfigError(f"{target.describe()} is not the server of the profile's target '{target.name}'; "
                          "dbt could not build into it")
    previous = os.environ.get("AISLE_DBNAME")
    if profile.dbname != target.dbname:
        os.environ["AISLE_DBNAME"] = target.dbname
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AISLE_DBNAME", None)
        else:
            os.environ["AISLE_DBNAME"] = previous


def _variants(truth: str) -> tuple[str, ...]:
    if truth not in TRUTH_CHOICES:
        raise EvaluateError(f"--truth must be one of {', '.join(TRUTH_CHOICES)}, got {truth!r}")
    return TRUTH_CHOICES[truth]


def _check_ks(ks: Sequence[int] | None) -> list[int]:
    ks = sorted({int(k) for k in (ks or DEFAULT_KS)})
    if not ks or ks[0] < 1:
        raise EvaluateError(f"--k values must be whole numbers >= 1, got {ks}")
    if ks[-1] > 1000:
        raise EvaluateError(f"--k values above 1000 make no sense for a list a visitor sees, got {ks[-1]}")
    return ks


def build_report(window: Window, test: TestSet, lists: dict[str, ModelLists], scored: dict, ks: Sequence[int],
                 seed: int, n_resamples: int, full_refresh: bool = True) -> dict:
    """The report's content (what evaluation.json holds): protocol, data, models and results."""
    kmax = max(ks)
    variants = list(scored["metrics"])
    return {
        "report": "aisle evaluate",
        "protocol": {
            **window.to_dict(),
            "ks": ks,
            "primary_k": primary_k(ks),
            "truth_variants": {v: VARIANT_LABELS[v] for v in variants},
            "segments": {"all": "every test user", "known": "at least one event before T",
                         "cold": "no event before T"},
            "baseline": BASELINE,
            "treatment": TREATMENT,
            "seed": seed,
            "bootstrap": {"n_resamples": n_resamples, "alpha": ALPHA, "method": "percentile, resampling users; "
                          "shared resamples across the models of a segment"},
            "paired_test": "McNemar on per-user HR@K vs the baseline (exact binomial below 25 discordant pairs), "
                           "Holm across models",
            "backtest_build": {"top_n": kmax, "full_refresh": full_refresh},
            "user_cf_categories": USER_CF_CATEGORIES,
        },
        "data": test.data | {"catalog_items": test.n_catalog},
        "models": {m: {"label": MODELS[m][0], "lists": MODELS[m][1], "note": lists[m].note,
                       "users_served": int(_served(lists[m], test.n_users, count=True))} for m in lists},
        **scored,
    }


def write_report(report: dict, out_dir: Path | str) -> dict:
    """Write evaluation.json, the PNG charts and evaluation.md into ``out_dir``; returns their paths."""
    from aisle.report import write_charts, write_markdown

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    write_json(report, json_path)
    charts = write_charts(report, out_dir)
    md_path = out_dir / "evaluation.md"
    write_markdown(report, md_path, charts)
    return {"markdown": str(md_path), "json": str(json_path), "charts": [str(c) for c in charts]}


def evaluate(target: Target | str | None = None, cutoff: str | None = None, test_days: int = 14,
             ks: Sequence[int] = DEFAULT_KS, truth: str = "both", seed: int = 0, out_dir: Path | str | None = None,
             show: bool = False, *, n_resamples: int = N_RESAMPLES, build: bool = True,
             full_refresh: bool = True) -> dict:
    """Run the honest backtest end to end and write the report; returns the report dict.

    ``build=False`` re-scores an existing backtest build of the same cutoff (no dbt, no
    similarity); ``out_dir`` defaults to ``reports/`` in the repository. The returned dict is the
    JSON's content plus ``paths`` (markdown, json, charts) and ``timings`` (seconds per step), both
    kept out of the JSON so that it is reproducible.
    """
    from aisle.db import connect
    from aisle.pipeline import StepTimer, run_pipeline
    from aisle.report import print_summary

    resolved = target if isinstance(target, Target) else resolve_target(target)
    variants = _variants(truth)
    ks = _check_ks(ks)
    kmax = ks[-1]
    if n_resamples < 1:
        raise EvaluateError("n_resamples must be >= 1")
    out_dir = Path(out_dir) if out_dir is not None else project_root() / "reports"
    timer = StepTimer()
    started = time.perf_counter()

    with connect(resolved, autocommit=True) as conn:
        window = resolve_window(cutoff, test_days, last_event_ms(conn))
    if window.last_event is not None and window.cutoff >= window.last_event:
        raise EvaluateError(f"the cutoff {_iso(window.cutoff)} is after the last loaded event "
                            f"({_iso(window.last_event)}): nothing to test on; choose an earlier --cutoff")
    if show:
        console.print(f"[bold]backtest[/] cutoff T = {_iso(window.cutoff)} ({window.rule}); test window "
                      f"[{_iso(window.cutoff)}, {_iso(window.end)}); schemas *{schema_suffix(window.as_of)}")
    if build:
        with connect(resolved, autocommit=True) as conn:
            users_table = write_evaluation_users(conn, window)
        with _dbt_database(resolved):
            run_pipeline(target=resolved.name, as_of=window.as_of, full_refresh=full_refresh, show=show,
                         timer=timer, dbt_vars={"top_n": kmax, "evaluation_users": users_table})

    with connect(resolved, autocommit=True) as conn:
        with timer.step("test users and truth (SQL)", show) as note:
            test = load_test_set(conn, window)
            if test.n_users == 0:
                raise EvaluateError(f"no events in the test window [{_iso(window.cutoff)}, {_iso(window.end)}): "
                                    "choose an earlier --cutoff or a longer --test-days")
            if test.data["events_before_cutoff"] == 0:
                raise EvaluateError(f"no events before the cutoff {_iso(window.cutoff)}: the models have nothing "
                                    "to learn from; choose a later --cutoff")
            note["detail"] = (f"{test.n_users:,} test users ({int(test.is_known.sum()):,} known), "
                              f"{test.data['truth_pairs']:,} truth pairs")
        with timer.step("model lists for the test users", show) as note:
            lists = load_model_lists(conn, test, window.as_of, kmax)
            note["detail"] = ", ".join(f"{m} {_served(lst, test.n_users):.1%} served" for m, lst in lists.items())

    with timer.step(f"metrics, {n_resamples:,} bootstrap resamples per segment, tests", show) as note:
        scored, _ = score_all(test, lists, variants, ks, seed, n_resamples=n_resamples)
        note["detail"] = f"seed {seed}, {len(variants)} truth variants x {len(SEGMENTS)} segments"

    report = build_report(window, test, lists, scored, ks, seed, n_resamples, full_refresh)
    with timer.step("report: json, markdown, charts", show) as note:
        paths = write_report(report, out_dir)
        note["detail"] = f"{out_dir}/"
    total = time.perf_counter() - started
    result = clean_json(report)
    result["paths"] = paths
    result["timings"] = {name: seconds for name, seconds, _ in timer.steps} | {"total": total}
    if show:
        print_summary(result, console)
        console.print(timer.table(f"aisle evaluate: timings per step (total {total:.1f} s)"))
    return result


def _served(lists: ModelLists, n_users: int, count: bool = False) -> float:
    served = n_users if (lists.default is not None and lists.default.size) else int(np.unique(lists.user).size)
    return served if count else (served / n_users if n_users else 0.0)
