"""The champion watch's look at `@champion`: does it load and answer, how does it score.

1. **Load check**: the champion's version is loaded as serving loads it
   (`mlflow.pyfunc.load_model("models:/<name>/<version>")`, in this process's environment) and
   must pass the smoke check on them (pipeline/registry/smoke.py `output_problem`, the check
   every new champion passed before its move).
2. **Canary**: the loaded model runs on the canary sources (pipeline/monitor/canary.py) in
   requests within its own limits, at its default beam (the one it was evaluated with); the
   score in the task's metric (register.metric: BLEU, chrF, ROUGE-L, ...) is compared by the
   rules of pipeline/monitor/findings.py with the champion's recorded canary score and with
   that of the version the gate last promoted.

"The version the gate last promoted" is read from the audit trail of `@champion`: the target of
the newest finished move whose version the gate vouched for (its `gate.outcome` is `promoted`,
or `awaiting_approval`: the gate would have promoted it and a person approved). A version made
champion by hand after the gate rejected it is not vouched for; a rollback to a vouched version
makes it the baseline again. With no such move (a trail older than the gate) the champion is
compared with its own record only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pipeline.config import Config
from pipeline.monitor.batch_model import RequestLimits, request_spans, translate_lines
from pipeline.monitor.canary import (
    CanarySet,
    RecordedCanary,
    canary_score,
    load_canary,
    metric_signature,
)
from pipeline.monitor.canary import recorded_canary as recorded_canary_of
from pipeline.monitor.findings import Finding, canary_findings, load_finding
from pipeline.paths import ProjectPaths
from pipeline.registry.errors import RegistryError
from pipeline.registry.smoke import CANARY_SENTENCES, output_problem
from pipeline.registry.store import CHAMPION, Registry, registry_settings
from pipeline.serving import BEAM_SIZE_PARAM, TEXT_COLUMN, InputLimits, step_bounds_of
from pipeline.tracking import load_pyfunc, mlflow_settings

log = logging.getLogger(__name__)

# Gate outcomes that vouch for a version: the gate promoted it, or would have (policy manual).
VOUCHED_OUTCOMES = frozenset({"promoted", "awaiting_approval"})


@dataclass(frozen=True)
class CanaryScore:
    """The canary score (`metric`, register.metric) of the champion now, its recorded one and
    the baseline's."""

    split: str
    pairs: int
    metric: str
    score: float
    recorded_score: float | None
    baseline_version: str | None
    baseline_score: float | None

    def as_dict(self) -> dict[str, Any]:
        """The history's record: the numbers under the metric's name (`bleu`, `recorded_bleu`,
        `baseline_bleu` for BLEU, the names records had before other metrics existed; `rouge_l`,
        `recorded_rouge_l`, ... for ROUGE-L) and `metric` naming it."""
        metric = self.metric
        return {
            "split": self.split,
            "pairs": self.pairs,
            "metric": metric,
            metric: self.score,
            f"recorded_{metric}": self.recorded_score,
            "baseline_version": self.baseline_version,
            f"baseline_{metric}": self.baseline_score,
        }


@dataclass(frozen=True)
class ChampionCheck:
    model_name: str
    version: str | None  # None: no @champion
    loads: bool
    canary: CanaryScore | None
    findings: tuple[Finding, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "loads": self.loads,
            "canary": None if self.canary is None else self.canary.as_dict(),
            "findings": [finding.as_dict() for finding in self.findings],
        }


