"""The core warehouse (staging, intermediate, marts/core) on generated and loaded data.

One small dataset from the project's generator goes through the real loader and real dbt:

1. the events before a day D are loaded and the warehouse is built (a full build, with
   every dbt data and unit test of these models);
2. day D's events are loaded as a second file, plus a hand-made third file of "late"
   events that hit the incremental edge cases (an exact duplicate of an already staged
   event, events bridging two earlier sessions of a visitor, an event before a visitor's
   first one, a new visitor); the build runs again, incrementally, tests included;
3. the incremental tables are copied aside and the warehouse is rebuilt with
   --full-refresh: every row of the incremental and the full-refresh build must be equal
   (EXCEPT ALL both ways);
4. the marts are compared with independent brute-force computations in plain Python over
   the raw tables: deduplication, sessions (the 30-minute rule), the category as of the
   event time, users' segments, the category tree, items and the daily aggregates.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from conftest import throwaway_database

from aisle.config import Target
from aisle.db import connect
from aisle.dbt import DbtRun, run_dbt

pytestmark = [pytest.mark.server, pytest.mark.slow]

SCALE = 0.01
SEED = 11
GAP_MS = 30 * 60 * 1000  # var session_gap_minutes (default 30)
HEAVY_MIN_EVENTS = 200  # var heavy_user_min_events (default 200)
UTC = timezone.utc
EVENTS_HEADER = ["timestamp", "visitorid", "event", "itemid", "transactionid"]

# The core models and their tests, plus the recommendation inputs (the event_weights seed,
# popularity, trending and affinity, with their incremental intermediate tables); the models
# that need the Python similarity step are left out, and so are tests that need them
# (cautious indirect selection). test_warehouse_recs.py checks those marts against brute force.
REC_INPUTS = ["event_weights", "rec_item_popularity", "rec_item_trending", "rec_user_category_affinity"]
SELECT = ["--select", "path:models/staging", "path:models/intermediate", "path:models/marts/core",
          "path:tests/core", *REC_INPUTS, "--indirect-selection", "cautious"]

# Every table the incremental runs maintain or rebuild, compared with a full refresh.
COMPARED = ["staging.stg_retailrocket__events", "intermediate.int_events_sessionized",
            "marts.fct_sessions", "marts.agg_category_daily", "marts.agg_root_category_daily",
            "marts.dim_users", "marts.dim_items", "marts.dim_categories",
            "intermediate.int_item_category_history", "intermediate.int_item_availability_history",
            "intermediate.int_category_paths",
            # decayed sums stored in a frame, so that new events touch only their items and
            # visitors; the marts rescale them to the anchor
            "intermediate.int_item_event_totals", "intermediate.int_user_category_affinity",
            "recs.rec_item_popularity", "recs.rec_item_trending", "recs.rec_user_category_affinity"]


# --------------------------------------------------------------------------- brute force


RawEvent = tuple[int, int, str, int, int | None]  # (timestamp ms, visitor, event, item, transaction)


@dataclass
class Expected:
    """The warehouse recomputed in Python from the raw rows."""

    events: dict[RawEvent, tuple[int, int, int]] = field(default_factory=dict)  # key -> (batch, line, copies)
    raw_rows: int = 0
    # (user, session start ms) -> list of (ts, event, item, category)
    sessions: dict[tuple[int, int], list[tuple[int, str, int, int]]] = field(default_factory=dict)
    category_of_event: dict[RawEvent, int] = field(default_factory=dict)


def _utc_day(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, UTC).date()


def _as_of_value(snapshots: list[tuple[int, object]], ts: int) -> object | None:
    """The value valid at ts: the latest snapshot at or before ts, else the earliest one."""
    if not snapshots:
        return None
    value = snapshots[0][1]
    for snap_ts, snap_value in snapshots:
        if snap_ts <= ts:
            value = snap_value
        else:
            break
    return value


def _property_snapshots(conn: psycopg.Connection, prop: str) -> dict[int, list[tuple[int, object]]]:
    """Per item, its snapshots of one property in time order (the later-loaded row wins a tie)."""
    rows = conn.execute(
        "select p.itemid, p.\"timestamp\", p.value, p.batch_id, p.line_no from raw.item_properties p "
        "join raw.load_batches b using (batch_id) where b.status = 'finished' and p.property = %s",
        (prop,)).fetchall()
    latest: dict[tuple[int, int], tuple[tuple[int, int], str]] = {}
    for item, ts, value, batch, line in rows:
        key = (item, ts)
        if key not in latest or (batch, line) > latest[key][0]:
            latest[key] = ((batch, line), value)
    out: dict[int, list[tuple[int, object]]] = defaultdict(list)
    for (item, ts), (_, value) in sorted(latest.items()):
        out[item].append((ts, int(value) if prop == "categoryid" else value == "1"))
    return out


def _tree(conn: psycopg.Connection) -> dict[int, int | None]:
    batch = conn.execute("select max(batch_id) from raw.load_batches "
                         "where file_kind = 'category_tree' and status = 'finished'").fetchone()[0]
    return dict(conn.execute("select categoryid, parentid from raw.category_tree where batch_id = %s",
                             (batch,)).fetchall())


def _paths(tree: dict[int, int | None]) -> dict[int, tuple[int, int, str]]:
    """category -> (level, root, path) by walking up the parents (every node reaches a root here)."""
    out = {}
    for node in tree:
        chain = [node]
        while tree[chain[-1]] is not None:
            chain.append(tree[chain[-1]])
            assert len(chain) <= len(tree), "the generated tree has a cycle"
        chain.reverse()
        out[node] = (len(chain), chain[0], " > ".join(str(c) for c in chain))
    return out


def _expected(conn: psycopg.Connection) -> Expected:
    """Deduplicate, sessionize and categorize the raw events by brute force."""
    exp = Expected()
    rows = conn.execute(
        "select e.batch_id, e.line_no, e.\"timestamp\", e.visitorid, e.event, e.itemid, e.transactionid "
        "from raw.events e join raw.load_batches b using (batch_id) where b.status = 'finished'").fetchall()
    exp.raw_rows = len(rows)
    for batch, line, ts, visitor, event, item, txn in rows:
        key = (ts, visitor, event, item, txn)
        if key in exp.events:
            first_batch, first_line, copies = exp.events[key]
            exp.events[key] = (*min((first_batch, first_line), (batch, line)), copies + 1)
        else:
            exp.events[key] = (batch, line, 1)
    categories = _property_snapshots(conn, "categoryid")
    by_user: dict[int, list[RawEvent]] = defaultdict(list)
    for key in exp.events:
        by_user[key[1]].append(key)
    for user, keys in by_user.items():
        keys.sort()
        start, previous = None, None
        for key in keys:
            ts, _, event, item, _ = key
            category = _as_of_value(categories.get(item, []), ts)
            category = -1 if category is None else category
            exp.category_of_event[key] = category
            if previous is None or ts - previous > GAP_MS:
                start = ts
                exp.sessions[(user, start)] = []
            exp.sessions[(user, start)].append((ts, event, item, category))
            previous = ts
    return exp


# --------------------------------------------------------------------------- the scenario


@dataclass
class Built:
    target: Target
    expected: Expected
    incremental_runs: list[DbtRun]
    full_run: DbtRun
    differences: dict[str, tuple[int, int]]
    day_rows: int
    late: dict[str, list[list[str]]]


def _write_events(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(EVENTS_HEADER)
        writer.writerows(rows)


def _late_events(conn: psycopg.Connection, day_start_ms: int) -> dict[str, list[list[str]]]:
    """Hand-made events that hit the incremental edge cases, from the already loaded data."""
    # A visitor with two sessions before D that are closest together: fill the gap with an
    # event every 29 minutes, so the two sessions become one.
    gaps = conn.execute("""
        with e as (
            select visitorid, "timestamp" as ts,
                   lag("timestamp") over (partition by visitorid order by "timestamp") as prev
            from raw.events where "timestamp" < %(d)s)
        select visitorid, prev, ts from e where ts - prev > %(gap)s and ts - prev < 86400000
        order by ts - prev, visitorid limit 1""", {"d": day_start_ms, "gap": GAP_MS}).fetchone()
    assert gaps is not None, "the generated data has no visitor with two sessions on one day"
    visitor, end_first, start_second = gaps
    item = conn.execute("select min(itemid) from raw.events").fetchone()[0]
    step = 29 * 60 * 1000
    bridge = [[str(t), str(visitor), "view", str(item), ""] for t in range(end_first + step, start_second, step)]
    # An exact copy of an event already staged (a duplicate across files).
    dup = conn.execute('select "timestamp", visitorid, event, itemid, transactionid from raw.events '
                       'where "timestamp" < %s order by line_no limit 1', (day_start_ms,)).fetchone()
    duplicate = [[str(dup[0]), str(dup[1]), dup[2], str(dup[3]), "" if dup[4] is None else str(dup[4])]]
    # Ten minutes before a visitor's very first event (the session start moves earlier).
    first = conn.execute('select visitorid, min("timestamp") from raw.events where "timestamp" < %s '
                         'group by visitorid order by count(*) desc, visitorid limit 1', (day_start_ms,)).fetchone()
    earlier = [[str(first[1] - 10 * 60 * 1000), str(first[0]), "view", str(item), ""]]
    # A visitor never seen before, with a cart and a purchase.
    new_visitor = conn.execute("select max(visitorid) + 1 from raw.events").fetchone()[0]
    newcomer = [[str(day_start_ms - 5000), str(new_visitor), "addtocart", str(item), ""],
                [str(day_start_ms - 4000), str(new_visitor), "transaction", str(item), "999999"]]
    return {"bridge": bridge, "duplicate": duplicate, "earlier": earlier, "newcomer": newcomer}


def _snapshot(conn: psycopg.Connection) -> None:
    conn.execute("drop schema if exists core_incremental cascade; create schema core_incremental")
    for table in COMPARED:
        conn.execute(f"create table core_incremental.{table.replace('.', '__')} as select * from {table}")


def _differences(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """Per table: rows only in the incremental build, rows only in the full refresh."""
    out = {}
    for table in COMPARED:
        copy = f"core_incremental.{table.replace('.', '__')}"
        only_incremental = conn.execute(
            f"select count(*) from (select * from {copy} except all select * from {table}) s").fetchone()[0]
        only_full = conn.execute(
            f"select count(*) from (select * from {table} except all select * from {copy}) s").fetchone()[0]
        out[table] = (only_incremental, only_full)
    return out


@pytest.fixture(scope="module")
def built(base_target: Target, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    from aisle.generate import generate, split_events
    from aisle.load import load_paths

    data = tmp_path_factory.mktemp("core_data")
    generate(data, scale=SCALE, seed=SEED, progress=False)
    # Day D: a week before the last event, so the data before it is most of the history.
    with open(data / "events.csv") as f:
        last_ms = max(int(line.split(",", 1)[0]) for line in list(f)[1:])
    day = _utc_day(last_ms) - timedelta(days=7)
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
    first, second, late_dir = (tmp_path_factory.mktemp(n) for n in ("first", "second", "late"))
    for name in ("category_tree.csv", "item_properties_part1.csv", "item_properties_part2.csv"):
        (first / name).write_bytes((data / name).read_bytes())
    split_events(data / "events.csv", day_start, first / "events.csv", data / "events_from_d.csv")
    _, day_rows = split_events(data / "events_from_d.csv", day_start + 86_400_000,
                               second / "events.csv", data / "events_after_d.csv")
    assert day_rows > 0

    with throwaway_database(base_target, "core") as target:
        load_paths([first], target=target, progress=False)
        runs = [run_dbt(["build", *SELECT], quiet=True)]
        with connect(target) as conn:
            late = _late_events(conn, day_start)
        _write_events(late_dir / "events.csv", [row for rows in late.values() for row in rows])
        load_paths([second / "events.csv", late_dir / "events.csv"], target=target, progress=False)
        runs.append(run_dbt(["build", *SELECT], quiet=True))
        with connect(target, autocommit=True) as conn:
            _snapshot(conn)
        full = run_dbt(["build", "--full-refresh", *SELECT], quiet=True)
        with connect(target, autocommit=True) as conn:
            differences = _differences(conn)
            expected = _expected(conn)
        yield Built(target, expected, runs, full, differences, day_rows, late)


# --------------------------------------------------------------------------- tests


def test_every_dbt_test_passed(built: Built) -> None:
    """The three builds ran every data and unit test of the core models, and all passed."""
    for run in [*built.incremental_runs, built.full_run]:
        statuses = Counter(n.status for n in run.nodes if n.resource_type in ("test", "unit_test"))
        assert statuses and set(statuses) <= {"pass"}, statuses
        assert run.count("unit_test") >= 5
        assert run.count("test") >= 40


def test_fresh_tables_analyzed_by_the_build(built: Built) -> None:
    """Every table the last (full-refresh) build wrote has statistics from the build's own
    ANALYZE (the post-hook run after each model's commit: last_analyze, which autovacuum
    never sets), so the models after it planned with real row counts."""
    with connect(built.target) as conn:
        tables = dict(conn.execute(
            "select schemaname || '.' || relname, last_analyze is not null from pg_stat_user_tables "
            "where schemaname in ('staging', 'intermediate', 'marts', 'recs', 'seeds')").fetchall())
    assert {"staging.stg_retailrocket__events", "intermediate.int_events_sessionized",
            "marts.fct_sessions", "marts.dim_users"} <= tables.keys(), sorted(tables)
    assert [t for t, analyzed in tables.items() if not analyzed] == []


def test_second_build_was_incremental(built: Built) -> None:
    """The second build inserted only the touched visitors' tails, not every event again, and
    recomputed the decayed sums of the touched items and visitors only: the anchor moved
    (to the new day's last event), but not across a decay frame."""
    nodes = {n.name: n for n in built.incremental_runs[1].nodes}
    inserted = int(nodes["int_events_sessionized"].message.split()[-1])
    assert 0 < inserted < len(built.expected.events) / 2
    with connect(built.target) as conn:
        for model, table in [("int_item_event_totals", "intermediate.int_item_event_totals"),
                             ("int_user_category_affinity", "intermediate.int_user_category_affinity")]:
            rows = conn.execute(f"select count(*) from {table}").fetchone()[0]
            recomputed = int(nodes[model].message.split()[-1])
            assert 0 < recomputed < rows / 4, (model, recomputed, rows)


def test_incremental_equals_full_refresh(built: Built) -> None:
    """Every row of every incremental table equals the full refresh (EXCEPT ALL both ways)."""
    assert {t: d for t, d in built.differences.items() if d != (0, 0)} == {}


def test_deduplication_and_reconciliation(built: Built) -> None:
    """Staged events are the distinct natural keys; staged + removed copies = raw rows."""
    exp = built.expected
    with connect(built.target) as conn:
        staged = conn.execute(
            'select (date_part(\'epoch\', event_ts) * 1000)::bigint, user_id, event_type, item_id, transaction_id, '
            "batch_id, line_no, n_copies from staging.stg_retailrocket__events").fetchall()
        removed = conn.execute("select coalesce(sum(n_removed), 0) from "
                               "staging.stg_retailrocket__event_duplicates").fetchone()[0]
        n_unique_ids = conn.execute("select count(distinct event_id) from staging.stg_retailrocket__events"
                                    ).fetchone()[0]
    assert {tuple(r[:5]): tuple(r[5:]) for r in staged} == exp.events
    assert len(staged) == len(exp.events) == n_unique_ids
    assert len(staged) + removed == exp.raw_rows
    assert removed == sum(copies - 1 for _, _, copies in exp.events.values()) >= 2  # the generator's + ours
    key = tuple(int(v) if v.isdigit() else (v or None) for v in built.late["duplicate"][0])
    assert exp.events[key][2] >= 2


def test_sessions_match_brute_force(built: Built) -> None:
    """fct_sessions equals a Python sessionization of the deduplicated raw events."""
    exp = built.expected
    want = {}
    for (user, start), events in exp.sessions.items():
        types = Counter(e[1] for e in events)
        want[(user, start)] = (
            events[-1][0], len(events), types["view"], types["addtocart"], types["transaction"],
            len({e[2] for e in events}), len({e[3] for e in events}), types["transaction"] > 0)
    with connect(built.target) as conn:
        rows = conn.execute("""
            select user_id, (date_part('epoch', session_start) * 1000)::bigint,
                   (date_part('epoch', session_end) * 1000)::bigint, n_events, n_views, n_carts, n_purchases,
                   n_distinct_items, n_distinct_categories, is_converted, duration_seconds
            from marts.fct_sessions""").fetchall()
        shared = conn.execute("""
            select count(*) from (select session_id from intermediate.int_events_sessionized
                                  group by session_id having count(distinct user_id) > 1
                                      or count(distinct session_start_ts) > 1) s""").fetchone()[0]
    got = {(r[0], r[1]): tuple(r[2:10]) for r in rows}
    assert got == want
    assert all(r[10] * 1000 == r[2] - r[1] for r in rows)  # numeric(12, 3): exact milliseconds
    assert shared == 0
    # The late events did what they were made for: one session bridges the former two.
    bridge_user = int(built.late["bridge"][0][1])
    bridged = [k for k in want if k[0] == bridge_user and any(
        k[1] <= int(b[0]) <= want[k][0] for b in built.late["bridge"])]
    assert len(bridged) == 1


def test_category_as_of_event_time(built: Built) -> None:
    """Every event's category is the one valid at its time, its root the tree's root."""
    exp = built.expected
    with connect(built.target) as conn:
        tree = _paths(_tree(conn))
        rows = conn.execute("""
            select (date_part('epoch', event_ts) * 1000)::bigint, user_id, event_type, item_id, transaction_id,
                   category_id, root_category_id
            from marts.fct_events""").fetchall()
    assert len(rows) == len(exp.category_of_event)
    for *key, category, root in rows:
        assert category == exp.category_of_event[tuple(key)], key
        assert root == (tree[category][1] if category in tree else -1), key
    assert any(c == -1 for c in exp.category_of_event.values())  # the unknown bucket is exercised


def test_dim_categories_tree(built: Built) -> None:
    """Level, root and path of every category come from walking the tree; -1 is 'unknown'."""
    with connect(built.target) as conn:
        tree = _paths(_tree(conn))
        rows = conn.execute("select category_id, level, root_category_id, path, tree_status, n_events "
                            "from marts.dim_categories").fetchall()
    got = {r[0]: r[1:4] for r in rows if r[0] != -1}
    assert got == tree
    unknown = [r for r in rows if r[0] == -1]
    assert unknown and unknown[0][4] == "unknown" and unknown[0][2] == -1
    n_events = Counter(built.expected.category_of_event.values())
    assert {r[0]: r[5] for r in rows if r[5]} == dict(n_events)


def test_dim_users_segments(built: Built) -> None:
    """First/last seen, counts and the segment rules, per visitor."""
    per_user: dict[int, dict] = defaultdict(lambda: {"events": [], "sessions": 0})
    for (user, _), events in built.expected.sessions.items():
        per_user[user]["sessions"] += 1
        per_user[user]["events"].extend(events)
    want = {}
    for user, info in per_user.items():
        events = info["events"]
        types = Counter(e[1] for e in events)
        per_day = Counter(_utc_day(e[0]) for e in events)
        if max(per_day.values()) >= HEAVY_MIN_EVENTS:
            segment = "heavy"
        elif types["transaction"]:
            segment = "converting"
        elif info["sessions"] > 1:
            segment = "browsing"
        else:
            segment = "new"
        want[user] = (min(e[0] for e in events), max(e[0] for e in events), len(events), types["transaction"],
                      info["sessions"], segment)
    with connect(built.target) as conn:
        rows = conn.execute("""
            select user_id, (date_part('epoch', first_seen_ts) * 1000)::bigint,
                   (date_part('epoch', last_seen_ts) * 1000)::bigint, n_events, n_purchases, n_sessions, segment
            from marts.dim_users""").fetchall()
    assert {r[0]: tuple(r[1:]) for r in rows} == want
    assert {"new", "browsing", "converting"} <= {r[6] for r in rows}


def test_dim_items_current_category_and_availability(built: Built) -> None:
    """Current category (latest snapshot) and availability, and event counts, per item."""
    with connect(built.target) as conn:
        categories = _property_snapshots(conn, "categoryid")
        available = _property_snapshots(conn, "available")
        tree = _paths(_tree(conn))
        rows = conn.execute("select item_id, category_id, root_category_id, is_available, n_events, n_purchases "
                            "from marts.dim_items").fetchall()
    events = Counter(k[3] for k in built.expected.events)
    purchases = Counter(k[3] for k in built.expected.events if k[2] == "transaction")
    want = {}
    for item in set(events) | set(categories) | set(available):
        category = categories[item][-1][1] if item in categories else -1
        want[item] = (category, tree[category][1] if category in tree else -1,
                      available[item][-1][1] if item in available else None, events[item], purchases[item])
    assert {r[0]: tuple(r[1:]) for r in rows} == want


def test_agg_category_daily(built: Built) -> None:
    """Per day and category: counts, distinct visitors, sessions, converted sessions, rate."""
    cells: dict[tuple[date, int], dict] = defaultdict(lambda: {"types": Counter(), "users": set(),
                                                                "sessions": set(), "converted": set()})
    for (user, start), events in built.expected.sessions.items():
        for ts, event, _, category in events:
            cell = cells[(_utc_day(ts), category)]
            cell["types"][event] += 1
            cell["users"].add(user)
            cell["sessions"].add((user, start))
            if event == "transaction":
                cell["converted"].add((user, start))
    want = {k: (c["types"]["view"], c["types"]["addtocart"], c["types"]["transaction"], len(c["users"]),
                len(c["sessions"]), len(c["converted"]), len(c["converted"]) / len(c["sessions"]))
            for k, c in cells.items()}
    with connect(built.target) as conn:
        rows = conn.execute("select event_date, category_id, n_views, n_carts, n_purchases, n_visitors, "
                            "n_sessions, n_converted_sessions, conversion_rate from marts.agg_category_daily"
                            ).fetchall()
        roots = conn.execute("select sum(n_views), sum(n_purchases) from marts.agg_root_category_daily").fetchone()
    assert {(r[0], r[1]): tuple(r[2:]) for r in rows} == want
    assert roots == (sum(v[0] for v in want.values()), sum(v[2] for v in want.values()))
