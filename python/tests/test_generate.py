"""The generator's invariants: exact RetailRocket format, determinism, shape and realism.

The files are parsed here with the ``csv`` module and plain Python, independently
of the numpy writer in ``aisle.generate``; expected figures come from the real
dataset's shape (retailrocket.md) scaled down, or from brute-force recounts.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from aisle.generate import (
    DAY_MS,
    SNAPSHOT_MS,
    TIME_END_MS,
    TIME_START_MS,
    GenerateStats,
    generate,
    generate_category_tree,
    split_events,
)

SCALE = 0.01
SEED = 7
INT = re.compile(r"0|[1-9][0-9]*")  # canonical non-negative integers, as in the real files
HASHED_VALUE = re.compile(r"(n[0-9]+\.[0-9]{3}|[0-9]+)( (n[0-9]+\.[0-9]{3}|[0-9]+))*")


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerateStats]:
    out = tmp_path_factory.mktemp("generated")
    return out, generate(out, scale=SCALE, seed=SEED, progress=False)


@pytest.fixture(scope="module")
def events(generated: tuple[Path, GenerateStats]) -> list[tuple[int, int, str, int, int | None]]:
    header, rows = _rows(generated[0] / "events.csv")
    assert header == ["timestamp", "visitorid", "event", "itemid", "transactionid"]
    return [(int(t), int(v), e, int(i), int(x) if x else None) for t, v, e, i, x in rows]


@pytest.fixture(scope="module")
def properties(generated: tuple[Path, GenerateStats]) -> list[list[str]]:
    rows: list[list[str]] = []
    for part in (1, 2):
        header, body = _rows(generated[0] / f"item_properties_part{part}.csv")
        assert header == ["timestamp", "itemid", "property", "value"]
        rows += body
    return rows


@pytest.fixture(scope="module")
def tree(generated: tuple[Path, GenerateStats]) -> dict[int, int | None]:
    header, rows = _rows(generated[0] / "category_tree.csv")
    assert header == ["categoryid", "parentid"]
    return {int(c): int(p) if p else None for c, p in rows}


@pytest.fixture(scope="module")
def first_category(properties: list[list[str]]) -> dict[int, int]:
    """Each item's category at its first snapshot."""
    first: dict[int, tuple[int, int]] = {}
    for ts, item, prop, value in properties:
        if prop == "categoryid":
            key = int(item)
            if key not in first or int(ts) < first[key][0]:
                first[key] = (int(ts), int(value))
    return {k: v[1] for k, v in first.items()}


# --------------------------------------------------------------------------- format


def test_time_constants_are_the_real_span() -> None:
    utc = dt.timezone.utc
    assert dt.datetime.fromtimestamp(TIME_START_MS / 1000, utc) == dt.datetime(2015, 5, 3, 3, tzinfo=utc)
    assert dt.datetime.fromtimestamp(TIME_END_MS / 1000, utc) == dt.datetime(2015, 9, 18, 3, tzinfo=utc)
    snaps = [dt.datetime.fromtimestamp(s / 1000, utc) for s in SNAPSHOT_MS.tolist()]
    assert snaps[0] == dt.datetime(2015, 5, 10, 3, tzinfo=utc) and snaps[-1] == dt.datetime(2015, 9, 13, 3, tzinfo=utc)
    assert all(s.weekday() == 6 for s in snaps)  # Sundays


def test_files_are_plain_lf_csv_with_exact_headers(generated: tuple[Path, GenerateStats]) -> None:
    out, stats = generated
    headers = {
        "events.csv": b"timestamp,visitorid,event,itemid,transactionid\n",
        "item_properties_part1.csv": b"timestamp,itemid,property,value\n",
        "item_properties_part2.csv": b"timestamp,itemid,property,value\n",
        "category_tree.csv": b"categoryid,parentid\n",
    }
    for name, header in headers.items():
        data = (out / name).read_bytes()
        assert data.startswith(header), name
        assert data.endswith(b"\n") and b"\r" not in data and b'"' not in data and b"\n\n" not in data, name
        data.decode("ascii")
        assert data.count(b"\n") - 1 == stats.rows[name], name


