"""Category–category similarity from the user–category affinity mart (``aisle similarity``).

The one Python step inside the SQL pipeline. It streams ``recs{suffix}.rec_user_category_affinity``
out of Postgres with ``COPY ... TO STDOUT (FORMAT binary)`` straight into numpy arrays, in 64
batches that each hold every row of their users (``user_id % 64``). Each batch becomes a small
``scipy.sparse`` user × category matrix: its column sums go into per-category totals, and the
rows of its users with two or more categories are folded, about 250,000 entries at a time,
into dense category × category accumulators through the sparse Gram product ``X^T X``. Memory
holds one batch, at most ~250,000 pending entries and the C × C statistics, never all users. From
those it computes every category pair's similarity, keeps the top-k neighbours per category and
swaps them atomically into ``recs{suffix}.category_similarity``, which dbt declares as the source
``similarity``. Each run appends its parameters, counts and timings to
``recs{suffix}.category_similarity_runs``.

Notation. ``x[u, c] > 0`` is user u's affinity for category c (rows with a null, zero, negative,
NaN or infinite score are ignored; duplicate (user, category) rows are summed). ``b[u, c] = 1``
when ``x[u, c] > 0``. ``N`` is the number of users with at least one such row.

* support ``s_ij = sum_u b_ui b_uj``: the number of users who have both categories; ``n_i = s_ii``.
* the value used by a measure is ``v = b`` with ``binary=True`` and ``v = x`` with
  ``binary=False`` (weighted). ``G_ij = sum_u v_ui v_uj`` is its Gram matrix and
  ``m_i = sum_u v_ui`` its column sum (both equal ``s_ij`` and ``n_i`` when binary).

Measures (each weighted form equals the binary one when every affinity is 1):

* ``cosine``:  ``G_ij / (sqrt(G_ii) * sqrt(G_jj))``.
* ``jaccard``: ``G_ij / (G_ii + G_jj - G_ij)``. Binary: ``s_ij / (n_i + n_j - s_ij)``, the
  classic Jaccard index of the two user sets. Weighted: the extended Jaccard (Tanimoto)
  coefficient, chosen over the min/max (Ruzicka) form because it comes from the same Gram
  matrix as cosine (Ruzicka needs every user's category pairs enumerated).
* ``lift``:    ``N * G_ij / (m_i * m_j)``. Binary: ``P(i and j) / (P(i) P(j))`` over users.
  Weighted: ``E[x_i x_j] / (E[x_i] E[x_j])`` over users, the observed co-affinity over the one
  expected if the two affinities were independent. Unbounded; 1 = independence.

Then, for every pair i != j:

* pairs with ``s_ij < min_support`` (at least 1: pairs no user shares never get a row) are dropped;
* shrinkage ``lambda >= 0`` damps low-support pairs: ``sim' = sim * s_ij / (s_ij + lambda)``
  (lambda = 0 leaves the similarity unchanged; for lift it shrinks towards 0, not 1);
* the similarity is rounded to 40 significant bits (relative 1e-12), so values that are equal up
  to floating-point noise tie exactly;
* neighbours are ranked by similarity descending, then ``neighbor_category_id`` ascending, and
  the first k are kept (a tie across the k-th place is cut by that id order). Rank 1 is the most
  similar; a category is never its own neighbour. A category whose users have no other category
  gets no rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import psycopg
import scipy.sparse as sp
from psycopg import sql

from aisle.config import Target, schema_suffix

MEASURES: tuple[str, ...] = ("cosine", "jaccard", "lift")
BASE_SCHEMA = "recs"
AFFINITY_TABLE = "rec_user_category_affinity"
TABLE = "category_similarity"
RUNS_TABLE = "category_similarity_runs"
NEW_TABLE = TABLE + "__new"
READER_ROLE = "aisle_reader"
# The affinity rows travel as a few big rows of arrays (one per user-id bucket) instead of one
# COPY message per row: psycopg spends ~1 µs per message, 2 s at full scale; this takes 0.6 s.
READ_BUCKETS = 64
# The category × category accumulators are dense: RetailRocket has ~1,700 categories (23 MB per
# accumulator); 5,000 would take 200 MB each.
MAX_CATEGORIES = 5_000
_QUANT_BITS = 40

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_INT8_OID, _FLOAT8_OID = 20, 701


class SimilarityError(Exception):
    """A usage or input problem (bad parameter, missing affinity mart); exit code 1."""


# --------------------------------------------------------------------------- data shapes


@dataclass(frozen=True)
class CoOccurrence:
    """Everything the three measures need, summed over users; index c is category ``category_ids[c]``.

    ``support[i, j] = s_ij`` off the diagonal (the diagonal is unused: see ``count``), ``gram``
    the weighted ``G_ij`` (None when built for binary measures only), ``count = n_i``,
    ``sumsq = sum_u x_ui^2`` and ``colsum = sum_u x_ui``.
    """

    category_ids: np.ndarray  # int64, in column order (not sorted)
    n_users: int  # N: users with at least one positive affinity
    n_rows: int  # affinity rows read (before dropping non-positive scores and summing duplicates)
    support: np.ndarray  # int64, C × C
    gram: np.ndarray | None  # float64, C × C
    count: np.ndarray  # int64, C
    sumsq: np.ndarray  # float64, C
    colsum: np.ndarray  # float64, C

    @property
    def n_categories(self) -> int:
        return int(self.category_ids.shape[0])


@dataclass(frozen=True)
class Neighbours:
    """Top-k neighbours, one entry per output row, ordered by (category_id, rank)."""

    category_id: np.ndarray  # int64
    neighbor_category_id: np.ndarray  # int64
    similarity: np.ndarray  # float64
    support: np.ndarray  # int64
    rank: np.ndarray  # int32, 1 = most similar

    def __len__(self) -> int:
        return int(self.category_id.shape[0])


@dataclass(frozen=True)
class SimilarityRun:
    """What one ``compute_similarity`` call did: parameters, counts and timings.

    ``seconds_read`` is the time spent waiting for and decoding the COPY stream; the per-bucket
    accumulation that overlaps it is counted in ``seconds_compute``.
    """

    run_id: int
    schema: str
    measure: str
    k: int
    binary: bool
    shrinkage: float
    min_support: int
    as_of: str | None
    n_rows: int
    n_users: int
    n_categories: int
    n_candidate_pairs: int
    n_pairs: int
    seconds_read: float
    seconds_compute: float
    seconds_write: float

    @property
    def seconds_total(self) -> float:
        return self.seconds_read + self.seconds_compute + self.seconds_write

    def summary(self) -> str:
        """One paragraph for the CLI."""
        mode = "binary" if self.binary else "weighted"
        as_of = f" as of {self.as_of}" if self.as_of else ""
        return (
            f"similarity run {self.run_id}{as_of}: {self.measure} ({mode}, shrinkage {self.shrinkage:g}, "
            f"min support {self.min_support}) over {self.n_users:,} users × {self.n_categories:,} categories "
            f"({self.n_rows:,} affinity rows); {self.n_candidate_pairs:,} co-occurring pairs, "
            f"top {self.k} kept: {self.n_pairs:,} rows in {self.schema}.{TABLE}. "
            f"Read {self.seconds_read:.2f} s, compute {self.seconds_compute:.2f} s, "
            f"write {self.seconds_write:.2f} s, total {self.seconds_total:.2f} s."
        )


# --------------------------------------------------------------------------- parameters


def validate_parameters(measure: str, k: int, shrinkage: float, min_support: int) -> None:
    """Reject parameters that have no meaning, with a message that says what to pass."""
    if measure not in MEASURES:
        raise SimilarityError(f"unknown similarity measure {measure!r}; use one of {', '.join(MEASURES)}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SimilarityError(f"k must be a positive integer (neighbours kept per category), got {k!r}")
    if not np.isfinite(shrinkage) or shrinkage < 0:
        raise SimilarityError(f"shrinkage must be a finite number >= 0, got {shrinkage!r}")
    if isinstance(min_support, bool) or not isinstance(min_support, (int, np.integer)) or min_support < 1:
        raise SimilarityError(
            f"min_support must be an integer >= 1 (users sharing both categories), got {min_support!r}")


# --------------------------------------------------------------------------- accumulate


def _dense_index(values: np.ndarray) -> np.ndarray:
    """Dense 0-based group numbers of integer values (the inverse of ``np.unique``).

    A presence table over the value range (O(n), no sort) when the range is at most 4 × the
    number of values, else ``np.unique``'s sort.
    """
    lo, hi = int(values.min()), int(values.max())
    if hi - lo + 1 > 4 * values.shape[0]:
        return np.unique(values, return_inverse=True)[1].reshape(-1)
    offsets = values - lo
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[offsets] = True
    return (np.cumsum(present, dtype=np.int64) - 1)[offsets]


class CoOccurrenceBuilder:
    """Sums the co-occurrence statistics over batches of users, so memory never holds all users.

    Each batch must hold ALL the rows of its users (the COPY groups rows by ``user_id % 64``, so
    it does). It becomes a small sparse user × category matrix (duplicate (user, category) rows
    summed, non-positive or non-finite scores dropped) whose column sums go straight into the
    per-category totals. Only the rows of users with two or more categories matter for pairs;
    they are kept until about ``flush_nnz`` of them are pending, then their Gram products
    ``X^T X`` are added into dense category × category accumulators, so memory stays bounded
    whatever the number of users. Categories get column indices in order of discovery;
    :meth:`finish` sorts them by id.
    """

    def __init__(self, weighted: bool = True, user_stride: int = READ_BUCKETS, flush_nnz: int = 1 << 18) -> None:
        self.weighted = weighted
        self.user_stride = user_stride
        self.flush_nnz = flush_nnz
        self.n_users = 0
        self.n_rows = 0
        self._lut_lo = 0
        self._lut = np.empty(0, dtype=np.int64)  # category id - lo -> column, -1 = not seen
        self._cap = 0
        self._n_cats = 0
        self._support = np.zeros((0, 0), dtype=np.int64)
        self._gram = np.zeros((0, 0), dtype=np.float64)
        self._count = np.zeros(0, dtype=np.int64)
        self._sumsq = np.zeros(0, dtype=np.float64)
        self._colsum = np.zeros(0, dtype=np.float64)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (row lengths, cols, values)
        self._pending_nnz = 0

    def _grow(self, needed: int) -> None:
        if needed > MAX_CATEGORIES:
            raise SimilarityError(f"more than {MAX_CATEGORIES:,} categories: too many for the dense "
                                  "category × category accumulators")
        cap = min(max(needed, self._cap + self._cap // 4, 256), MAX_CATEGORIES)
        old = self._cap

        def grow2(a: np.ndarray) -> np.ndarray:
            b = np.zeros((cap, cap), dtype=a.dtype)
            b[:old, :old] = a
            return b

        def grow1(a: np.ndarray) -> np.ndarray:
            b = np.zeros(cap, dtype=a.dtype)
            b[:old] = a
            return b

        self._support = grow2(self._support)
        if self.weighted:
            self._gram = grow2(self._gram)
        self._count, self._sumsq, self._colsum = grow1(self._count), grow1(self._sumsq), grow1(self._colsum)
        self._cap = cap

    def _columns(self, category_ids: np.ndarray) -> np.ndarray:
        """The accumulator column of each category id, registering new ids.

        A lookup table over the id range (category ids are small integers); an id range wider
        than 2^24 means they are not, and is refused rather than thrashing memory.
        """
        lo, hi = int(category_ids.min()), int(category_ids.max())
        new_lo = min(lo, self._lut_lo) if self._lut.shape[0] else lo
        new_hi = max(hi, self._lut_lo + self._lut.shape[0] - 1) if self._lut.shape[0] else hi
        if new_hi - new_lo + 1 > 1 << 24:
            raise SimilarityError(f"category ids span {new_lo}..{new_hi}: too wide a range (at most 2^24)")
        if (new_lo, new_hi - new_lo + 1) != (self._lut_lo, self._lut.shape[0]):
            lut = np.full(new_hi - new_lo + 1, -1, dtype=np.int64)
            lut[self._lut_lo - new_lo:self._lut_lo - new_lo + self._lut.shape[0]] = self._lut
            self._lut, self._lut_lo = lut, new_lo
        offsets = category_ids - self._lut_lo
        cols = self._lut[offsets]
        missing = cols < 0
        if missing.any():
            new = np.unique(offsets[missing])
            if self._n_cats + new.shape[0] > self._cap:
                self._grow(self._n_cats + new.shape[0])
            self._lut[new] = np.arange(self._n_cats, self._n_cats + new.shape[0])
            self._n_cats += new.shape[0]
            cols = self._lut[offsets]
        return cols

    def add(self, user_ids: np.ndarray, category_ids: np.ndarray, scores: np.ndarray) -> None:
        """Add one batch of rows; each of its users must have all their rows in this batch."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        category_ids = np.asarray(category_ids, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float64)
        self.n_rows += int(scores.shape[0])
        keep = np.isfinite(scores) & (scores > 0)
        if not keep.all():
            user_ids, category_ids, scores = user_ids[keep], category_ids[keep], scores[keep]
        if scores.shape[0] == 0:
            return
        # A COPY batch's users share user_id % stride, so user_id // stride is one-to-one on them
        # and spans a range 64 times narrower: a lookup table instead of a sort.
        key = user_ids
        if self.user_stride > 1:
            rem = user_ids % self.user_stride
            if (rem == rem[0]).all():
                key = user_ids // self.user_stride
        rows = _dense_index(key)
        cols = self._columns(category_ids)
        n_users = int(rows.max()) + 1
        x = sp.csr_matrix((scores, (rows, cols)), shape=(n_users, self._cap))
        x.sum_duplicates()  # a repeated (user, category) row counts once, with its scores summed
        self.n_users += n_users
        self._count += np.bincount(x.indices, minlength=self._cap)
        self._colsum += np.bincount(x.indices, weights=x.data, minlength=self._cap)
        self._sumsq += np.bincount(x.indices, weights=x.data * x.data, minlength=self._cap)
        lengths = np.diff(x.indptr)
        multi = lengths >= 2
        if multi.any():
            entry_multi = np.repeat(multi, lengths)
            self._pending.append((lengths[multi], x.indices[entry_multi], x.data[entry_multi]))
            self._pending_nnz += int(entry_multi.sum())
            if self._pending_nnz >= self.flush_nnz:
                self._flush()

    def _flush(self) -> None:
        """Add the Gram products of the pending multi-category users to the accumulators."""
        if not self._pending:
            return
        lengths = np.concatenate([p[0] for p in self._pending])
        indptr = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.concatenate([p[1] for p in self._pending])
        values = np.concatenate([p[2] for p in self._pending])
        self._pending, self._pending_nnz = [], 0
        shape = (lengths.shape[0], self._cap)
        b = sp.csr_matrix((np.ones_like(values), indices, indptr), shape=shape)
        s = (b.T @ b).tocoo()  # no duplicate (row, col) in a product, so += below is exact
        self._support[s.row, s.col] += np.rint(s.data).astype(np.int64)
        if self.weighted:
            x = sp.csr_matrix((values, indices, indptr), shape=shape)
            g = (x.T @ x).tocoo()
            self._gram[g.row, g.col] += g.data

    def finish(self) -> CoOccurrence:
        """The accumulated statistics (views of the accumulators, in column order)."""
        self._flush()
        n = self._n_cats
        seen = np.flatnonzero(self._lut >= 0)
        ids = np.empty(n, dtype=np.int64)
        ids[self._lut[seen]] = seen + self._lut_lo
        return CoOccurrence(
            category_ids=ids, n_users=self.n_users, n_rows=self.n_rows,
            support=self._support[:n, :n], gram=self._gram[:n, :n] if self.weighted else None,
            count=self._count[:n], sumsq=self._sumsq[:n], colsum=self._colsum[:n])


