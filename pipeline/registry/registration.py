"""Register one candidate: log its pyfunc, create the version with every tag, alias, gate.

The order makes a crash at any point leave the registry consistent:
1. read the champion and decide the gate (nothing written yet);
2. log the pyfunc (an unregistered logged model is not a version: harmless if we die here);
3. create the version with lineage, evidence, gate and registration tags in one call;
4. point @challenger at it; 5. move @champion (recorded in the audit trail) if the gate says
   so; 6. tag the version `registration.state=complete`.
A run that dies after 3 leaves a version in state `created`; the rerun finds it by its
`registration.key` and does 4-6 for it instead of creating another.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.models.model import ModelInfo

from pipeline.aligned_text import text_lines
from pipeline.pause_points import pause_point
from pipeline.registry.candidate import Candidate, PyfuncSpec
from pipeline.registry.errors import RegistryError
from pipeline.registry.evidence_logging import EvaluationEvidence, log_evidence
from pipeline.registry.gate import GateDecision, GateEvidence, GateRules, decide
from pipeline.registry.model_card import ModelCardFacts, facts_from, model_card, with_verdict
from pipeline.registry.registration_key import (
    COMPLETE,
    CREATED,
    KEY_TAG,
    STATE_TAG,
    registration_key,
)
from pipeline.registry.store import (
    CHALLENGER,
    CHAMPION,
    ChampionMoved,
    Registry,
    registry_call,
)
from pipeline.tasks import SACREBLEU_METRICS, Task
from pipeline.text import remove_invisible
from pipeline.tracking import ensure_experiment, fluent_store

log = logging.getLogger(__name__)

MODEL_ARTIFACT_PATH = "translator"
# Evaluation outputs logged inside the model, so a later gate can re-test this version.
HYPOTHESES_ARTIFACT = "eval_hypotheses"
METRICS_ARTIFACT = "eval_metrics"
EVIDENCE_PREFIX = "evidence."
# The language pair a version translates (params.yaml data.src_lang / data.tgt_lang).
SRC_LANG_TAG, TGT_LANG_TAG = "data.src_lang", "data.tgt_lang"
# What a version does (params.yaml `task`) and the metric the gate judged it by
# (register.metric); a version registered before either was recorded is translation, BLEU.
TASK_TAG, METRIC_TAG = "task", "register.metric"
DEFAULT_TASK, DEFAULT_METRIC = "translation", "bleu"
Action = Literal["created", "resumed", "unchanged"]


@dataclass(frozen=True)
class RegistrationResult:
    model_name: str
    version: str
    run_id: str
    model_uri: str
    decision: GateDecision
    champion_before: str | None
    champion_after: str | None
    tracking_uri: str
    # created: a new version; resumed: one an interrupted run left unfinished, now finished;
    # unchanged: these inputs were registered already, nothing was written.
    action: Action = "created"
    task: str = DEFAULT_TASK
    metric: str = DEFAULT_METRIC  # register.metric: what `delta` is in

    def as_report(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "registration": self.action,
            "task": self.task,
            "metric": self.metric,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "registry_uri": f"models:/{self.model_name}/{self.version}",
            "decision": self.decision.outcome,
            "reason": self.decision.reason,
            "delta": self.decision.delta,
            "p_value": self.decision.p_value,
            "test_signature": self.decision.test_signature,
            "champion_before": self.champion_before,
            "champion_after": self.champion_after,
            "tracking_uri": self.tracking_uri,
        }


def sha256_lines(lines: Sequence[str]) -> str:
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode("utf-8")).hexdigest()


def evidence_tags(evidence: GateEvidence) -> dict[str, str]:
    """The tags a later gate reads back (`stored_evidence`): task, metric, languages, test
    split and `evidence.<metric>` (with `evidence.<metric>_signature` for BLEU and chrF)."""
    score = f"{EVIDENCE_PREFIX}{evidence.metric}"
    tags = {
        TASK_TAG: evidence.task,
        METRIC_TAG: evidence.metric,
        SRC_LANG_TAG: evidence.src_lang,
        TGT_LANG_TAG: evidence.tgt_lang,
        f"{EVIDENCE_PREFIX}split": evidence.split,
        f"{EVIDENCE_PREFIX}references_sha256": evidence.references_sha256,
        score: str(evidence.score),
        f"{EVIDENCE_PREFIX}hypotheses_sha256": sha256_lines(evidence.hypotheses),
    }
    if evidence.signature is not None:
        tags[f"{score}_signature"] = evidence.signature
    return tags


def task_and_metric(tags: Mapping[str, str]) -> tuple[Task, str]:
    """What a version does and the metric it was judged by (translation, BLEU when its tags
    predate them)."""
    task = tags.get(TASK_TAG, DEFAULT_TASK)
    return typing.cast(Task, task), tags.get(METRIC_TAG, DEFAULT_METRIC)


def stored_evidence(registry: Registry, version: str) -> GateEvidence | str:
    """A version's test evidence from its tags and logged hypotheses, or why there is none.

    A version without language tags (registered before they were recorded) has no evidence:
    nothing says which language it translates into. One without `task` and `register.metric`
    tags (registered before tasks) is a translation judged by BLEU, as it was then.
    """
    tags = registry.version(version).tags
    task, metric = task_and_metric(tags)
    evidence_keys = ["split", "references_sha256", metric]
    if metric in SACREBLEU_METRICS:
        evidence_keys.insert(2, f"{metric}_signature")
    required = (SRC_LANG_TAG, TGT_LANG_TAG, *(EVIDENCE_PREFIX + key for key in evidence_keys))
    missing = [tag for tag in required if tag not in tags]
    if missing:
        return (
            f"version {version} carries no {missing[0]} tag (registered before versions "
            "recorded it); if this challenger is better, promote it by hand with `mt registry "
            "promote VERSION`"
        )
    split = tags[f"{EVIDENCE_PREFIX}split"]
    text = registry.pyfunc_artifact_text(version, HYPOTHESES_ARTIFACT, f"{split}.txt")
    return GateEvidence(
        src_lang=tags[SRC_LANG_TAG],
        tgt_lang=tags[TGT_LANG_TAG],
        split=split,
        references_sha256=tags[f"{EVIDENCE_PREFIX}references_sha256"],
        signature=tags.get(f"{EVIDENCE_PREFIX}{metric}_signature"),
        score=float(tags[f"{EVIDENCE_PREFIX}{metric}"]),
        hypotheses=tuple(remove_invisible(line) for line in text_lines(text)),
        task=task,
        metric=metric,
    )


def model_description(task: str) -> str:
    """The registered model's description where `mt register` creates it."""
    what = {"summarization": "LSTM summariser", "dialogue": "LSTM dialogue model"}
    if task in what:
        return f"{what[task]}; see docs/tasks.md and docs/registry.md"
    return "Multi30k LSTM translator; see docs/registry.md"


