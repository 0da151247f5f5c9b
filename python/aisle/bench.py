"""`make bench`: throughput and timings of every stage at a chosen scale.

Speed targets live here, printed as numbers, not in timed tests. The bench works in
its own database (``aisle_bench``), so it never disturbs the demo's data, and in
its own data folder under the system temp directory.

Stages, in order (``--only`` picks a subset; later stages need the earlier ones'
database state, so a subset is for re-measuring a stage on an existing bench DB):
  generate   synthetic data at the scale, plus the ~20M-row item_properties file
  load       each file into raw (rows/s), all but the last day of events
  dbt        full `dbt build` from empty (models + tests), slowest five models
  similarity category similarity in a child process (seconds, peak RSS)
  recs       recommendations for every known user: similarity + downstream build
  increment  load the last day, incremental upstream build (and its ratio to the full), then
             the same build with nothing new (the fixed cost of any incremental build), and
             the same build of an empty warehouse (what dbt alone costs for these nodes)
  lookup     one user's lookup from the mart, p50/p99 over 1,000 random users, second process
  evaluate   the full `aisle evaluate` backtest
Every run also times a fixed piece of Postgres work at its start and its end (the machine
speed probe): this machine's speed drifts by tens of percent from hour to hour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from aisle.config import project_root, resolve_target

console = Console(highlight=False, soft_wrap=True)

STAGES = ("generate", "load", "dbt", "similarity", "recs", "increment", "lookup", "evaluate")
BENCH_DB = "aisle_bench"


class Results:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.data: dict[str, object] = {}

    def add(self, stage: str, what: str, value: str, target: str = "", key: str | None = None,
            raw: object = None) -> None:
        self.rows.append((stage, what, value, target))
        console.print(f"  [bold]{stage}[/] {what}: [green]{value}[/]" + (f"  (target {target})" if target else ""))
        if key:
            self.data[key] = raw

    def table(self, scale: float) -> Table:
        table = Table(title=f"aisle bench at scale {scale} ({os.cpu_count()} cores)")
        for col in ("stage", "what", "measured", "target"):
            table.add_column(col)
        for row in self.rows:
            table.add_row(*row)
        return table


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:,.0f} rows/s ({rows:,} rows in {seconds:.1f} s)" if seconds > 0 else "n/a"


# A fixed piece of Postgres work (hash 2M integers, sort them in memory, sum them), the kind of
# work the pipeline does. The same machine has run it (and every stage below) up to ~60% slower
# from one hour to the next, so the bench times it at its start and at its end: a slow stage
# in a slow probe's run is the machine, not the code.
MACHINE_PROBE_SQL = ("select sum(x) from (select hashint4(i) as x from generate_series(1, 2000000) as i "
                     "order by 1 offset 0) as s")


def machine_probe(target, repeats: int = 3) -> float:
    """Best of `repeats` timings (seconds) of MACHINE_PROBE_SQL on one backend, in memory."""
    from aisle.db import connect

    with connect(target) as conn:
        conn.execute("set work_mem = '512MB'")
        conn.execute("set max_parallel_workers_per_gather = 0")
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            conn.execute(MACHINE_PROBE_SQL).fetchone()
            best = min(best, time.perf_counter() - started)
    return best


def run_bench(*, scale: float = 1.0, only: list[str] | None = None, target: str | None = None) -> dict:
    """Run the stages, print a table, and write reports/bench.json."""
    from aisle.db import drop_database, ensure_database
    from aisle.dbt import run_dbt
    from aisle.load import load_paths
    from aisle.pipeline import PRODUCTION_FLAGS
    from aisle.similarity import compute_similarity

    stages = [s for s in STAGES if only is None or s in only]
    unknown = set(only or []) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown bench stage(s): {', '.join(sorted(unknown))}; known: {', '.join(STAGES)}")
    os.environ["AISLE_DBNAME"] = BENCH_DB
    bench_target = replace(resolve_target(target), dbname=BENCH_DB)
    folder = Path(tempfile.gettempdir()) / f"aisle-bench-{scale:g}"
    full, day = folder / "full", folder / "split"
    results = Results()
    results.data["scale"] = scale
    probe = machine_probe(bench_target)
    results.add("machine", "speed probe at the start (fixed hash + sort of 2M integers)", f"{probe:.2f} s", "",
                "machine_probe_start_seconds", probe)

    if "generate" in stages:
        # In a child process: the generator holds every synthetic event in numpy arrays, and its
        # peak must not count as the pipeline's (reported below, from this process).
        console.print("[bold cyan]▶ generate[/] (child process)")
        out = subprocess.run([sys.executable, "-c", f"from aisle.bench import generate_stage; "
                              f"generate_stage({str(folder)!r}, {scale!r})"],
                             capture_output=True, text=True, check=True)
        gen = json.loads(out.stdout.strip().splitlines()[-1])
        results.add("generate", "events + snapshots", _rate(gen["rows"], gen["seconds"]),
                    "scale 1.0 well under 60 s", "generate_seconds", gen["seconds"])
        results.data["generate_events"] = gen["events"]
        results.add("generate", "with --full-properties", _rate(gen["rows_full"], gen["seconds_full"]), "",
                    "generate_full_seconds", gen["seconds_full"])
        results.add("generate", "peak RSS of the generator process", f"{gen['rss_mb']:,.0f} MB", "",
                    "generate_peak_rss_mb", gen["rss_mb"])
        results.data["split"] = gen["split"]

    if "load" in stages:
        console.print("[bold cyan]▶ load[/] (fresh database aisle_bench)")
        drop_database(bench_target)
        ensure_database(bench_target)
        files = [full / "category_tree.csv", folder / "props" / "item_properties_part1.csv",
                 folder / "props" / "item_properties_part2.csv", day / "events.csv"]
        loaded = load_paths(files, target=bench_target, progress=False)
        props_rows = sum(r.rows_read for r in loaded if r.kind == "item_properties")
        props_secs = sum(r.seconds for r in loaded if r.kind == "item_properties")
        ev = next(r for r in loaded if r.kind == "events")
        results.add("load", "events", _rate(ev.rows_read, ev.seconds), "≥ 500,000 rows/s", "load_events_rps",
                    ev.rows_read / ev.seconds)
        results.add("load", "item_properties (full ~20M rows)", _rate(props_rows, props_secs), "≥ 300,000 rows/s",
                    "load_properties_rps", props_rows / props_secs if props_secs else None)

    if "dbt" in stages:
        console.print("[bold cyan]▶ dbt build from empty[/]")
        run = run_dbt(["build", "--full-refresh", "--exclude", "source:similarity+", *PRODUCTION_FLAGS],
                      target=target, quiet=True)
        results.add("dbt", f"full build, upstream of similarity ({run.count('model')} models + "
                    f"{run.count('test')} data tests)", f"{run.seconds:.1f} s",
                    "≤ 30 s (whole build)", "dbt_full_upstream_seconds", run.seconds)
        for node in run.slowest(5):
            results.add("dbt", f"  slow model {node.name}", f"{node.seconds:.1f} s")
        results.data["slowest_models"] = [(n.name, n.seconds) for n in run.slowest(5)]

    rec_seconds = 0.0
    if "similarity" in stages:
        console.print("[bold cyan]▶ similarity[/] (child process, for its peak RSS)")
        # Peak RSS from VmHWM: ru_maxrss is not reset by exec on Linux, so a child forked
        # from this (large, in-process dbt) bench process would report the parent's peak.
        code = ("import time,json;from aisle.similarity import compute_similarity;"
                "from aisle.bench import peak_rss_mb;"
                "from aisle.config import resolve_target;t=time.perf_counter();"
                "compute_similarity(target=resolve_target());"
                "print(json.dumps({'s':time.perf_counter()-t,'rss_mb':peak_rss_mb()}))")
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "AISLE_DBNAME": BENCH_DB})
        wall = time.perf_counter() - started
        child = json.loads(out.stdout.strip().splitlines()[-1])
        inner, rss_mb = child["s"], child["rss_mb"]
        rec_seconds += inner
        results.add("similarity", "compute + write (in-process time)", f"{inner:.2f} s", "≤ 5 s",
                    "similarity_seconds", inner)
        results.add("similarity", "child process wall time (incl. imports)", f"{wall:.2f} s")
        results.add("similarity", "peak RSS of the Python process", f"{rss_mb:,.0f} MB",
                    "far below the raw events", "similarity_peak_rss_mb", rss_mb)
    elif "recs" in stages:
        started = time.perf_counter()
        compute_similarity(target=bench_target)
        rec_seconds += time.perf_counter() - started

    if "recs" in stages:
        console.print("[bold cyan]▶ recommendations for every known user[/]")
        run = run_dbt(["build", "--full-refresh", "--select", "source:similarity+", *PRODUCTION_FLAGS],
                      target=target, quiet=True)
        rec_seconds += run.seconds
        results.add("recs", "downstream dbt build (models + tests)", f"{run.seconds:.1f} s", "",
                    "recs_build_seconds", run.seconds)
        results.add("recs", "similarity + recommendations, end to end", f"{rec_seconds:.1f} s", "≤ 30 s",
                    "recs_end_to_end_seconds", rec_seconds)
        # Unit tests check SQL on fixed inputs: make test and CI run them, production runs do not.
        # (dbt reads the column types of a unit test's inputs from the built relations.)
        run = run_dbt(["test", "--select", "test_type:unit"], target=target, quiet=True)
        results.add("recs", f"all {run.count('unit_test')} dbt unit tests (CI only, not in production runs)",
                    f"{run.seconds:.1f} s", "", "dbt_unit_tests_seconds", run.seconds)

    if "increment" in stages:
        console.print("[bold cyan]▶ one more day, incremental build[/]")
        loaded = load_paths([day / "events_next_day.csv"], target=bench_target, progress=False)
        results.add("increment", "load the next day's events", _rate(loaded[0].rows_read, loaded[0].seconds))
        run = run_dbt(["build", "--exclude", "source:similarity+", *PRODUCTION_FLAGS], target=target, quiet=True)
        full_s = results.data.get("dbt_full_upstream_seconds")
        ratio = f" = {run.seconds / full_s:.0%} of the full build" if full_s else ""
        results.add("increment", "incremental upstream build", f"{run.seconds:.1f} s{ratio}",
                    "≤ 10% of the full build", "dbt_incremental_seconds", run.seconds)
        # The same build again, with nothing new: what every incremental build pays whatever
        # its increment (dbt's start and per-node work, the data tests over whole tables, the
        # item marts' ranks), so that the increment's own cost reads as the difference.
        run = run_dbt(["build", "--exclude", "source:similarity+", *PRODUCTION_FLAGS], target=target, quiet=True)
        ratio = f" = {run.seconds / full_s:.0%} of the full build" if full_s else ""
        results.add("increment", "the same build with no new event (the floor)", f"{run.seconds:.1f} s{ratio}",
                    "", "dbt_noop_incremental_seconds", run.seconds)
        seconds = _empty_warehouse_build(bench_target, target)
        ratio = f" = {seconds / full_s:.0%} of the full build" if full_s else ""
        results.add("increment", "the same build of an empty warehouse (dbt's own cost)", f"{seconds:.1f} s{ratio}",
                    "", "dbt_empty_incremental_seconds", seconds)

    if "lookup" in stages:
        console.print("[bold cyan]▶ lookup latency[/] (second process, 1,000 random users)")
        lat = _lookup_latency(1000)
        results.add("lookup", "one user's list, p50", f"{lat['p50_ms']:.2f} ms", "", "lookup_p50_ms", lat["p50_ms"])
        results.add("lookup", "one user's list, p99", f"{lat['p99_ms']:.2f} ms", "≤ 5 ms", "lookup_p99_ms",
                    lat["p99_ms"])

    if "evaluate" in stages:
        console.print("[bold cyan]▶ aisle evaluate[/] (full backtest)")
        from aisle.evaluate import evaluate as run_evaluate

        started = time.perf_counter()
        run_evaluate(target=bench_target, out_dir=folder / "reports", show=False)
        seconds = time.perf_counter() - started
        results.add("evaluate", "backtest build + similarity + recs + metrics + bootstrap + report",
                    f"{seconds:.1f} s", "≤ 90 s", "evaluate_seconds", seconds)

    if stages != ["generate"]:
        rss = peak_rss_mb()
        results.add("memory", "peak RSS of this process (load, dbt in-process, evaluate)", f"{rss:,.0f} MB",
                    "well under 1 GB", "pipeline_peak_rss_mb", rss)
    probe = machine_probe(bench_target)
    results.add("machine", "speed probe at the end", f"{probe:.2f} s", "", "machine_probe_end_seconds", probe)
    console.print(results.table(scale))
    out = project_root() / "reports" / "bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results.data, indent=2, default=str) + "\n")
    console.print(f"written {out}")
    return results.data


def _empty_warehouse_build(bench_target, target: str | None) -> float:
    """Seconds of an incremental build (models + data tests) of a warehouse with no rows at all.

    Every model and test still runs, so this is what dbt itself costs for the project's nodes
    (its start, rendering, introspection, comments, grants, artifacts) with next to no SQL: no
    incremental build of this project can take less. It runs in a database of its own, with
    a target folder of its own, so the bench database's partial parse stays valid.
    """
    from aisle.db import connect, drop_database, ensure_database
    from aisle.dbt import run_dbt
    from aisle.load import ensure_raw_schema
    from aisle.pipeline import PRODUCTION_FLAGS

    empty = replace(bench_target, dbname=f"{BENCH_DB}_empty")
    drop_database(empty)
    ensure_database(empty)
    with connect(empty) as conn:
        ensure_raw_schema(conn)
    saved = {k: os.environ.get(k) for k in ("AISLE_DBNAME", "DBT_TARGET_PATH")}
    os.environ["AISLE_DBNAME"] = empty.dbname
    os.environ["DBT_TARGET_PATH"] = str(project_root() / "target" / "bench-empty")
    try:
        args = ["build", "--exclude", "source:similarity+", *PRODUCTION_FLAGS]
        run_dbt([*args, "--full-refresh"], target=target, quiet=True)
        return run_dbt(args, target=target, quiet=True).seconds
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        drop_database(empty)


def generate_stage(folder: str, scale: float) -> None:
    """The bench's generate stage (run in a child process): the data, the ~20M property rows, and
    the split of the last 24 hours of events into the file the incremental stage loads. Prints
    one JSON line: rows, seconds and this process's peak RSS."""
    from aisle.generate import generate, split_events

    root = Path(folder)
    full, day = root / "full", root / "split"
    started = time.perf_counter()
    stats = generate(full, scale=scale, seed=42, full_properties=False, progress=False)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    stats_full = generate(root / "props", scale=scale, seed=42, full_properties=True, progress=False)
    seconds_full = time.perf_counter() - started
    cutoff = _last_event_ms(full / "events.csv") - 86_400_000
    day.mkdir(parents=True, exist_ok=True)
    before, after = split_events(full / "events.csv", cutoff, day / "events.csv", day / "events_next_day.csv")
    print(json.dumps({"rows": sum(stats.rows.values()), "seconds": seconds, "events": stats.rows["events.csv"],
                      "rows_full": sum(stats_full.rows.values()), "seconds_full": seconds_full,
                      "rss_mb": peak_rss_mb(), "split": {"before": before, "after": after, "cutoff_ms": cutoff}}))


