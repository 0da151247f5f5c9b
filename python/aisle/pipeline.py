"""Orchestration: the production pipeline, the demo, and serving a user's list.

The pipeline is three steps, one dbt invocation at a time:
  1. ``dbt build`` of everything upstream of the similarity table (staging, marts,
     recommendation inputs, with their tests);
  2. ``aisle similarity`` (Python, reads the affinity mart, writes the similarity table);
  3. ``dbt build`` of everything downstream of it (the recommendation marts).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql
from rich.console import Console
from rich.table import Table

from aisle.config import Target, project_root, resolve_target, schema_suffix

console = Console(highlight=False, soft_wrap=True)

# dbt selection of the models that read the similarity table (and their tests).
DOWNSTREAM = "source:similarity+"

# Production builds run the models and their data tests, not the unit tests: a unit test
# checks a model's SQL on fixed inputs, so its result cannot change with the data, and dbt's
# docs recommend running unit tests in development and CI only. `make test` runs every unit
# test (python/tests builds with plain `dbt build`), and so does a `dbt build` by hand.
PRODUCTION_FLAGS = ["--exclude-resource-type", "unit_test"]


@dataclass
class StepTimer:
    """Per-step wall-clock timings, printed as a table at the end of a run."""

    steps: list[tuple[str, float, str]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str, show: bool = True) -> Iterator[dict]:
        note: dict = {"detail": ""}
        if show:
            console.print(f"[bold cyan]▶ {name}[/]")
        started = time.perf_counter()
        yield note
        seconds = time.perf_counter() - started
        self.steps.append((name, seconds, note["detail"]))
        if show:
            console.print(f"[green]✓ {name}[/] in {seconds:.1f} s" + (f" — {note['detail']}" if note["detail"] else ""))

    @property
    def total(self) -> float:
        return sum(s for _, s, _ in self.steps)

    def table(self, title: str = "timings") -> Table:
        table = Table(title=title)
        table.add_column("step")
        table.add_column("seconds", justify="right")
        table.add_column("detail")
        for name, seconds, detail in self.steps:
            table.add_row(name, f"{seconds:.1f}", detail)
        table.add_row("[bold]total[/]", f"[bold]{self.total:.1f}[/]", "")
        return table


def _dbt_vars(as_of: str | None, extra: dict | None = None) -> dict | None:
    out = dict(extra or {})
    if as_of:
        out["as_of"] = as_of
    return out or None


def run_pipeline(*, target: str | None = None, as_of: str | None = None, full_refresh: bool = False,
                 show: bool = True, timer: StepTimer | None = None, dbt_vars: dict | None = None,
                 similarity_params: dict | None = None) -> StepTimer:
    """Build upstream marts, compute similarity, build the recommendation marts."""
    from aisle.dbt import DbtFailed, run_dbt
    from aisle.similarity import compute_similarity

    timer = timer or StepTimer()
    resolved = resolve_target(target)
    vars_ = _dbt_vars(as_of, dbt_vars)
    refresh = ["--full-refresh"] if full_refresh else []
    where = f" as of {as_of}" if as_of else ""
    with timer.step(f"dbt build: warehouse and recommendation inputs{where}", show) as note:
        try:
            run = run_dbt(["build", "--exclude", DOWNSTREAM, *PRODUCTION_FLAGS, *refresh], target=target,
                          vars=vars_, quiet=not show)
        except DbtFailed as exc:
            # New property snapshots or a new category tree change the categories of
            # events already built: the incremental models refuse, and we rebuild.
            if refresh or "--full-refresh" not in str(exc):
                raise
            console.print("[yellow]new item properties or a new category tree were loaded: "
                          "rebuilding the warehouse with --full-refresh[/]")
            refresh = ["--full-refresh"]
            run = run_dbt(["build", "--exclude", DOWNSTREAM, *PRODUCTION_FLAGS, *refresh], target=target,
                          vars=vars_, quiet=not show)
        note["detail"] = _dbt_detail(run)
    with timer.step(f"similarity{where}", show) as note:
        sim = compute_similarity(target=resolved, as_of=as_of, **(similarity_params or {}))
        note["detail"] = sim.summary() if hasattr(sim, "summary") else ""
    with timer.step(f"dbt build: recommendations{where}", show) as note:
        run = run_dbt(["build", "--select", DOWNSTREAM, *PRODUCTION_FLAGS, *refresh], target=target,
                      vars=vars_, quiet=not show)
        note["detail"] = _dbt_detail(run)
    return timer


def _dbt_detail(run) -> str:
    slow = ", ".join(f"{n.name} {n.seconds:.1f}s" for n in run.slowest(3))
    return f"{run.count('model')} models, {run.count('test') + run.count('unit_test')} tests; slowest: {slow}"


# --------------------------------------------------------------------------- serving


LOOKUP_ANALYSIS = "analyses/lookup_user_recommendations.sql"


def lookup_sql() -> str:
    """The one-query lookup of ``analyses/lookup_user_recommendations.sql``, the only copy of it:
    its comments dropped (psycopg would read a ``%`` in them as a placeholder) and each
    ``{{ ref('model') }}`` turned into ``{recs}.model`` for :func:`psycopg.sql.SQL.format`.
    A test checks that dbt compiles the analysis to this same query."""
    text = (project_root() / LOOKUP_ANALYSIS).read_text()
    lines = [line.split("--", 1)[0].rstrip() for line in text.splitlines()]
    query = "\n".join(line for line in lines if line)
    return re.sub(r"\{\{\s*ref\('(\w+)'\)\s*\}\}", r"{recs}.\1", query)


def lookup_recommendations(user_id: int, *, n: int = 10, target: Target | None = None,
                           as_of: str | None = None, root_category_id: int | None = None) -> list[dict]:
    """A visitor's list from the mart; a visitor without one gets the default list of the root
    category they browse (``root_category_id``, when it has one), else the global default list."""
    from aisle.db import connect

    recs = sql.Identifier("recs" + schema_suffix(as_of))
    query = sql.SQL(lookup_sql()).format(recs=recs)
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute(query, {"user_id": user_id, "n": n, "root_category_id": root_category_id})
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


def print_recommendations(user_id: int, *, n: int = 10, target: Target | None = None,
                          as_of: str | None = None, out: Console | None = None,
                          root_category_id: int | None = None) -> list[dict]:
    out = out or console
    rows = lookup_recommendations(user_id, n=n, target=target, as_of=as_of, root_category_id=root_category_id)
    if not rows:
        out.print(f"no recommendations at all: build them first with `aisle run` (user {user_id})")
        return rows
    if rows[0]["is_default"]:
        # Visitors without a list of their own: unknown, or without enough signal (known_user_min_events).
        which = (f"the default list of root category {root_category_id}" if rows[0]["context_root_category_id"]
                 is not None else "the global default list")
        if root_category_id is not None and rows[0]["context_root_category_id"] is None:
            which += f" (there is no list for root category {root_category_id}: not a root category?)"
        out.print(f"[yellow]user {user_id} is unknown or cold (fewer events than known_user_min_events): "
                  f"showing {which}[/]")
    table = Table(title=f"recommendations for user {user_id}")
    for col, justify in (("rank", "right"), ("item", "right"), ("score", "right"), ("source", "left"),
                         ("reason", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(str(r["rank"]), str(r["item_id"]), f"{r['score']:.4g}", r["source"], r["reason"])
    out.print(table)
    return rows


# --------------------------------------------------------------------------- demo


def _synthetic_is_current(folder: Path, scale: float, seed: int) -> bool:
    manifest = folder / "generate.json"
    if not manifest.exists():
        return False
    try:
        meta = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return False
    return meta.get("scale") == scale and meta.get("seed") == seed and (folder / "events.csv").exists()


def ensure_synthetic(folder: Path, scale: float, seed: int, show: bool = True) -> bool:
    """Generate data into ``folder`` unless the same scale and seed are already there."""
    import subprocess
    import sys

    if _synthetic_is_current(folder, scale, seed):
        return False
    # `aisle generate` in a child process, as a user would run it: the generator holds every
    # synthetic event in numpy arrays (~0.7 GB at scale 1.0), and that memory is returned to
    # the system when it exits instead of staying in the pipeline's process.
    command = [sys.executable, "-m", "aisle.cli", "generate", "--scale", str(scale), "--seed", str(seed),
               "--out", str(folder)]
    subprocess.run(command, check=True, capture_output=not show)
    (folder / "generate.json").write_text(json.dumps({"scale": scale, "seed": seed}))
    return True


def headline_figures(target: Target | None = None, as_of: str | None = None) -> dict:
    """A few numbers that say the warehouse is alive: sessions, conversion, top categories and items."""
    from aisle.db import connect

    sfx = schema_suffix(as_of)
    marts, recs = sql.Identifier("marts" + sfx), sql.Identifier("recs" + sfx)
    with connect(target) as conn:
        sessions, converted, users = conn.execute(sql.SQL(
            "select count(*), count(*) filter (where is_converted), count(distinct user_id) from {}.fct_sessions"
        ).format(marts)).fetchone()
        top_categories = conn.execute(sql.SQL(
            "select category_id, sum(n_views) as views, sum(n_purchases) as purchases "
            "from {}.agg_category_daily group by category_id order by views desc, category_id limit 5"
        ).format(marts)).fetchall()
        top_trending = conn.execute(sql.SQL(
            "select item_id, category_id, trending_score from {}.rec_item_trending "
            "order by rank_overall limit 5").format(recs)).fetchall()
    return {"sessions": sessions, "users": users, "converted_sessions": converted,
            "session_conversion_rate": (converted / sessions) if sessions else 0.0,
            "top_categories": top_categories, "top_trending": top_trending}


def print_headlines(figures: dict) -> None:
    console.print(f"[bold]sessions[/] {figures['sessions']:,} by {figures['users']:,} visitors; "
                  f"{figures['converted_sessions']:,} converted "
                  f"([bold]{figures['session_conversion_rate']:.2%}[/] session conversion)")
    table = Table(title="top categories by views")
    for col in ("category", "views", "purchases"):
        table.add_column(col, justify="right")
    for cat, views, purchases in figures["top_categories"]:
        table.add_row(str(cat), f"{views:,}", f"{purchases:,}")
    console.print(table)
    table = Table(title="top trending items")
    for col in ("item", "category", "trending score"):
        table.add_column(col, justify="right")
    for item, cat, score in figures["top_trending"]:
        table.add_row(str(item), str(cat), f"{score:.2f}")
    console.print(table)


def example_users(target: Target | None = None) -> tuple[int | None, int, int | None]:
    """A known user whose list comes from category CF, an id no visitor has, and the busiest
    root category with a default list (the context of an unknown visitor browsing it)."""
    from aisle.db import connect

    with connect(target) as conn:
        row = conn.execute(
            "select user_id from recs.rec_user_recommendations where source = 'category_cf' "
            "group by user_id order by count(*) desc, user_id limit 1").fetchone()
        unknown = conn.execute("select coalesce(max(user_id), 0) + 1 from marts.dim_users").fetchone()[0]
        root = conn.execute(
            "select d.root_category_id from recs.rec_default_recommendations as d "
            "join marts.agg_root_category_daily as a on a.root_category_id = d.root_category_id "
            "group by d.root_category_id order by sum(a.n_events) desc, d.root_category_id limit 1").fetchone()
    return (row[0] if row else None), unknown, (root[0] if root else None)


def run_demo(*, target: str | None = None, scale: float = 1.0, seed: int = 42, evaluate: bool = True) -> None:
    """`make demo`: generate (unless present), load, build, recommend, evaluate; timings throughout."""
    from aisle.load import load_paths, load_summary

    resolved = resolve_target(target)
    timer = StepTimer()
    folder = project_root() / "data" / "synthetic"
    with timer.step(f"generate RetailRocket-format data (scale {scale}, seed {seed})") as note:
        made = ensure_synthetic(folder, scale, seed)
        note["detail"] = f"written to {folder}" if made else f"already in {folder}"
    with timer.step("load into raw") as note:
        results = load_paths([folder], target=resolved, progress=True)
        note["detail"] = (f"{sum(r.rows_loaded for r in results if r.status == 'loaded'):,} rows loaded, "
                          f"{sum(r.rows_rejected for r in results if r.status == 'loaded'):,} rejected, "
                          f"{sum(r.status == 'skipped' for r in results)} files already loaded")
    summary = load_summary(resolved)
    run_pipeline(target=target, timer=timer)
    with timer.step("headline figures"):
        print_headlines(headline_figures(resolved))
    known, unknown, root = example_users(resolved)
    if known is not None:
        print_recommendations(known, target=resolved)
    print_recommendations(unknown, target=resolved)
    if root is not None:
        print_recommendations(unknown, target=resolved, root_category_id=root)
    if evaluate:
        from aisle.evaluate import evaluate as run_evaluate

        with timer.step("evaluate (honest backtest)") as note:
            report = run_evaluate(target=resolved, show=True)
            note["detail"] = f"report in {report.get('paths', {}).get('markdown', 'reports/')}"
    console.print(_load_table(summary))
    console.print(timer.table("make demo: timings per step"))


def _load_table(summary: dict) -> Table:
    table = Table(title="raw data loaded")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, value in summary.get("tables", {}).items():
        table.add_row(name, f"{value:,}")
    for key in ("rows_read", "rows_loaded", "rows_rejected"):
        if key in summary:
            table.add_row(key.replace("_", " "), f"{summary[key]:,}")
    return table

