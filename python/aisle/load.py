"""``aisle load``: the RetailRocket files into schema ``raw``, validated, with a quarantine.

One file is one transaction: its ``raw.load_batches`` row, its rows and its rejects
commit together or not at all, so a killed load leaves nothing behind. A file whose
sha256 was loaded before is skipped (``replace=True`` reloads it and marks the old
batch ``replaced``); any other file is appended as a new batch.

How it stays fast (no row-by-row Python on clean data, no per-row SQL functions):

* The file is streamed in large chunks cut at line ends (``.csv`` or ``.csv.gz``).
* Python validates a whole chunk with ONE compiled regular expression that accepts
  only canonical good lines (plain non-negative integers without leading zeros, a
  known event type, the transaction rules, ...). Such a chunk goes unchanged to
  ``COPY ... (FORMAT csv, FREEZE)``.
* The target is a new partition ``raw.<table>_b<batch_id>`` created in the same
  transaction: with ``wal_level=minimal`` (the embedded server) its data skips the
  WAL, and ``FREEZE`` spares every later reader the hint-bit writes. Its defaults
  supply ``batch_id`` and ``line_no`` (a sequence re-based per run of clean chunks),
  so Python never touches single lines. At the end it is ATTACHed to the parent.
* Only a chunk that fails the regex is split into lines; its canonical lines still go
  to COPY (with explicit line numbers) and every other line goes, UTF-8-decoded with
  replacement characters, to a temporary table. ONE set-based SQL statement per file
  then gives each of those lines the first failing reason (a CASE), quarantines the
  bad ones and inserts the ones that are valid after all (e.g. ``007``).
* The plausible timestamp range is checked in SQL on the typed rows (a set-based
  DELETE ... RETURNING into ``raw.load_rejects``), so it stays configurable.
* ``item_properties``: the same regex pass yields every line's property name
  (``re.findall``), counted with ``collections.Counter``. Only ``categoryid`` and
  ``available`` lines (about 11 %) are sent to PostgreSQL; the hashed properties are
  kept as counts in ``raw.item_property_counts`` (and count as loaded). This is the
  documented choice: the warehouse uses nothing else, and the ~20M-row file loads in
  seconds instead of minutes.

Every reason is a fixed string (the raw line is kept next to it), so rejects group
well: see :data:`REASONS`.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from aisle.config import Target
from aisle.db import DatabaseUnavailable, connect

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_MIN_TS = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_TS = datetime(2100, 1, 1, tzinfo=UTC)
CHUNK_BYTES = 8 << 20
KIND_ORDER = ("category_tree", "item_properties", "events")
KEPT_PROPERTIES = ("categoryid", "available")
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


class LoadError(Exception):
    """An input problem that stops the load before a file is loaded (exit code 1)."""


@dataclass
class BatchResult:
    """What happened to one file."""

    file: Path
    kind: str
    status: str  # 'loaded' | 'skipped' (same sha256 already finished) | 'failed'
    rows_read: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    seconds: float = 0.0
    batch_id: int | None = None
    message: str = ""
    rows_summarized: int = 0  # item_properties rows kept only as counts (part of rows_loaded)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step (for the bench)

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- file kinds

_INT = rb"(?:0|[1-9][0-9]{0,17})"  # canonical, always fits a bigint
_EVENT_LINE = (_INT + rb"," + _INT + rb",(?:view," + _INT + rb",|addtocart," + _INT + rb",|transaction,"
               + _INT + rb"," + _INT + rb")")
_PROPERTY_LINE = _INT + rb"," + _INT + rb",([^,\n\x00]+),([^,\n\x00]*)"
_CATEGORY_LINE = _INT + rb",(?:" + _INT + rb")?"


@dataclass(frozen=True)
class FileKind:
    """One RetailRocket file format: header, target table, fast-path regexes, SQL rules."""

    name: str
    header: tuple[str, ...]
    columns: tuple[str, ...]  # target columns in file order
    line_re: re.Pattern[bytes]  # one canonical good line (without its newline)
    chunk_re: re.Pattern[bytes]  # a whole chunk of canonical good lines
    # (condition, reason) pairs in the order they are tested; f is the array of fields
    rules: tuple[tuple[str, str], ...] = ()
    select: tuple[str, ...] = ()  # typed expressions over f, one per column

    @property
    def header_text(self) -> str:
        return ",".join(self.header)


def _int_rules(expr: str, name: str, required: bool = True) -> list[tuple[str, str]]:
    """Checks of one integer field: empty, not an integer, beyond bigint."""
    guard = "" if required else f"{expr} <> '' and "
    rules = [(f"{expr} = ''", f"empty {name}")] if required else []
    return rules + [
        (f"{guard}{expr} !~ '^-?[0-9]+$'", f"non-integer {name}"),
        (f"{guard}{expr}::numeric not between {BIGINT_MIN} and {BIGINT_MAX}", f"{name} out of bigint range"),
    ]


def _structure_rules(n_columns: int) -> list[tuple[str, str]]:
    return [
        ("line = ''", "empty line"),
        (f"cardinality(f) <> {n_columns}", f"'wrong column count: expected {n_columns}, got ' || cardinality(f)"),
    ]


TS_RANGE_RULE = "ts range"  # placeholder condition, filled with the configured bounds

EVENTS = FileKind(
    name="events",
    header=("timestamp", "visitorid", "event", "itemid", "transactionid"),
    columns=("timestamp", "visitorid", "event", "itemid", "transactionid"),
    line_re=re.compile(_EVENT_LINE),
    chunk_re=re.compile(rb"(?:" + _EVENT_LINE + rb"\n)*"),
    rules=tuple(
        _structure_rules(5)
        + _int_rules("f[1]", "timestamp")
        + [(TS_RANGE_RULE, TS_RANGE_RULE)]
        + _int_rules("f[2]", "visitorid")
        + [("f[3] not in ('view', 'addtocart', 'transaction')", "unknown event type")]
        + _int_rules("f[4]", "itemid")
        + _int_rules("f[5]", "transactionid", required=False)
        + [("f[3] = 'transaction' and f[5] = ''", "transaction without transactionid"),
           ("f[3] <> 'transaction' and f[5] <> ''", "transactionid on a non-transaction event")]
    ),
    select=("f[1]::bigint", "f[2]::bigint", "f[3]", "f[4]::bigint", "nullif(f[5], '')::bigint"),
)

ITEM_PROPERTIES = FileKind(
    name="item_properties",
    header=("timestamp", "itemid", "property", "value"),
    columns=("timestamp", "itemid", "property", "value"),
    line_re=re.compile(_PROPERTY_LINE),
    chunk_re=re.compile(rb"(?m)^" + _PROPERTY_LINE.replace(rb",([^,\n\x00]*)", rb",[^,\n\x00]*") + rb"\n"),
    rules=tuple(
        _structure_rules(4)
        + _int_rules("f[1]", "timestamp")
        + _int_rules("f[2]", "itemid")
        + [("f[3] = ''", "empty property"),
           ("f[3] = 'categoryid' and f[4] !~ '^-?[0-9]+$'", "non-integer categoryid value"),
           (f"f[3] = 'categoryid' and f[4]::numeric not between {BIGINT_MIN} and {BIGINT_MAX}",
            "categoryid value out of bigint range"),
           ("f[3] = 'available' and f[4] not in ('0', '1')", "available value not 0 or 1")]
    ),
    select=("f[1]::bigint", "f[2]::bigint", "f[3]", "f[4]"),
)

CATEGORY_TREE = FileKind(
    name="category_tree",
    header=("categoryid", "parentid"),
    columns=("categoryid", "parentid"),
    line_re=re.compile(_CATEGORY_LINE),
    chunk_re=re.compile(rb"(?:" + _CATEGORY_LINE + rb"\n)*"),
    rules=tuple(_structure_rules(2) + _int_rules("f[1]", "categoryid")
                + _int_rules("f[2]", "parentid", required=False)),
    select=("f[1]::bigint", "nullif(f[2], '')::bigint"),
)

KINDS: dict[str, FileKind] = {k.name: k for k in (EVENTS, ITEM_PROPERTIES, CATEGORY_TREE)}

ENCODING_REASONS = ("invalid UTF-8", "NUL byte in line")


def ts_range_reason(min_ts: datetime, max_ts: datetime) -> str:
    """The reject reason of an implausible event timestamp, naming the accepted range."""
    return f"timestamp out of range [{_label(min_ts)}, {_label(max_ts)})"


def _reasons() -> list[str]:
    """Every fixed reason string (documentation and tests)."""
    out = list(ENCODING_REASONS)
    for kind in KINDS.values():
        for _, reason in kind.rules:
            if reason != TS_RANGE_RULE and not reason.startswith("'"):
                out.append(reason)
    return sorted(set(out)) + ["wrong column count: expected N, got M", ts_range_reason(DEFAULT_MIN_TS,
                                                                                         DEFAULT_MAX_TS)]


# --------------------------------------------------------------------------- timestamps


def _as_utc(value: datetime | date) -> datetime:
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def epoch_ms(value: datetime | date) -> int:
    """Epoch milliseconds of a (naive = UTC) datetime or date."""
    return (_as_utc(value) - EPOCH) // timedelta(milliseconds=1)


def _label(value: datetime | date) -> str:
    value = _as_utc(value)
    if value.time() == datetime.min.time():
        return value.date().isoformat()
    return value.strftime("%Y-%m-%d %H:%M:%S")


REASONS: list[str] = _reasons()


# --------------------------------------------------------------------------- files


_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_FOLDER_PATTERNS = (
    ("category_tree", ("category_tree.csv", "category_tree.csv.gz")),
    ("item_properties", ("item_properties.csv", "item_properties.csv.gz",
                         "item_properties_part*.csv", "item_properties_part*.csv.gz")),
    ("events", ("events.csv", "events.csv.gz")),
)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open_text_stream(raw: IO[bytes], path: Path) -> IO[bytes]:
    return gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw


def _name_hint(path: Path) -> str | None:
    """The kind a file's name suggests (``events*``, ``item_properties*``, ``category_tree*``)."""
    name = path.name.lower()
    for kind in KIND_ORDER:
        if name.startswith(kind):
            return kind
    return None


