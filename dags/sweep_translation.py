"""sweep_translation: a grid of DVC experiments over the Celery workers (see docs/airflow.md).

This file is configuration: no work and no heavy import at parse time. The tasks call
pipeline/sweep/runner.py, the code `mt sweep` runs, which imports DVC and MLflow only when a
task runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Param, chain, dag, setup, task, teardown

from pipeline.orchestration.dag_defaults import parse_time_config, project_dir, task_defaults
from pipeline.sweep.grid import MAX_POINTS, SWEEP_NAME

# At parse time the params.yaml beside this DAG (or MT_PROJECT_DIR's) gives timeouts and retries.
CONFIG = parse_time_config(__file__)
SETTINGS, MONITOR = CONFIG.orchestration, CONFIG.monitor

DOC_MD = """
### Sweep: a grid of experiments, the best registered

**Grid**: one `KEY=V1,V2` per line, the syntax of `mt sweep run --set` and `dvc exp run -S`
(comma lists, `range(start, stop[, step])`, `choice(...)`); the points are the cartesian
product. `plan_sweep` checks every point against the committed params.yaml's rules before
anything runs (a typo or a value out of range fails it with one line) and opens the sweep's
MLflow run. The points start from the project's HEAD commit; the project folder is never
edited, so sweeps, retrain runs and a person's `dvc repro` run side by side.

**run_point** (one mapped task per point, spread over the Celery workers) runs the stages up
to `evaluate` with its overrides in its own workspace (a git worktree sharing the project's
DVC cache, like every retrain_translation run) and saves it as a DVC experiment named after
the point; its training run is a child of the sweep's MLflow run, tagged with its DVC
experiment, and gets its val scores.

**register_best** takes the point with the best **val** score in the task's metric
(`val.<register.metric>`: val BLEU for translation) through the register stage, the normal
gate (smoke check, significance gate on the test split, audit), from a checkout of its
experiment commit. **close_sweep** closes the MLflow run whatever happened. `mt sweep best
--sweep <name>` prints the table.
"""


@setup
@task(execution_timeout=timedelta(minutes=10))
def plan_sweep(params: dict[str, Any] | None = None, **context: Any) -> list[dict[str, Any]]:
    """Check the grid and open the sweep's MLflow run; one entry per point."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.errors import ConfigError
    from pipeline.sweep.commands import default_name
    from pipeline.sweep.runner import plan_for_dag

    params = params or {}
    name = params.get("name") or default_name()
    try:
        return plan_for_dag(project_dir(), name, params.get("grid") or [])
    except ConfigError as error:  # a bad grid or a name used before: a retry cannot fix it
        raise AirflowFailException(str(error)) from None


@task(execution_timeout=timedelta(minutes=SETTINGS.train_timeout_min))
def run_point(sweep: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """One point up to evaluate in its own workspace, saved as its DVC experiment; its val
    score in the sweep's metric (register.metric), under the XCom key `val_bleu`, the name it
    had when sweeps ranked by BLEU only."""
    from pipeline.sweep.grid import Point
    from pipeline.sweep.runner import run_one_point
    from pipeline.sweep.tracking import Sweep

    row = run_one_point(project_dir(), Sweep.from_header(sweep), Point.from_dict(point))
    return {"point": row.name, "val_bleu": row.val_bleu, "train_seconds": row.train_seconds}


@task(
    retries=SETTINGS.retries,
    execution_timeout=timedelta(minutes=SETTINGS.stage_timeout_min),
)
def register_best(plan: list[dict[str, Any]]) -> dict[str, Any]:
    """The best point by val score (register.metric) through the register stage;
    reports/registration.json."""
    from pipeline.sweep.runner import register_best as register
    from pipeline.sweep.runner import sweep_of_plan

    return register(project_dir(), sweep_of_plan(plan))


@teardown
@task(execution_timeout=timedelta(minutes=10))
def close_sweep(plan: list[dict[str, Any]]) -> str:
    """The sweep's MLflow run FINISHED (FAILED if a point did not finish); the table in the
    task log."""
    from pipeline.sweep.commands import table_text
    from pipeline.sweep.runner import finish_sweep, sweep_of_plan

    sweep = sweep_of_plan(plan)
    table = table_text(sweep, finish_sweep(project_dir(), sweep))
    print(table)
    return table


SWEEP_PARAMS = {
    "grid": Param(
        type="array",
        items={"type": "string", "minLength": 3},
        minItems=1,
        maxItems=MAX_POINTS,
        title="Grid",
        description="One KEY=V1,V2 per line, e.g. train.learning_rate=0.001,0.002 "
        "(dvc exp run -S syntax); the sweep runs every combination.",
    ),
    "name": Param(
        None,
        type=["null", "string"],
        pattern=f"^{SWEEP_NAME.pattern}$",
        title="Sweep name",
        description="Prefixes the DVC experiment names. Empty: sweep-<UTC time>.",
    ),
}


@dag(
    dag_id="sweep_translation",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Each point has its own workspace: sweeps may overlap like retrain runs.
    max_active_runs=SETTINGS.max_active_runs,
    doc_md=DOC_MD,
    tags=["translation", "mlops", "dvc", "sweep"],
    params=SWEEP_PARAMS,
    default_args=task_defaults(SETTINGS, MONITOR),
)
def sweep_translation() -> None:
    plan = plan_sweep()
    points = run_point.expand_kwargs(plan)
    chain(plan, points, register_best(plan), close_sweep(plan))


sweep_translation()