def cooccurrence(user_ids: np.ndarray, category_ids: np.ndarray, scores: np.ndarray,
                 weighted: bool = True) -> CoOccurrence:
    """The statistics of one in-memory batch of affinity rows (tests, notebooks)."""
    builder = CoOccurrenceBuilder(weighted)
    builder.add(user_ids, category_ids, scores)
    return builder.finish()


# --------------------------------------------------------------------------- read


class _BinaryCopyParser:
    """Splits a ``COPY ... (FORMAT binary)`` byte stream into rows of raw field bytes.

    The stream is fed in arbitrary chunks (psycopg hands over one protocol message at a
    time, but nothing here depends on that).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header_done = False
        self.finished = False

    def feed(self, data: bytes | memoryview) -> list[list[bytes]]:
        self._buf += data
        rows: list[list[bytes]] = []
        buf, pos = self._buf, 0
        if not self._header_done:
            if len(buf) < 19:
                return rows
            if bytes(buf[:11]) != _COPY_SIGNATURE:
                raise SimilarityError("unexpected COPY output: not PostgreSQL binary COPY format")
            ext = int.from_bytes(buf[15:19], "big")
            if len(buf) < 19 + ext:
                return rows
            pos = 19 + ext
            self._header_done = True
        while len(buf) - pos >= 2:
            nfields = int.from_bytes(buf[pos:pos + 2], "big", signed=True)
            if nfields == -1:
                self.finished = True
                pos += 2
                break
            cur, fields = pos + 2, []
            for _ in range(nfields):
                if len(buf) - cur < 4:
                    break
                size = int.from_bytes(buf[cur:cur + 4], "big", signed=True)
                cur += 4
                if size < 0:
                    raise SimilarityError("unexpected null in the affinity COPY stream")
                if len(buf) - cur < size:
                    break
                fields.append(bytes(buf[cur:cur + size]))
                cur += size
            if len(fields) < nfields:
                break  # incomplete row: wait for more data
            rows.append(fields)
            pos = cur
        del buf[:pos]
        return rows


def _decode_array(data: bytes, oid: int, dtype: str) -> np.ndarray:
    """A one-dimensional, null-free PostgreSQL binary array of 8-byte elements, as numpy."""
    ndim, has_null, elem_oid = np.frombuffer(data, dtype=">i4", count=3)
    if ndim == 0:
        return np.empty(0, dtype=dtype.replace(">", "<"))
    if ndim != 1 or has_null or elem_oid != oid:
        raise SimilarityError(f"unexpected array in the affinity COPY stream (ndim {ndim}, oid {elem_oid})")
    n = int(np.frombuffer(data, dtype=">i4", count=1, offset=12)[0])
    items = np.frombuffer(data, dtype=np.dtype([("len", ">i4"), ("v", dtype)]), count=n, offset=20)
    if n and not (items["len"] == 8).all():
        raise SimilarityError("unexpected element size in the affinity COPY stream")
    return items["v"].astype(dtype.replace(">", "<"))


def read_cooccurrence(conn: psycopg.Connection, schema: str, weighted: bool = True) -> tuple[CoOccurrence, float]:
    """Stream ``schema.rec_user_category_affinity`` into :class:`CoOccurrence` statistics.

    ``COPY (select array_agg(...) ... group by user_id % 64) TO STDOUT (FORMAT binary)``: the
    server sends 64 large rows of aligned int8/float8 arrays (all three aggregates of a group
    see the same rows in the same order), each holding every row of its users, which numpy
    decodes without a Python loop per row and the builder folds in right away. Returns the
    statistics and the seconds spent folding (the rest of the wall time is reading).
    """
    exists = conn.execute("select to_regclass(%s)", (f'"{schema}"."{AFFINITY_TABLE}"',)).fetchone()[0]
    if exists is None:
        raise SimilarityError(
            f"{schema}.{AFFINITY_TABLE} does not exist; build the warehouse first "
            "(`aisle run`, or `dbt build` with the same as_of)")
    query = sql.SQL(
        "copy (select array_agg(user_id::int8), array_agg(category_id::int8), "
        "array_agg(affinity_score::float8) "
        "from {tbl} where user_id is not null and category_id is not null "
        "and affinity_score > 0 and affinity_score < 'Infinity'::float8 "
        "group by user_id % {buckets}) to stdout (format binary)"
    ).format(tbl=sql.Identifier(schema, AFFINITY_TABLE), buckets=sql.Literal(READ_BUCKETS))
    parser = _BinaryCopyParser()
    builder = CoOccurrenceBuilder(weighted)
    seconds_fold = 0.0
    with conn.cursor().copy(query) as copy:
        for chunk in copy:
            for fields in parser.feed(chunk):
                users = _decode_array(fields[0], _INT8_OID, ">i8")
                cats = _decode_array(fields[1], _INT8_OID, ">i8")
                scores = _decode_array(fields[2], _FLOAT8_OID, ">f8")
                t = time.perf_counter()
                builder.add(users, cats, scores)
                seconds_fold += time.perf_counter() - t
    if not parser.finished:
        raise SimilarityError("the affinity COPY stream ended early")
    t = time.perf_counter()
    stats = builder.finish()
    return stats, seconds_fold + time.perf_counter() - t


# --------------------------------------------------------------------------- compute


def _quantize(x: np.ndarray) -> np.ndarray:
    """Round to 40 significant bits, so values equal up to floating-point noise tie exactly."""
    mantissa, exponent = np.frexp(x)
    return np.ldexp(np.round(mantissa * 2.0**_QUANT_BITS), exponent - _QUANT_BITS)


def pair_similarities(co: CoOccurrence, measure: str = "cosine", binary: bool = False,
                      shrinkage: float = 0.0, min_support: int = 1
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pair i != j with support >= min_support: (i, j, similarity, support), row-major.

    ``i`` and ``j`` index ``co.category_ids``. The formulas are in the module docstring; both
    directions of a pair are returned.
    """
    validate_parameters(measure, 1, shrinkage, min_support)
    if not binary and co.gram is None:
        raise ValueError("weighted similarity needs CoOccurrence statistics built with weighted=True")
    mask = co.support >= min_support
    np.fill_diagonal(mask, False)
    rows, cols = np.nonzero(mask)
    support = co.support[rows, cols]
    if binary:
        gram = support.astype(np.float64)
        diag = colsum = co.count.astype(np.float64)
    else:
        gram = co.gram[rows, cols]
        diag, colsum = co.sumsq, co.colsum
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if measure == "cosine":
            sim = gram / (np.sqrt(diag[rows]) * np.sqrt(diag[cols]))
        elif measure == "jaccard":
            sim = gram / (diag[rows] + diag[cols] - gram)
        else:  # lift
            sim = float(co.n_users) * gram / (colsum[rows] * colsum[cols])
        if shrinkage > 0:
            sim = sim * (support / (support + shrinkage))
    sim = np.where(np.isfinite(sim), sim, 0.0)
    return rows.astype(np.int64), cols.astype(np.int64), _quantize(sim), support


