"""RetailRocket-format synthetic data, calibrated to the real dataset's shape.

``generate(out, scale=1.0, seed=42)`` writes ``events.csv``,
``item_properties_part1.csv``, ``item_properties_part2.csv`` and
``category_tree.csv`` in exactly the format of the public RetailRocket files, so
every test and benchmark exercises the real loading path. Scale 1.0 matches the
real shape (2,756,101 events with the 96.7 / 2.5 / 0.8 % mix, ~1.4M visitors with
a heavy tail, ~235K items in events out of a ~417K catalogue, ~17.7K
transactions by ~11.7K buyers, a 1,669-node tree with 25 roots); every count
scales linearly with ``scale``, except the tree, which stays fixed.

The data is generated from a small behavioural model, so the downstream models
have something true to find:

* **Category interests.** Every visitor picks a *family* (a parent category) and
  two or three categories in it (siblings), sometimes plus one elsewhere. Each
  session focuses on one of them. Category CF can learn that siblings go together,
  and a returning visitor's future is predictable from their past categories.
* **Drifting popularity.** Items have weekly popularity profiles: steady ones,
  bumps that rise and fall over a few weeks, and launches that start mid-period
  and fade. Visitors pick categories and items by the popularity *of the week they
  are in*, so recent trending differs from all-time popularity, and new visitors
  follow the current trends.
* **Sessions and repeat views.** A visitor's events come in bursts (gaps of
  seconds to minutes) separated by gaps of more than 45 minutes; a share of
  views re-view an item the visitor saw before.
* **The purchase funnel.** Every ``addtocart`` follows a view of the same item by
  the same visitor, and every ``transaction`` follows an ``addtocart`` (and so a
  view) of the same item, strictly later. Items bought in the same session share
  one transaction id.
* **Catalogue dynamics.** ``item_properties`` holds weekly snapshots (Sundays,
  03:00 UTC, as in the real files) of ``categoryid`` and ``available``, written when
  an item first appears, when the value changes, and sometimes redundantly. About
  3 % of items move to another category (mostly a sibling) at some snapshot,
  availability flips, unavailable items are viewed less and almost never carted.
  A small share of event items (``ghosts``) has no property rows at all.
* **Noise.** A few crawlers view thousands of items across categories (the
  largest has ~7,700 events at scale 1), a few heavy shoppers buy a lot, and a
  small number of event rows are exact duplicates.

Everything is vectorised numpy (no Python loop per event or per row), and the
CSV files are formatted with a byte-level numpy writer (fixed-width blocks whose
padding bytes are dropped), which is several times faster than ``to_csv``.
Output is deterministic: the same seed and scale give byte-identical files (on
the same numpy version; floating-point kernels may differ between CPUs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- time

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: First instant of the real data: 2015-05-03 03:00:00 UTC (a Sunday).
TIME_START_MS = 1_430_622_000_000
#: End of the real data (exclusive): 2015-09-18 03:00:00 UTC, 138 days later.
TIME_END_MS = 1_442_545_200_000
N_WEEKS = (TIME_END_MS - TIME_START_MS + WEEK_MS - 1) // WEEK_MS  # 20; week 19 is partial
#: Property snapshots: every Sunday 03:00 UTC from 2015-05-10 to 2015-09-13 (19 of them).
#: Snapshot j opens week j + 1; week 0 precedes every snapshot.
N_SNAPSHOTS = N_WEEKS - 1
SNAPSHOT_MS = TIME_START_MS + WEEK_MS * (1 + np.arange(N_SNAPSHOTS, dtype=np.int64))

EVENTS_HEADER = b"timestamp,visitorid,event,itemid,transactionid\n"
PROPERTIES_HEADER = b"timestamp,itemid,property,value\n"
TREE_HEADER = b"categoryid,parentid\n"
FILES = ("events.csv", "item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv")
EVENT_TYPES = ("view", "addtocart", "transaction")

# --------------------------------------------------------------------------- the real shape (scale 1.0)

FULL_EVENTS = 2_756_101
FULL_ADDTOCART = 69_332
FULL_TRANSACTION_EVENTS = 22_457
FULL_VISITORS = 1_407_580
FULL_CATALOGUE = 417_053          # items with property rows
FULL_GHOST_ITEMS = 4_000          # items that only exist in events (no property rows)
FULL_ITEM_ID_SPACE = 466_868      # real item ids range over 0..466,867
FULL_BUYERS = 11_700
FULL_DUPLICATES = 460
FULL_CRAWLERS = 20
FULL_HEAVY_SHOPPERS = 45
MAX_VISITOR_EVENTS = 7_700        # the largest crawler at scale >= 1
FULL_USED_CATEGORIES = 1_200
FULL_HASHED_ROWS = 18_000_000     # with --full-properties: ~20.3M rows in all
N_HASHED_PROPERTIES = 1_100
DEFAULT_HASHED_PROPERTIES = 20    # without --full-properties: a few hashed names...
DEFAULT_HASHED_PER_ITEM = 0.5     # ...and about one row for every second item
PART1_SHARE = 11_000_000 / 20_275_902
#: Nodes per tree level (roots first): 1,669 nodes, 25 roots, 6 levels.
TREE_LEVELS = (25, 182, 705, 540, 185, 32)
# Item popularity, calibrated at scale 1 to ~235K distinct items in events, a head
# of hits (the top item ~2,000 views) and ~30 % of a category's views on its top 10:
BASE_SIGMA = 0.9        # lognormal spread of an item's base weight
DORMANT_SHARE = 0.6     # share of the catalogue in a long tail (weight x 0.03), mostly never viewed
AMP_MU, AMP_SIGMA = 0.5, 1.3  # lognormal peak of a "bump" item (rise and fall over a few weeks)

# Stream numbers for independent random generators (one per component, so a
# change in one component does not shift the random numbers of the others).
_S_TREE, _S_ITEMS, _S_VISITORS, _S_TIME, _S_CATS, _S_FUNNEL, _S_PROPS, _S_HASHED, _S_ORDER = range(1, 10)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


# --------------------------------------------------------------------------- results


@dataclass
class GenerateStats:
    """What ``generate`` wrote: rows per file, the distinct counts and the time taken."""

    out: Path
    scale: float
    seed: int
    rows: dict[str, int] = field(default_factory=dict)   # data rows per file name (header excluded)
    views: int = 0
    addtocarts: int = 0
    transaction_events: int = 0
    visitors: int = 0               # distinct visitorid in events
    items_in_events: int = 0        # distinct itemid in events
    catalogue_items: int = 0        # distinct itemid in item_properties
    transactions: int = 0           # distinct transactionid
    buyers: int = 0                 # distinct visitors with a transaction
    max_events_per_visitor: int = 0
    duplicates: int = 0             # extra copies of exact duplicate event rows
    categories: int = 0             # category_tree rows
    roots: int = 0
    categories_used: int = 0        # distinct categoryid values in item_properties
    items_changing_category: int = 0
    property_rows: dict[str, int] = field(default_factory=dict)  # rows per property kind
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return self.rows.get("events.csv", 0)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(figure, value) pairs for a summary table."""
        ev = max(self.events, 1)
        return [
            ("events", f"{self.events:,}"),
            ("view / addtocart / transaction",
             f"{self.views:,} / {self.addtocarts:,} / {self.transaction_events:,} "
             f"({100 * self.views / ev:.1f}% / {100 * self.addtocarts / ev:.1f}% / "
             f"{100 * self.transaction_events / ev:.1f}%)"),
            ("visitors", f"{self.visitors:,} (mean {self.events / max(self.visitors, 1):.2f} events, "
                         f"max {self.max_events_per_visitor:,})"),
            ("items in events / catalogue", f"{self.items_in_events:,} / {self.catalogue_items:,}"),
            ("transactions / buyers", f"{self.transactions:,} / {self.buyers:,}"),
            ("duplicate event rows", f"{self.duplicates:,}"),
            ("categories (roots, used by items)", f"{self.categories:,} ({self.roots}, {self.categories_used:,})"),
            ("items changing category", f"{self.items_changing_category:,}"),
            ("item_properties rows", ", ".join(f"{k} {v:,}" for k, v in self.property_rows.items())),
            *[(f"rows in {name}", f"{n:,}") for name, n in self.rows.items()],
            ("seconds", f"{self.seconds:.1f}"),
        ]