# How often a registration re-gates when @champion moves under it before it gives up.
GATE_ATTEMPTS = 3


def run_gate(registry: Registry, candidate: Candidate, rules: GateRules) -> GateDecision:
    """Decide against the current champion (read-only); the decision names the champion it
    compared with (`champion_version`), the one a promotion then expects to replace."""
    champion = registry.alias_version(CHAMPION)
    if champion is None:
        return decide(candidate.evidence, None, candidate.references, rules)
    evidence = stored_evidence(registry, str(champion.version))
    if isinstance(evidence, str):
        return GateDecision("rejected", f"not compared: {evidence}", str(champion.version))
    pair = (str(champion.version), evidence)
    return decide(candidate.evidence, pair, candidate.references, rules)


def log_pyfunc(registry: Registry, spec: PyfuncSpec, candidate: Candidate) -> ModelInfo:
    """Log the pyfunc with the evaluation outputs, in the training run when there is one, then
    the evidence the MLflow pages show (evidence_logging.py) in the same run, linked to it.

    Before the version exists: a resumed registration starts after this, so nothing is
    logged twice; a run that dies here leaves an unregistered logged model, as before.
    """
    artifacts = {
        **spec.artifacts,
        HYPOTHESES_ARTIFACT: str(candidate.hypotheses_dir),
        METRICS_ARTIFACT: str(candidate.metrics_file),
    }
    run_id = candidate.training_run_id
    # mlflow.pyfunc.log_model has no client equivalent: the fluent API, pointed at the
    # registry's store for this block only.
    with registry_call(registry.uri, "logging the model"), fluent_store(registry.uri):
        experiment_id = None if run_id else ensure_experiment(registry.client, registry.paths)
        run_name = None if run_id else "register"
        with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name):
            python_model: Any = spec.python_model
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT_PATH,
                python_model=str(python_model) if isinstance(python_model, Path) else python_model,
                artifacts=artifacts,
                model_config=spec.model_config,
                code_paths=spec.code_paths,
                pip_requirements=spec.pip_requirements,
                signature=spec.signature,
                input_example=spec.input_example,
            )
            if candidate.evaluation is not None and info.run_id is not None:
                log_evidence(candidate.evaluation, info.run_id, info.model_id)
            return info


