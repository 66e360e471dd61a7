"""Run params: what one DAG run may override in params.yaml, from its form or an asset event.

The Trigger form (Airflow Params) and asset-event extras share one JSON schema, built from the
ranges pipeline/config.py declares, so a producer's event cannot ask for what the form refuses.
Two rules apply to events only: they may tighten the promotion policy (to manual) but never
loosen it, and they cannot choose the registered model. Keys of an event's `extra` that are not
run params (Airflow's own `from_rest_api`, other consumers' metadata) are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.config import Config, param_specs
from pipeline.errors import ConfigError
from pipeline.model_naming import model_name_for_pair

log = logging.getLogger(__name__)

# The value of a choice field that means "whatever params.yaml says".
KEEP = "params.yaml"


def _schema(key: str) -> dict[str, Any]:
    """The JSON schema of a run param that sets params.yaml's `key`."""
    spec = param_specs()[key]
    if spec.choices:
        return {"type": "string", "enum": [KEEP, *spec.choices]}
    json_type = {int: "integer", float: "number", str: "string"}[spec.hint]
    bounds = spec.rule.json_schema() if spec.rule else {}
    return {"type": ["null", json_type], **bounds}


# Run param -> the params.yaml key it sets: a run changes these and nothing else.
PARAMS_KEY: dict[str, str] = {
    "epochs": "train.epochs",
    "data_source": "data.source",
    "data_path": "data.path",
    "src_lang": "data.src_lang",
    "tgt_lang": "data.tgt_lang",
    "model_name": "register.model_name",
    "promotion_policy": "register.policy",
}
# Run param -> its JSON schema (the DAG's Params use it as is); anything else is refused.
RUN_PARAM_SCHEMA: dict[str, dict[str, Any]] = {
    name: _schema(key) for name, key in PARAMS_KEY.items()
}
RUN_PARAM_NAMES: tuple[str, ...] = tuple(RUN_PARAM_SCHEMA)


def schema_violation(name: str, value: Any) -> str | None:
    """What is wrong with `value` for run param `name` (jsonschema's words), or None."""
    import jsonschema  # the validator Airflow's Params use; imported only when a run starts

    schema = RUN_PARAM_SCHEMA[name]
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    return None if error is None else str(error.message)


def event_values(extras: Sequence[Mapping[str, Any]], current: Config) -> dict[str, Any]:
    """The run params carried by the asset events that started a run, checked; later wins."""
    values: dict[str, Any] = {}
    ignored: set[str] = set()
    for extra in extras:
        for name, value in extra.items():
            if name in RUN_PARAM_SCHEMA:
                _check_event_value(name, value, current)
                values[name] = value
            else:
                ignored.add(name)
    if ignored:
        log.info("asset event extra keys that are not run params (ignored): %s", sorted(ignored))
    return values


def _check_event_value(name: str, value: Any, current: Config) -> None:
    where = f"asset event extra `{name}` is {value!r}"
    if name == "model_name":
        raise ConfigError(
            f"{where}: an asset event cannot choose the registered model; set the run's "
            "`model_name` in the Trigger form, or register.model_name in params.yaml"
        )
    problem = schema_violation(name, value)
    if problem:
        raise ConfigError(f"{where}: {problem} (the rule of the Trigger form's `{name}`)")
    if name == "promotion_policy" and value == "auto" and current.register.policy == "manual":
        raise ConfigError(
            f"{where} but register.policy is 'manual': an asset event may tighten the "
            "promotion policy to manual, never loosen it"
        )


def run_values(form: Mapping[str, Any], events: Mapping[str, Any]) -> dict[str, Any]:
    """The run's param values: what its asset events carry, then what its form set."""
    return {**events, **{name: value for name, value in form.items() if is_set(value)}}


def is_set(value: Any) -> bool:
    return value is not None and value != "" and value != KEEP


def overrides_from_run_params(values: Mapping[str, Any], current: Config) -> dict[str, Any]:
    """params.yaml overrides ({section: {key: value}}) for the run params that were set."""
    unknown = sorted(set(values) - set(RUN_PARAM_NAMES))
    if unknown:
        raise ConfigError(
            f"run params: unknown param `{unknown[0]}`; allowed: {', '.join(RUN_PARAM_NAMES)}"
        )
    overrides: dict[str, dict[str, Any]] = {}
    if is_set(values.get("epochs")):
        overrides.setdefault("train", {})["epochs"] = values["epochs"]
    data = {
        key: values[name]
        for name, key in (("data_source", "source"), ("data_path", "path"))
        if is_set(values.get(name))
    }
    data |= {key: values[key] for key in ("src_lang", "tgt_lang") if is_set(values.get(key))}
    if data:
        overrides["data"] = data
    register = _register_overrides(values, current, data)
    if register:
        overrides["register"] = register
    return overrides


def _register_overrides(
    values: Mapping[str, Any], current: Config, data: Mapping[str, Any]
) -> dict[str, Any]:
    register: dict[str, Any] = {}
    if is_set(values.get("promotion_policy")):
        register["policy"] = values["promotion_policy"]
    if is_set(values.get("model_name")):
        register["model_name"] = values["model_name"]
        return register
    old_pair = (current.data.src_lang, current.data.tgt_lang)
    new_pair = (data.get("src_lang", old_pair[0]), data.get("tgt_lang", old_pair[1]))
    if new_pair != old_pair:
        name = current.register.model_name
        register["model_name"] = model_name_for_pair(name, old_pair, new_pair)
    return register