# --------------------------------------------------------------------------- CSV writing


def _digits(values: np.ndarray, null: np.ndarray | None = None) -> np.ndarray:
    """Non-negative integers as a right-aligned ASCII block (n, width).

    Leading positions are zero bytes, which ``_pack`` drops: so a fixed-width
    block becomes variable-width text without any per-row Python.
    """
    v = np.asarray(values, dtype=np.int64)
    if v.size and v.min() < 0:
        raise ValueError("only non-negative integers can be written")
    width = max(1, len(str(int(v.max())))) if v.size else 1
    block = np.empty((v.size, width), dtype=np.uint8)
    q = v
    for k in range(width - 1, -1, -1):  # one column per pass: no (n, width) int64 temporaries
        q_next, digit = np.divmod(q, 10)
        digit = digit.astype(np.uint8) + 48
        if k < width - 1:
            digit[q == 0] = 0  # a leading position
        block[:, k] = digit
        q = q_next
    if null is not None:
        block[null] = 0
    return block


def _pool(strings: Sequence[bytes]) -> np.ndarray:
    """A (k, width) zero-padded byte table, for columns drawn from a few strings."""
    width = max(len(s) for s in strings)
    table = np.zeros((len(strings), width), dtype=np.uint8)
    for i, s in enumerate(strings):
        table[i, : len(s)] = np.frombuffer(s, dtype=np.uint8)
    return table