def test_event_rows_are_well_formed(generated: tuple[Path, GenerateStats]) -> None:
    _, rows = _rows(generated[0] / "events.csv")
    for t, v, e, i, x in rows:
        assert len(t) == 13 and INT.fullmatch(t) and INT.fullmatch(v) and INT.fullmatch(i)
        assert TIME_START_MS <= int(t) < TIME_END_MS
        assert e in ("view", "addtocart", "transaction")
        if e == "transaction":
            assert INT.fullmatch(x), "a transaction has a transactionid"
        else:
            assert x == "", "only transactions have a transactionid"


def test_property_rows_are_well_formed(properties: list[list[str]], tree: dict[int, int | None]) -> None:
    snapshots = {str(s) for s in SNAPSHOT_MS.tolist()}
    names = Counter()
    for ts, item, prop, value in properties:
        assert ts in snapshots and INT.fullmatch(item)
        names[prop] += 1
        if prop == "categoryid":
            assert INT.fullmatch(value) and int(value) in tree
        elif prop == "available":
            assert value in ("0", "1")
        else:
            assert INT.fullmatch(prop), prop            # hashed property names are numbers
            assert HASHED_VALUE.fullmatch(value), value
    assert names["categoryid"] > 0 and names["available"] > 0
    assert len(names) > 5  # a few hashed properties by default


def test_category_tree_has_the_real_shape(tree: dict[int, int | None]) -> None:
    assert len(tree) == 1669
    roots = [c for c, p in tree.items() if p is None]
    assert len(roots) == 25
    assert all(p is None or p in tree for p in tree.values())

    def depth(c: int) -> int:
        d = 1
        while tree[c] is not None:
            c = tree[c]
            d += 1
            assert d <= 10, "cycle"
        return d

    depths = Counter(depth(c) for c in tree)
    assert max(depths) == 6
    # The tree does not depend on the scale: it is the same as generated on its own.
    alone = generate_category_tree(SEED)
    assert dict(zip(alone.ids.tolist(), alone.parent_ids.tolist(), strict=True)) == {
        c: (-1 if p is None else p) for c, p in tree.items()}


# --------------------------------------------------------------------------- shape


def test_shape_scales_from_the_real_dataset(events: list, generated: tuple[Path, GenerateStats]) -> None:
    n = len(events)
    assert n == round(2_756_101 * SCALE)
    mix = Counter(e for _, _, e, _, _ in events)
    for kind, real in (("view", 2_664_312), ("addtocart", 69_332), ("transaction", 22_457)):
        assert abs(mix[kind] / n - real / 2_756_101) < 0.005, kind
    per_visitor = Counter(v for _, v, _, _, _ in events)
    assert len(per_visitor) == round(1_407_580 * SCALE)
    assert 1.85 < n / len(per_visitor) < 2.05
    counts = np.array(list(per_visitor.values()))
    assert 0.6 < np.mean(counts == 1) < 0.8            # most visitors have one event...
    assert counts.max() > 200                           # ...and a few have hundreds (crawlers)
    items = {i for _, _, _, i, _ in events}
    assert 0.45 < len(items) / (417_053 * SCALE) < 0.7  # ~235K of ~417K at scale 1
    tx = {x for *_, x in events if x is not None}
    buyers = {v for _, v, e, _, _ in events if e == "transaction"}
    assert abs(len(tx) - 17_700 * SCALE) < 0.25 * 17_700 * SCALE
    assert abs(len(buyers) - 11_700 * SCALE) < 0.25 * 11_700 * SCALE