def register_candidate(
    registry: Registry,
    spec: PyfuncSpec,
    candidate: Candidate,
    rules: GateRules,
    actor: str,
    on_step: Callable[[str], None] | None = None,
) -> RegistrationResult:
    """Register the candidate once: create its version, or finish the one an interrupted run
    made from the same inputs, or report the one a finished run made (registration_key.py).

    `on_step(name)` runs after the steps "logged" and "versioned" (fault-injection tests).
    """
    step = on_step or (lambda _name: None)
    registry.ensure_model(model_description(candidate.evidence.task))
    registry.reconcile_champion(actor)  # the trail knows any move made outside mt
    key = registration_key(spec, candidate, rules)
    existing = registry.version_tagged(KEY_TAG, key)
    champion_before = _number(registry.alias_version(CHAMPION))
    if existing is not None and existing.tags.get(STATE_TAG) == COMPLETE:
        log.info("version %s was registered from these inputs already", existing.version)
        decision = GateDecision.from_tags(existing.tags)
        champions = (champion_before, champion_before)
        return _result(registry, existing, decision, champions, "unchanged", candidate.evidence)
    action: Action = "created" if existing is None else "resumed"
    if existing is None:
        decision = run_gate(registry, candidate, rules)
        log.info("gate: %s (%s)", decision.outcome, decision.reason)
        version = _create_version(registry, spec, candidate, decision, actor, key, step)
    else:
        log.warning(
            "finishing version %s, left unfinished by an interrupted run", existing.version
        )
        decision = _resumed_decision(registry, existing, candidate, rules, actor)
        version = existing
    regate = functools.partial(run_gate, registry, candidate, rules)
    champion_after, decision = _finish(registry, str(version.version), decision, regate, actor)
    champions = (champion_before, champion_after)
    return _result(registry, version, decision, champions, action, candidate.evidence)


def _create_version(
    registry: Registry,
    spec: PyfuncSpec,
    candidate: Candidate,
    decision: GateDecision,
    actor: str,
    key: str,
    step: Callable[[str], None],
) -> ModelVersion:
    """Log the pyfunc, then create the version with every tag and the model card in one call;
    the card then gains the `models:/<name>/<version>` that only creation assigns."""
    info = log_pyfunc(registry, spec, candidate)
    step("logged")
    if info.run_id is None:
        raise RegistryError(f"logged model {info.model_uri} has no run id")
    tags = {
        **candidate.lineage,
        **evidence_tags(candidate.evidence),
        **decision.as_tags(),
        "registered_by": actor,
        KEY_TAG: key,
        STATE_TAG: CREATED,
    }
    facts = _card_facts(registry.name, spec, candidate, info.model_uri)
    card = model_card(facts, decision)
    version = registry.create_version(info.model_uri, info.run_id, info.model_id, tags, card)
    number = str(version.version)
    registry.set_description(number, model_card(replace(facts, version=number), decision))
    step("versioned")
    return version


