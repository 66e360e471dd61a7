"""The registered model a batch is translated with: which version, loaded once, fed in requests.

`--model models:/<name>@<alias>` (default `@champion` of register.model_name) is resolved to
its version number first, and that version is loaded (`models:/<name>/<version>`): a move of
the alias during a long batch cannot mix two models in one output, and the manifest names the
version that translated every line. Requests are cut to fit the version's own limits (its
`model_config`, pipeline/serving.py InputLimits) and monitor.batch_size, their work measured as
the served model measures it (pipeline/serving.py `request_work`, with the step bounds of the
version's decoding settings).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import DataError, PipelineError
from pipeline.paths import ProjectPaths
from pipeline.pause_points import pause_point
from pipeline.progress import with_progress
from pipeline.registry.errors import RegistryError
from pipeline.registry.store import CHAMPION, Registry, registry_settings
from pipeline.serving import BEAM_SIZE_PARAM, DECODING_ARTIFACT, StepBounds, request_work
from pipeline.tracking import download_model_files, load_pyfunc, mlflow_settings, model_metadata

log = logging.getLogger(__name__)

MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")


@dataclass(frozen=True)
class ModelChoice:
    """A registered version, as the manifest records it."""

    name: str
    version: str
    run_id: str
    requested: str  # the URI as given, e.g. models:/<name>@champion
    store_uri: str  # the tracking store that holds it

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class RequestLimits:
    """What one predict request may hold: the version's limits and monitor.batch_size."""

    max_rows: int
    max_input_chars: int
    max_request_work: int
    step_bounds: StepBounds


def choose_model(paths: ProjectPaths, requested: str | None, default_name: str) -> ModelChoice:
    """The version `requested` names now (default: models:/<default_name>@champion)."""
    uri = requested or f"models:/{default_name}@{CHAMPION}"
    match = MODEL_URI.fullmatch(uri)
    if match is None:
        raise PipelineError(
            f"--model {uri}: batch translation records the registered version it used; give "
            "models:/<name>@<alias> or models:/<name>/<version>"
        )
    registry = Registry.connect(paths, match["name"])
    if match["alias"]:
        found = registry.alias_version(match["alias"])
        if found is None:
            raise RegistryError(
                f"--model {uri}: {match['name']} has no @{match['alias']}; register and promote "
                "a version first (`mt registry list` shows the versions)"
            )
    else:
        found = registry.version(match["version"])
    run_id = str(found.run_id or "")
    return ModelChoice(match["name"], str(found.version), run_id, uri, registry.uri)


@dataclass(frozen=True)
class ModelFacts:
    """What a version's MLmodel says about requests, read without loading the model."""

    default_beam_size: int
    limits: RequestLimits


def model_facts(choice: ModelChoice, batch_size: int) -> ModelFacts:
    """The version's default beam (its signature) and request limits (its model_config)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        with mlflow_settings(registry_settings()):
            info = model_metadata(choice.store_uri, choice.uri)
    except (MlflowException, OSError) as error:
        raise PipelineError(f"--model {choice.requested}: {_first_line(error)}") from None
    schema = info.signature.params if info.signature is not None else None
    specs = {param.name: param for param in (schema.params if schema else [])}
    if BEAM_SIZE_PARAM not in specs:
        raise PipelineError(
            f"--model {choice.requested}: version {choice.version} takes no beam_size "
            "parameter (logged before serving took decoding options); register the model again"
        )
    flavor = info.flavors.get(mlflow.pyfunc.FLAVOR_NAME, {})
    config = flavor.get(mlflow.pyfunc.MODEL_CONFIG) or {}
    bounds = _step_bounds(choice, flavor)
    return ModelFacts(
        int(specs[BEAM_SIZE_PARAM].default), _limits(config, batch_size, bounds, choice)
    )


def _step_bounds(choice: ModelChoice, flavor: dict[str, Any]) -> StepBounds:
    """The version's decoding settings as step bounds; StepBounds() for a model that has none
    (it checks its requests with those, pipeline/serving.py TextToTextModel)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.uri import append_to_uri_path

    artifact = (flavor.get("artifacts") or {}).get(DECODING_ARTIFACT)
    if artifact is None:
        return StepBounds()
    try:
        with mlflow_settings(registry_settings()):
            uri = append_to_uri_path(choice.uri, artifact["path"])
            local = download_model_files(choice.store_uri, uri)
        with open(local, encoding="utf-8") as settings:
            return StepBounds.from_settings_json(settings.read())
    except (MlflowException, OSError, ValueError, TypeError) as error:
        raise PipelineError(
            f"--model {choice.requested}: the decoding settings of version {choice.version} "
            f"do not read: {_first_line(error)}"
        ) from None


