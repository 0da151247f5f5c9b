"""The loader against a real PostgreSQL: every reject reason, reconciliation with an
independent per-line oracle, idempotency, --replace, gzip, bad headers, and atomicity
under a real SIGKILL.

All tests share one throwaway database (this module's); each test starts from an empty
schema raw, so they stay independent and fast.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

import aisle.load as L
from aisle.config import Target, project_root
from aisle.db import connect, drop_database, ensure_database

pytestmark = pytest.mark.server

EV_HEADER = b"timestamp,visitorid,event,itemid,transactionid"
IP_HEADER = b"timestamp,itemid,property,value"
CT_HEADER = b"categoryid,parentid"
RANGE_REASON = "timestamp out of range [2000-01-01, 2100-01-01)"
TS = 1433221332117  # 2015-06-02


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def db(base_target: Target):
    """This module's own database (dropped at the end)."""
    target = dc_replace(base_target, dbname=f"aisle_test_load_{os.getpid()}_{random.randrange(1 << 30):x}")
    ensure_database(target)
    yield target
    if not os.environ.get("AISLE_KEEP_TEST_DB"):
        drop_database(target)


@pytest.fixture
def target(db: Target) -> Target:
    """The module database with an empty schema raw."""
    with connect(db, autocommit=True) as conn:
        conn.execute("drop schema if exists raw cascade")
        L.ensure_raw_schema(conn)
    return db


def write(path: Path, header: bytes, lines: list[bytes], *, gz: bool = False, eol: bytes = b"\n",
          final_eol: bool = True) -> Path:
    data = header + eol + eol.join(lines) + (eol if final_eol and lines else b"")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def load(target: Target, *paths: Path, **kwargs) -> list[L.BatchResult]:
    return L.load_paths(list(paths), target=target, progress=False, **kwargs)


def q(target: Target, query: str, params: tuple | None = None) -> list[tuple]:
    with connect(target) as conn:
        return conn.execute(query, params).fetchall()


def events_of(target: Target, batch_id: int) -> list[tuple]:
    return q(target, 'select line_no, "timestamp", visitorid, event, itemid, transactionid from raw.events '
                     "where batch_id = %s order by line_no", (batch_id,))


def rejects_of(target: Target, batch_id: int) -> list[tuple]:
    return q(target, "select line_no, raw_line, reason from raw.load_rejects where batch_id = %s order by line_no",
             (batch_id,))


GOOD_EVENTS = [b"1433221332117,257597,view,355908,", b"1433224214164,992329,addtocart,248676,",
               b"1433221999827,111016,transaction,318965,4000"]
GOOD_EVENT_ROWS = [(TS, 257597, "view", 355908, None), (1433224214164, 992329, "addtocart", 248676, None),
                   (1433221999827, 111016, "transaction", 318965, 4000)]


# --------------------------------------------------------------------------- an independent oracle

_INTEGER = re.compile(r"-?[0-9]+")


def _int_reason(value: str, name: str, required: bool = True) -> str | None:
    if value == "":
        return f"empty {name}" if required else None
    if not _INTEGER.fullmatch(value):
        return f"non-integer {name}"
    if not -(2**63) <= int(value) < 2**63:
        return f"{name} out of bigint range"
    return None