def _pack(blocks: Sequence[np.ndarray | tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Join column blocks with commas and newlines and drop the padding bytes.

    A block is an (n, width) uint8 array, or a (pool, codes) pair meaning
    ``pool[codes]`` (gathered straight into place, without a temporary copy).
    """
    widths = [b[0].shape[1] if isinstance(b, tuple) else b.shape[1] for b in blocks]
    n = blocks[0][1].size if isinstance(blocks[0], tuple) else blocks[0].shape[0]
    mat = np.empty((n, sum(widths) + len(blocks)), dtype=np.uint8)
    col = 0
    for i, (b, w) in enumerate(zip(blocks, widths, strict=True)):
        if isinstance(b, tuple):
            pool, codes = b
            mat[:, col: col + w] = pool[codes] if w > 16 else np.take(pool, codes, axis=0)
        else:
            mat[:, col: col + w] = b
        mat[:, col + w] = ord(",") if i < len(blocks) - 1 else ord("\n")
        col += w + 1
    flat = mat.ravel()
    return flat[flat != 0]


# --------------------------------------------------------------------------- the category tree


@dataclass(frozen=True)
class CategoryTree:
    """The category tree: node ids, the index of each node's parent (-1 for roots) and its level (1 = root)."""

    ids: np.ndarray
    parent: np.ndarray
    level: np.ndarray

    @property
    def parent_ids(self) -> np.ndarray:
        """Parent category id per node, -1 for roots."""
        return np.where(self.parent >= 0, self.ids[np.maximum(self.parent, 0)], -1)


def generate_category_tree(seed: int = 42) -> CategoryTree:
    """The fixed-size tree: 1,669 nodes on 6 levels under 25 roots, ids drawn from 0..1,699.

    Parents are drawn with lognormal weights, so some nodes have many children and
    many have none (leaves at every level below the roots).
    """
    rng = _rng(seed, _S_TREE)
    n = sum(TREE_LEVELS)
    ids = rng.choice(1_700, size=n, replace=False).astype(np.int64)
    level = np.repeat(np.arange(1, len(TREE_LEVELS) + 1), TREE_LEVELS)
    parent = np.full(n, -1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(TREE_LEVELS)])
    for k in range(1, len(TREE_LEVELS)):
        lo, hi = starts[k - 1], starts[k]
        w = rng.lognormal(0.0, 1.0, hi - lo)
        parent[starts[k]: starts[k + 1]] = lo + rng.choice(hi - lo, size=TREE_LEVELS[k], p=w / w.sum())
    return CategoryTree(ids=ids, parent=parent, level=level)


def write_category_tree(tree: CategoryTree, path: Path, seed: int = 42) -> int:
    """Write ``category_tree.csv`` (rows in a shuffled order, as in the real file). Returns the row count."""
    order = _rng(seed, _S_ORDER).permutation(tree.ids.size)
    pid = tree.parent_ids[order]
    body = _pack([_digits(tree.ids[order]), _digits(np.maximum(pid, 0), null=pid < 0)])
    with open(path, "wb") as f:
        f.write(TREE_HEADER)
        f.write(body.tobytes())
    return int(tree.ids.size)


def _choose_used_categories(tree: CategoryTree, n_used: int, rng: np.random.Generator) -> np.ndarray:
    """The nodes items are assigned to: whole sibling groups, mostly leaves.

    Taking sibling groups together (rather than nodes at random) keeps the
    family structure that visitors' interests follow, even at small scale.
    """
    n = tree.ids.size
    n_children = np.bincount(tree.parent[tree.parent >= 0], minlength=n)
    is_leaf = n_children == 0
    eligible = (tree.parent >= 0) & (is_leaf | (rng.random(n) < 0.45))
    parents = np.unique(tree.parent[eligible])
    group_size = np.bincount(tree.parent[eligible], minlength=n)[parents]
    # Weighted random order of the sibling groups (Efraimidis-Spirakis keys).
    keys = np.log(rng.random(parents.size)) / np.sqrt(group_size)
    chosen: list[np.ndarray] = []
    total = 0
    for p in parents[np.argsort(-keys, kind="stable")]:
        members = np.flatnonzero(eligible & (tree.parent == p))
        chosen.append(members)
        total += members.size
        if total >= n_used:
            break
    used = np.concatenate(chosen)
    if used.size < n_used:  # not enough eligible nodes: add other non-roots
        rest = np.setdiff1d(np.flatnonzero(tree.parent >= 0), used)
        used = np.concatenate([used, rng.permutation(rest)[: n_used - used.size]])
    return np.sort(used[:n_used])


# --------------------------------------------------------------------------- grouped weighted sampling


def _sample_grouped(cum: np.ndarray, gstart: np.ndarray, gend: np.ndarray, week: np.ndarray,
                    group: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Draw one element per request from its group's weights in its week.

    ``cum[w]`` is the cumulative weight over elements sorted by group; group g
    owns positions ``gstart[g]:gend[g]``. Request i draws from group ``group[i]``
    with the weights of week ``week[i]``, using the uniform ``u[i]``. Returns
    positions into the sorted order. One ``searchsorted`` per week, no per-row loop.
    """
    out = np.empty(u.size, dtype=np.int64)
    order = np.argsort(week, kind="stable")
    bounds = np.searchsorted(week[order], np.arange(cum.shape[0] + 1))
    for w in range(cum.shape[0]):
        sel = order[bounds[w]: bounds[w + 1]]
        if sel.size == 0:
            continue
        c = cum[w]
        g = group[sel]
        lo = np.where(gstart[g] > 0, c[np.maximum(gstart[g] - 1, 0)], 0.0)
        hi = c[gend[g] - 1]
        target = lo + u[sel] * (hi - lo)
        if c.size > 50_000:  # sorted needles make searchsorted in a large array much faster (cache)
            by_target = np.argsort(target)
            pos = np.empty(sel.size, dtype=np.int64)
            pos[by_target] = np.searchsorted(c, target[by_target], side="right")
        else:
            pos = np.searchsorted(c, target, side="right")
        out[sel] = np.clip(pos, gstart[g], gend[g] - 1)
    return out


def _weighted_top(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a weighted sample of size k without replacement (Efraimidis-Spirakis), sorted."""
    with np.errstate(divide="ignore"):
        keys = np.where(weights > 0, np.log(rng.random(weights.size)) / np.where(weights > 0, weights, 1.0),
                        -np.inf)
    k = min(k, int((weights > 0).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.argpartition(-keys, k - 1)[:k])


def _group_starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


# --------------------------------------------------------------------------- the catalogue


@dataclass
class _Catalogue:
    item_id: np.ndarray          # (U,) item ids; the last n_ghost have no property rows
    n_catalogue: int
    cat0: np.ndarray             # (U,) index into used categories (initial category)
    cat1: np.ndarray             # (U,) category after the change (== cat0 when none)
    change_snap: np.ndarray      # (U,) snapshot of the change, or N_SNAPSHOTS for none
    first_snap: np.ndarray       # (U,) first property snapshot
    avail: np.ndarray            # (U, N_SNAPSHOTS) availability at each snapshot
    weight: np.ndarray           # (N_WEEKS, U) item popularity per week (availability included)


def _make_catalogue(n_catalogue: int, n_ghost: int, id_space: int, used: np.ndarray, family: np.ndarray,
                    rng: np.random.Generator) -> _Catalogue:
    """Items with categories, popularity profiles, availability and category changes."""
    n_items = n_catalogue + n_ghost
    n_used = used.size
    item_id = rng.choice(max(id_space, n_items), size=n_items, replace=False).astype(np.int64)

    # Categories: lognormal sizes, at least one catalogue item each.
    size_w = rng.lognormal(0.0, 1.1, n_used)
    cat0 = np.concatenate([rng.permutation(n_used),
                           rng.choice(n_used, size=n_items - n_used, p=size_w / size_w.sum())])

    # Popularity: lognormal base weight (Zipf-like), a dormant long tail, weekly profiles.
    base = rng.lognormal(0.0, BASE_SIGMA, n_items)
    base[rng.random(n_items) < DORMANT_SHARE] *= 0.03
    t = np.arange(N_WEEKS, dtype=np.float64)[:, None] + 0.5
    kind = rng.choice(3, size=n_items, p=[0.55, 0.30, 0.15])  # steady, bump, launch
    slope = rng.normal(0.0, 0.5, n_items)
    profile = np.exp(slope * (t - N_WEEKS / 2) / N_WEEKS)
    center = rng.uniform(-3.0, N_WEEKS + 3.0, n_items)
    width = rng.uniform(0.8, 4.0, n_items)
    amp = np.minimum(rng.lognormal(AMP_MU, AMP_SIGMA, n_items), 80.0)  # a few hits
    bump = 0.12 + amp * np.exp(-((t - center) ** 2) / (2 * width**2))
    launch_week = rng.integers(1, N_WEEKS, n_items)
    tau = rng.uniform(1.0, 6.0, n_items)
    since = t - 0.5 - launch_week
    launch = np.where(since >= 0, 0.3 + 4.0 * np.exp(-np.maximum(since, 0) / tau), 0.0)
    profile = np.where(kind == 1, bump, np.where(kind == 2, launch, profile))

    # First property snapshot: launch items at their launch, a few items late, most at once.
    first_snap = np.where(rng.random(n_items) < 0.05, rng.integers(0, N_SNAPSHOTS, n_items), 0)
    first_snap = np.where(kind == 2, launch_week - 1, first_snap)

    # Availability: a two-state Markov chain over the snapshots.
    avail = np.empty((n_items, N_SNAPSHOTS), dtype=bool)
    avail[:, 0] = rng.random(n_items) < 0.82
    volatile = rng.random(n_items) < 0.2
    p_off = np.where(volatile, 0.25, 0.05)
    p_on = np.where(volatile, 0.45, 0.2)
    for j in range(1, N_SNAPSHOTS):
        r = rng.random(n_items)
        avail[:, j] = np.where(avail[:, j - 1], r >= p_off, r < p_on)
    # Before an item's first snapshot its state is the first known one.
    first_state = avail[np.arange(n_items), first_snap]
    avail = np.where(np.arange(N_SNAPSHOTS)[None, :] < first_snap[:, None], first_state[:, None], avail)

    # Category changes: ~3 % of catalogue items, mostly to a sibling, after their first snapshot.
    change_snap = np.full(n_items, N_SNAPSHOTS, dtype=np.int64)
    can = (np.arange(n_items) < n_catalogue) & (first_snap <= N_SNAPSHOTS - 3)
    changing = can & (rng.random(n_items) < 0.03)
    idx = np.flatnonzero(changing)
    change_snap[idx] = rng.integers(first_snap[idx] + 1, N_SNAPSHOTS)
    cat1 = cat0.copy()
    fam_order = np.argsort(family, kind="stable")
    fam_sorted = family[fam_order]
    fstart = np.searchsorted(fam_sorted, family[cat0[idx]], side="left")
    fend = np.searchsorted(fam_sorted, family[cat0[idx]], side="right")
    sibling = fam_order[fstart + (rng.random(idx.size) * (fend - fstart)).astype(np.int64)]
    anywhere = rng.integers(0, n_used, idx.size)
    new = np.where((rng.random(idx.size) < 0.8) & (sibling != cat0[idx]), sibling, anywhere)
    new = np.where(new == cat0[idx], (new + 1) % n_used, new)
    cat1[idx] = new

    # Weekly weight: week w sees snapshot w-1 (week 0 the first); unavailable items are viewed less.
    snap_of_week = np.maximum(np.arange(N_WEEKS) - 1, 0)
    avail_factor = np.where(avail[:, snap_of_week].T, 1.0, 0.35)
    weight = base[None, :] * profile * avail_factor
    return _Catalogue(item_id=item_id, n_catalogue=n_catalogue, cat0=cat0, cat1=cat1, change_snap=change_snap,
                      first_snap=first_snap, avail=avail, weight=weight)


@dataclass
class _Sampler:
    """Cumulative weekly weights for drawing items within a category and categories within a family."""

    item_of: np.ndarray       # virtual item (sorted position) -> item index
    item_cum: np.ndarray      # (N_WEEKS, V)
    cat_start: np.ndarray     # per used category: range in the sorted virtual items
    cat_end: np.ndarray
    cat_of: np.ndarray        # sorted category position -> category index
    cat_cum: np.ndarray       # (N_WEEKS, n_used) over categories sorted by family
    fam_start: np.ndarray     # per family: range in the sorted categories
    fam_end: np.ndarray
    fam_cum: np.ndarray       # (N_WEEKS, n_families)


def _make_sampler(cat: _Catalogue, family: np.ndarray, n_used: int) -> _Sampler:
    """Sort (virtual) items by category and build the weekly cumulative weights.

    An item that changes category is two virtual items: the old category up to
    the week of the change, the new one from then on.
    """
    n_items = cat.item_id.size
    weeks = np.arange(N_WEEKS)
    changed = np.flatnonzero(cat.cat1 != cat.cat0)
    v_item = np.concatenate([np.arange(n_items), changed])
    v_cat = np.concatenate([cat.cat0, cat.cat1[changed]])
    # Week w >= change_snap + 1 belongs to the new category.
    after = weeks[:, None] >= (cat.change_snap[changed] + 1)[None, :]
    w_old = cat.weight.copy()
    w_old[:, changed] = np.where(after, 0.0, cat.weight[:, changed])
    w_new = np.where(after, cat.weight[:, changed], 0.0)
    v_weight = np.concatenate([w_old, w_new], axis=1) + 1e-9
    order = np.argsort(v_cat, kind="stable")
    v_cat_sorted = v_cat[order]
    item_cum = np.cumsum(v_weight[:, order], axis=1)
    cat_start = np.searchsorted(v_cat_sorted, np.arange(n_used), side="left")
    cat_end = np.searchsorted(v_cat_sorted, np.arange(n_used), side="right")
    # Category mass per week, then categories sorted by family.
    lo = np.where(cat_start > 0, item_cum[:, np.maximum(cat_start - 1, 0)], 0.0)
    cat_mass = item_cum[:, cat_end - 1] - lo
    cat_order = np.argsort(family, kind="stable")
    fam_sorted = family[cat_order]
    fams = np.unique(family)
    fam_start = np.searchsorted(fam_sorted, fams, side="left")
    fam_end = np.searchsorted(fam_sorted, fams, side="right")
    cat_cum = np.cumsum(cat_mass[:, cat_order], axis=1)
    fam_mass = cat_cum[:, fam_end - 1] - np.where(fam_start > 0, cat_cum[:, np.maximum(fam_start - 1, 0)], 0.0)
    return _Sampler(item_of=v_item[order], item_cum=item_cum, cat_start=cat_start, cat_end=cat_end,
                    cat_of=cat_order, cat_cum=cat_cum, fam_start=fam_start, fam_end=fam_end,
                    fam_cum=np.cumsum(fam_mass, axis=1))


# --------------------------------------------------------------------------- visitors and views


def _view_counts(n_visitors: int, n_views: int, n_crawlers: int, n_heavy: int, cap: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Views per visitor (exactly n_views in all) and the visitor kind (0 normal, 1 heavy, 2 crawler).

    Most visitors view once; the rest follow a discrete lognormal tail, plus a few
    heavy shoppers (hundreds of views) and crawlers (thousands, the largest ``cap``).
    """
    kind = np.zeros(n_visitors, dtype=np.int8)
    kind[:n_heavy] = 1
    kind[n_heavy: n_heavy + n_crawlers] = 2
    kind = rng.permutation(kind)
    counts = np.ones(n_visitors, dtype=np.int64)
    multi = (kind == 0) & (rng.random(n_visitors) >= 0.70)
    counts[multi] = 2 + np.floor(rng.lognormal(0.05, 1.05, int(multi.sum()))).astype(np.int64)
    heavy = np.flatnonzero(kind == 1)
    counts[heavy] = np.exp(rng.uniform(np.log(max(cap / 50, 20)), np.log(max(cap / 5, 40)), heavy.size)).astype(
        np.int64)
    crawl = np.flatnonzero(kind == 2)
    counts[crawl] = np.exp(rng.uniform(np.log(max(cap / 25, 30)), np.log(max(cap * 0.65, 60)), crawl.size)).astype(
        np.int64)
    if crawl.size:
        counts[crawl[0]] = cap
    # Hit the total exactly by moving views among normal multi-view visitors (keeps the shape).
    normal = np.flatnonzero(multi)
    for _ in range(50):
        diff = n_views - int(counts.sum())
        if diff == 0:
            break
        spare = counts[normal] - 2
        p = (spare + 1.0) / (spare + 1.0).sum() if diff > 0 else spare / max(spare.sum(), 1)
        delta = rng.multinomial(abs(diff), p)
        counts[normal] = np.maximum(counts[normal] + np.sign(diff) * delta, 2)
    while counts.sum() > n_views:  # tiny scales: the tail alone is too big, shave every visitor
        spare = (counts - 1).astype(np.float64)
        delta = rng.multinomial(int(counts.sum()) - n_views, spare / spare.sum())
        counts = np.maximum(counts - delta, 1)
    if counts.sum() < n_views:
        counts += rng.multinomial(n_views - int(counts.sum()), counts / counts.sum())
    return counts, kind


# --------------------------------------------------------------------------- the main entry point


@contextmanager
def _steps(progress: bool, total: int) -> Iterator:
    """A rich progress bar over the generation steps (or a no-op)."""
    if not progress:
        yield lambda description: None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("[bold]generate[/] {task.description:<38}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("start", total=total)
        state = {"first": True}

        def step(description: str) -> None:
            if not state["first"]:
                bar.advance(task)
            state["first"] = False
            bar.update(task, description=description)

        yield step
        bar.update(task, completed=total, description="done")


def _scaled(full: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, int(round(full * scale)))


def generate(out: Path, *, scale: float = 1.0, seed: int = 42, full_properties: bool = False,
             progress: bool = True) -> GenerateStats:
    """Write the four RetailRocket files into ``out`` and return what was written.

    ``scale`` multiplies every count (1.0 = the real dataset); ``seed`` makes the
    output reproducible byte for byte; ``full_properties`` adds ~18M hashed
    property rows (scale 1) so the loader can be benchmarked at real size.
    """
    if not scale > 0:
        raise ValueError("scale must be > 0")
    if seed < 0:
        raise ValueError("seed must be >= 0")
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stats = GenerateStats(out=out, scale=scale, seed=seed)

    n_events = _scaled(FULL_EVENTS, scale, 10)
    n_trans = _scaled(FULL_TRANSACTION_EVENTS, scale)
    n_carts = max(_scaled(FULL_ADDTOCART, scale), n_trans)
    n_dup = _scaled(FULL_DUPLICATES, scale, 2)
    n_views = n_events - n_carts - n_trans - n_dup          # unique view rows
    n_visitors = min(_scaled(FULL_VISITORS, scale), n_views)
    n_catalogue = _scaled(FULL_CATALOGUE, scale, 50)
    n_ghost = _scaled(FULL_GHOST_ITEMS, scale, 2)
    n_crawlers = _scaled(FULL_CRAWLERS, scale)
    n_heavy = _scaled(FULL_HEAVY_SHOPPERS, scale)
    cap = max(20, int(round(MAX_VISITOR_EVENTS * min(1.0, scale) ** 0.5)))
    n_used = int(np.clip(round(FULL_USED_CATEGORIES * min(1.0, scale) ** 0.3), 40, FULL_USED_CATEGORIES))
    n_used = min(n_used, n_catalogue)

    with _steps(progress, 9) as step:
        step("category tree")
        tree = generate_category_tree(seed)
        stats.rows["category_tree.csv"] = write_category_tree(tree, out / "category_tree.csv", seed)
        stats.categories = int(tree.ids.size)
        stats.roots = int((tree.parent < 0).sum())

        step("catalogue and weekly popularity")
        rng = _rng(seed, _S_ITEMS)
        used = _choose_used_categories(tree, n_used, rng)
        family = tree.parent[used]                      # the parent node of each used category
        cat = _make_catalogue(n_catalogue, n_ghost, _scaled(FULL_ITEM_ID_SPACE, scale, 100), used, family, rng)
        sampler = _make_sampler(cat, family, n_used)

        step("visitors, sessions and timestamps")
        views = _make_views(n_visitors, n_views, n_crawlers, n_heavy, cap, seed)

        step("interests and items")
        item = _assign_items(views, cat, sampler, family, seed)

        step("funnel: carts and transactions")
        events = _funnel(views, item, cat, n_carts, n_trans, _scaled(FULL_BUYERS, scale), n_dup, seed)

        step("write events.csv")
        _write_events(events, views.visitor_id, cat.item_id, out / "events.csv", stats)

        step("item property snapshots")
        props = _property_rows(cat, tree, used, full_properties, scale, seed)

        step("write item_properties_part1/2.csv")
        _write_properties(props, out, stats)
        stats.catalogue_items = int(cat.n_catalogue)
        stats.categories_used = int(np.unique(np.concatenate([cat.cat0[: cat.n_catalogue],
                                                              cat.cat1[: cat.n_catalogue]])).size)
        stats.items_changing_category = int((cat.cat1 != cat.cat0).sum())
        step("done")

    stats.seconds = time.perf_counter() - started
    return stats


# --------------------------------------------------------------------------- views: visitors, sessions, time


@dataclass
class _Views:
    visitor: np.ndarray        # (n,) visitor index, events grouped by visitor in time order
    pos: np.ndarray            # (n,) position within the visitor
    session: np.ndarray        # (n,) global session index
    ts: np.ndarray             # (n,) epoch ms
    week: np.ndarray           # (n,) week index
    kind: np.ndarray           # (n_visitors,) 0 normal, 1 heavy shopper, 2 crawler
    counts: np.ndarray         # (n_visitors,) views per visitor
    starts: np.ndarray         # (n_visitors,) first event position
    visitor_id: np.ndarray     # (n_visitors,) the visitorid written to the file
    n_sessions: int


def _make_views(n_visitors: int, n_views: int, n_crawlers: int, n_heavy: int, cap: int, seed: int) -> _Views:
    """Visitors, their view counts, sessions and timestamps.

    Within a session, views are seconds to minutes apart; sessions are separated
    by 45 minutes plus a lognormal gap whose scale differs per visitor (some come
    back the same day, some weeks later). Each visitor's timeline is placed at a
    random start with a diurnal time-of-day pattern.
    """
    rng = _rng(seed, _S_VISITORS)
    counts, kind = _view_counts(n_visitors, n_views, n_crawlers, n_heavy, cap, rng)
    visitor_id = rng.permutation(n_visitors).astype(np.int64)  # dense ids 0..n-1, as in the real data
    starts = _group_starts(counts)
    visitor = np.repeat(np.arange(n_visitors), counts)
    pos = np.arange(n_views) - starts[visitor]

    rng = _rng(seed, _S_TIME)
    p_new = np.where(kind == 2, 0.04, np.where(kind == 1, 0.25, 0.30))
    new_session = (pos == 0) | (rng.random(n_views) < p_new[visitor])
    session = np.cumsum(new_session) - 1
    n_sessions = int(session[-1]) + 1 if n_views else 0

    # Gaps: intra-session ~ exponential (mean 75 s, at most 20 min); between sessions 45 min + lognormal.
    intra = np.minimum(rng.exponential(75_000.0, n_views) + 2_000.0, 20 * 60_000.0)
    gap_scale = rng.lognormal(np.log(0.8 * DAY_MS), 1.3, n_visitors)
    inter = 45 * 60_000.0 + gap_scale[visitor] * rng.lognormal(0.0, 0.8, n_views)
    gap = np.where(pos == 0, 0.0, np.where(new_session, inter, intra))
    offset = np.cumsum(gap)
    offset -= offset[starts][visitor]
    duration = offset[starts + counts - 1]
    usable = float(TIME_END_MS - TIME_START_MS - 2 * 3_600_000)  # the last 2 hours stay free for carts and buys
    squeeze = np.minimum(1.0, usable * 0.98 / np.maximum(duration, 1.0))
    offset *= squeeze[visitor]
    duration *= squeeze

    # Start: a random day, then a diurnal time of day (evening peak), clipped to fit the span.
    room = usable - duration
    day = np.floor(rng.random(n_visitors) * (room / DAY_MS + 1.0))
    hour = np.where(rng.random(n_visitors) < 0.7, rng.normal(17.0, 3.5, n_visitors),
                    rng.uniform(0.0, 24.0, n_visitors)) % 24.0
    start = day * DAY_MS + (hour * 3_600_000.0 - 3 * 3_600_000.0) % DAY_MS  # hours are local (UTC+3)
    start = np.where(start > room, rng.random(n_visitors) * room, start)
    ts = TIME_START_MS + np.floor(start[visitor] + offset).astype(np.int64)
    week = ((ts - TIME_START_MS) // WEEK_MS).astype(np.int64)
    return _Views(visitor=visitor, pos=pos, session=session, ts=ts, week=week, kind=kind, counts=counts,
                  starts=starts, visitor_id=visitor_id, n_sessions=n_sessions)


def _assign_items(v: _Views, cat: _Catalogue, s: _Sampler, family: np.ndarray, seed: int) -> np.ndarray:
    """The item of every view: interests -> category -> item of the week, plus repeat views.

    Each visitor gets three interest slots at the week of their first visit: two
    or three categories of one family (siblings), the third sometimes elsewhere.
    A session focuses on one slot (or, for 15 % of return sessions, on a family
    popular that week); its events mostly stay there, some visit the other slots,
    a few wander to any category. Crawlers draw categories at random and half
    their items uniformly from the catalogue.
    """
    rng = _rng(seed, _S_CATS)
    n_visitors = v.counts.size
    n = v.visitor.size
    first_week = v.week[v.starts]
    whole = np.zeros(n_visitors, np.int64)  # every request in group 0 = all families / all categories
    fam_pos = _sample_grouped(s.fam_cum, np.array([0]), np.array([s.fam_start.size]), first_week, whole,
                              rng.random(n_visitors))
    slots = np.empty((n_visitors, 3), dtype=np.int64)
    for k in range(3):
        slots[:, k] = s.cat_of[_sample_grouped(s.cat_cum, s.fam_start, s.fam_end, first_week, fam_pos,
                                               rng.random(n_visitors))]
    for k in (1, 2):  # prefer distinct siblings: draw again once when a slot repeats the first
        again = slots[:, k] == slots[:, 0]
        redraw = s.cat_of[_sample_grouped(s.cat_cum, s.fam_start, s.fam_end, first_week, fam_pos,
                                          rng.random(n_visitors))]
        slots[:, k] = np.where(again, redraw, slots[:, k])
    elsewhere = rng.random(n_visitors) < 0.25
    anywhere = s.cat_of[_sample_grouped(s.cat_cum, np.array([0]), np.array([family.size]), first_week, whole,
                                        rng.random(n_visitors))]
    slots[:, 2] = np.where(elsewhere, anywhere, slots[:, 2])

    # Each session focuses on one slot or, now and then after the first, explores a family of its week.
    session_first = np.flatnonzero(np.diff(v.session, prepend=-1))
    session_week = v.week[session_first]
    slot_p = np.cumsum([0.5, 0.3, 0.2])
    session_slot = np.minimum(np.searchsorted(slot_p, rng.random(v.n_sessions), side="right"), 2)
    session_cat = slots[v.visitor[session_first], session_slot]
    explore = np.flatnonzero((v.pos[session_first] > 0) & (rng.random(v.n_sessions) < 0.15))
    k = explore.size
    fam_x = _sample_grouped(s.fam_cum, np.array([0]), np.array([s.fam_start.size]), session_week[explore],
                            np.zeros(k, np.int64), rng.random(k))
    session_cat[explore] = s.cat_of[_sample_grouped(s.cat_cum, s.fam_start, s.fam_end, session_week[explore],
                                                    fam_x, rng.random(k))]
    # An event mostly stays in its session's category, else visits another interest; some wander anywhere.
    other_slot = np.minimum(np.searchsorted(slot_p, rng.random(n), side="right"), 2)
    category = np.where(rng.random(n) < 0.55, session_cat[v.session], slots[v.visitor, other_slot])
    vkind = v.kind[v.visitor]
    noise = (rng.random(n) < np.where(vkind == 1, 0.10, 0.04)) | (vkind == 2)
    k = int(noise.sum())
    category[noise] = s.cat_of[_sample_grouped(s.cat_cum, np.array([0]), np.array([family.size]), v.week[noise],
                                               np.zeros(k, np.int64), rng.random(k))]

    item = s.item_of[_sample_grouped(s.item_cum, s.cat_start, s.cat_end, v.week, category, rng.random(n))]
    uniform = (vkind == 2) & (rng.random(n) < 0.5)
    item[uniform] = rng.integers(0, cat.item_id.size, int(uniform.sum()))

    # Repeat views: re-view the previous item (60 %) or any earlier one (40 %).
    p_repeat = np.where(vkind == 2, 0.02, np.where(vkind == 1, 0.35, 0.30))
    repeat = (v.pos > 0) & (rng.random(n) < p_repeat)
    back = np.where(rng.random(n) < 0.6, 1, 1 + np.floor(rng.random(n) * np.maximum(v.pos, 1)).astype(np.int64))
    root = np.where(repeat, np.arange(n) - back, np.arange(n))
    while True:  # pointer jumping: a repeat of a repeat resolves to the original view
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return item[root]


# --------------------------------------------------------------------------- the funnel


@dataclass
class _Events:
    ts: np.ndarray
    visitor: np.ndarray
    etype: np.ndarray           # 0 view, 1 addtocart, 2 transaction
    item: np.ndarray            # item index
    transaction: np.ndarray     # transaction id or -1
    n_duplicates: int


def _funnel(v: _Views, item: np.ndarray, cat: _Catalogue, n_carts: int, n_trans: int, n_buyers: int,
            n_dup: int, seed: int) -> _Events:
    """Add carts after views and purchases after carts, group purchases into transactions, add duplicates.

    Carts are a weighted sample of views (by the visitor's propensity; unavailable
    items almost never); buyers are a weighted sample of carting visitors; each
    buyer buys at least one carted item, and heavy buyers more. Purchases of one
    buyer in one session form one transaction, a few minutes after the last cart
    (sometimes hours or days later, on a return visit).
    """
    rng = _rng(seed, _S_FUNNEL)
    n_visitors = v.counts.size
    vkind = v.kind[v.visitor]
    snap = np.maximum(v.week - 1, 0)
    available = cat.avail[item, snap]
    cart_prop = (rng.lognormal(0.0, 1.5, n_visitors) * v.counts.astype(np.float64)
                 * (v.kind != 2))
    session_prop = rng.lognormal(0.0, 1.0, v.n_sessions)
    cart_w = (cart_prop[v.visitor] * session_prop[v.session] * np.where(available, 1.0, 0.02)
              * np.where(v.pos > 0, 1.0, 0.5))
    cart_src = _weighted_top(cart_w, n_carts, rng)                 # view index of each cart
    cart_ts = v.ts[cart_src] + rng.integers(3_000, 180_000, cart_src.size)
    cart_vis = v.visitor[cart_src]
    cart_session = v.session[cart_src]
    # A cart may repeat an item in the same session; only the first of those can be bought.
    first_of_item = np.zeros(cart_src.size, dtype=bool)
    _, first_idx = np.unique(cart_session * np.int64(cat.item_id.size) + item[cart_src], return_index=True)
    first_of_item[first_idx] = True

    # Buyers among carting visitors: those with more carts are likelier to buy.
    carts_per_visitor = np.bincount(cart_vis[first_of_item], minlength=n_visitors)
    buy_prop = rng.lognormal(0.0, 1.0, n_visitors) * np.where(v.kind == 1, 3.0, 1.0)
    buyer_w = carts_per_visitor.astype(np.float64) ** 1.5 * buy_prop
    n_buyers = min(n_buyers, n_trans, int((carts_per_visitor > 0).sum()))
    ranked = np.argsort(np.where(buyer_w > 0, np.log(rng.random(n_visitors)) / np.where(buyer_w > 0, buyer_w, 1),
                                 -np.inf), kind="stable")[::-1]
    while True:
        is_buyer = np.zeros(n_visitors, dtype=bool)
        is_buyer[ranked[:n_buyers]] = True
        if carts_per_visitor[is_buyer].sum() >= n_trans:
            break
        n_buyers += max(1, n_buyers // 50)

    # One purchase per buyer first, then the rest by buyer intensity.
    buyer_cart = np.flatnonzero(is_buyer[cart_vis] & first_of_item)
    key = rng.random(buyer_cart.size)
    order = np.lexsort((key, cart_vis[buyer_cart]))
    first = np.ones(order.size, dtype=bool)
    first[1:] = cart_vis[buyer_cart[order[1:]]] != cart_vis[buyer_cart[order[:-1]]]
    bought = np.zeros(cart_src.size, dtype=bool)
    bought[buyer_cart[order[first]]] = True
    n_first = int(bought.sum())
    intensity = rng.lognormal(0.0, 1.2, n_visitors)
    more_w = np.where(is_buyer[cart_vis] & first_of_item & ~bought, intensity[cart_vis], 0.0)
    bought[_weighted_top(more_w, n_trans - n_first, rng)] = True

    # Transactions: one per (buyer, session); ids dense and shuffled, as in the real data.
    b = np.flatnonzero(bought)
    grp_key = cart_session[b]
    uniq, grp = np.unique(grp_key, return_inverse=True)
    n_tx = uniq.size
    last_cart = np.full(n_tx, np.iinfo(np.int64).min)
    np.maximum.at(last_cart, grp, cart_ts[b])
    delay = rng.integers(20_000, 480_000, n_tx).astype(np.int64)
    later = (rng.random(n_tx) < 0.12)
    long_delay = (rng.lognormal(np.log(6 * 3_600_000), 1.2, n_tx)).astype(np.int64)
    tx_ts = np.where(later & (last_cart + long_delay < TIME_END_MS - 60_000), last_cart + long_delay,
                     last_cart + delay)
    tx_id = rng.permutation(n_tx).astype(np.int64)

    # Exact duplicates of a few normal views.
    dup = _weighted_top((vkind == 0).astype(np.float64), n_dup, rng)

    ts = np.concatenate([v.ts, v.ts[dup], cart_ts, tx_ts[grp]])
    visitor = np.concatenate([v.visitor, v.visitor[dup], cart_vis, cart_vis[b]])
    etype = np.concatenate([np.zeros(v.ts.size + dup.size, np.int8), np.ones(cart_src.size, np.int8),
                            np.full(b.size, 2, np.int8)])
    items = np.concatenate([item, item[dup], item[cart_src], item[cart_src[b]]])
    transaction = np.concatenate([np.full(v.ts.size + dup.size + cart_src.size, -1, np.int64), tx_id[grp]])
    return _Events(ts=ts, visitor=visitor, etype=etype, item=items, transaction=transaction,
                   n_duplicates=int(dup.size))


_EVENT_POOL = _pool([t.encode() for t in EVENT_TYPES])


def _write_events(e: _Events, visitor_id: np.ndarray, item_id: np.ndarray, path: Path, stats: GenerateStats,
                  chunk: int = 250_000) -> None:
    """Write events.csv in time order (ties: visitor, event type) and fill the event counts in ``stats``.

    The rows are gathered in time order one chunk at a time (no sorted copy of every column),
    and chunks are small: the byte blocks of one chunk are the generator's largest temporaries.
    """
    # Stable sort by time: ties keep the generation order (deterministic).
    order = np.argsort(e.ts, kind="stable")
    with open(path, "wb") as f:
        f.write(EVENTS_HEADER)
        for lo in range(0, order.size, chunk):
            rows = order[lo:lo + chunk]
            tx = e.transaction[rows]
            f.write(_pack([_digits(e.ts[rows]), _digits(visitor_id[e.visitor[rows]]), (_EVENT_POOL, e.etype[rows]),
                           _digits(item_id[e.item[rows]]), _digits(np.maximum(tx, 0), null=tx < 0)]))
    tx = e.transaction
    n_type = np.bincount(e.etype, minlength=3)
    per_visitor = np.bincount(e.visitor)
    stats.rows["events.csv"] = int(order.size)
    stats.views, stats.addtocarts, stats.transaction_events = (int(x) for x in n_type)
    stats.visitors = int((per_visitor > 0).sum())
    stats.max_events_per_visitor = int(per_visitor.max())
    stats.items_in_events = int((np.bincount(e.item) > 0).sum())
    stats.transactions = int((np.bincount(tx[tx >= 0]) > 0).sum()) if (tx >= 0).any() else 0
    stats.buyers = int((np.bincount(e.visitor[e.etype == 2]) > 0).sum())
    stats.duplicates = e.n_duplicates


# --------------------------------------------------------------------------- item properties


@dataclass
class _Props:
    snap: np.ndarray       # snapshot index per row
    item: np.ndarray       # item id per row
    prop: np.ndarray       # index into names
    value: np.ndarray      # index into the value pool
    names: np.ndarray      # (k, w) byte pool of property names
    values: np.ndarray     # (m, w) byte pool of values
    kind_rows: dict[str, int]


def _hashed_value_pool(n_values: int, rng: np.random.Generator) -> np.ndarray:
    """Hashed values like ``1154859 n24.000 688189``: 1-3 tokens, integers or ``n<number>.<3 digits>``."""
    n_tokens = rng.choice(3, size=n_values, p=[0.6, 0.28, 0.12]) + 1
    blocks: list[np.ndarray] = []
    for t in range(3):
        present = t < n_tokens
        numeric = rng.random(n_values) < 0.35
        hashed = np.floor(np.exp(rng.uniform(np.log(1_000), np.log(1_400_000), n_values))).astype(np.int64)
        number = np.floor(np.exp(rng.uniform(0.0, np.log(50_000), n_values))).astype(np.int64)
        frac = np.where(rng.random(n_values) < 0.8, 0, rng.integers(0, 1000, n_values))
        if t > 0:
            blocks.append(np.where(present, ord(" "), 0).astype(np.uint8)[:, None])
        blocks.append(np.where(present & numeric, ord("n"), 0).astype(np.uint8)[:, None])
        blocks.append(_digits(np.where(numeric, number, hashed), null=~present))
        frac_digits = (frac[:, None] // np.array([100, 10, 1]) % 10 + 48).astype(np.uint8)
        dot = np.full((n_values, 1), ord("."), np.uint8)
        tail = np.concatenate([dot, frac_digits], axis=1)
        tail[~(present & numeric)] = 0
        blocks.append(tail)
    return np.concatenate(blocks, axis=1)


def _property_rows(cat: _Catalogue, tree: CategoryTree, used: np.ndarray, full: bool, scale: float,
                   seed: int) -> _Props:
    """Weekly snapshot rows of categoryid, available and hashed properties for catalogue items.

    A value is written at the item's first snapshot, whenever it changes, and
    now and then again unchanged (as in the real files, so consumers must not
    assume one row per change).
    """
    rng = _rng(seed, _S_PROPS)
    n = cat.n_catalogue
    snaps = np.arange(N_SNAPSHOTS)[None, :]
    first = cat.first_snap[:n, None]
    live = snaps >= first
    again = live & (rng.random((n, N_SNAPSHOTS)) < 0.05)

    # categoryid: first snapshot, the change, re-records.
    cat_rows = (snaps == first) | (snaps == cat.change_snap[:n, None]) | again
    ci, cj = np.nonzero(cat_rows)
    cat_value = np.where(cj >= cat.change_snap[ci], cat.cat1[ci], cat.cat0[ci])
    # available: first snapshot, every flip, re-records.
    flips = np.zeros((n, N_SNAPSHOTS), dtype=bool)
    flips[:, 1:] = cat.avail[:n, 1:] != cat.avail[:n, :-1]
    av_rows = (snaps == first) | (flips & live) | (live & (rng.random((n, N_SNAPSHOTS)) < 0.05))
    ai, aj = np.nonzero(av_rows)
    av_value = cat.avail[ai, aj].astype(np.int64)

    # Hashed properties: numeric names, Zipf-like popularity, values from per-property pools.
    rng_h = _rng(seed, _S_HASHED)
    names = np.sort(rng_h.choice(np.arange(1, 1_200), size=N_HASHED_PROPERTIES, replace=False))
    popularity_order = rng_h.permutation(N_HASHED_PROPERTIES)    # rank -> name index
    k_props = N_HASHED_PROPERTIES if full else DEFAULT_HASHED_PROPERTIES
    n_hashed = _scaled(FULL_HASHED_ROWS, scale) if full else int(round(n * DEFAULT_HASHED_PER_ITEM))
    rank_w = 1.0 / np.arange(1, k_props + 1) ** 1.1
    pool_size = np.clip(np.round(3_000 / np.arange(1, k_props + 1) ** 0.6), 2, None).astype(np.int64)
    pool_start = _group_starts(pool_size)
    rank = np.searchsorted(np.cumsum(rank_w / rank_w.sum()), rng_h.random(n_hashed, dtype=np.float32),
                           side="right").astype(np.int32)
    rank = np.minimum(rank, k_props - 1)
    h_item = rng_h.integers(0, n, n_hashed, dtype=np.int32)
    h_first = cat.first_snap.astype(np.int8)[h_item]
    h_snap = h_first + (rng_h.random(n_hashed, dtype=np.float32) ** 2 * (N_SNAPSHOTS - h_first)).astype(np.int8)
    h_value = (pool_start[rank] + (rng_h.random(n_hashed, dtype=np.float32) ** 3 * pool_size[rank]).astype(
        np.int64)).astype(np.int32)
    hashed_pool = _hashed_value_pool(int(pool_size.sum()), rng_h)

    # Pools: names = [categoryid, available, hashed names by rank]; values = [category ids, 0, 1, hashed].
    name_pool = np.zeros((2 + k_props, 10), dtype=np.uint8)
    name_pool[:2] = _pool([b"categoryid", b"available"])
    hashed_names = _digits(names[popularity_order[:k_props]])
    name_pool[2:, : hashed_names.shape[1]] = hashed_names
    cat_values = _digits(tree.ids[used])
    width = max(cat_values.shape[1], hashed_pool.shape[1])
    value_pool = np.zeros((used.size + 2 + hashed_pool.shape[0], width), dtype=np.uint8)
    value_pool[: used.size, : cat_values.shape[1]] = cat_values
    value_pool[used.size, 0], value_pool[used.size + 1, 0] = ord("0"), ord("1")
    value_pool[used.size + 2:, : hashed_pool.shape[1]] = hashed_pool

    snap = np.concatenate([cj.astype(np.int8), aj.astype(np.int8), h_snap])
    item = np.concatenate([ci.astype(np.int32), ai.astype(np.int32), h_item])
    prop = np.concatenate([np.zeros(ci.size, np.int16), np.ones(ai.size, np.int16), (2 + rank).astype(np.int16)])
    value = np.concatenate([cat_value.astype(np.int32), (used.size + av_value).astype(np.int32),
                            used.size + 2 + h_value])
    order = _rng(seed, _S_ORDER).permutation(snap.size)   # the real files are in no particular order
    return _Props(snap=snap[order], item=cat.item_id[item[order]], prop=prop[order], value=value[order],
                  names=name_pool, values=value_pool,
                  kind_rows={"categoryid": int(ci.size), "available": int(ai.size), "hashed": int(n_hashed)})


def _write_properties(p: _Props, out: Path, stats: GenerateStats, chunk: int = 250_000) -> None:
    """Write the rows split into part1 (first ~54 %, as in the real files) and part2."""
    ts_pool = _digits(SNAPSHOT_MS)
    n = p.snap.size
    n1 = int(round(n * PART1_SHARE))
    for name, lo_all, hi_all in (("item_properties_part1.csv", 0, n1), ("item_properties_part2.csv", n1, n)):
        with open(out / name, "wb") as f:
            f.write(PROPERTIES_HEADER)
            for lo in range(lo_all, hi_all, chunk):
                sl = slice(lo, min(lo + chunk, hi_all))
                f.write(_pack([(ts_pool, p.snap[sl]), _digits(p.item[sl]), (p.names, p.prop[sl]),
                               (p.values, p.value[sl])]))
        stats.rows[name] = hi_all - lo_all
    stats.property_rows = dict(p.kind_rows)


# --------------------------------------------------------------------------- splitting an events file


def split_events(events_csv: Path, cutoff_ms: int, before: Path, after: Path) -> tuple[int, int]:
    """Split an events file at a timestamp: rows with timestamp < cutoff to ``before``, the rest to ``after``.

    Both files get the header; the order of rows is kept and every byte of a row
    is copied as is. Used to load "the next day" of events separately. Blank lines
    are dropped. Vectorised over the file's bytes (no per-line Python). Returns the
    data-row counts (before, after); raises ValueError naming the line when a
    timestamp is not an integer.
    """
    data = np.fromfile(events_csv, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    if newlines.size == 0:
        raise ValueError(f"{events_csv}: no header line")
    header = data[: newlines[0] + 1].tobytes()
    body = data[newlines[0] + 1:]
    if body.size and body[-1] != 10:  # a last line without a newline gets one
        body = np.concatenate([body, np.array([10], np.uint8)])
    ends = np.flatnonzero(body == 10)            # position of each line's newline
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    content_end = ends - ((ends > starts) & (body[np.maximum(ends - 1, 0)] == 13))  # without a \r
    keep = content_end > starts
    commas = np.flatnonzero(body == 44)
    at = np.searchsorted(commas, starts)
    comma = np.where(at < commas.size, commas[np.minimum(at, max(commas.size - 1, 0))], ends) \
        if commas.size else ends
    field_end = np.minimum(comma, content_end)
    field_len = field_end - starts
    bad = keep & ((field_len <= 0) | (field_len > 18))
    value = np.zeros(starts.size, dtype=np.int64)
    for k in range(int(field_len[keep & ~bad].max()) if (keep & ~bad).any() else 0):
        inside = keep & ~bad & (k < field_len)
        d = body[np.minimum(starts + k, body.size - 1)].astype(np.int64) - 48
        bad |= inside & ((d < 0) | (d > 9))
        value = np.where(inside, value * 10 + d, value)
    if bad.any():
        raise ValueError(f"{events_csv}:{int(np.flatnonzero(bad)[0]) + 2}: the timestamp is not an integer")
    is_before = keep & (value < cutoff_ms)
    is_after = keep & (value >= cutoff_ms)
    lengths = ends - starts + 1
    for path, mask in ((before, is_before), (after, is_after)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(header)
            f.write(body[np.repeat(mask, lengths)].tobytes())
    return int(is_before.sum()), int(is_after.sum())
