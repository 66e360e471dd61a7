"""The promotion gate: does the challenger beat the champion, significantly, on the same test?

Pure: it sees hypotheses, references and numbers, never MLflow. The comparison is sacreBLEU's
paired bootstrap resampling (`sacrebleu.significance.PairedTest`) with BLEU built from the
signature both versions were scored with, so the test measures what evaluate reported.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest, Result

from pipeline.config import RegisterConfig
from pipeline.evaluate import sacrebleu_seed

Outcome = Literal["promoted", "rejected", "awaiting_approval"]


@dataclass(frozen=True)
class GateEvidence:
    """How one model did on the gate's test split; `hypotheses` one per reference line.

    `src_lang` and `tgt_lang` are the pair it translates: only models of one pair compete.
    """

    src_lang: str
    tgt_lang: str
    split: str
    references_sha256: str
    bleu_signature: str
    bleu: float
    hypotheses: tuple[str, ...]

    @property
    def language_pair(self) -> str:
        return f"{self.src_lang}->{self.tgt_lang}"


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
    champion_bleu: float
    challenger_bleu: float
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


def bleu_from_signature(signature: str) -> BLEU:
    """A BLEU metric configured as the sacreBLEU signature says (tok, case, eff, smooth)."""
    fields = dict(part.split(":", 1) for part in signature.split("|") if ":" in part)
    smooth = fields.get("smooth", "exp")
    smooth_method, _, smooth_value = smooth.partition("[")
    return BLEU(
        tokenize=fields.get("tok", "13a"),
        lowercase=fields.get("case") == "lc",
        effective_order=fields.get("eff") == "yes",
        smooth_method=smooth_method,
        smooth_value=float(smooth_value.rstrip("]")) if smooth_value else None,
    )


def paired_bootstrap(
    champion: Sequence[str],
    challenger: Sequence[str],
    references: Sequence[str],
    bleu_signature: str,
    resamples: int,
    seed: int,
) -> PairedResult:
    """sacreBLEU's paired bootstrap of challenger against champion (the baseline)."""
    with sacrebleu_seed(seed):
        test = PairedTest(
            [("champion", list(champion)), ("challenger", list(challenger))],
            {"BLEU": bleu_from_signature(bleu_signature)},
            [list(references)],
            test_type="bs",
            n_samples=resamples,
        )
        signatures, scores = test()
    baseline, system = (typing.cast(Result, row) for row in scores["BLEU"])
    delta = float(system.score) - float(baseline.score)
    return PairedResult(
        champion_bleu=float(baseline.score),
        challenger_bleu=float(system.score),
        delta=delta,
        p_value=two_sided_p_value(delta, system.p_value),
        signature=signatures["BLEU"].format(),
    )


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
    if challenger.language_pair != champion.language_pair:
        return (
            f"different language pairs: champion translates {champion.language_pair}, "
            f"challenger {challenger.language_pair}; register the challenger under a model "
            "name of its own pair (register.model_name)"
        )
    if challenger.split != champion.split:
        return (
            f"different test splits: champion {champion.split!r}, challenger {challenger.split!r}"
        )
    if challenger.references_sha256 != champion.references_sha256:
        return (
            f"different test sets: references sha256 {champion.references_sha256[:12]} "
            f"(champion) vs {challenger.references_sha256[:12]} (challenger)"
        )
    # The resampling fields (bs, seed) describe evaluate's confidence interval, not the score.
    if _signature_core(challenger.bleu_signature) != _signature_core(champion.bleu_signature):
        return (
            f"different sacreBLEU signatures: champion {champion.bleu_signature!r}, "
            f"challenger {challenger.bleu_signature!r}"
        )
    if len(challenger.hypotheses) != len(champion.hypotheses):
        return (
            f"hypothesis counts differ: champion {len(champion.hypotheses)}, "
            f"challenger {len(challenger.hypotheses)}"
        )
    return None


def _signature_core(signature: str) -> str:
    """A signature without the resampling fields PairedTest adds (bs, seed)."""
    parts = [part for part in signature.split("|") if part.split(":")[0] not in {"bs", "seed"}]
    return "|".join(sorted(parts))


def _first_model_decision(challenger: GateEvidence, rules: GateRules) -> GateDecision:
    if challenger.bleu >= rules.min_score:
        return GateDecision(
            "promoted",
            f"no champion yet and BLEU {challenger.bleu:.2f} >= min_score {rules.min_score:.2f}",
        )
    return GateDecision(
        "rejected",
        f"no champion yet and BLEU {challenger.bleu:.2f} < min_score {rules.min_score:.2f}",
    )


def _paired_decision(
    challenger: GateEvidence,
    champion: GateEvidence,
    champion_version: str,
    references: Sequence[str],
    rules: GateRules,
) -> GateDecision:
    result = paired_bootstrap(
        champion.hypotheses,
        challenger.hypotheses,
        references,
        challenger.bleu_signature,
        rules.bootstrap_resamples,
        rules.seed,
    )
    measured = GateDecision(
        "rejected",
        "",
        champion_version=champion_version,
        delta=round(result.delta, 4),
        p_value=round(result.p_value, 4),
        test_signature=result.signature,
    )
    if _signature_core(result.signature) != _signature_core(challenger.bleu_signature):
        return replace(
            measured,
            reason=f"the gate's BLEU {result.signature!r} does not reproduce the recorded "
            f"signature {challenger.bleu_signature!r}",
        )
    significant = result.p_value < rules.significance and result.delta > rules.min_delta
    verdict = "significantly better" if significant else "not significantly better"
    reason = (
        f"challenger {verdict} than champion v{champion_version}: BLEU "
        f"{result.challenger_bleu:.2f} vs {result.champion_bleu:.2f} (delta {result.delta:+.2f}, "
        f"p={result.p_value:.4f}; need p < {rules.significance} and delta > {rules.min_delta})"
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