def check_champion(registry: Registry, paths: ProjectPaths, config: Config) -> ChampionCheck:
    """Load check and canary of the version `@champion` points at now."""
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        problem = "@champion is not set, so serving has no model (register and promote one)"
        return ChampionCheck(
            registry.name, None, False, None, (load_finding(registry.name, problem),)
        )
    version = str(champion.version)
    subject = f"{registry.name} v{version}"
    model = loaded_model(registry, version)
    if isinstance(model, str):
        return ChampionCheck(registry.name, version, False, None, (load_finding(subject, model),))
    canary, metric = load_canary(paths, config), config.metric
    own = recorded_canary_of(registry, version, canary, metric)
    signature = metric_signature(champion.tags, canary.split, metric)
    translations = canary_translations(model, canary, config.monitor.batch_size)
    if isinstance(translations, str):
        return ChampionCheck(
            registry.name, version, False, None, (load_finding(subject, translations),)
        )
    now = canary_score(metric, translations, canary, signature)
    baseline = baseline_record(registry, version, canary, metric)
    findings = canary_findings(subject, now, own, baseline, config.monitor, metric)
    score = CanaryScore(
        split=canary.split,
        pairs=len(canary.rows),
        metric=metric,
        score=now,
        recorded_score=own.score if isinstance(own, RecordedCanary) else None,
        baseline_version=baseline.version if isinstance(baseline, RecordedCanary) else None,
        baseline_score=baseline.score if isinstance(baseline, RecordedCanary) else None,
    )
    return ChampionCheck(registry.name, version, True, score, tuple(findings))


def loaded_model(registry: Registry, version: str) -> Any:
    """The version's pyfunc once it answered the smoke sentences, or what went wrong."""
    import pandas as pd

    try:
        with mlflow_settings(registry_settings()):
            model = load_pyfunc(registry.uri, f"models:/{registry.name}/{version}")
        output = model.predict(pd.DataFrame({TEXT_COLUMN: list(CANARY_SENTENCES)}))
    except Exception as error:  # a broken model or environment can raise anything
        return _error_line(error)
    return output_problem(output, len(CANARY_SENTENCES)) or model


def canary_translations(model: Any, canary: CanarySet, batch_size: int) -> list[str] | str:
    """The model's outputs for the canary sources, in requests within its limits, or the
    error."""
    try:
        limits = InputLimits.from_model_config(model.model_config)
        beam_size = default_beam_size(model)
        request = RequestLimits(
            max_rows=min(batch_size, limits.max_batch_rows),
            max_input_chars=limits.max_input_chars,
            max_request_work=limits.max_request_work,
            step_bounds=step_bounds_of(model),
        )
        spans = list(
            request_spans(canary.sources, request, beam_size, f"canary of {canary.split}")
        )
        return translate_lines(model, canary.sources, spans, beam_size)
    except Exception as error:  # as in loaded_model: each failure is a finding, not a crash
        return f"translating the canary failed: {_error_line(error)}"


def default_beam_size(model: Any) -> int:
    """The beam the version was evaluated with: its signature's `beam_size` default."""
    signature = model.metadata.signature
    params = signature.params.params if signature is not None and signature.params else []
    defaults = {param.name: param.default for param in params}
    return int(defaults.get(BEAM_SIZE_PARAM, 1))


def baseline_record(
    registry: Registry, champion_version: str, canary: CanarySet, metric: str = "bleu"
) -> RecordedCanary | str | None:
    """The recorded canary of the version the gate last promoted, unless it is the champion."""
    baseline = gate_vouched_champion(registry)
    if baseline is None or baseline == champion_version:
        return None
    return recorded_canary_of(registry, baseline, canary, metric)


def gate_vouched_champion(registry: Registry) -> str | None:
    """The target of the trail's newest finished move to a version the gate vouched for."""
    moves = [move for move in registry.recorded_moves() if move.status == "FINISHED"]
    for move in reversed(moves):
        if move.to_version is not None and _vouched(registry, move.to_version):
            return move.to_version
    return None


def _vouched(registry: Registry, version: str) -> bool:
    try:
        tags = registry.version(version).tags
    except RegistryError:  # deleted since it was champion: it cannot be the baseline
        log.warning("version %s of the champion history is gone; skipped", version)
        return False
    return tags.get("gate.outcome") in VOUCHED_OUTCOMES


def _error_line(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    first = (text.splitlines() or ["(no message)"])[0][:300]
    return f"{type(error).__name__}: {first}"