def _card_facts(
    name: str, spec: PyfuncSpec, candidate: Candidate, model_uri: str
) -> ModelCardFacts:
    """The model card's facts: what the candidate and the pyfunc's request limits know."""
    evaluation = candidate.evaluation or EvaluationEvidence(metrics={})
    decoding = candidate.evaluated_model.decoding if candidate.evaluated_model else {}
    facts = facts_from(
        name,
        candidate.lineage,
        evaluation.metrics,
        evaluation.split_sizes,
        decoding,
        spec.model_config,
    )
    evidence = candidate.evidence
    return replace(facts, model_uri=model_uri, task=evidence.task, metric=evidence.metric)


def _resumed_decision(
    registry: Registry, version: ModelVersion, candidate: Candidate, rules: GateRules, actor: str
) -> GateDecision:
    """The gate for a version an interrupted run created: decided again against today's
    champion (the same champion gives the same, seeded decision), unless the interrupted run
    had already made it champion."""
    if registry.reconcile_champion(actor) == str(version.version):  # settles a killed move
        return GateDecision.from_tags(version.tags)
    decision = run_gate(registry, candidate, rules)
    _record_decision(registry, version.tags, str(version.version), decision)
    return decision


def _finish(
    registry: Registry,
    version: str,
    decision: GateDecision,
    regate: Callable[[], GateDecision],
    actor: str,
) -> tuple[str | None, GateDecision]:
    """@challenger, @champion if the gate promotes, then mark the registration complete;
    the champion after, and the decision that was applied."""
    registry.set_alias(CHALLENGER, version)
    decision = _apply_gate(registry, version, decision, regate, actor)
    registry.set_version_tags(version, {STATE_TAG: COMPLETE})
    return _number(registry.alias_version(CHAMPION)), decision


def _apply_gate(
    registry: Registry,
    version: str,
    decision: GateDecision,
    regate: Callable[[], GateDecision],
    actor: str,
) -> GateDecision:
    """Apply the decision only while @champion is the version it was made against: the move
    is a compare-and-set (Registry.move_champion with expected_from); when the champion has
    changed, gate again against the new one, at most GATE_ATTEMPTS times."""
    for _attempt in range(GATE_ATTEMPTS):
        champion = _number(registry.alias_version(CHAMPION))
        if champion == version:
            return decision
        if champion != decision.champion_version:
            log.warning(
                "@champion is v%s, not v%s the gate compared with: gating again",
                champion or "-",
                decision.champion_version or "-",
            )
            decision = regate()
            log.info("gate: %s (%s)", decision.outcome, decision.reason)
            _record_decision(registry, registry.version(version).tags, version, decision)
        if not decision.promote:
            return decision
        pause_point("registry.gate_decided")
        try:
            registry.move_champion(
                version, "gate", actor, decision.reason, expected_from=decision.champion_version
            )
            return decision
        except ChampionMoved as moved:
            log.warning("%s", moved)
    raise RegistryError(
        f"@champion of {registry.name} moved {GATE_ATTEMPTS} times while version {version} was "
        "being gated; @champion unchanged by this run (fix: re-run `mt register` once the "
        "other promotions are done: it gates again)"
    )


def _record_decision(
    registry: Registry, tags: dict[str, str], version: str, decision: GateDecision
) -> None:
    """Rewrite the version's gate.* tags, and the verdict in its model card, when a new
    decision differs from them."""
    if any(tags.get(key) != value for key, value in decision.as_tags().items()):
        registry.set_version_tags(version, decision.as_tags())
        card = registry.version(version).description or ""
        if card:
            metric = task_and_metric(tags)[1]
            registry.set_description(version, with_verdict(card, decision, metric))


def _number(version: ModelVersion | None) -> str | None:
    return None if version is None else str(version.version)


def _result(
    registry: Registry,
    version: ModelVersion,
    decision: GateDecision,
    champions: tuple[str | None, str | None],
    action: Action,
    evidence: GateEvidence,
) -> RegistrationResult:
    return RegistrationResult(
        model_name=registry.name,
        version=str(version.version),
        run_id=str(version.run_id),
        model_uri=str(version.source),
        decision=decision,
        champion_before=champions[0],
        champion_after=champions[1],
        tracking_uri=registry.uri,
        action=action,
        task=evidence.task,
        metric=evidence.metric,
    )