def test_stats_match_an_independent_recount(events: list, properties: list, tree: dict,
                                            generated: tuple[Path, GenerateStats]) -> None:
    stats = generated[1]
    assert stats.events == len(events)
    assert (stats.views, stats.addtocarts, stats.transaction_events) == tuple(
        Counter(e for _, _, e, _, _ in events)[k] for k in ("view", "addtocart", "transaction"))
    assert stats.visitors == len({v for _, v, _, _, _ in events})
    assert stats.max_events_per_visitor == max(Counter(v for _, v, _, _, _ in events).values())
    assert stats.items_in_events == len({i for _, _, _, i, _ in events})
    assert stats.transactions == len({x for *_, x in events if x is not None})
    assert stats.buyers == len({v for _, v, e, _, _ in events if e == "transaction"})
    assert stats.catalogue_items == len({r[1] for r in properties})
    assert stats.categories_used == len({r[3] for r in properties if r[2] == "categoryid"})
    assert (stats.categories, stats.roots) == (len(tree), sum(p is None for p in tree.values()))
    assert sum(stats.property_rows.values()) == len(properties)
    assert stats.seconds > 0


def test_some_event_rows_are_exact_duplicates(generated: tuple[Path, GenerateStats]) -> None:
    lines = (generated[0] / "events.csv").read_bytes().splitlines()[1:]
    extra = sum(c - 1 for c in Counter(lines).values())
    assert extra == generated[1].duplicates >= 2


# --------------------------------------------------------------------------- realism


def test_every_purchase_follows_a_view_and_a_cart_of_the_same_item(events: list) -> None:
    first_view: dict[tuple[int, int], int] = {}
    first_cart: dict[tuple[int, int], int] = {}
    for t, v, e, i, _ in events:
        book = first_view if e == "view" else first_cart if e == "addtocart" else None
        if book is not None:
            book[(v, i)] = min(t, book.get((v, i), t))
    carts = [(t, v, i) for t, v, e, i, _ in events if e == "addtocart"]
    purchases = [(t, v, i) for t, v, e, i, _ in events if e == "transaction"]
    assert purchases
    assert all(first_view.get((v, i), t) < t for t, v, i in carts)
    assert all(first_view.get((v, i), t) < t and first_cart.get((v, i), t) < t for t, v, i in purchases)


def test_a_transaction_is_one_visitor_at_one_time_and_may_cover_several_items(events: list) -> None:
    by_tx: dict[int, set[tuple[int, int]]] = defaultdict(set)
    items: dict[int, set[int]] = defaultdict(set)
    for t, v, _, i, x in events:
        if x is not None:
            by_tx[x].add((v, t))
            items[x].add(i)
    assert all(len(s) == 1 for s in by_tx.values())
    assert sum(len(s) > 1 for s in items.values()) > 0.05 * len(items)


def test_sessions_and_repeat_views(events: list) -> None:
    times: dict[int, list[int]] = defaultdict(list)
    for t, v, *_ in events:
        times[v].append(t)
    gaps = [b - a for ts in times.values() for a, b in zip(sorted(ts), sorted(ts)[1:])]
    short = sum(g <= 30 * 60_000 for g in gaps)
    long = sum(g > 30 * 60_000 for g in gaps)
    assert short > 2 * long > 0                     # bursts, separated by long gaps
    multi_session = sum(any(b - a > 30 * 60_000 for a, b in zip(sorted(ts), sorted(ts)[1:]))
                        for ts in times.values())
    assert multi_session > 0.05 * len(times)
    views = [(v, i) for _, v, e, i, _ in events if e == "view"]
    repeats = len(views) - len(set(views))
    assert repeats > 0.08 * len(views)