def _decode(raw: bytes) -> tuple[str, str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace").replace("\x00", "\ufffd"), "invalid UTF-8"
    if "\x00" in text:
        return text.replace("\x00", "\ufffd"), "NUL byte in line"
    return text, None


def oracle(kind: str, data: bytes, lo: int = 946684800000, hi: int = 4102444800000,
           range_reason: str = RANGE_REASON) -> tuple[list[tuple], list[tuple], Counter]:
    """Per-line reference implementation of the rules: (good rows, rejects, summarized counts)."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")[1:]
    if lines and lines[-1] == b"":
        lines.pop()
    good, rejects, counts = [], [], Counter()
    n_cols = {"events": 5, "item_properties": 4, "category_tree": 2}[kind]
    for line_no, raw in enumerate(lines, start=2):
        text, reason = _decode(raw)
        f = text.split(",")
        if reason is None and text == "":
            reason = "empty line"
        if reason is None and len(f) != n_cols:
            reason = f"wrong column count: expected {n_cols}, got {len(f)}"
        if reason is None and kind == "events":
            reason = _int_reason(f[0], "timestamp")
            if reason is None and not lo <= int(f[0]) < hi:
                reason = range_reason
            reason = reason or _int_reason(f[1], "visitorid")
            if reason is None and f[2] not in ("view", "addtocart", "transaction"):
                reason = "unknown event type"
            reason = reason or _int_reason(f[3], "itemid") or _int_reason(f[4], "transactionid", required=False)
            if reason is None and f[2] == "transaction" and f[4] == "":
                reason = "transaction without transactionid"
            if reason is None and f[2] != "transaction" and f[4] != "":
                reason = "transactionid on a non-transaction event"
            if reason is None:
                good.append((line_no, int(f[0]), int(f[1]), f[2], int(f[3]), int(f[4]) if f[4] else None))
        elif reason is None and kind == "item_properties":
            reason = _int_reason(f[0], "timestamp") or _int_reason(f[1], "itemid")
            if reason is None and f[2] == "":
                reason = "empty property"
            if reason is None and f[2] == "categoryid":
                reason = _int_reason(f[3], "categoryid value", required=False) if f[3] else \
                    "non-integer categoryid value"
            if reason is None and f[2] == "available" and f[3] not in ("0", "1"):
                reason = "available value not 0 or 1"
            if reason is None:
                if f[2] in ("categoryid", "available"):
                    good.append((line_no, int(f[0]), int(f[1]), f[2], f[3]))
                else:
                    counts[f[2]] += 1
        elif reason is None and kind == "category_tree":
            reason = _int_reason(f[0], "categoryid") or _int_reason(f[1], "parentid", required=False)
            if reason is None:
                good.append((line_no, int(f[0]), int(f[1]) if f[1] else None))
        if reason is not None:
            rejects.append((line_no, text, reason))
    return good, rejects, counts


# --------------------------------------------------------------------------- one test per reason

EVENT_CASES = [
    (b"1433221332117,1,view,5", "wrong column count: expected 5, got 4"),
    (b"1433221332117,1,view,5,,", "wrong column count: expected 5, got 6"),
    (b"", "empty line"),
    (b",1,view,5,", "empty timestamp"),
    (b"2015-06-02,1,view,5,", "non-integer timestamp"),
    (b"1433221332117.5,1,view,5,", "non-integer timestamp"),
    (b"99999999999999999999,1,view,5,", "timestamp out of bigint range"),
    (b"1433221332,1,view,5,", RANGE_REASON),  # seconds, not milliseconds: 1970
    (b"4102444800000,1,view,5,", RANGE_REASON),  # exactly the (exclusive) upper bound
    (b"0001433221332,1,view,5,", RANGE_REASON),  # non-canonical: reasoned in SQL
    (b"1433221332117,,view,5,", "empty visitorid"),
    (b"1433221332117,v1,view,5,", "non-integer visitorid"),
    (b"1433221332117,1,click,5,", "unknown event type"),
    (b"1433221332117,1,View,5,", "unknown event type"),
    (b"1433221332117,1,,5,", "unknown event type"),
    (b"1433221332117,1,view,,", "empty itemid"),
    (b"1433221332117,1,view,5x,", "non-integer itemid"),
    (b"1433221332117,1,transaction,5,", "transaction without transactionid"),
    (b"1433221332117,1,view,5,77", "transactionid on a non-transaction event"),
    (b"1433221332117,1,addtocart,5,77", "transactionid on a non-transaction event"),
    (b"1433221332117,1,transaction,5,t77", "non-integer transactionid"),
    (b"1433221332117,1,vi\xffew,5,", "invalid UTF-8"),
    (b"1433221332117,1,view,5\x00,", "NUL byte in line"),
    (b'"1433221332117",1,view,5,', "non-integer timestamp"),  # no CSV quoting in RetailRocket files
]


@pytest.mark.parametrize(("bad", "reason"), EVENT_CASES, ids=[c[1] + f" #{i}" for i, c in enumerate(EVENT_CASES)])
def test_event_reject_reason(target: Target, tmp_path: Path, bad: bytes, reason: str) -> None:
    path = write(tmp_path / "events.csv", EV_HEADER, [GOOD_EVENTS[0], GOOD_EVENTS[1], bad, GOOD_EVENTS[2]])
    [r] = load(target, path)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 4, 3, 1)
    expected_text = bad.decode("utf-8", "replace").replace("\x00", "\ufffd")
    assert rejects_of(target, r.batch_id) == [(4, expected_text, reason)]
    assert events_of(target, r.batch_id) == [(2, *GOOD_EVENT_ROWS[0]), (3, *GOOD_EVENT_ROWS[1]),
                                             (5, *GOOD_EVENT_ROWS[2])]


def test_bad_utf8_keeps_the_text_with_replacement_characters(target: Target, tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", EV_HEADER, [b"1433221332117,1,caf\xc3\xa9\xff,5,"])
    [r] = load(target, path)
    assert rejects_of(target, r.batch_id) == [(2, "1433221332117,1,caf\u00e9\ufffd,5,", "invalid UTF-8")]


def test_valid_but_unusual_integers_are_loaded(target: Target, tmp_path: Path) -> None:
    """Leading zeros and signs are integers: SQL (not the fast path) accepts them."""
    path = write(tmp_path / "events.csv", EV_HEADER, [b"01433221332117,007,view,-5,", GOOD_EVENTS[0],
                                                      b"1433221332117,9223372036854775807,transaction,1,0042"])
    [r] = load(target, path)
    assert (r.rows_loaded, r.rows_rejected) == (3, 0)
    assert events_of(target, r.batch_id) == [(2, TS, 7, "view", -5, None), (3, *GOOD_EVENT_ROWS[0]),
                                             (4, TS, 2**63 - 1, "transaction", 1, 42)]


def test_timestamp_range_is_configurable(target: Target, tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS)
    [r] = load(target, path, min_ts=datetime(2015, 6, 2, 6, 0, tzinfo=timezone.utc), max_ts=datetime(2016, 1, 1))
    reason = "timestamp out of range [2015-06-02 06:00:00, 2016-01-01)"
    # 1433221332117 = 05:02:12Z and 1433221999827 = 05:13:19Z are before 06:00; 1433224214164 = 05:50:14Z too
    assert [(n, why) for n, _, why in rejects_of(target, r.batch_id)] == [(2, reason), (3, reason), (4, reason)]
    [r2] = load(target, write(tmp_path / "events2.csv", EV_HEADER, GOOD_EVENTS[:2]),
                min_ts=datetime(2015, 6, 2, 5, 30))
    assert [n for n, *_ in events_of(target, r2.batch_id)] == [3]
    assert rejects_of(target, r2.batch_id) == [(2, GOOD_EVENTS[0].decode(), "timestamp out of range "
                                                "[2015-06-02 05:30:00, 2100-01-01)")]
    with pytest.raises(L.LoadError, match="timestamp range is empty"):
        load(target, path, min_ts=datetime(2020, 1, 1), max_ts=datetime(2010, 1, 1))


PROPERTY_CASES = [
    (b"1435460400000,460429,categoryid", "wrong column count: expected 4, got 3"),
    (b"1435460400000,460429,888,1 n2,3", "wrong column count: expected 4, got 5"),
    (b"x1435460400000,460429,888,1", "non-integer timestamp"),
    (b",460429,888,1", "empty timestamp"),
    (b"1435460400000,,888,1", "empty itemid"),
    (b"1435460400000,46o429,888,1", "non-integer itemid"),
    (b"1435460400000,460429,,1", "empty property"),
    (b"1435460400000,460429,categoryid,", "non-integer categoryid value"),
    (b"1435460400000,460429,categoryid,13a8", "non-integer categoryid value"),
    (b"1435460400000,460429,available,2", "available value not 0 or 1"),
    (b"1435460400000,460429,available,", "available value not 0 or 1"),
    (b"1435460400000,460429,888,n\xff12", "invalid UTF-8"),  # a hashed property: only counted, still checked
    (b"1435460400000,460429,888,n\x0012", "NUL byte in line"),
]
GOOD_PROPERTIES = [b"1435460400000,460429,categoryid,1338", b"1441508400000,206783,888,1116713 960601 n277.200",
                   b"1439089200000,395014,400,n552.000 639502 n720.000 424566", b"1431226800000,59481,790,n15360.000",
                   b"1431831600000,156781,available,0", b"1436065200000,285026,available,1"]


@pytest.mark.parametrize(("bad", "reason"), PROPERTY_CASES,
                         ids=[c[1] + f" #{i}" for i, c in enumerate(PROPERTY_CASES)])
def test_item_property_reject_reason(target: Target, tmp_path: Path, bad: bytes, reason: str) -> None:
    path = write(tmp_path / "item_properties_part1.csv", IP_HEADER, GOOD_PROPERTIES[:3] + [bad] + GOOD_PROPERTIES[3:])
    [r] = load(target, path)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected, r.rows_summarized) == ("loaded", 7, 6, 1, 3)
    assert rejects_of(target, r.batch_id) == [(5, bad.decode("utf-8", "replace").replace("\x00", "\ufffd"), reason)]
    assert q(target, 'select line_no, "timestamp", itemid, property, value from raw.item_properties '
                     "where batch_id = %s order by line_no", (r.batch_id,)) == [
        (2, 1435460400000, 460429, "categoryid", "1338"), (7, 1431831600000, 156781, "available", "0"),
        (8, 1436065200000, 285026, "available", "1")]
    assert q(target, "select property, n_rows from raw.item_property_counts where batch_id = %s order by 1",
             (r.batch_id,)) == [("400", 1), ("790", 1), ("888", 1)]


CATEGORY_CASES = [
    (b"1016", "wrong column count: expected 2, got 1"),
    (b",213", "empty categoryid"),
    (b"cat7,213", "non-integer categoryid"),
    (b"7,x213", "non-integer parentid"),
    (b"7,2.5", "non-integer parentid"),
]


@pytest.mark.parametrize(("bad", "reason"), CATEGORY_CASES, ids=[c[1] for c in CATEGORY_CASES])
def test_category_reject_reason(target: Target, tmp_path: Path, bad: bytes, reason: str) -> None:
    path = write(tmp_path / "category_tree.csv", CT_HEADER, [b"1016,213", bad, b"213,"])
    [r] = load(target, path)
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (3, 2, 1)
    assert rejects_of(target, r.batch_id) == [(3, bad.decode(), reason)]
    assert q(target, "select line_no, categoryid, parentid from raw.category_tree where batch_id = %s "
                     "order by line_no", (r.batch_id,)) == [(2, 1016, 213), (4, 213, None)]


# --------------------------------------------------------------------------- reconciliation


def _random_event_line(rng: random.Random) -> bytes:
    ts, vis, item = rng.randrange(1430622000000, 1442545200000), rng.randrange(10**6), rng.randrange(5 * 10**5)
    good = [f"{ts},{vis},view,{item},", f"{ts},{vis},addtocart,{item},",
            f"{ts},{vis},transaction,{item},{rng.randrange(20000)}"]
    if rng.random() < 0.9:
        return rng.choice(good).encode()
    bad = [f"{ts},{vis},view,{item}", f"{ts},{vis},click,{item},", f"{ts},,view,{item},", f"{ts},{vis},view,,",
           f"{ts},{vis},transaction,{item},", f"{ts},{vis},view,{item},5", f"{ts // 1000},{vis},view,{item},",
           f"0{ts},{vis},view,{item},", f"{ts},0{vis},addtocart,{item},", f"{ts}.0,{vis},view,{item},", "",
           f"{ts},{vis},view,{item},,", f"{ts},{vis},transaction,{item},x1", f"{ts}9999999,{vis},view,{item},"]
    line = rng.choice(bad).encode()
    return line if rng.random() < 0.95 else line + b"\xfe"


def test_events_reconcile_exactly_across_many_chunks(target: Target, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Small chunks mix the fast path, the slow path and SQL reasoning in one file; line
    numbers, rows and rejects must equal the per-line oracle exactly."""
    monkeypatch.setattr(L, "CHUNK_BYTES", 1500)
    rng = random.Random(7)
    lines = [_random_event_line(rng) if i % 97 > 60 else rng.choice(GOOD_EVENTS) for i in range(6000)]
    path = write(tmp_path / "events.csv", EV_HEADER, lines, final_eol=False)
    good, rejects, _ = oracle("events", path.read_bytes())
    [r] = load(target, path)
    assert len(good) > 4000 and len(rejects) > 100  # the data really mixes both
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (6000, len(good), len(rejects))
    assert events_of(target, r.batch_id) == good
    assert rejects_of(target, r.batch_id) == rejects
    assert q(target, "select rows_read, rows_loaded, rows_rejected, status from raw.load_batches") == [
        (6000, len(good), len(rejects), "finished")]


def test_item_properties_reconcile_exactly(target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "CHUNK_BYTES", 2000)
    rng = random.Random(11)
    bad = [c[0] for c in PROPERTY_CASES] + [b"1435460400000,460429,categoryid,007", b"01435460400000,1,5,v"]
    lines = [rng.choice(bad) if rng.random() < 0.03 else rng.choice(GOOD_PROPERTIES) for _ in range(5000)]
    path = write(tmp_path / "item_properties_part2.csv", IP_HEADER, lines, eol=b"\r\n")
    good, rejects, counts = oracle("item_properties", path.read_bytes())
    [r] = load(target, path)
    assert (r.rows_read, r.rows_loaded, r.rows_rejected, r.rows_summarized) == (
        5000, len(good) + sum(counts.values()), len(rejects), sum(counts.values()))
    assert q(target, 'select line_no, "timestamp", itemid, property, value from raw.item_properties '
                     "order by line_no") == good
    assert rejects_of(target, r.batch_id) == rejects
    assert dict(q(target, "select property, n_rows from raw.item_property_counts")) == dict(counts)


def test_category_tree_reconciles(target: Target, tmp_path: Path) -> None:
    lines = [b"%d,%d" % (i, i // 3) if i >= 25 else b"%d," % i for i in range(1669)] + [b"x,1"]
    path = write(tmp_path / "category_tree.csv", CT_HEADER, lines)
    good, rejects, _ = oracle("category_tree", path.read_bytes())
    [r] = load(target, path)
    assert (r.rows_read, r.rows_loaded, r.rows_rejected) == (1670, 1669, 1)
    assert q(target, "select line_no, categoryid, parentid from raw.category_tree order by line_no") == good
    assert rejects_of(target, r.batch_id) == rejects


# --------------------------------------------------------------------------- idempotency, replace, gzip


def test_same_file_is_skipped_and_a_new_file_appends(target: Target, tmp_path: Path) -> None:
    day1 = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS + [b"bad"])
    [r1] = load(target, day1)
    [r2] = load(target, day1)
    assert r2.status == "skipped" and r2.batch_id == r1.batch_id
    assert f"already loaded as batch {r1.batch_id}" in r2.message and "--replace" in r2.message
    assert q(target, "select count(*) from raw.events") == [(3,)]
    assert q(target, "select count(*) from raw.load_batches") == [(1,)]
    # The same bytes under another name are the same file.
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "events.csv").write_bytes(day1.read_bytes())
    assert [r.status for r in load(target, copy)] == ["skipped"]
    # The next day's events append.
    day2 = write(tmp_path / "events_2015-09-19.csv", EV_HEADER, [b"1442620800000,5,view,6,"])
    [r3] = load(target, day2)
    assert r3.status == "loaded" and r3.batch_id > r1.batch_id
    assert q(target, "select batch_id, count(*) from raw.events group by 1 order by 1") == [
        (r1.batch_id, 3), (r3.batch_id, 1)]


def test_replace_reloads_and_marks_the_old_batch(target: Target, tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS + [b"bad"])
    ip = write(tmp_path / "item_properties_part1.csv", IP_HEADER, GOOD_PROPERTIES)
    old_ev, old_ip = load(target, path, ip)[::-1]
    new_ip, new_ev = load(target, path, ip, replace=True)
    assert new_ev.status == "loaded" and new_ev.batch_id > old_ev.batch_id
    assert new_ev.message == f"replaced batch {old_ev.batch_id}"
    assert q(target, "select batch_id, status from raw.load_batches order by 1") == [
        (old_ip.batch_id, "replaced"), (old_ev.batch_id, "replaced"), (new_ip.batch_id, "finished"),
        (new_ev.batch_id, "finished")]
    assert q(target, "select batch_id, count(*) from raw.events group by 1") == [(new_ev.batch_id, 3)]
    assert q(target, "select batch_id, count(*) from raw.load_rejects group by 1") == [(new_ev.batch_id, 1)]
    assert q(target, "select distinct batch_id from raw.item_property_counts") == [(new_ip.batch_id,)]
    assert q(target, "select batch_id, count(*) from raw.item_properties group by 1") == [(new_ip.batch_id, 3)]
    assert q(target, "select count(*) from pg_class where relnamespace = 'raw'::regnamespace "
                     "and relname in (%s, %s)", (f"events_b{old_ev.batch_id}", f"item_properties_b{old_ip.batch_id}")
             ) == [(0,)]
    # The replaced batch keeps its history.
    assert q(target, "select rows_read, rows_loaded, rows_rejected from raw.load_batches where batch_id = %s",
             (old_ev.batch_id,)) == [(4, 3, 1)]


def test_gzip_loads_the_same_rows(target: Target, tmp_path: Path) -> None:
    lines = GOOD_EVENTS * 50 + [b"x"]
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    plain = write(tmp_path / "plain" / "events.csv", EV_HEADER, lines)
    write(tmp_path / "gz" / "events.csv.gz", EV_HEADER, lines, gz=True)
    [a] = load(target, plain)
    [b] = load(target, tmp_path / "gz")  # a folder with the .gz file
    assert b.file.name == "events.csv.gz" and (b.rows_read, b.rows_loaded, b.rows_rejected) == (151, 150, 1)
    assert events_of(target, a.batch_id) == events_of(target, b.batch_id)
    assert len(events_of(target, b.batch_id)) == 150
    assert rejects_of(target, b.batch_id) == [(152, "x", "wrong column count: expected 5, got 1")]


def test_corrupt_gzip_fails_that_file_only(target: Target, tmp_path: Path) -> None:
    data = gzip.compress(EV_HEADER + b"\n" + b"\n".join(GOOD_EVENTS * 20000) + b"\n", mtime=0)
    bad = tmp_path / "events.csv.gz"
    bad.write_bytes(data[: len(data) // 2])  # truncated stream
    tree = write(tmp_path / "category_tree.csv", CT_HEADER, [b"1,"])
    results = load(target, bad, tree)
    assert [(r.kind, r.status) for r in results] == [("category_tree", "loaded"), ("events", "failed")]
    assert "events.csv.gz" in results[1].message
    assert q(target, "select file_kind from raw.load_batches") == [("category_tree",)]
    assert q(target, "select count(*) from raw.events") == [(0,)]


# --------------------------------------------------------------------------- headers, empty files, folders


def test_wrong_header_is_an_error_and_nothing_is_loaded(target: Target, tmp_path: Path) -> None:
    good = write(tmp_path / "category_tree.csv", CT_HEADER, [b"1,"])
    bad = write(tmp_path / "events.csv", b"ts,visitor,event,item,transaction", GOOD_EVENTS)
    with pytest.raises(L.LoadError) as exc:
        load(target, good, bad)
    assert str(bad) in str(exc.value)
    assert "'timestamp,visitorid,event,itemid,transactionid'" in str(exc.value)
    assert q(target, "select count(*) from raw.load_batches") == [(0,)]
    unknown = write(tmp_path / "stuff.csv", b"a,b", [b"1,2"])
    with pytest.raises(L.LoadError, match=r"stuff\.csv: unrecognized header 'a,b'; expected one of"):
        load(target, unknown)


def test_header_detects_the_kind_whatever_the_name(target: Target, tmp_path: Path) -> None:
    path = write(tmp_path / "tree-2015.csv", CT_HEADER, [b"1,", b"2,1"])
    [r] = load(target, path)
    assert (r.kind, r.rows_loaded) == ("category_tree", 2)
    # A BOM and CRLF line ends are fine.
    bom = write(tmp_path / "ev.csv", b"\xef\xbb\xbf" + EV_HEADER, GOOD_EVENTS, eol=b"\r\n")
    [r] = load(target, bom)
    assert (r.kind, r.rows_read, r.rows_loaded) == ("events", 3, 3)
    assert events_of(target, r.batch_id) == [(i + 2, *row) for i, row in enumerate(GOOD_EVENT_ROWS)]


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "gz"])
def test_empty_file_is_an_error(target: Target, tmp_path: Path, gz: bool) -> None:
    path = tmp_path / ("events.csv.gz" if gz else "events.csv")
    path.write_bytes(gzip.compress(b"") if gz else b"")
    with pytest.raises(L.LoadError, match=r"events\.csv(\.gz)?: the file is empty; expected the header line "
                                          r"'timestamp,visitorid,event,itemid,transactionid'"):
        load(target, path)
    assert q(target, "select count(*) from raw.load_batches") == [(0,)]


def test_header_only_file_loads_zero_rows(target: Target, tmp_path: Path) -> None:
    [r] = load(target, write(tmp_path / "events.csv", EV_HEADER, []))
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 0, 0, 0)


