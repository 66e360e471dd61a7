"""retrain_translation: the DVC pipeline as an Airflow 3 DAG (see docs/airflow.md).

This file is configuration: no work and no heavy import at parse time. Every stage task runs
`dvc repro --single-item <stage>` in the project; the other tasks call pipeline.orchestration,
which imports MLflow only inside the functions that need it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    Param,
    chain,
    dag,
    setup,
    task,
    teardown,
)

from pipeline import orchestration
from pipeline.dag_defaults import parse_time_config, project_dir, task_defaults
from pipeline.monitor import alerts
from pipeline.orchestration import STAGES
from pipeline.params_lock import RunRef, RunState
from pipeline.run_params import KEEP, RUN_PARAM_SCHEMA

# At parse time the params.yaml beside this DAG (or MT_PROJECT_DIR's) gives schedule and retries.
CONFIG = parse_time_config(__file__)
# Schedule and retries (orchestration:); where failures and pending approvals are sent (monitor:).
SETTINGS, MONITOR = CONFIG.orchestration, CONFIG.monitor
RAW_CORPUS = Asset(name="mt_raw_corpus", uri=SETTINGS.raw_data_asset, group="translation")
# Stages that talk to the outside world (download, registry server) retry; the rest fail fast,
# since a retry cannot fix bad data or a bug. Train is the exception: a worker lost mid-epoch
# (the slowest task is the likeliest to meet one) retries once and resumes from its checkpoint.
FLAKY_STAGES = {"fetch", "register"}
RESUMABLE_STAGES = {"train"}

DOC_MD = """
### Retrain the English→German translator

One task per DVC stage: **fetch → validate_raw → clean → tokenize → profile → train →
evaluate → register**. Each runs `dvc repro --single-item <stage>` in the project folder (env
`MT_PROJECT_DIR` or the Variable `mt_project_dir`); a stage whose inputs did not change does
nothing, and the stage's own log streams into the task log.

**Runs start** on the schedule in `params.yaml` (`orchestration.schedule`), when a producer
updates the Asset `mt_raw_corpus` (new raw data; the event's `extra` may carry run params such
as `data_path`, checked against this form's rules; it may tighten the promotion policy to
manual, never loosen it, and cannot choose the model name), or from *Trigger* with the form.

**Run params** override `params.yaml` for this run only: `apply_run_params` writes them (after
validating them) and holds `params.yaml` for the run; `restore_params` takes them out again
whatever happened, keeping edits made meanwhile. While a run holds it, another run, `airflow
dags test` or a hand-run `mt`/`dvc repro` fails with a message naming the run. The train stage
logs the params it ran with to MLflow; the register stage tags the version with this run's id.

**Promotion**: policy `auto` lets the register stage's significance gate move `@champion`;
`manual` stops at `approve_promotion`, which shows the challenger against the champion and waits
for *Approve* (then `mt registry promote <version>`) or *Reject*.
"""


def _timeout(stage: str) -> timedelta:
    minutes = SETTINGS.train_timeout_min if stage == "train" else SETTINGS.stage_timeout_min
    return timedelta(minutes=minutes)


def _carried_inputs(context: dict[str, Any], stages: tuple[str, ...]) -> str | None:
    """What a multi-host run carries into this task: its settings and the results of
    `stages` (None on one host, where every task shares the project folder)."""
    ti = context["ti"]
    settings = ti.xcom_pull(task_ids="apply_run_params") or {}
    distributed = settings.get("distributed")
    results = [ti.xcom_pull(task_ids=name) for name in stages] if distributed else []
    return orchestration.run_inputs(settings, results)


def stage_task(stage: str) -> Any:
    """The task that runs one DVC stage, on the train queue or the default one."""
    retries = SETTINGS.retries if stage in FLAKY_STAGES else int(stage in RESUMABLE_STAGES)

    @task.bash(
        task_id=stage,
        queue=SETTINGS.train_queue if stage == "train" else SETTINGS.queue,
        execution_timeout=_timeout(stage),
        retries=retries,
        doc_md=f"`dvc repro --single-item {stage}` in the project folder (several hosts: "
        "pulled from and pushed to the DVC remote).",
    )
    def run_stage(**context: Any) -> str:
        earlier = STAGES[: STAGES.index(stage)]
        inputs = _carried_inputs(context, earlier)
        return orchestration.stage_command(project_dir(), stage, inputs)

    return run_stage()


def sync_task(queue: str) -> Any:
    """Several hosts: a worker of `queue` brings its checkout to the run's end state."""

    @task.bash(task_id=f"sync_checkout_{queue}", queue=queue)
    def sync_checkout(**context: Any) -> str:
        return orchestration.sync_command(project_dir(), _carried_inputs(context, STAGES))

    return sync_checkout()


def _this_run(context: dict[str, Any]) -> RunRef:
    return RunRef(context["dag"].dag_id, context["run_id"])


