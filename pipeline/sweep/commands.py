"""`mt sweep run` and `mt sweep best`: the command line over pipeline/sweep/runner.py."""

from __future__ import annotations

import argparse
import concurrent.futures
from datetime import UTC, datetime
from typing import Any

from pipeline.errors import PipelineError
from pipeline.paths import project_paths
from pipeline.sweep import runner
from pipeline.sweep.errors import SweepError
from pipeline.sweep.table import PointRow, ranked, render
from pipeline.sweep.tracking import Sweep, find_sweep, point_rows
from pipeline.tasks import metric_label

MAX_JOBS = 32


def _jobs(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be 1..{MAX_JOBS}, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mt sweep", description="grids of DVC experiments")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a grid as DVC experiments, tracked in MLflow")
    run.add_argument(
        "-S", "--set", dest="sets", action="append", default=[], metavar="KEY=V1,V2",
        help="a params.yaml key and its values, DVC's -S grid syntax (repeat for more keys)",
    )  # fmt: skip
    run.add_argument("--jobs", type=_jobs, default=1, help="points run at once (default 1)")
    run.add_argument("--name", help="the sweep's name (default sweep-<UTC time>)")
    best = commands.add_parser("best", help="the table of a sweep; register its best point")
    best.add_argument("--sweep", help="the sweep's name (default: the newest sweep)")
    best.add_argument(
        "--register", action="store_true", help="register the best point through the gate"
    )
    return top


def default_name() -> str:
    return "sweep-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def run_points(sweep: Sweep, jobs: int) -> list[str]:
    """Every point, `jobs` at a time; the failures, one line each (the others still run)."""
    root = project_paths().root
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(runner.run_one_point, root, sweep, p): p for p in sweep.points}
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except PipelineError as error:
                failures.append(f"{futures[future].name}: {error}")
    return failures


def run_command(sets: list[str], jobs: int, name: str | None) -> int:
    paths = project_paths()
    name = name or default_name()
    sweep = runner.plan_sweep(paths.root, name, sets)
    try:
        failures = run_points(sweep, jobs)
    finally:
        rows = runner.finish_sweep(paths.root, sweep)
    print_table(sweep, rows)
    if failures:
        raise SweepError(f"{len(failures)} of {len(rows)} points failed: {'; '.join(failures)}")
    print(f"next: `mt sweep best --sweep {name} --register` registers {ranked(rows)[0].name}")
    return 0


def table_text(sweep: Sweep, rows: list[PointRow]) -> str:
    """What `mt sweep run | best` print: where the points came from, then the table."""
    heading = (
        f"sweep {sweep.name}: {len(rows)} points from commit {sweep.baseline[:7]} "
        f"(MLflow run {sweep.run_id}), by val {metric_label(sweep.metric)}:"
    )
    return f"{heading}\n\n{render(rows, sweep.keys, sweep.metric)}\n"


def print_table(sweep: Sweep, rows: list[PointRow]) -> None:
    print(table_text(sweep, rows))


def print_registration(registration: dict[str, Any]) -> None:
    print(
        f"registered {registration['model_name']} version {registration['version']} "
        f"({registration['registration']}); gate: {registration['decision']}: "
        f"{registration['reason']}"
    )
    before, after = (registration.get(key) or "-" for key in ("champion_before", "champion_after"))
    print(f"@champion: v{before} -> v{after}" if before != after else f"@champion: v{after}")


def best_command(name: str | None, register: bool) -> int:
    paths = project_paths()
    sweep = find_sweep(paths, name)
    print_table(sweep, point_rows(paths, sweep))
    if register:
        print_registration(runner.register_best(paths.root, sweep))
    return 0


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "run":
        return run_command(args.sets, args.jobs, args.name)
    return best_command(args.sweep, args.register)
