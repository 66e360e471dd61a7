"""One sweep from start to end, in steps both `mt sweep` and the sweep_translation DAG take.

1. `plan_sweep`: check the grid (every point against params.yaml's rules), refuse a name used
   before, open the MLflow parent run. Nothing runs before this has passed.
2. `run_one_point`, once per point (in threads for `--jobs N`, in mapped Airflow tasks):
   the stages up to evaluate in the point's own workspace, saved as its DVC experiment, then
   its val scores onto its training run; a log line as it starts (`point 2 of 6 (lr-2):
   train.learning_rate=0.002`) and as it ends.
3. `register_best`: the point with the best val score in the task's metric
   (`val.<register.metric>`: val BLEU for translation) goes through the register stage, the
   normal gate, from its own experiment commit.

Every point starts from the commit the sweep planned on (params.yaml as committed there, with
the point's overrides), in a workspace of its own (pipeline/workspaces.py): nothing in the
project checkout changes, so a DAG run or a hand-run `dvc repro` beside a sweep changes
nothing in it, and it changes nothing in them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.paths import project_paths
from pipeline.sweep import experiments
from pipeline.sweep.errors import SweepError
from pipeline.sweep.grid import (
    Point,
    check_points,
    check_sweep_name,
    grid_points,
    parse_grid,
    ranking_metric,
)
from pipeline.sweep.table import FINISHED, PointRow, duration, winner
from pipeline.sweep.tracking import (
    Sweep,
    close_sweep,
    mark,
    open_sweep,
    point_rows,
    record_point,
    record_registration,
)
from pipeline.tasks import metric_label

log = logging.getLogger(__name__)


def plan_sweep(root: Path, name: str, sets: Sequence[str]) -> Sweep:
    """Check the grid and open the sweep's MLflow run; nothing has run when this fails."""
    paths = project_paths(root)
    check_sweep_name(name)
    axes = parse_grid(sets)
    points = grid_points(name, axes)
    baseline = experiments.baseline_rev(root)
    params_text = experiments.committed_params(root, baseline)
    check_points(params_text, points)
    taken = [p.name for p in points if experiments.experiment_rev(root, baseline, p.name)]
    if taken:
        raise SweepError(
            f"DVC experiment {taken[0]} exists already for commit {baseline[:7]}; choose "
            "another --name"
        )
    sweep = open_sweep(paths, name, axes, points, baseline, ranking_metric(params_text))
    log.info("sweep %s: %d points from commit %s", name, len(points), baseline[:7])
    return sweep


def run_one_point(root: Path, sweep: Sweep, point: Point) -> PointRow:
    """One point, logged as it starts (its params) and as it ends (its val score, or why it
    failed): a point trains for minutes, and with `--jobs N` several run at once."""
    place = point_place(sweep, point)
    log.info("%s: %s", place, point.describe())
    try:
        row = run_and_record(root, sweep, point)
    except PipelineError as error:
        log.warning("%s failed: %s", place, error)
        raise
    log.info(
        "%s: val %s %.2f, training %s",
        place,
        metric_label(sweep.metric),
        row.val_score or 0.0,
        duration(row.train_seconds),
    )
    return row


def point_place(sweep: Sweep, point: Point) -> str:
    """`point 2 of 6 (lr-2)`; `point lr-2` in a DAG's mapped task, whose sweep comes without
    its points (Airflow numbers the mapped tasks)."""
    if point not in sweep.points:
        return f"point {point.name}"
    return f"point {sweep.points.index(point) + 1} of {len(sweep.points)} ({point.name})"


def run_and_record(root: Path, sweep: Sweep, point: Point) -> PointRow:
    """One point through its workspace into its DVC experiment, its val scores recorded; its
    state on the parent run says `failed: why` when it does not finish."""
    paths = project_paths(root)
    mark(paths, sweep, point, "running")
    try:
        rev = experiments.run_point(root, point, sweep.baseline, sweep.run_id)
        scores = experiments.val_scores(root, rev, sweep.metric)
        row = record_point(paths, sweep, point, rev, scores)
    except PipelineError as error:
        mark(paths, sweep, point, f"failed: {error}")
        raise
    mark(paths, sweep, point, FINISHED)
    return row


def unfinished(rows: Sequence[PointRow]) -> list[PointRow]:
    return [row for row in rows if row.status != FINISHED]


def finish_sweep(root: Path, sweep: Sweep) -> list[PointRow]:
    """Close the parent run: FINISHED when every point finished, else FAILED."""
    rows = point_rows(project_paths(root), sweep)
    close_sweep(project_paths(root), sweep, rows)
    return rows


def register_best(root: Path, sweep: Sweep) -> dict[str, Any]:
    """The best point by val score (the sweep's metric) through the register stage (smoke
    check, significance gate, audit), from a checkout of its experiment commit; returns
    reports/registration.json."""
    paths = project_paths(root)
    rows = point_rows(paths, sweep)
    best = winner(rows, sweep.name, sweep.metric)
    left_out = ", ".join(row.name for row in unfinished(rows))
    if left_out:
        log.warning("sweep %s: %s did not finish; choosing among the others", sweep.name, left_out)
    if not (best.exp_rev and best.run_id):  # winner() returns finished points only
        raise SweepError(f"sweep {sweep.name}: {best.name} has no experiment commit or run")
    log.info(
        "registering %s (val %s %.2f) through the gate",
        best.name,
        metric_label(sweep.metric),
        best.val_score or 0.0,
    )
    registration = experiments.register_point(root, best.exp_rev, best.name, best.run_id, sweep)
    record_registration(paths, sweep, best, registration)
    return registration


# ------------------------------------------------------------- the sweep_translation DAG's tasks


def plan_for_dag(root: Path, name: str, sets: Sequence[str]) -> list[dict[str, Any]]:
    """Plan for the DAG; one entry per point (the mapped tasks' arguments): the sweep's
    header and the point."""
    sweep = plan_sweep(root, name, sets)
    return [{"sweep": sweep.header(), "point": point.as_dict()} for point in sweep.points]


def sweep_of_plan(plan: Sequence[Mapping[str, Any]]) -> Sweep:
    """The Sweep back from `plan_for_dag`'s entries."""
    points = [Point.from_dict(entry["point"]) for entry in plan]
    return Sweep.from_header(plan[0]["sweep"], points)