def test_folder_loads_in_kind_order(target: Target, tmp_path: Path) -> None:
    write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS)
    write(tmp_path / "item_properties_part2.csv", IP_HEADER, GOOD_PROPERTIES[3:])
    write(tmp_path / "item_properties_part1.csv.gz", IP_HEADER, GOOD_PROPERTIES[:3], gz=True)
    write(tmp_path / "category_tree.csv", CT_HEADER, [b"1,"])
    write(tmp_path / "notes.csv", b"whatever", [b"x"])  # not a RetailRocket name: ignored
    results = load(target, tmp_path)
    assert [r.file.name for r in results] == ["category_tree.csv", "item_properties_part1.csv.gz",
                                              "item_properties_part2.csv", "events.csv"]
    assert [r.batch_id for r in results] == sorted(r.batch_id for r in results)
    assert q(target, "select count(*) from raw.item_properties") == [(3,)]
    write(tmp_path / "events.csv.gz", EV_HEADER, GOOD_EVENTS, gz=True)
    with pytest.raises(L.LoadError, match="both events.csv and events.csv.gz"):
        load(target, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(L.LoadError, match="no RetailRocket files"):
        load(target, tmp_path / "empty")


# --------------------------------------------------------------------------- CLI and summary


def test_cli_load_options_and_exit_codes(target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aisle.cli import cli

    monkeypatch.setenv("AISLE_DBNAME", target.dbname)
    monkeypatch.setenv("AISLE_TARGET", target.name)
    path = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS)
    res = CliRunner().invoke(cli, ["load", str(path), "--min-ts", "2015-06-02T05:30:00"])
    assert res.exit_code == 0, res.output
    assert "events.csv" in res.output and "loaded" in res.output
    assert q(target, "select reason, count(*) from raw.load_rejects group by 1") == [
        ("timestamp out of range [2015-06-02 05:30:00, 2100-01-01)", 2)]
    res = CliRunner().invoke(cli, ["load", str(path)])
    assert res.exit_code == 0 and "skipped" in res.output
    res = CliRunner().invoke(cli, ["load", str(path), "--min-ts", "2020-01-01", "--max-ts", "2010-01-01"])
    assert res.exit_code == 1 and "timestamp range is empty" in res.output


def test_cli_wrong_header_exit_code_1(target: Target, tmp_path: Path) -> None:
    bad = write(tmp_path / "category_tree.csv", b"id,parent", [b"1,"])
    env = {**os.environ, "AISLE_DBNAME": target.dbname, "AISLE_TARGET": target.name}
    proc = subprocess.run([sys.executable, "-m", "aisle.cli", "load", str(bad)], env=env, capture_output=True,
                          text=True, cwd=project_root(), timeout=60)
    assert proc.returncode == 1
    assert "category_tree.csv: wrong header 'id,parent'; expected 'categoryid,parentid'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_load_summary(target: Target, tmp_path: Path) -> None:
    assert set(L.load_summary(target)["tables"].values()) == {0}
    with connect(target, autocommit=True) as conn:
        conn.execute("drop schema raw cascade")
    assert L.load_summary(target)["tables"] == {}
    ev = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS + [b"x", b"1433221332117,2,click,3,"])
    ip = write(tmp_path / "item_properties_part1.csv", IP_HEADER, GOOD_PROPERTIES)
    load(target, ev, ip)
    s = L.load_summary(target)
    assert s["tables"] == {"events": 3, "item_properties": 3, "item_property_counts": 3, "category_tree": 0,
                           "load_rejects": 2, "load_batches": 2, "rows_summarized": 3}
    assert s["rejects_by_reason"] == {"unknown event type": 1, "wrong column count: expected 5, got 1": 1}
    assert s["batch_status"] == {"finished": 2}
    assert (s["rows_read"], s["rows_loaded"], s["rows_rejected"]) == (11, 9, 2)
    assert [(b["file_name"], b["rows_read"], b["rows_loaded"], b["rows_rejected"]) for b in s["batches"]] == [
        ("item_properties_part1.csv", 6, 6, 0), ("events.csv", 5, 3, 2)]