def _limits(
    config: dict[str, Any], batch_size: int, bounds: StepBounds, choice: ModelChoice
) -> RequestLimits:
    try:
        return RequestLimits(
            max_rows=min(batch_size, int(config["max_batch_rows"])),
            max_input_chars=int(config["max_input_chars"]),
            max_request_work=int(config["max_request_work"]),
            step_bounds=bounds,
        )
    except KeyError as missing:
        raise PipelineError(
            f"--model {choice.requested}: version {choice.version} has no {missing} in its "
            "model_config; register the model again"
        ) from None


def load_version(choice: ModelChoice) -> Any:
    """The version's pyfunc, from the store that holds it."""
    from mlflow.exceptions import MlflowException

    try:
        with mlflow_settings(registry_settings()):
            return load_pyfunc(choice.store_uri, choice.uri)
    except (MlflowException, OSError) as error:
        raise PipelineError(
            f"--model {choice.requested}: version {choice.version} does not load: "
            f"{_first_line(error)}"
        ) from None


def _first_line(error: Exception) -> str:
    return str(getattr(error, "message", None) or error).splitlines()[0][:300]


def request_spans(
    lines: Sequence[str], limits: RequestLimits, beam_size: int, origin: str
) -> Iterator[tuple[int, int]]:
    """[start, end) spans of consecutive lines, each one request within `limits`.

    A request's work is the beam times the decoder steps its lines may take
    (pipeline/serving.py `request_work`), so long lines make smaller requests; a line that
    alone is over a limit is a DataError naming it.
    """
    start, work = 0, 0
    for index, line in enumerate(lines):
        cost = request_work([line], beam_size, limits.step_bounds)
        _check_line_fits(line, cost, beam_size, limits, f"{origin}: line {index + 1}")
        if index > start and (
            index - start >= limits.max_rows or work + cost > limits.max_request_work
        ):
            yield start, index
            start, work = index, 0
        work += cost
    yield start, len(lines)


def _check_line_fits(
    line: str, cost: int, beam_size: int, limits: RequestLimits, where: str
) -> None:
    if len(line) > limits.max_input_chars:
        raise DataError(
            f"{where}: {len(line)} characters, over this model's max_input_chars="
            f"{limits.max_input_chars}; split that line into sentences"
        )
    if cost > limits.max_request_work:
        raise DataError(
            f"{where}: {len(line)} characters may take {cost // beam_size} decoder steps: "
            f"{cost} units of work at beam {beam_size}, over this model's max_request_work="
            f"{limits.max_request_work}; split that line or use a smaller beam"
        )


def translate_lines(
    model: Any,
    lines: Sequence[str],
    spans: Sequence[tuple[int, int]],
    beam_size: int,
    progress: str | None = None,
) -> list[str]:
    """One translation per line, one predict call per span, same order.

    `progress` names the work ("translating in.txt") to show the requests done on stderr.
    """
    import pandas as pd
    from mlflow.exceptions import MlflowException

    outputs: list[str] = []
    for start, end in with_progress(spans, progress, "request") if progress else spans:
        frame = pd.DataFrame({"text": list(lines[start:end])})
        try:
            predicted = model.predict(frame, params={BEAM_SIZE_PARAM: beam_size})
        except MlflowException as error:  # the model's request checks (pipeline/serving.py)
            raise PipelineError(f"lines {start + 1}-{end}: {error.message}") from None
        outputs.extend(str(text) for text in predicted["translation"])
        pause_point("batch.request_translated")
    return outputs
