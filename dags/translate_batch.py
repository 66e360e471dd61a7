"""translate_batch: new text in, translated by @champion, output and manifest out.

This file is configuration: no work and no heavy import at parse time. The tasks call
pipeline/orchestration/batch_request.py (what to translate) and pipeline/monitor/batch.py (the
translation, the same code as `mt translate-batch`), which import MLflow only when they run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, Param, dag, task

from pipeline.orchestration.batch_request import BATCH_PARAM_SCHEMA, event_extras, planned_batches
from pipeline.orchestration.dag_defaults import parse_time_config, project_dir, task_defaults

# At parse time the params.yaml beside this DAG (or MT_PROJECT_DIR's) gives assets and retries.
CONFIG = parse_time_config(__file__)
SETTINGS, MONITOR = CONFIG.orchestration, CONFIG.monitor
INCOMING = Asset(name="mt_incoming_text", uri=MONITOR.incoming_asset, group="translation")
TRANSLATED = Asset(name="mt_translated_text", uri=MONITOR.translated_asset, group="translation")

DOC_MD = """
### Translate a batch with @champion

**Runs start** when a producer emits an event on the Asset `mt_incoming_text`
(`monitor.incoming_asset`) whose `extra` names the input: `{"input_path": "<file or folder>"}`,
optionally `"output_path"` and `"beam_size"` (checked against this form's rules; one batch per
event), or from *Trigger* with the form. A folder input translates each of its `*.txt` files.
Without an output path the output goes into the folder of `monitor.translated_asset`.
Inputs must lie in `monitor.input_root` (empty: `orchestration.data_root`) and outputs in
`monitor.output_root` (empty: the `monitor.translated_asset` folder), never in the project
checkout and with no symlink on the way; a relative path is under its root. A path outside
fails `plan_batches`.

**translate** (one mapped task per batch) runs what `mt translate-batch` runs, with the paths
checked against the roots again: every input file is checked first (a regular file, at most
`monitor.max_batch_mb` in all, UTF-8, not empty, no line over `register.max_input_chars`, with
the line number in the error), the input is checked for drift against the training corpus
(its Data Docs page holds counts and line numbers, never the text), and the version @champion
points at translates it in requests of `monitor.batch_size` lines. The output
is written atomically with `<output>.manifest.json` beside it (version, run id, input sha256,
line count, beam size, times). The same input with the same version and beam is not
translated again, so retries and reruns are safe. On success the task emits an event on
`mt_translated_text` (`monitor.translated_asset`) whose `extra` lists the outputs.
"""


@task(execution_timeout=timedelta(minutes=5))
def plan_batches(params: dict[str, Any] | None = None, **context: Any) -> list[dict[str, Any]]:
    """The batches of this run: the form's, else one per triggering asset event; each path
    inside monitor.input_root / output_root, or the task fails (no retry)."""
    extras = event_extras(context.get("triggering_asset_events"))
    return planned_batches(params or {}, extras, project_dir())


@task(
    outlets=[TRANSLATED],
    retries=SETTINGS.retries,
    execution_timeout=timedelta(minutes=SETTINGS.stage_timeout_min),
)
def translate(request: dict[str, Any], **context: Any) -> dict[str, Any]:
    """Translate one batch (idempotent) and put its outputs in the Asset event's extra."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.errors import ConfigError, DataError
    from pipeline.monitor.batch import run_request

    try:
        extra = run_request(project_dir(), request)
    # Bad input or a path outside the roots: no retry can fix it (a registry error retries).
    except (ConfigError, DataError) as error:
        raise AirflowFailException(str(error)) from None
    context["outlet_events"][TRANSLATED].extra = extra
    return extra


BATCH_PARAMS = {
    "input_path": Param(
        None,
        **BATCH_PARAM_SCHEMA["input_path"],
        title="Input path",
        description="A text file (one sentence per line) or a folder of *.txt files on the "
        "worker, inside monitor.input_root; relative paths are under it.",
    ),
    "output_path": Param(
        None,
        **BATCH_PARAM_SCHEMA["output_path"],
        title="Output path",
        description="A file (for a file) or a folder, inside monitor.output_root; relative "
        "paths are under it. Empty: the monitor.translated_asset folder, under the input's "
        "name.",
    ),
    "beam_size": Param(
        None,
        **BATCH_PARAM_SCHEMA["beam_size"],
        title="Beam size",
        description="1 = greedy. Empty: the decode.beam_size the champion was registered with.",
    ),
}


@dag(
    dag_id="translate_batch",
    schedule=INCOMING,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    # Two runs on the same input would both translate it before either wrote its manifest.
    max_active_runs=1,
    doc_md=DOC_MD,
    tags=["translation", "mlops", "monitoring"],
    params=BATCH_PARAMS,
    default_args=task_defaults(SETTINGS, MONITOR),
)
def translate_batch() -> None:
    translate.expand(request=plan_batches())


translate_batch()
