"""What one translate_batch run is asked to translate: from its form or its asset events.

A run started from *Trigger* translates what its form names. A run started by events on the
Asset monitor.incoming_asset translates one request per event: Airflow may gather several
events into one run, and each names its own input in its `extra`
(`{"input_path": ..., "output_path": ..., "beam_size": ...}`, only `input_path` required).
An event's values must pass the form's own JSON schema, so a producer cannot ask for what the
form refuses. Without an output path the output goes into the folder of
monitor.translated_asset (a file:// URI), under the input's name.

Whoever triggers the run or emits the event names the paths, so they are confined here, before
any task translates: the input inside monitor.input_root, the output inside monitor.output_root,
neither in the project checkout (pipeline/monitor/batch_paths.py). A relative path is under its
root. `translate` checks them again, since XCom is not trusted either (docs/security.md).

Light imports only: the DAG file reads BATCH_PARAM_SCHEMA at parse time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import MAX_BEAM_SIZE, load_config, local_folder_of
from pipeline.errors import ConfigError
from pipeline.monitor.batch_paths import BatchRoots, batch_roots
from pipeline.paths import project_paths

log = logging.getLogger(__name__)

PATH_SCHEMA: dict[str, Any] = {"type": ["null", "string"], "minLength": 1, "maxLength": 4096}
BATCH_PARAM_SCHEMA: dict[str, dict[str, Any]] = {
    "input_path": PATH_SCHEMA,
    "output_path": PATH_SCHEMA,
    "beam_size": {"type": ["null", "integer"], "minimum": 1, "maximum": MAX_BEAM_SIZE},
}


def schema_violation(name: str, value: Any) -> str | None:
    """What is wrong with `value` for batch param `name` (jsonschema's words), or None."""
    import jsonschema  # the validator Airflow's Params use; imported only when a run starts

    schema = BATCH_PARAM_SCHEMA[name]
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else str(error.message)


def event_extras(
    triggering_asset_events: Mapping[Any, Sequence[Any]] | None,
) -> list[dict[str, Any]]:
    """The `extra` of each asset event that started a run (Airflow's context entry)."""
    events = triggering_asset_events or {}
    return [dict(event.extra or {}) for batch in events.values() for event in batch]


def planned_batches(
    form: Mapping[str, Any], event_extras: Sequence[Mapping[str, Any]], project: Path
) -> list[dict[str, Any]]:
    """The requests of a run, confined to the roots of the project's params.yaml now."""
    config = load_config(project_paths(project).params)
    roots = batch_roots(config, project)
    return batch_requests(form, event_extras, roots, config.monitor.translated_asset)


def batch_requests(
    form: Mapping[str, Any],
    event_extras: Sequence[Mapping[str, Any]],
    roots: BatchRoots,
    translated_asset: str,
) -> list[dict[str, Any]]:
    """One request ({input_path, output_path, beam_size}) per batch this run translates."""
    if form.get("input_path"):
        values = [_checked(form, "the Trigger form's")]
    elif event_extras:
        values = [
            _checked(extra, f"asset event {n}'s extra") for n, extra in enumerate(event_extras, 1)
        ]
    else:
        raise ConfigError(
            "translate_batch: nothing to translate; set `input_path` in the Trigger form, or "
            'emit an event on monitor.incoming_asset with extra {"input_path": "<file or folder>"}'
        )
    requests = [_resolved(value, roots, translated_asset) for value in values]
    unique = [request for n, request in enumerate(requests) if request not in requests[:n]]
    log.info("batches to translate: %s", unique)
    return unique


def _checked(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The batch params among `values`, each within the form's schema; input_path required."""
    picked = {name: values.get(name) for name in BATCH_PARAM_SCHEMA}
    for name, value in picked.items():
        problem = schema_violation(name, value)
        if problem:
            raise ConfigError(f"{where} `{name}` is {value!r}: {problem} (the form's rule)")
    if not picked["input_path"]:
        raise ConfigError(
            f"{where} has no `input_path`; name the file or folder to translate, e.g. "
            '{"input_path": "/srv/mt/incoming/to-translate/batch-01.txt"}'
        )
    return picked


def _resolved(
    values: Mapping[str, Any], roots: BatchRoots, translated_asset: str
) -> dict[str, Any]:
    """Absolute paths inside their roots (a relative one is under its root); the default
    output path."""
    input_path = roots.input_path(roots.inputs / values["input_path"])
    if values.get("output_path"):
        output_path = roots.outputs / values["output_path"]
    else:
        output_path = asset_folder(translated_asset) / input_path.name
    return {
        "input_path": str(input_path),
        "output_path": str(roots.output_path(output_path)),
        "beam_size": values.get("beam_size"),
    }


def asset_folder(uri: str) -> Path:
    """The local folder a file:// Asset URI names (where outputs go by default)."""
    folder = local_folder_of(uri)
    if folder is None:
        raise ConfigError(
            f"monitor.translated_asset is {uri!r}, not a local file:// URI, so there is no "
            "default output folder; set `output_path` in the form or the event's extra"
        )
    return folder