def peak_rss_mb() -> float:
    """This process's own peak resident set size in MB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _last_event_ms(events_csv: Path) -> int:
    """The largest timestamp in an events file (read in C by numpy, no Python loop)."""
    import numpy as np

    ts = np.loadtxt(events_csv, delimiter=",", skiprows=1, usecols=0, dtype=np.int64)
    return int(ts.max())


LOOKUP_CHILD = r"""
import json, random, sys, time
import psycopg
from psycopg import sql
from aisle.config import resolve_target
from aisle.pipeline import lookup_sql
target = resolve_target()
query = sql.SQL(lookup_sql()).format(recs=sql.Identifier("recs"))
with psycopg.connect(**target.conninfo()) as conn:
    users = [r[0] for r in conn.execute("select distinct user_id from recs.rec_user_recommendations").fetchall()]
    rng = random.Random(0)
    sample = [rng.choice(users) for _ in range(int(sys.argv[1]))]
    cur = conn.cursor()
    for u in sample[:50]:  # warm the plan cache and the buffers
        cur.execute(query, {"user_id": u, "n": 10, "root_category_id": None}, prepare=True).fetchall()
    times = []
    for u in sample:
        t = time.perf_counter()
        cur.execute(query, {"user_id": u, "n": 10, "root_category_id": None}, prepare=True).fetchall()
        times.append((time.perf_counter() - t) * 1000)
times.sort()
print(json.dumps({"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99) - 1],
                  "max_ms": times[-1]}))
"""


def _lookup_latency(n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", LOOKUP_CHILD, str(n)], capture_output=True, text=True, check=True,
                         env={**os.environ, "AISLE_DBNAME": BENCH_DB})
    return json.loads(out.stdout.strip().splitlines()[-1])