@setup
@task(execution_timeout=timedelta(minutes=5))
def apply_run_params(params: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    """Hold params.yaml for this run and write its overrides; returns policy and overrides."""
    count_runs = context["ti"].get_dr_count

    def state_of(run: RunRef) -> RunState:
        return orchestration.dag_run_state(run, count_runs)

    return orchestration.apply_run_params(
        project_dir(), params or {}, _this_run(context), state_of, _asset_event_extras(context)
    )


def _asset_event_extras(context: dict[str, Any]) -> list[dict[str, Any]]:
    """The `extra` of each asset event that triggered this run, oldest first."""
    events = context.get("triggering_asset_events") or {}
    return [dict(event.extra or {}) for batch in events.values() for event in batch]


@teardown
@task(execution_timeout=timedelta(minutes=5))
def restore_params(**context: Any) -> str:
    """Take this run's overrides out of params.yaml and free it (runs even when a stage failed)."""
    return orchestration.restore_params(project_dir(), _this_run(context))


@task.branch(execution_timeout=timedelta(minutes=10))
def choose_promotion(run_settings: dict[str, Any], **context: Any) -> str | None:
    """Policy manual: describe the challenger for the approver; auto: the gate already decided."""
    if run_settings["policy"] != "manual":
        return None
    orchestration.bring_in_reports(project_dir(), _carried_inputs(context, STAGES))
    request = orchestration.challenger_awaiting_approval(project_dir(), context["run_id"])
    if request is None:
        return None
    context["ti"].xcom_push(key="approval", value=request)
    return "approve_promotion"


@task(execution_timeout=timedelta(minutes=10))
def promote_challenger(**context: Any) -> str:
    """`mt registry promote <version>` once a human approved it."""
    ti = context["ti"]
    request = ti.xcom_pull(task_ids="choose_promotion", key="approval")
    answer = ti.xcom_pull(task_ids="approve_promotion") or {}
    approver = (answer.get("responded_by_user") or {}).get("name", "unknown")
    reason = f"approved by {approver} in Airflow run {context['run_id']}"
    orchestration.promote_version(project_dir(), request["model_name"], request["version"], reason)
    return str(request["version"])


RUN_PARAMS = {
    "epochs": Param(
        None,
        **RUN_PARAM_SCHEMA["epochs"],
        title="Epochs",
        description="Training epochs for this run. Empty: train.epochs from params.yaml.",
    ),
    "data_source": Param(
        KEEP,
        **RUN_PARAM_SCHEMA["data_source"],
        title="Data source",
        description="multi30k: the public corpus; dir: {split}.{lang} files; tsv: {split}.tsv.",
    ),
    "data_path": Param(
        None,
        **RUN_PARAM_SCHEMA["data_path"],
        title="Data path",
        description="Folder on the worker with the corpus (dir/tsv). Empty: data.path.",
    ),
    "src_lang": Param(
        None,
        **RUN_PARAM_SCHEMA["src_lang"],
        title="Source language",
        description="e.g. en. Empty: data.src_lang from params.yaml.",
    ),
    "tgt_lang": Param(
        None,
        **RUN_PARAM_SCHEMA["tgt_lang"],
        title="Target language",
        description="e.g. de or fr. Empty: data.tgt_lang from params.yaml.",
    ),
    "model_name": Param(
        None,
        **RUN_PARAM_SCHEMA["model_name"],
        title="Registered model name",
        description="Empty: register.model_name, with the language pair swapped if it changed.",
    ),
    "promotion_policy": Param(
        KEEP,
        **RUN_PARAM_SCHEMA["promotion_policy"],
        title="Promotion policy",
        description="auto: the significance gate decides; manual: a human approves in the UI.",
    ),
}


def _schedule() -> Any:
    if SETTINGS.schedule.lower() in {"none", ""}:
        return RAW_CORPUS
    timetable = CronTriggerTimetable(SETTINGS.schedule, timezone=SETTINGS.timezone)
    return AssetOrTimeSchedule(timetable=timetable, assets=RAW_CORPUS)


@dag(
    dag_id="retrain_translation",
    schedule=_schedule(),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["translation", "mlops", "dvc"],
    params=RUN_PARAMS,
    default_args={
        **task_defaults(SETTINGS, MONITOR),
        "execution_timeout": timedelta(minutes=SETTINGS.stage_timeout_min),
    },
)
def retrain_translation() -> None:
    run_settings = apply_run_params()
    stages = [stage_task(stage) for stage in STAGES]
    restored = restore_params()
    chain(run_settings, *stages)
    synced = [sync_task(queue) for queue in dict.fromkeys([SETTINGS.queue, SETTINGS.train_queue])]
    stages[-1] >> synced >> restored
    run_settings >> restored
    approval = ApprovalOperator(
        task_id="approve_promotion",
        subject="Promote {{ ti.xcom_pull(task_ids='choose_promotion', key='approval').title }}?",
        body="{{ ti.xcom_pull(task_ids='choose_promotion', key='approval').body }}",
        defaults="Reject",
        response_timeout=timedelta(hours=SETTINGS.approval_timeout_h),
        # Called once the request is in the UI (HITLOperator.execute), so the link works.
        notifiers=alerts.approval_notifiers(MONITOR),
    )
    chain(stages[-1], choose_promotion(run_settings), approval, promote_challenger())


retrain_translation()