def test_rows_inserted_by_hand_land_in_the_default_partition(target: Target) -> None:
    with connect(target, autocommit=True) as conn:
        batch = conn.execute("insert into raw.load_batches (file_name, file_path, file_kind, sha256, size_bytes, "
                             "started_at, status) values ('fixture', '/x', 'events', '', 0, now(), 'finished') "
                             "returning batch_id").fetchone()[0]
        conn.execute("insert into raw.events values (%s, 2, 1433221332117, 1, 'view', 2, null)", (batch,))
        assert conn.execute("select tableoid::regclass::text from raw.events").fetchall() == [("raw.events_default",)]


def test_an_old_unpartitioned_raw_layout_is_refused_with_a_fix(target: Target, tmp_path: Path) -> None:
    with connect(target, autocommit=True) as conn:
        conn.execute("drop table raw.events cascade")
        conn.execute("create table raw.events (batch_id bigint, line_no bigint)")
    with pytest.raises(L.LoadError, match=r"raw\.events predate\(s\) the partitioned raw layout.*drop schema raw"):
        load(target, write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS))


# --------------------------------------------------------------------------- atomicity under a real kill


def _big_events_file(path: Path, n_lines: int) -> Path:
    block = b"".join(b"%d,%d,view,%d,\n" % (1433221332117 + i, i, i % 5000) for i in range(10000))
    with open(path, "wb") as f:
        f.write(EV_HEADER + b"\n")
        for _ in range(n_lines // 10000):
            f.write(block)
    return path


def test_kill_mid_file_leaves_nothing(target: Target, tmp_path: Path) -> None:
    big = _big_events_file(tmp_path / "events.csv", 2_000_000)
    env = {**os.environ, "AISLE_DBNAME": target.dbname, "AISLE_TARGET": target.name}
    proc = subprocess.Popen([sys.executable, "-m", "aisle.cli", "load", str(big)], env=env, cwd=project_root(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        copying = False
        with connect(target, autocommit=True) as conn:
            while time.monotonic() < deadline and proc.poll() is None:
                row = conn.execute("select max(tuples_processed) from pg_stat_progress_copy where datname = %s",
                                   (target.dbname,)).fetchone()
                if row and (row[0] or 0) > 0:
                    copying = True
                    break
                time.sleep(0.01)
        assert copying, f"the load never reached COPY (exit {proc.poll()}): {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert q(target, "select count(*) from raw.load_batches") == [(0,)]
    assert q(target, "select count(*) from raw.events") == [(0,)]
    assert q(target, "select count(*) from pg_class where relnamespace = 'raw'::regnamespace "
                     "and relname like 'events_b%%'") == [(0,)]
    # The same file then loads completely (the dead session's locks are gone).
    [r] = load(target, big)
    assert (r.status, r.rows_read, r.rows_loaded, r.rows_rejected) == ("loaded", 2_000_000, 2_000_000, 0)
    assert q(target, "select count(*), min(line_no), max(line_no) from raw.events") == [(2_000_000, 2, 2_000_001)]
    assert q(target, "select status, rows_read from raw.load_batches") == [("finished", 2_000_000)]


def test_database_unavailable_is_a_clean_error(tmp_path: Path, base_target: Target) -> None:
    from aisle.db import DatabaseUnavailable

    path = write(tmp_path / "events.csv", EV_HEADER, GOOD_EVENTS)
    nowhere = dc_replace(base_target, host="/nonexistent-socket-dir", port=1)
    with pytest.raises(DatabaseUnavailable):
        load(nowhere, path)


def test_reason_list_is_documented() -> None:
    for _, reason in EVENT_CASES + PROPERTY_CASES + CATEGORY_CASES:
        assert reason in L.REASONS or reason.startswith("wrong column count"), reason