def _strip_suffixes(name: str) -> str:
    for suffix in (".gz", ".csv"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def read_header(path: Path) -> str | None:
    """The first line of a (possibly gzipped) file, without BOM or line end; None if empty."""
    try:
        with open(path, "rb") as raw:
            stream = _open_text_stream(raw, path)
            line = stream.readline(1 << 16)
    except (OSError, EOFError, zlib.error) as exc:
        raise LoadError(f"{path}: cannot read it ({exc})") from None
    if not line:
        return None
    line = line.removeprefix(_BOM).rstrip(b"\r\n")
    return line.decode("utf-8", "replace")


def detect_kind(path: Path) -> str:
    """The kind of a file, from its header (and its name); a LoadError when neither fits."""
    hint = _name_hint(path)
    header = read_header(path)
    expected = repr(KINDS[hint].header_text) if hint else " or ".join(repr(k.header_text) for k in KINDS.values())
    if header is None:
        raise LoadError(f"{path}: the file is empty; expected the header line {expected} and data lines")
    normalized = header.strip().lower()
    for kind in KINDS.values():
        if normalized == kind.header_text and (hint is None or hint == kind.name):
            return kind.name
    shown = header if len(header) <= 120 else header[:120] + "..."
    if hint:
        raise LoadError(f"{path}: wrong header {shown!r}; expected {expected} for a {hint} file")
    raise LoadError(f"{path}: unrecognized header {shown!r}; expected one of {expected}")


def discover(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """The files to load with their kinds, in load order (category_tree, item_properties, events).

    A folder contributes its RetailRocket files; an explicit file is taken as is. Every
    header is checked here, before anything is loaded.
    """
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found: list[Path] = []
            for _, patterns in _FOLDER_PATTERNS:
                matches = sorted({p for pat in patterns for p in path.glob(pat) if p.is_file()})
                stems: dict[str, Path] = {}
                for m in matches:
                    stem = _strip_suffixes(m.name)
                    if stem in stems:
                        raise LoadError(f"{path}: both {stems[stem].name} and {m.name} are there; "
                                        "keep one of them (they would be loaded twice)")
                    stems[stem] = m
                found += matches
            if not found:
                raise LoadError(f"{path}: no RetailRocket files in this folder (expected events.csv, "
                                "item_properties_part*.csv, category_tree.csv, or .csv.gz)")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise LoadError(f"{path}: no such file or folder")
    unique: list[Path] = []
    seen: set[Path] = set()
    for f in files:
        resolved = f.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    kinds = [(f, detect_kind(f)) for f in unique]
    return sorted(kinds, key=lambda fk: KIND_ORDER.index(fk[1]))  # stable: keeps the given order


def sha256_of(path: Path) -> str:
    """SHA-256 of the file's bytes as stored (compressed for .gz): the idempotency key."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def iter_chunks(path: Path, expected_header: str) -> Iterator[tuple[bytes, int]]:
    """Yield (chunk of whole lines, compressed bytes read so far) after the header.

    Every chunk ends with a newline (one is added after a last line without it); CRLF
    line ends become LF, so line numbers stay physical.
    """
    with open(path, "rb") as raw:
        stream = _open_text_stream(raw, path)
        buf = b""
        header_done = False
        while True:
            data = stream.read(CHUNK_BYTES)
            eof = not data
            buf = buf + data if buf else data
            if not header_done:
                nl = buf.find(b"\n")
                if nl < 0 and not eof:
                    continue
                header = buf if nl < 0 else buf[:nl]
                text = header.removeprefix(_BOM).rstrip(b"\r").decode("utf-8", "replace").strip().lower()
                if text != expected_header:
                    raise LoadError(f"{path}: wrong header; expected {expected_header!r}")
                buf = b"" if nl < 0 else buf[nl + 1:]
                header_done = True
            if eof:
                chunk, buf = buf, b""
                if chunk and not chunk.endswith(b"\n"):
                    chunk += b"\n"
            else:
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    continue
                chunk, buf = buf[:cut], buf[cut:]
            if chunk:
                if b"\r" in chunk:
                    chunk = chunk.replace(b"\r\n", b"\n")
                yield chunk, raw.tell()
            if eof:
                return


def _decode_line(line: bytes) -> tuple[str, str | None]:
    """A line as text for PostgreSQL and its encoding problem, if any."""
    try:
        text, problem = line.decode("utf-8"), None
    except UnicodeDecodeError:
        text, problem = line.decode("utf-8", "replace"), ENCODING_REASONS[0]
    if "\x00" in text:
        text, problem = text.replace("\x00", "\ufffd"), problem or ENCODING_REASONS[1]
    return text, problem


def _valid_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------- COPY plumbing


class _Copier:
    """At most one open COPY on a cursor; writing under another key closes the previous one.

    Writes are queued to a worker thread (psycopg's QueuedLibpqWriter), so Python
    validates the next chunk while the server parses the last one.
    """

    def __init__(self, cur: psycopg.Cursor) -> None:
        self.cur = cur
        self.rows: Counter[str] = Counter()
        self._key: str | None = None
        self._cm: Any = None
        self._copy: Any = None

    def open(self, key: str, statement: sql.Composable, before: Callable[[], None] | None = None) -> Any:
        if key != self._key:
            self.close()
            if before is not None:
                before()
            self._cm = self.cur.copy(statement, writer=QueuedLibpqWriter(self.cur))
            self._copy = self._cm.__enter__()
            self._key = key
        return self._copy

    def close(self, exc: BaseException | None = None) -> None:
        if self._cm is None:
            return
        cm, key = self._cm, self._key
        self._cm = self._copy = self._key = None
        if exc is None:
            cm.__exit__(None, None, None)
            self.rows[key] += max(self.cur.rowcount, 0)
        else:
            try:
                cm.__exit__(type(exc), exc, exc.__traceback__)
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass


# --------------------------------------------------------------------------- loading one file


@dataclass
class _FileState:
    kind: FileKind
    batch_id: int
    part: sql.Identifier  # the new partition raw.<table>_b<batch_id>
    seq: str  # temporary sequence numbering the lines of clean chunks
    rows_read: int = 0
    next_line: int = 2  # physical line number of the next data line (header = 1)
    fast_next: int | None = None  # line number the fast COPY's sequence will give next
    suspects: int = 0
    summarized: Counter[bytes] = field(default_factory=Counter)
    kept_rows: int = 0


def _copy_stmt(state: _FileState, explicit_line_no: bool) -> sql.Composed:
    cols = (["line_no"] if explicit_line_no else []) + list(state.kind.columns)
    return sql.SQL("copy raw.{} ({}) from stdin (format csv, freeze)").format(
        state.part, sql.SQL(", ").join(map(sql.Identifier, cols)))


_SUSPECT_COPY = sql.SQL("copy aisle_suspects (line_no, line, problem) from stdin")


def _write_suspects(copier: _Copier, state: _FileState, suspects: list[tuple[int, bytes]]) -> None:
    if not suspects:
        return
    copy = copier.open("suspects", _SUSPECT_COPY)
    for line_no, line in suspects:
        text, problem = _decode_line(line)
        copy.write_row((line_no, text, problem))
    state.suspects += len(suspects)


def _explicit_rows(rows: list[bytes]) -> bytes:
    return b"\n".join(rows) + b"\n"


def _process_chunk(copier: _Copier, state: _FileState, chunk: bytes) -> None:
    """Route one chunk of whole lines: fast COPY, explicit-line COPY, or the suspects table."""
    kind = state.kind
    n_lines = chunk.count(b"\n")
    base = state.next_line
    state.next_line += n_lines
    state.rows_read += n_lines

    if kind is ITEM_PROPERTIES:
        _process_properties_chunk(copier, state, chunk, base, n_lines)
        return

    if kind.chunk_re.fullmatch(chunk) is not None:
        def rebase() -> None:
            copier.cur.execute("select setval(%s::regclass, %s, false)", (state.seq, base))
        if state.fast_next != base:
            copier.close()  # a new run of clean chunks: re-base the line-number sequence
        copier.open("fast", _copy_stmt(state, explicit_line_no=False), before=rebase).write(chunk)
        state.fast_next = base + n_lines
        return

    # Slow path: this chunk has at least one line that is not canonical.
    good: list[bytes] = []
    suspects: list[tuple[int, bytes]] = []
    match = kind.line_re.fullmatch
    for i, line in enumerate(chunk.split(b"\n")[:-1]):
        if match(line) is not None:
            good.append(b"%d,%s" % (base + i, line))
        else:
            suspects.append((base + i, line))
    if good:
        copier.open("explicit", _copy_stmt(state, explicit_line_no=True)).write(_explicit_rows(good))
    _write_suspects(copier, state, suspects)


_KEY_CATEGORY = b",categoryid,"
_KEY_AVAILABLE = b",available,"


def _kept_value_ok(prop: bytes, value: bytes) -> bool:
    if prop == b"available":
        return value in (b"0", b"1")
    return value.isdigit() and len(value) <= 18 and (value[:1] != b"0" or len(value) == 1)


def _process_properties_chunk(copier: _Copier, state: _FileState, chunk: bytes, base: int, n_lines: int) -> None:
    """item_properties: count every property, send only categoryid/available lines to COPY."""
    kind = state.kind
    good: list[bytes] = []
    suspects: list[tuple[int, bytes]] = []
    props = kind.chunk_re.findall(chunk) if _valid_utf8(chunk) else []
    if len(props) == n_lines:
        # Fast path: every line is canonical (one anchored match per line). The kept
        # properties are found with plain substring search: with exactly four fields and
        # integer first two, ",categoryid," can only be the property field.
        counts = Counter(props)
        starts: list[int] = []
        for key in (_KEY_CATEGORY, _KEY_AVAILABLE):
            if counts.get(key[1:-1]):
                pos = chunk.find(key)
                while pos >= 0:
                    starts.append(pos)
                    pos = chunk.find(key, chunk.index(b"\n", pos))
        starts.sort()
        last, line_no = 0, base
        for pos in starts:
            start = chunk.rfind(b"\n", 0, pos) + 1
            end = chunk.index(b"\n", pos)
            line_no += chunk.count(b"\n", last, start)
            last = start
            line = chunk[start:end]
            prop_end = chunk.index(b",", pos + 1)
            if _kept_value_ok(chunk[pos + 1:prop_end], chunk[prop_end + 1:end]):
                good.append(b"%d,%s" % (line_no, line))
            else:
                suspects.append((line_no, line))
        for prop in KEPT_PROPERTIES:
            counts.pop(prop.encode(), None)
        state.summarized.update(counts)
    else:
        match = kind.line_re.fullmatch
        kept = {p.encode() for p in KEPT_PROPERTIES}
        for i, line in enumerate(chunk.split(b"\n")[:-1]):
            m = match(line)
            if m is None or not _valid_utf8(line):
                suspects.append((base + i, line))
            elif m[1] in kept:
                if _kept_value_ok(m[1], m[2]):
                    good.append(b"%d,%s" % (base + i, line))
                else:
                    suspects.append((base + i, line))
            else:
                state.summarized[m[1]] += 1
    if good:
        copier.open("explicit", _copy_stmt(state, explicit_line_no=True)).write(_explicit_rows(good))
        state.kept_rows += len(good)
    _write_suspects(copier, state, suspects)


def _case_sql(kind: FileKind, ts_min: int, ts_max: int, ts_reason: str) -> sql.Composed:
    """CASE giving the first failing reason of a line (NULL when it is valid)."""
    parts: list[sql.Composable] = [sql.SQL("case when problem is not null then problem")]
    for cond, reason in kind.rules:
        if cond == TS_RANGE_RULE:
            cond_sql = sql.SQL("f[1]::bigint < {} or f[1]::bigint >= {}").format(sql.Literal(ts_min),
                                                                              sql.Literal(ts_max))
            reason_sql: sql.Composable = sql.Literal(ts_reason)
        else:
            cond_sql = sql.SQL(cond)  # trusted: written in this module
            reason_sql = sql.SQL(reason) if reason.startswith("'") else sql.Literal(reason)
        parts.append(sql.SQL(" when ({}) then {}").format(cond_sql, reason_sql))
    parts.append(sql.SQL(" end"))
    return sql.Composed(parts)


def _classify_suspects(cur: psycopg.Cursor, state: _FileState, ts_min: int, ts_max: int,
                       ts_reason: str) -> tuple[int, int, int]:
    """Reason every suspect line in one set-based pass; quarantine the bad, load the rest.

    Returns (rows inserted into the partition, rows summarized, rows rejected).
    """
    kind = state.kind
    cur.execute(sql.SQL(
        "create temp table aisle_classified on commit drop as "
        "select line_no, line, f, {} as reason "
        "from (select line_no, line, problem, string_to_array(line, ',') as f from aisle_suspects) s"
    ).format(_case_sql(kind, ts_min, ts_max, ts_reason)))
    cur.execute("insert into raw.load_rejects (batch_id, line_no, raw_line, reason) "
                "select %s, line_no, line, reason from aisle_classified where reason is not null",
                (state.batch_id,))
    rejected = cur.rowcount
    kept_filter = sql.SQL("")
    summarized = 0
    if kind is ITEM_PROPERTIES:
        kept_filter = sql.SQL(" and f[3] in ('categoryid', 'available')")
        cur.execute("insert into raw.item_property_counts as c (batch_id, property, n_rows) "
                    "select %s, f[3], count(*) from aisle_classified "
                    "where reason is null and f[3] not in ('categoryid', 'available') group by f[3] "
                    "on conflict (batch_id, property) do update set n_rows = c.n_rows + excluded.n_rows",
                    (state.batch_id,))
        cur.execute("select coalesce(sum(n), 0) from (select count(*) n from aisle_classified "
                    "where reason is null and f[3] not in ('categoryid', 'available')) x")
        summarized = int(cur.fetchone()[0])
    cur.execute(sql.SQL(
        "insert into raw.{} (batch_id, line_no, {}) select {}, line_no, {} from aisle_classified "
        "where reason is null{}"
    ).format(state.part, sql.SQL(", ").join(map(sql.Identifier, kind.columns)), sql.Literal(state.batch_id),
             sql.SQL(", ").join(sql.SQL(e) for e in kind.select), kept_filter))
    return cur.rowcount, summarized, rejected


def _reject_out_of_range(cur: psycopg.Cursor, state: _FileState, ts_min: int, ts_max: int,
                         ts_reason: str) -> int:
    """Move events outside the plausible time range from the partition to the quarantine.

    Only canonical lines are in the partition at this point, so the raw line is rebuilt
    exactly from the typed columns.
    """
    cur.execute(sql.SQL(
        "with bad as (delete from raw.{} where \"timestamp\" < %(lo)s or \"timestamp\" >= %(hi)s "
        "returning line_no, \"timestamp\", visitorid, event, itemid, transactionid) "
        "insert into raw.load_rejects (batch_id, line_no, raw_line, reason) "
        "select %(b)s, line_no, concat_ws(',', \"timestamp\", visitorid, event, itemid, "
        "coalesce(transactionid::text, '')), %(reason)s from bad"
    ).format(state.part), {"lo": ts_min, "hi": ts_max, "b": state.batch_id, "reason": ts_reason})
    return cur.rowcount


def _drop_batch(cur: psycopg.Cursor, batch_id: int, kind: str) -> None:
    """Remove a batch's rows (its partition), rejects and counts; the batch row stays."""
    cur.execute(sql.SQL("drop table if exists raw.{}").format(sql.Identifier(f"{kind}_b{batch_id}")))
    cur.execute(sql.SQL("delete from raw.{} where batch_id = %s").format(sql.Identifier(kind)), (batch_id,))
    cur.execute("delete from raw.load_rejects where batch_id = %s", (batch_id,))
    cur.execute("delete from raw.item_property_counts where batch_id = %s", (batch_id,))


def load_file(conn: psycopg.Connection, path: Path, kind_name: str, *, replace: bool = False,
              min_ts: datetime | date = DEFAULT_MIN_TS, max_ts: datetime | date = DEFAULT_MAX_TS,
              on_progress: Callable[[int, int], None] | None = None) -> BatchResult:
    """Load one file in one transaction; returns what happened.

    ``on_progress(bytes_read, rows_read)`` is called after each chunk. Input that cannot
    be read (a corrupt gzip stream, ...) gives a 'failed' result and loads nothing.
    """
    t0 = time.perf_counter()
    kind = KINDS[kind_name]
    path = Path(path).resolve()
    phases: dict[str, float] = {}
    mark = [t0]

    def lap(name: str) -> None:
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - mark[0]
        mark[0] = now

    size = path.stat().st_size
    ts_min, ts_max = epoch_ms(min_ts), epoch_ms(max_ts)
    ts_reason = ts_range_reason(min_ts, max_ts)
    if ts_min >= ts_max:
        raise LoadError(f"the timestamp range is empty: {_label(min_ts)} is not before {_label(max_ts)}")
    result = BatchResult(file=path, kind=kind.name, status="loaded", phases=phases)

    with conn.transaction(), conn.cursor() as cur, ThreadPoolExecutor(1) as pool:
        # Two loads of files of the same size (so of the same bytes) never run at once;
        # the second waits here and then sees the first one's batch.
        cur.execute("select pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"aisle load size {size}",))
        cur.execute("select batch_id, sha256, finished_at from raw.load_batches "
                    "where size_bytes = %s and status = 'finished' order by batch_id", (size,))
        same_size = cur.fetchall()
        digest_job: Future[str] | None = None
        if same_size:  # it may be a file loaded before: hash it first
            digest = sha256_of(path)
            previous = [(b, finished) for b, sha, finished in same_size if sha == digest]
        else:  # it cannot be: hash it in a thread while loading
            digest, previous = "", []
            digest_job = pool.submit(sha256_of, path)
        lap("sha256")
        if previous and not replace:
            batch_id, finished = previous[-1]
            result.status, result.batch_id = "skipped", batch_id
            result.message = f"already loaded as batch {batch_id} on {finished:%Y-%m-%d %H:%M}; --replace reloads it"
            result.seconds = time.perf_counter() - t0
            return result

        cur.execute("insert into raw.load_batches (file_name, file_path, file_kind, sha256, size_bytes, "
                    "started_at, status) values (%s, %s, %s, %s, %s, clock_timestamp(), 'finished') "
                    "returning batch_id", (path.name, str(path), kind.name, digest, size))
        batch_id = cur.fetchone()[0]
        result.batch_id = batch_id
        seq_name = f"aisle_line_no_b{batch_id}"
        state = _FileState(kind=kind, batch_id=batch_id, part=sql.Identifier(f"{kind.name}_b{batch_id}"),
                           seq=seq_name)
        cur.execute(sql.SQL(
            "create temp sequence {seq} cache 100000;"
            "create table raw.{part} (like raw.{parent} including defaults including constraints);"
            "alter table raw.{part} add constraint {check} check (batch_id = {b}),"
            " alter column batch_id set default {b},"
            " alter column line_no set default nextval({seq_lit});"
            "create temp table aisle_suspects (line_no bigint, line text, problem text) on commit drop"
        ).format(seq=sql.Identifier(seq_name), part=state.part, parent=sql.Identifier(kind.name),
                 check=sql.Identifier(f"{kind.name}_b{batch_id}_batch"), b=sql.Literal(batch_id),
                 seq_lit=sql.Literal(seq_name)))

        lap("prepare")
        copier = _Copier(cur)
        try:
            for chunk, pos in iter_chunks(path, kind.header_text):
                _process_chunk(copier, state, chunk)
                if on_progress is not None:
                    on_progress(pos, state.rows_read)
            copier.close()
        except (OSError, EOFError, zlib.error) as exc:
            copier.close(exc)
            raise _FileFailed(f"cannot read {path.name}: {exc}") from None
        except BaseException as exc:
            copier.close(exc)
            raise

        lap("copy")
        loaded = copier.rows["fast"] + copier.rows["explicit"]
        rejected = 0
        if kind is EVENTS and copier.rows["fast"] + copier.rows["explicit"]:
            moved = _reject_out_of_range(cur, state, ts_min, ts_max, ts_reason)
            loaded -= moved
            rejected += moved
        summarized = sum(state.summarized.values())
        if state.summarized:
            with cur.copy("copy raw.item_property_counts (batch_id, property, n_rows) from stdin") as copy:
                for prop, n in state.summarized.items():
                    copy.write_row((batch_id, prop.decode("utf-8"), n))
        if state.suspects:
            inserted, summarized_sql, rejected_sql = _classify_suspects(cur, state, ts_min, ts_max, ts_reason)
            loaded += inserted
            summarized += summarized_sql
            rejected += rejected_sql

        lap("validate")
        cur.execute(sql.SQL(
            "alter table raw.{part} alter column line_no drop default, alter column batch_id drop default;"
            "drop sequence {seq};"
            "alter table raw.{parent} attach partition raw.{part} for values in ({b})"
        ).format(part=state.part, seq=sql.Identifier(seq_name), parent=sql.Identifier(kind.name),
                 b=sql.Literal(batch_id)))
        for old_batch, _ in previous:  # replace: the new batch supersedes the old ones
            _drop_batch(cur, old_batch, kind.name)
            cur.execute("update raw.load_batches set status = 'replaced' where batch_id = %s", (old_batch,))
        if digest_job is not None:
            digest = digest_job.result()
        cur.execute("update raw.load_batches set sha256 = %s, rows_read = %s, rows_loaded = %s, "
                    "rows_rejected = %s, rows_summarized = %s, finished_at = clock_timestamp() "
                    "where batch_id = %s",
                    (digest, state.rows_read, loaded + summarized, rejected, summarized, batch_id))
        result.rows_read, result.rows_loaded, result.rows_rejected = state.rows_read, loaded + summarized, rejected
        result.rows_summarized = summarized
        if previous:
            result.message = "replaced batch " + ", ".join(str(b) for b, _ in previous)
        lap("attach")
    lap("commit")
    result.seconds = time.perf_counter() - t0
    return result


class _FileFailed(Exception):
    """A file could not be read to its end; its transaction was rolled back."""


# --------------------------------------------------------------------------- schema and entry points


def raw_schema_sql() -> str:
    return resources.files("aisle").joinpath("sql/raw_schema.sql").read_text()


def ensure_raw_schema(conn: psycopg.Connection) -> None:
    """Create schema raw if needed, and refuse an old unpartitioned layout with a clear fix."""
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtextextended('aisle raw schema', 0))")
        old = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'raw' and c.relname = any(%s) and c.relkind <> 'p' order by 1",
            (list(KINDS),)).fetchall()
        if old:
            names = ", ".join("raw." + r[0] for r in old)
            raise LoadError(f"{names} predate(s) the partitioned raw layout of this aisle; "
                            "run `drop schema raw cascade` (aisle db psql) and load again")
        conn.execute(raw_schema_sql())


def load_paths(paths: list[Path], *, target: Target, replace: bool = False, progress: bool = True,
               min_ts: datetime | date = DEFAULT_MIN_TS, max_ts: datetime | date = DEFAULT_MAX_TS
               ) -> list[BatchResult]:
    """Load folders and files into schema raw, one transaction per file, in kind order.

    Every header is checked before the first file is loaded (a LoadError names the file
    and the expected header). With ``progress`` a progress bar with rows/s runs per file
    and a summary table is printed at the end.
    """
    if epoch_ms(min_ts) >= epoch_ms(max_ts):
        raise LoadError(f"the timestamp range is empty: {_label(min_ts)} is not before {_label(max_ts)}")
    files = discover(paths)
    try:
        return _load_files(files, target=target, replace=replace, progress=progress, min_ts=min_ts,
                           max_ts=max_ts)
    except psycopg.OperationalError as exc:  # the server went away mid-load: nothing was committed
        raise DatabaseUnavailable(target, str(exc)) from None


def _load_files(files: list[tuple[Path, str]], *, target: Target, replace: bool, progress: bool,
                min_ts: datetime | date, max_ts: datetime | date) -> list[BatchResult]:
    results: list[BatchResult] = []
    with connect(target, autocommit=True) as conn:  # each file opens its own transaction
        ensure_raw_schema(conn)
        bar = _ProgressBar() if progress else None
        try:
            for path, kind in files:
                task = bar.add(path, kind) if bar else None
                t0 = time.perf_counter()
                try:
                    result = load_file(conn, path, kind, replace=replace, min_ts=min_ts, max_ts=max_ts,
                                       on_progress=(lambda b, r, task=task: bar.update(task, b, r)) if bar
                                       else None)
                except _FileFailed as exc:
                    result = BatchResult(file=path, kind=kind, status="failed", message=str(exc),
                                         seconds=time.perf_counter() - t0)
                if bar:
                    bar.finish(task, result)
                results.append(result)
        finally:
            if bar:
                bar.stop()
    if progress:
        print_summary(results)
    return results


class _ProgressBar:
    """A rich progress bar per file: bytes read, rows read and rows/s."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        if not console.is_terminal:
            console = Console(stderr=True, width=120)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(bar_width=30), TaskProgressColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"), TextColumn("{task.fields[rate]:>10,.0f} rows/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self.progress.start()
        self.t0: dict[int, float] = {}
        self.total: dict[int, int] = {}

    def add(self, path: Path, kind: str) -> int:
        total = max(path.stat().st_size, 1)
        task = self.progress.add_task(path.name, total=total, rows=0, rate=0.0)
        self.t0[task], self.total[task] = time.perf_counter(), total
        return task

    def update(self, task: int, bytes_read: int, rows: int) -> None:
        elapsed = max(time.perf_counter() - self.t0[task], 1e-9)
        self.progress.update(task, completed=bytes_read, rows=rows, rate=rows / elapsed)

    def finish(self, task: int, result: BatchResult) -> None:
        self.progress.update(task, completed=self.total[task], rows=result.rows_read,
                             rate=result.rows_per_second)

    def stop(self) -> None:
        self.progress.stop()


def print_summary(results: Sequence[BatchResult], console: Any = None) -> None:
    """A table per file: status, rows read, loaded, rejected, seconds and rows/s."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console(highlight=False)
        if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
            console = Console(highlight=False, width=160)
    summarized = any(r.rows_summarized for r in results)
    table = Table(title="aisle load", title_justify="left",
                  caption="summarized: item_properties rows kept only as per-property counts (part of loaded)"
                  if summarized else None, caption_justify="left")
    columns = ["file", "kind", "status", "batch", "read", "loaded"] + (["summarized"] if summarized else []) + [
        "rejected", "seconds", "rows/s"]
    for name in columns:
        table.add_column(name, justify="left" if name in ("file", "kind", "status") else "right",
                         no_wrap=True)
    table.add_column("note", overflow="fold", min_width=20)
    for r in results:
        counts = [r.rows_read, r.rows_loaded] + ([r.rows_summarized] if summarized else []) + [r.rows_rejected]
        loaded = r.status == "loaded"
        table.add_row(r.file.name, r.kind, r.status, str(r.batch_id or ""),
                      *[f"{n:,}" if loaded else "" for n in counts], f"{r.seconds:.2f}",
                      f"{r.rows_per_second:,.0f}" if loaded else "", r.message)
    console.print(table)


def load_summary(target: Target) -> dict[str, Any]:
    """Counts per raw table, batches, and rejects by reason (for the demo summary).

    Keys: ``tables`` (rows per raw table, plus ``rows_summarized``), ``batches`` (one dict
    per batch), ``batch_status`` (batches per status), ``rejects_by_reason``, and the
    totals ``rows_read``, ``rows_loaded``, ``rows_rejected`` over the finished batches.
    """
    with connect(target) as conn:
        exists = conn.execute("select to_regclass('raw.load_batches') is not null").fetchone()[0]
        if not exists:
            return {"tables": {}, "batches": [], "batch_status": {}, "rejects_by_reason": {}, "rows_read": 0,
                    "rows_loaded": 0, "rows_rejected": 0}
        tables = {}
        for name in ("events", "item_properties", "item_property_counts", "category_tree", "load_rejects",
                     "load_batches"):
            tables[name] = conn.execute(sql.SQL("select count(*) from raw.{}").format(sql.Identifier(name))
                                        ).fetchone()[0]
        tables["rows_summarized"] = conn.execute(
            "select coalesce(sum(n_rows), 0) from raw.item_property_counts").fetchone()[0]
        cur = conn.execute(
            "select batch_id, file_name, file_kind, status, rows_read, rows_loaded, rows_rejected, "
            "rows_summarized, extract(epoch from finished_at - started_at) as seconds "
            "from raw.load_batches order by batch_id")
        cols = [d.name for d in cur.description]
        batches = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        for b in batches:
            b["seconds"] = float(b["seconds"]) if b["seconds"] is not None else None
        status = dict(conn.execute("select status, count(*) from raw.load_batches group by status").fetchall())
        reasons = dict(conn.execute("select reason, count(*) from raw.load_rejects group by reason "
                                    "order by count(*) desc, reason").fetchall())
    current = [b for b in batches if b["status"] == "finished"]
    totals = {key: sum(int(b[key] or 0) for b in current) for key in ("rows_read", "rows_loaded", "rows_rejected")}
    return {"tables": tables, "batches": batches, "batch_status": status, "rejects_by_reason": reasons, **totals}