def test_visitors_concentrate_on_sibling_categories(events: list, first_category: dict[int, int],
                                                    tree: dict[int, int | None]) -> None:
    """A visitor's views sit mostly under one parent; shuffling items across visitors destroys that."""
    views = [(v, i) for _, v, e, i, _ in events if e == "view" and i in first_category]

    def top_family_share(pairs: list[tuple[int, int]]) -> float:
        by_visitor: dict[int, list[int | None]] = defaultdict(list)
        for v, i in pairs:
            by_visitor[v].append(tree[first_category[i]])
        shares = [Counter(f).most_common(1)[0][1] / len(f) for f in by_visitor.values() if len(f) >= 5]
        return float(np.mean(shares))

    rng = np.random.default_rng(0)
    shuffled = list(zip([v for v, _ in views], rng.permutation([i for _, i in views]).tolist(), strict=True))
    real, baseline = top_family_share(views), top_family_share(shuffled)
    assert real > 0.7 and real > baseline + 0.4
    # "a few related categories": visitors with many views touch more than one sibling
    cats: dict[int, set[int]] = defaultdict(set)
    for v, i in views:
        cats[v].add(first_category[i])
    n_views = Counter(v for v, _ in views)
    assert np.mean([len(c) >= 2 for v, c in cats.items() if n_views[v] >= 8]) > 0.5


def test_category_changes_and_availability_flips(properties: list[list[str]], generated) -> None:
    cats: dict[str, set[str]] = defaultdict(set)
    avail: dict[str, set[str]] = defaultdict(set)
    for _, item, prop, value in properties:
        if prop == "categoryid":
            cats[item].add(value)
        elif prop == "available":
            avail[item].add(value)
    changed = sum(len(c) > 1 for c in cats.values())
    assert changed == generated[1].items_changing_category
    assert 0.01 < changed / len(cats) < 0.06
    assert sum(len(a) > 1 for a in avail.values()) > 0.2 * len(avail)
    # Some values are written again unchanged (consumers must not assume one row per change).
    per_item = Counter(item for _, item, prop, _ in properties if prop == "categoryid")
    assert sum(per_item[item] > len(cats[item]) for item in cats) > 0


def test_some_event_items_have_no_properties(events: list, properties: list) -> None:
    with_props = {int(r[1]) for r in properties}
    items = {i for _, _, _, i, _ in events}
    missing = items - with_props
    assert 0 < len(missing) < 0.03 * len(items)


def test_popularity_drifts_and_new_visitors_follow_trends(events: list) -> None:
    """Recent trending differs from all-time popularity, and predicts new visitors better."""
    cutoff = TIME_END_MS - 14 * DAY_MS
    views = [(t, v, i) for t, v, e, i, _ in events if e == "view"]
    early = Counter(i for t, _, i in views if t < TIME_END_MS - 60 * DAY_MS)
    late = Counter(i for t, _, i in views if t >= cutoff)
    top = 20
    assert len({i for i, _ in early.most_common(top)} & {i for i, _ in late.most_common(top)}) < top // 2
    train = [x for x in views if x[0] < cutoff]
    known = {v for _, v, _ in train}
    popular = {i for i, _ in Counter(i for _, _, i in train).most_common(top)}
    trending = {i for i, _ in Counter(i for t, _, i in train if t >= cutoff - 14 * DAY_MS).most_common(top)}
    cold = [i for t, v, i in views if t >= cutoff and v not in known]
    assert np.mean([i in trending for i in cold]) > 1.2 * np.mean([i in popular for i in cold])


def test_returning_visitors_stay_in_their_categories(events: list, first_category: dict[int, int],
                                                     tree: dict[int, int | None]) -> None:
    cutoff = TIME_END_MS - 14 * DAY_MS
    families: dict[int, set[int | None]] = defaultdict(set)
    later: list[tuple[int, int | None]] = []
    for t, v, e, i, _ in events:
        if e == "view" and i in first_category:
            if t < cutoff:
                families[v].add(tree[first_category[i]])
            elif v in families:
                later.append((v, tree[first_category[i]]))
    assert len({v for v, _ in later}) >= 20
    assert np.mean([f in families[v] for v, f in later]) > 0.6


