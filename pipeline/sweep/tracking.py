"""The MLflow side of a sweep: one parent run, each point's training run a child of it.

The parent run (experiment `translation`, run name `sweep <name>`) holds the plan: tag
`mt.sweep` (the name), `mt.sweep.baseline` (the commit the points start from), a param
`grid.<key>` per axis and `point.<experiment>` per point (its overrides as JSON), the metric
the points are ranked by as tag `mt.sweep.metric` (register.metric at that commit; absent on
sweeps older than it: BLEU), and each point's state as tag `mt.sweep.state.<experiment>`
(running, finished, failed: why). A point's
training run is opened by `mt train` itself as a child (`mlflow.parentRunId`, from
MT_SWEEP_PARENT_RUN_ID) named and tagged after its DVC experiment (`mt.dvc_exp_name`); once
the point has been evaluated the sweep adds its val scores (every number of metrics.json's
val entry as `val.<name>`: `val.bleu`, `val.chrf`, ... or `val.rouge_l`, ...), its training
time (`sweep.train_seconds`) and tags `mt.sweep.point` (its overrides) and `mt.dvc_exp_rev`
(its experiment commit). The table of `mt sweep best` is read back from these alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.paths import ProjectPaths
from pipeline.sweep.errors import SweepError
from pipeline.sweep.grid import Axis, Point
from pipeline.sweep.table import FINISHED, PointRow
from pipeline.tracking import DVC_EXP_NAME_TAG, PARENT_RUN_TAG

SWEEP_TAG = "mt.sweep"
BASELINE_TAG = "mt.sweep.baseline"
METRIC_TAG = "mt.sweep.metric"
STATE_TAG = "mt.sweep.state."  # + experiment name
POINT_TAG = "mt.sweep.point"
EXP_REV_TAG = "mt.dvc_exp_rev"
TRAIN_SECONDS = "sweep.train_seconds"
REGISTERED_TAGS = ("winner", "registered_version", "gate_outcome", "gate_reason")
MAX_STATE_CHARS = 500


@dataclass(frozen=True)
class Sweep:
    name: str
    run_id: str  # the parent run
    experiment_id: str
    baseline: str  # git commit
    points: tuple[Point, ...]
    keys: tuple[str, ...]  # the swept params.yaml keys, in --set order
    metric: str = "bleu"  # register.metric at `baseline`: the val score points are ranked by

    def header(self) -> dict[str, Any]:
        """Everything but the points, JSON-able (an XCom of the DAG)."""
        return {
            "name": self.name,
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "baseline": self.baseline,
            "keys": list(self.keys),
            "metric": self.metric,
        }

    @classmethod
    def from_header(cls, header: Mapping[str, Any], points: Sequence[Point] = ()) -> Sweep:
        ids = (header["name"], header["run_id"], header["experiment_id"], header["baseline"])
        metric = str(header.get("metric") or "bleu")
        return cls(*ids, tuple(points), tuple(header["keys"]), metric)


def _client(paths: ProjectPaths) -> Any:
    from pipeline.tracking import store_client, tracking_uri

    return store_client(tracking_uri(paths))


def _call(paths: ProjectPaths, step: str) -> Any:
    """MLflow and network failures as one line naming the store (the registry's wording)."""
    from pipeline.registry.store import tracking_call
    from pipeline.tracking import tracking_uri

    return tracking_call(tracking_uri(paths), step)


def open_sweep(
    paths: ProjectPaths,
    name: str,
    axes: Sequence[Axis],
    points: Sequence[Point],
    baseline: str,
    metric: str = "bleu",
) -> Sweep:
    """The parent run, with the plan and the metric its points are ranked by; a name used
    before is refused."""
    from mlflow.entities import Param

    from pipeline.tracking import ensure_experiment

    with _call(paths, f"opening sweep {name}"):
        client = _client(paths)
        experiment_id = ensure_experiment(client, paths)
        if _parent_runs(client, experiment_id, name):
            raise SweepError(f"a sweep named {name!r} exists already; choose another --name")
        tags = {SWEEP_TAG: name, BASELINE_TAG: baseline, METRIC_TAG: metric}
        run = client.create_run(experiment_id, tags=tags, run_name=f"sweep {name}")
        params = [Param(f"grid.{axis.key}", ",".join(axis.values)) for axis in axes]
        params += [Param(f"point.{p.name}", json.dumps(p.overrides)) for p in points]
        client.log_batch(run.info.run_id, params=params)
    keys = tuple(axis.key for axis in axes)
    return Sweep(name, run.info.run_id, experiment_id, baseline, tuple(points), keys, metric)


def _parent_runs(client: Any, experiment_id: str, name: str | None) -> list[Any]:
    where = f"tags.`{SWEEP_TAG}` = '{name}'" if name else f"tags.`{SWEEP_TAG}` != ''"
    found: list[Any] = client.search_runs(
        [experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1000
    )
    return found


def find_sweep(paths: ProjectPaths, name: str | None) -> Sweep:
    """The sweep named `name`, or the newest one."""
    from pipeline.tracking import ensure_experiment

    with _call(paths, "reading the sweeps"):
        client = _client(paths)
        runs = _parent_runs(client, ensure_experiment(client, paths), name)
    if not runs:
        which = f"named {name!r}" if name else "at all"
        raise SweepError(f"no sweep {which} in the tracking store; run `mt sweep run` first")
    return sweep_of(runs[0])


def sweep_of(run: Any) -> Sweep:
    params: Mapping[str, str] = run.data.params
    points = [
        Point(key.removeprefix("point."), json.loads(value))
        for key, value in params.items()
        if key.startswith("point.")
    ]
    points.sort(key=lambda point: int(point.name.rsplit("-", 1)[1]))
    keys = tuple(points[0].overrides) if points else ()
    return Sweep(
        name=run.data.tags[SWEEP_TAG],
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
        baseline=run.data.tags.get(BASELINE_TAG, ""),
        points=tuple(points),
        keys=keys,
        metric=run.data.tags.get(METRIC_TAG, "bleu"),
    )


def mark(paths: ProjectPaths, sweep: Sweep, point: Point, state: str) -> None:
    """The point's state on the parent run: running, finished, or failed: why."""
    with _call(paths, f"recording the state of {point.name}"):
        text = " ".join(state.split())[:MAX_STATE_CHARS]
        _client(paths).set_tag(sweep.run_id, STATE_TAG + point.name, text)


def _children(sweep: Sweep) -> str:
    return f"tags.{PARENT_RUN_TAG} = '{sweep.run_id}'"


def training_run(paths: ProjectPaths, sweep: Sweep, name: str) -> Any:
    """The child run `mt train` opened for experiment `name`: the newest, when a cleared
    Airflow task ran the point again."""
    with _call(paths, f"finding the training run of {name}"):
        where = f"{_children(sweep)} and tags.`{DVC_EXP_NAME_TAG}` = '{name}'"
        found = _client(paths).search_runs(
            [sweep.experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1
        )
    if not found:
        raise SweepError(
            f"{name}: no training run under sweep run {sweep.run_id} (did the train stage run "
            "with MT_SWEEP_PARENT_RUN_ID set?)"
        )
    return found[0]


def record_point(
    paths: ProjectPaths, sweep: Sweep, point: Point, rev: str, scores: Mapping[str, Any]
) -> PointRow:
    """Val scores (every number of the val entry), training time and the experiment commit on
    the point's training run."""
    from mlflow.entities import Metric, RunTag

    run = training_run(paths, sweep, point.name)
    info = run.info
    seconds = (info.end_time - info.start_time) / 1000 if info.end_time else None
    metrics = {
        f"val.{name}": float(value)
        for name, value in scores.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    if seconds is not None:
        metrics[TRAIN_SECONDS] = seconds
    tags = {POINT_TAG: json.dumps(point.overrides), EXP_REV_TAG: rev}
    with _call(paths, f"recording the scores of {point.name}"):
        stamp = info.end_time or info.start_time
        _client(paths).log_batch(
            info.run_id,
            metrics=[Metric(key, value, stamp, 0) for key, value in metrics.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
    score = metrics.get(f"val.{sweep.metric}")
    return PointRow(point.name, point.overrides, FINISHED, score, seconds, info.run_id, rev)


def point_rows(paths: ProjectPaths, sweep: Sweep) -> list[PointRow]:
    """Every planned point, with what the sweep recorded for it."""
    with _call(paths, f"reading sweep {sweep.name}"):
        client = _client(paths)
        parent = client.get_run(sweep.run_id)
        children = client.search_runs(
            [sweep.experiment_id], _children(sweep), order_by=["attributes.start_time ASC"]
        )
    # Oldest first, so a point run again (a cleared Airflow task) shows its newest run.
    by_name = {run.data.tags.get(DVC_EXP_NAME_TAG): run for run in children}
    return [
        _row(
            point,
            parent.data.tags.get(STATE_TAG + point.name),
            by_name.get(point.name),
            sweep.metric,
        )
        for point in sweep.points
    ]


def _row(point: Point, state: str | None, run: Any, metric: str = "bleu") -> PointRow:
    status = (state or "not run").split(":", 1)[0]
    if run is None:
        return PointRow(point.name, point.overrides, status)
    metrics = run.data.metrics
    return PointRow(
        name=point.name,
        overrides=point.overrides,
        status=status,
        val_score=metrics.get(f"val.{metric}"),
        train_seconds=metrics.get(TRAIN_SECONDS),
        run_id=run.info.run_id,
        exp_rev=run.data.tags.get(EXP_REV_TAG),
    )


def close_sweep(paths: ProjectPaths, sweep: Sweep, rows: Sequence[PointRow]) -> None:
    """FINISHED when every point finished, else FAILED (the table says which did not)."""
    done = all(row.status == FINISHED for row in rows)
    with _call(paths, f"closing sweep {sweep.name}"):
        _client(paths).set_terminated(sweep.run_id, "FINISHED" if done else "FAILED")


def record_registration(
    paths: ProjectPaths, sweep: Sweep, winner: PointRow, registration: Mapping[str, Any]
) -> None:
    """Which point was registered, as what, and the gate's verdict, on the parent run."""
    values = (
        winner.name,
        str(registration.get("version")),
        str(registration.get("decision")),
        str(registration.get("reason", ""))[:MAX_STATE_CHARS],
    )
    with _call(paths, f"recording the registration of sweep {sweep.name}"):
        client = _client(paths)
        for key, value in zip(REGISTERED_TAGS, values, strict=True):
            client.set_tag(sweep.run_id, f"{SWEEP_TAG}.{key}", value)