def top_k(cat: np.ndarray, neighbor: np.ndarray, sim: np.ndarray, support: np.ndarray, k: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep the k best neighbours per category: similarity desc, then neighbour id asc.

    Returns the kept entries ordered by (category, rank) with their ranks (1-based).
    """
    order = np.lexsort((neighbor, -sim, cat))
    cat, neighbor, sim, support = cat[order], neighbor[order], sim[order], support[order]
    n = cat.shape[0]
    idx = np.arange(n, dtype=np.int64)
    starts = np.ones(n, dtype=bool)
    starts[1:] = cat[1:] != cat[:-1]
    rank = idx - np.maximum.accumulate(np.where(starts, idx, 0)) + 1
    keep = rank <= k
    return cat[keep], neighbor[keep], sim[keep], support[keep], rank[keep].astype(np.int32)


def category_similarity(co: CoOccurrence, measure: str = "cosine", k: int = 50, binary: bool = False,
                        shrinkage: float = 0.0, min_support: int = 1) -> tuple[Neighbours, int]:
    """Top-k neighbours per category, and the number of candidate pairs (before the cut)."""
    validate_parameters(measure, k, shrinkage, min_support)
    rows, cols, sim, support = pair_similarities(co, measure, binary, shrinkage, min_support)
    ids = co.category_ids
    cat, neighbor, sim, support, rank = top_k(ids[rows], ids[cols], sim, support, k)
    return Neighbours(cat, neighbor, sim, support, rank), int(rows.shape[0])


# --------------------------------------------------------------------------- write


def _copy_binary(neighbours: Neighbours) -> bytes:
    """The neighbours as one ``COPY FROM (FORMAT binary)`` payload (exact doubles, no text round trip)."""
    n = len(neighbours)
    dt = np.dtype([("nf", ">i2"),
                   ("l1", ">i4"), ("c", ">i8"), ("l2", ">i4"), ("nb", ">i8"), ("l3", ">i4"), ("s", ">f8"),
                   ("l4", ">i4"), ("sup", ">i8"), ("l5", ">i4"), ("r", ">i4")])
    rec = np.empty(n, dtype=dt)
    rec["nf"] = 5
    rec["l1"] = rec["l2"] = rec["l3"] = rec["l4"] = 8
    rec["l5"] = 4
    rec["c"], rec["nb"], rec["s"] = neighbours.category_id, neighbours.neighbor_category_id, neighbours.similarity
    rec["sup"], rec["r"] = neighbours.support, neighbours.rank
    header = _COPY_SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
    return header + rec.tobytes() + b"\xff\xff"


def _ensure_runs_table(cur: psycopg.Cursor, schema: str) -> None:
    cur.execute(sql.SQL("""
        create table if not exists {runs} (
            run_id bigint generated always as identity primary key,
            measure text not null,
            k integer not null,
            "binary" boolean not null,
            shrinkage double precision not null,
            min_support integer not null,
            as_of text,
            n_users bigint not null,
            n_categories integer not null,
            n_pairs bigint not null,
            seconds_read double precision not null,
            seconds_compute double precision not null,
            seconds_write double precision not null,
            created_at timestamptz not null default now()
        )""").format(runs=sql.Identifier(schema, RUNS_TABLE)))


def write_neighbours(conn: psycopg.Connection, schema: str, neighbours: Neighbours, run: dict[str, object],
                     reader_role: str = READER_ROLE, write_started: float | None = None) -> int:
    """Swap the neighbours into ``schema.category_similarity`` and log the run, in ONE transaction.

    The new table is created under a temporary name, filled with COPY, given its keys and
    statistics, then the old table is dropped and the new one renamed in; the run row is
    inserted before the commit. Readers see the old table until the commit and the new one
    after it, never a partial state; a failure anywhere rolls everything back. An advisory
    lock serialises concurrent runs on the same schema. ``run`` holds the runs-table columns;
    with ``write_started`` (a ``time.perf_counter()`` value) its ``seconds_write`` is measured up
    to the run row's insert (the commit follows). Returns the run_id.
    """
    ident = sql.Identifier
    new, final = ident(schema, NEW_TABLE), ident(schema, TABLE)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(hashtext(%s))", (f"aisle.similarity:{schema}",))
        cur.execute(sql.SQL("create schema if not exists {}").format(ident(schema)))
        _ensure_runs_table(cur, schema)
        cur.execute(sql.SQL("drop table if exists {}").format(new))
        cur.execute(sql.SQL("""
            create table {new} (
                category_id bigint not null,
                neighbor_category_id bigint not null,
                similarity double precision not null,
                support bigint not null,
                rank integer not null
            )""").format(new=new))
        with cur.copy(sql.SQL("copy {} from stdin (format binary)").format(new)) as copy:
            copy.write(_copy_binary(neighbours))
        cur.execute(sql.SQL(
            "alter table {new} add constraint {pk} primary key (category_id, rank), "
            "add constraint {uq} unique (category_id, neighbor_category_id), "
            "add constraint {ck} check (neighbor_category_id <> category_id and rank >= 1)"
        ).format(new=new, pk=ident(NEW_TABLE + "_pkey"), uq=ident(NEW_TABLE + "_neighbor_key"),
                 ck=ident(NEW_TABLE + "_check")))
        cur.execute(sql.SQL("analyze {}").format(new))
        # The swap: ACCESS EXCLUSIVE on the old table only from here to the commit.
        try:
            cur.execute(sql.SQL("drop table if exists {}").format(final))
        except psycopg.errors.DependentObjectsStillExist as exc:
            raise SimilarityError(
                f"cannot replace {schema}.{TABLE}: other objects depend on it ({exc.diag.message_detail}); "
                "drop or rebuild them as tables") from None
        cur.execute(sql.SQL("alter table {} rename to {}").format(new, ident(TABLE)))
        for suffix in ("_pkey", "_neighbor_key", "_check"):
            cur.execute(sql.SQL("alter table {} rename constraint {} to {}").format(
                final, ident(NEW_TABLE + suffix), ident(TABLE + suffix)))
        has_reader = cur.execute("select 1 from pg_roles where rolname = %s", (reader_role,)).fetchone()
        if has_reader:
            cur.execute(sql.SQL("grant usage on schema {} to {}").format(ident(schema), ident(reader_role)))
            cur.execute(sql.SQL("grant select on {}, {} to {}").format(
                final, ident(schema, RUNS_TABLE), ident(reader_role)))
        if write_started is not None:
            run = {**run, "seconds_write": time.perf_counter() - write_started}
        run_id = cur.execute(sql.SQL("""
            insert into {runs} (measure, k, "binary", shrinkage, min_support, as_of, n_users, n_categories,
                                n_pairs, seconds_read, seconds_compute, seconds_write)
            values (%(measure)s, %(k)s, %(binary)s, %(shrinkage)s, %(min_support)s, %(as_of)s, %(n_users)s,
                    %(n_categories)s, %(n_pairs)s, %(seconds_read)s, %(seconds_compute)s, %(seconds_write)s)
            returning run_id""").format(runs=ident(schema, RUNS_TABLE)), run).fetchone()[0]
        mode = "binary" if run["binary"] else "weighted"
        cur.execute(sql.SQL("comment on table {} is {}").format(final, sql.Literal(
            f"Top-{run['k']} neighbours per category by {run['measure']} similarity ({mode}, shrinkage "
            f"{run['shrinkage']:g}, min support {run['min_support']}); written by `aisle similarity`, "
            f"run {run_id} in {RUNS_TABLE}.")))
    return int(run_id)


# --------------------------------------------------------------------------- entry point


def compute_similarity(target: Target, as_of: str | None = None, measure: str = "cosine", k: int = 50,
                       binary: bool = False, shrinkage: float = 0.0, min_support: int = 1) -> SimilarityRun:
    """Read the affinity mart of ``recs{suffix}``, compute the top-k neighbours and swap them in.

    ``as_of`` selects the backtest schema (suffix ``_bt_<digits>``) exactly like the dbt build
    it belongs to; production uses ``recs``. See the module docstring for the formulas.
    """
    from aisle.db import connect

    validate_parameters(measure, k, shrinkage, min_support)
    schema = BASE_SCHEMA + schema_suffix(as_of)
    with connect(target) as conn:
        t0 = time.perf_counter()
        with conn.transaction():
            co, seconds_fold = read_cooccurrence(conn, schema, weighted=not binary)
        t1 = time.perf_counter()
        neighbours, n_candidates = category_similarity(co, measure, k, binary, shrinkage, min_support)
        t2 = time.perf_counter()
        seconds_read, seconds_compute = t1 - t0 - seconds_fold, t2 - t1 + seconds_fold
        run: dict[str, object] = {
            "measure": measure, "k": int(k), "binary": bool(binary), "shrinkage": float(shrinkage),
            "min_support": int(min_support), "as_of": as_of, "n_users": co.n_users,
            "n_categories": co.n_categories, "n_pairs": len(neighbours),
            "seconds_read": seconds_read, "seconds_compute": seconds_compute, "seconds_write": 0.0,
        }
        run_id = write_neighbours(conn, schema, neighbours, run, write_started=t2)
        t3 = time.perf_counter()
    return SimilarityRun(run_id=run_id, schema=schema, measure=measure, k=int(k), binary=bool(binary),
                         shrinkage=float(shrinkage), min_support=int(min_support), as_of=as_of,
                         n_rows=co.n_rows, n_users=co.n_users, n_categories=co.n_categories,
                         n_candidate_pairs=n_candidates, n_pairs=len(neighbours), seconds_read=seconds_read,
                         seconds_compute=seconds_compute, seconds_write=t3 - t2)
