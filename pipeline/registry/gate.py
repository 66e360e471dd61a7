"""The promotion gate: does the challenger beat the champion, significantly, on the same test?

Pure: it sees hypotheses, references and numbers, never MLflow. It compares the task's primary
metric (`register.metric`, pipeline/tasks.py) by a paired bootstrap over the same test lines:

- BLEU and chrF: sacreBLEU's paired bootstrap resampling (`sacrebleu.significance.PairedTest`)
  with the metric built from the signature both versions were scored with, so the test
  measures what evaluate reported;
- ROUGE: pipeline/metrics/bootstrap.py `paired_test` over the per-sentence F1 scores of both
  versions (pipeline/metrics/scoring.py), which follows sacreBLEU's conventions, so a p-value
  reads the same way for every metric.

Only versions of one task, one metric and one language pair compete.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from typing import Any, Literal

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.significance import PairedTest, Result

from pipeline.config import RegisterConfig
from pipeline.evaluate import sacrebleu_seed
from pipeline.metrics.bootstrap import paired_test
from pipeline.metrics.scoring import ROUGE_TYPE_OF, sentence_scores
from pipeline.tasks import SACREBLEU_METRICS, Task, metric_label

Outcome = Literal["promoted", "rejected", "awaiting_approval"]


@dataclass(frozen=True)
class GateEvidence:
    """How one model did on the gate's test split; `hypotheses` one per reference line.

    `src_lang` and `tgt_lang` are its languages, `task` what it does and `metric` the
    `register.metric` it is judged by: only models of one task, metric and pair compete.
    `score` is that metric as metrics.json reports it; `signature` the sacreBLEU signature it
    was computed with (bleu, chrf), None for ROUGE, which the gate scores itself on both sides.
    """

    src_lang: str
    tgt_lang: str
    split: str
    references_sha256: str
    signature: str | None
    score: float
    hypotheses: tuple[str, ...]
    task: Task = "translation"
    metric: str = "bleu"

    @property
    def language_pair(self) -> str:
        return f"{self.src_lang}->{self.tgt_lang}"

    @property
    def label(self) -> str:
        """The metric as a person reads it (BLEU, chrF, ROUGE-L)."""
        return metric_label(self.metric)


@dataclass(frozen=True)
class GateRules:
    policy: Literal["auto", "manual"]
    min_score: float
    min_delta: float
    significance: float
    bootstrap_resamples: int
    seed: int

    @classmethod
    def from_config(cls, config: RegisterConfig, seed: int) -> GateRules:
        return cls(
            policy=config.policy,
            min_score=config.min_score,
            min_delta=config.min_delta,
            significance=config.significance,
            bootstrap_resamples=config.bootstrap_resamples,
            seed=seed,
        )


@dataclass(frozen=True)
class PairedResult:
    """The metric of champion and challenger on the same resampled lines, and the test's
    signature (sacreBLEU's for BLEU and chrF, one in its form for ROUGE)."""

    champion_score: float
    challenger_score: float
    delta: float
    p_value: float
    signature: str


@dataclass(frozen=True)
class GateDecision:
    outcome: Outcome
    reason: str
    champion_version: str | None = None
    delta: float | None = None
    p_value: float | None = None
    test_signature: str | None = None

    @property
    def promote(self) -> bool:
        return self.outcome == "promoted"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_tags(self) -> dict[str, str]:
        """`gate.*` version tags ("none" where a number does not apply)."""
        return {
            f"gate.{key}": "none" if value is None else str(value)
            for key, value in self.as_dict().items()
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> GateDecision:
        """The decision a version's `gate.*` tags record (the inverse of `as_tags`)."""

        def value(key: str) -> str | None:
            text = tags.get(f"gate.{key}", "none")
            return None if text == "none" else text

        delta, p_value = value("delta"), value("p_value")
        return cls(
            outcome=typing.cast(Outcome, tags.get("gate.outcome", "rejected")),
            reason=tags.get("gate.reason", ""),
            champion_version=value("champion_version"),
            delta=None if delta is None else float(delta),
            p_value=None if p_value is None else float(p_value),
            test_signature=value("test_signature"),
        )


def _signature_fields(signature: str) -> dict[str, str]:
    return dict(part.split(":", 1) for part in signature.split("|") if ":" in part)


def bleu_from_signature(signature: str) -> BLEU:
    """A BLEU metric configured as the sacreBLEU signature says (tok, case, eff, smooth)."""
    fields = _signature_fields(signature)
    smooth = fields.get("smooth", "exp")
    smooth_method, _, smooth_value = smooth.partition("[")
    return BLEU(
        tokenize=fields.get("tok", "13a"),
        lowercase=fields.get("case") == "lc",
        effective_order=fields.get("eff") == "yes",
        smooth_method=smooth_method,
        smooth_value=float(smooth_value.rstrip("]")) if smooth_value else None,
    )


def chrf_from_signature(signature: str) -> CHRF:
    """A chrF metric configured as the sacreBLEU signature says (nc, nw, case, space, eff)."""
    fields = _signature_fields(signature)
    return CHRF(
        char_order=int(fields.get("nc", CHRF.CHAR_ORDER)),
        word_order=int(fields.get("nw", CHRF.WORD_ORDER)),
        lowercase=fields.get("case") == "lc",
        whitespace=fields.get("space") == "yes",
        eps_smoothing=fields.get("eff") == "no",
    )


def metric_from_signature(metric: str, signature: str) -> BLEU | CHRF:
    """The sacreBLEU metric `metric` (bleu or chrf) as its signature configures it."""
    if metric == "bleu":
        return bleu_from_signature(signature)
    if metric == "chrf":
        return chrf_from_signature(signature)
    raise ValueError(f"{metric} is not a sacreBLEU metric (one of {sorted(SACREBLEU_METRICS)})")


def sacrebleu_paired_test(
    metric: str,
    champion: Sequence[str],
    challenger: Sequence[str],
    references: Sequence[str],
    signature: str,
    resamples: int,
    seed: int,
) -> PairedResult:
    """sacreBLEU's paired bootstrap of challenger against champion (the baseline)."""
    with sacrebleu_seed(seed):
        test = PairedTest(
            [("champion", list(champion)), ("challenger", list(challenger))],
            {metric_label(metric): metric_from_signature(metric, signature)},
            [list(references)],
            test_type="bs",
            n_samples=resamples,
        )
        signatures, scores = test()
    name = next(iter(signatures))  # sacreBLEU's own name of the score: BLEU, chrF2
    baseline, system = (typing.cast(Result, row) for row in scores[name])
    delta = float(system.score) - float(baseline.score)
    return PairedResult(
        champion_score=float(baseline.score),
        challenger_score=float(system.score),
        delta=delta,
        p_value=two_sided_p_value(delta, system.p_value),
        signature=signatures[name].format(),
    )


def rouge_test_signature(metric: str, resamples: int, seed: int) -> str:
    """What the ROUGE test measured, in sacreBLEU's `key:value|...` form."""
    fields = {"nrefs": "1", "bs": resamples, "seed": seed, "type": ROUGE_TYPE_OF[metric],
              "tok": "rouge-score", "stemmer": "porter", "score": "f1",
              "version": version("rouge-score")}  # fmt: skip
    return "|".join(f"{key}:{value}" for key, value in fields.items())


def two_sided_p_value(delta: float, bootstrap_p: float | None) -> float:
    """sacreBLEU's p-value, except 1.0 when the observed difference is exactly zero.

    sacreBLEU counts resamples whose centred difference is strictly greater than the observed
    one and adds one, so two identical systems (every resampled difference 0) get the
    smallest p it can report, 1 / (resamples + 1), which reads as "significant". A two-sided
    test of an observed difference of zero has p = 1: no evidence of any difference.
    """
    if delta == 0.0 or bootstrap_p is None:
        return 1.0
    return float(bootstrap_p)


def comparability_problem(challenger: GateEvidence, champion: GateEvidence) -> str | None:
    """Why the two cannot be compared fairly, or None when they can."""
    problem = _purpose_problem(challenger, champion)
    if problem is not None:
        return problem
    if challenger.split != champion.split:
        return (
            f"different test splits: champion {champion.split!r}, challenger {challenger.split!r}"
        )
    if challenger.references_sha256 != champion.references_sha256:
        return (
            f"different test sets: references sha256 {champion.references_sha256[:12]} "
            f"(champion) vs {challenger.references_sha256[:12]} (challenger)"
        )
    problem = _signature_problem(challenger, champion)
    if problem is not None:
        return problem
    if len(challenger.hypotheses) != len(champion.hypotheses):
        return (
            f"hypothesis counts differ: champion {len(champion.hypotheses)}, "
            f"challenger {len(challenger.hypotheses)}"
        )
    return None


def _purpose_problem(challenger: GateEvidence, champion: GateEvidence) -> str | None:
    """Another task, metric or language pair: a comparison would measure nothing."""
    if challenger.task != champion.task:
        return (
            f"different tasks: champion is a {champion.task} model, challenger a "
            f"{challenger.task} model; register the challenger under a model name of its own "
            "task (register.model_name)"
        )
    if challenger.metric != champion.metric:
        return (
            f"different metrics: champion was judged by {champion.label}, challenger by "
            f"{challenger.label} (register.metric); set register.metric to {champion.metric!r} "
            "to compare them, or register the challenger under a model name of its own"
        )
    if challenger.language_pair == champion.language_pair:
        return None
    if challenger.task == "translation":
        return (
            f"different language pairs: champion translates {champion.language_pair}, "
            f"challenger {challenger.language_pair}; register the challenger under a model "
            "name of its own pair (register.model_name)"
        )
    return (
        f"different languages: champion {champion.language_pair}, challenger "
        f"{challenger.language_pair}; register the challenger under a model name of its own "
        "(register.model_name)"
    )


def _signature_problem(challenger: GateEvidence, champion: GateEvidence) -> str | None:
    """sacreBLEU metrics only: both scored alike (the gate scores ROUGE itself, alike)."""
    if challenger.metric not in SACREBLEU_METRICS:
        return None
    if not challenger.signature or not champion.signature:
        whose = "challenger" if not challenger.signature else "champion"
        return f"no sacreBLEU signature recorded for the {whose}'s {challenger.label}"
    # The resampling fields (bs, seed) describe evaluate's confidence interval, not the score.
    if _signature_core(challenger.signature) != _signature_core(champion.signature):
        return (
            f"different sacreBLEU signatures: champion {champion.signature!r}, "
            f"challenger {challenger.signature!r}"
        )
    return None


def _signature_core(signature: str) -> str:
    """A signature without the resampling fields PairedTest adds (bs, seed)."""
    parts = [part for part in signature.split("|") if part.split(":")[0] not in {"bs", "seed"}]
    return "|".join(sorted(parts))


def _first_model_decision(challenger: GateEvidence, rules: GateRules) -> GateDecision:
    score, label = challenger.score, challenger.label
    if score >= rules.min_score:
        return GateDecision(
            "promoted",
            f"no champion yet and {label} {score:.2f} >= min_score {rules.min_score:.2f}",
        )
    return GateDecision(
        "rejected",
        f"no champion yet and {label} {score:.2f} < min_score {rules.min_score:.2f}",
    )


def paired_result(
    challenger: GateEvidence, champion: GateEvidence, references: Sequence[str], rules: GateRules
) -> PairedResult:
    """The paired bootstrap of the challenger's metric against the champion's (the baseline):
    sacreBLEU's for BLEU and chrF, pipeline/metrics/bootstrap.py's over sentence F1 for ROUGE."""
    metric, resamples, seed = challenger.metric, rules.bootstrap_resamples, rules.seed
    if metric in SACREBLEU_METRICS:
        return sacrebleu_paired_test(
            metric,
            champion.hypotheses,
            challenger.hypotheses,
            references,
            challenger.signature or "",
            resamples,
            seed,
        )
    baseline, system = (
        sentence_scores(metric, side.hypotheses, references) for side in (champion, challenger)
    )
    means = paired_test(baseline, system, resamples, seed)  # p = 1 for a difference of 0
    signature = rouge_test_signature(metric, resamples, seed)
    return PairedResult(means.baseline, means.system, means.delta, means.p_value, signature)


def _paired_decision(
    challenger: GateEvidence,
    champion: GateEvidence,
    champion_version: str,
    references: Sequence[str],
    rules: GateRules,
) -> GateDecision:
    result = paired_result(challenger, champion, references, rules)
    label = challenger.label
    measured = GateDecision(
        "rejected",
        "",
        champion_version=champion_version,
        delta=round(result.delta, 4),
        p_value=round(result.p_value, 4),
        test_signature=result.signature,
    )
    recorded = challenger.signature
    if recorded and _signature_core(result.signature) != _signature_core(recorded):
        return replace(
            measured,
            reason=f"the gate's {label} {result.signature!r} does not reproduce the recorded "
            f"signature {recorded!r}",
        )
    significant = result.p_value < rules.significance and result.delta > rules.min_delta
    verdict = "significantly better" if significant else "not significantly better"
    reason = (
        f"challenger {verdict} than champion v{champion_version}: {label} "
        f"{result.challenger_score:.2f} vs {result.champion_score:.2f} (delta "
        f"{result.delta:+.2f}, p={result.p_value:.4f}; need p < {rules.significance} and "
        f"delta > {rules.min_delta})"
    )
    return replace(measured, outcome="promoted" if significant else "rejected", reason=reason)


def decide(
    challenger: GateEvidence,
    champion: tuple[str, GateEvidence] | None,
    references: Sequence[str],
    rules: GateRules,
) -> GateDecision:
    """The gate. `champion` is (version, evidence) of the current champion, if any."""
    if champion is None:
        decision = _first_model_decision(challenger, rules)
    else:
        version, evidence = champion
        problem = comparability_problem(challenger, evidence)
        if problem is not None:
            decision = GateDecision("rejected", f"not compared: {problem}", version)
        else:
            decision = _paired_decision(challenger, evidence, version, references, rules)
    if rules.policy == "manual" and decision.promote:
        return replace(
            decision,
            outcome="awaiting_approval",
            reason=f"policy manual, gate would promote ({decision.reason}); a person promotes "
            "it with `mt registry promote VERSION`",
        )
    return decision