# --------------------------------------------------------------------------- determinism and options


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(a, scale=0.003, seed=11, progress=False)
    generate(b, scale=0.003, seed=11, progress=False)
    generate(c, scale=0.003, seed=12, progress=False)
    for name in ("events.csv", "item_properties_part1.csv", "item_properties_part2.csv", "category_tree.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).read_bytes() != (c / name).read_bytes(), name


def test_full_properties_adds_hashed_rows_only(tmp_path: Path) -> None:
    small = generate(tmp_path / "small", scale=0.002, seed=3, progress=False)
    full = generate(tmp_path / "full", scale=0.002, seed=3, full_properties=True, progress=False)
    assert (tmp_path / "small" / "events.csv").read_bytes() == (tmp_path / "full" / "events.csv").read_bytes()
    assert full.property_rows["categoryid"] == small.property_rows["categoryid"]
    assert full.property_rows["available"] == small.property_rows["available"]
    assert full.property_rows["hashed"] == round(18_000_000 * 0.002) > 10 * small.property_rows["hashed"]
    total = sum(full.property_rows.values())
    assert abs(full.rows["item_properties_part1.csv"] / total - 11.0 / 20.28) < 0.01
    props = Counter()
    for part in (1, 2):
        _, rows = _rows(tmp_path / "full" / f"item_properties_part{part}.csv")
        props.update(r[2] for r in rows)
        assert all(HASHED_VALUE.fullmatch(r[3]) for r in rows if r[2] not in ("categoryid", "available"))
    assert len(props) > 300  # many distinct hashed names (~1,100 at scale 1)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate(tmp_path, scale=0, progress=False)
    with pytest.raises(ValueError):
        generate(tmp_path, scale=0.01, seed=-1, progress=False)


# --------------------------------------------------------------------------- split_events


def test_split_events_at_a_timestamp(generated: tuple[Path, GenerateStats], tmp_path: Path) -> None:
    src = generated[0] / "events.csv"
    lines = src.read_bytes().splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    cutoff = TIME_END_MS - DAY_MS
    n_before, n_after = split_events(src, cutoff, tmp_path / "before.csv", tmp_path / "after.csv")
    expect_before = [r for r in body if int(r.split(b",", 1)[0]) < cutoff]
    expect_after = [r for r in body if int(r.split(b",", 1)[0]) >= cutoff]
    assert (n_before, n_after) == (len(expect_before), len(expect_after))
    assert n_before + n_after == len(body) and n_after > 0
    assert (tmp_path / "before.csv").read_bytes() == header + b"".join(expect_before)
    assert (tmp_path / "after.csv").read_bytes() == header + b"".join(expect_after)


def test_split_events_keeps_order_of_an_unsorted_file(tmp_path: Path) -> None:
    src = tmp_path / "events.csv"
    src.write_bytes(b"timestamp,visitorid,event,itemid,transactionid\n"
                    b"1433221332117,257597,view,355908,\n"
                    b"1433224214164,992329,view,248676,\n"
                    b"1433221999827,111016,transaction,318965,42\n"
                    b"\n"
                    b"1433221955914,483717,addtocart,253185,")  # no newline at the end
    n = split_events(src, 1_433_222_000_000, tmp_path / "b.csv", tmp_path / "a.csv")
    assert n == (3, 1)
    assert (tmp_path / "b.csv").read_bytes() == (b"timestamp,visitorid,event,itemid,transactionid\n"
                                                 b"1433221332117,257597,view,355908,\n"
                                                 b"1433221999827,111016,transaction,318965,42\n"
                                                 b"1433221955914,483717,addtocart,253185,\n")
    assert (tmp_path / "a.csv").read_bytes().endswith(b"\n1433224214164,992329,view,248676,\n")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,view,2,\nabc,1,view,2,\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        split_events(bad, 0, tmp_path / "x.csv", tmp_path / "y.csv")
