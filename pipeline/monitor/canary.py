"""The canary: a fixed, seeded sample of the gate split, re-scored by the champion watch.

The canary is `monitor.canary_size` pairs of `data.test_splits[0]`, picked with the project's
seed (the rows `mt evaluate` would pick for that many samples), sources from data/clean and
references from data/raw exactly as evaluate reads them. It is scored by the task's primary
metric (`register.metric`: BLEU or chrF with sacreBLEU, ROUGE with pipeline/metrics/scoring.py),
and two numbers are compared on it:

- a version's **recorded** canary score: the metric of the hypotheses logged with the version
  (artifact `eval_hypotheses`, what evaluate produced at registration) on the canary rows,
  for BLEU and chrF with the version's own sacreBLEU signature (`evidence.<metric>_signature`,
  e.g. `evidence.bleu_signature`);
- its canary score **now**: the canary sources run through the version's pyfunc as it loads
  today, scored the same way.

The same model on the same inputs gives the same hypotheses, hence the same score to the last
digit (both are rounded to 4 decimals as metrics.json is); a drop means the version answers
differently now (its serving environment, its artifacts). Pure apart from `load_canary` and
`recorded_canary` (files, the registry).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF

from pipeline.config import Config
from pipeline.evaluate import choose_sample_rows, read_split
from pipeline.metrics.scoring import corpus_score
from pipeline.paths import ProjectPaths
from pipeline.registry.gate import GateEvidence, metric_from_signature
from pipeline.registry.registration import EVIDENCE_PREFIX, sha256_lines, stored_evidence
from pipeline.registry.store import Registry
from pipeline.tasks import SACREBLEU_METRICS, metric_label


@dataclass(frozen=True)
class CanarySet:
    """The canary pairs, and the hash of the whole split's references they were taken from."""

    split: str
    rows: tuple[int, ...]
    sources: tuple[str, ...]
    references: tuple[str, ...]
    split_references_sha256: str


@dataclass(frozen=True)
class RecordedCanary:
    """A version's canary score (`metric`, register.metric) from its logged evaluation
    hypotheses; `signature` the sacreBLEU signature it was scored with (None for ROUGE)."""

    version: str
    score: float
    signature: str | None
    metric: str = "bleu"


def pick_canary(
    split: str, sources: Sequence[str], references: Sequence[str], size: int, seed: int
) -> CanarySet:
    """`size` seeded rows of the split (all of it when smaller), in file order."""
    rows = tuple(choose_sample_rows(len(sources), size, seed))
    return CanarySet(
        split=split,
        rows=rows,
        sources=tuple(sources[row] for row in rows),
        references=tuple(references[row] for row in rows),
        split_references_sha256=sha256_lines(references),
    )


def load_canary(paths: ProjectPaths, config: Config) -> CanarySet:
    """The canary of the project's gate split (DataError naming the file when one is missing)."""
    split = read_split(paths, config, config.data.test_splits[0])
    return pick_canary(
        split.name, split.sources, split.references, config.monitor.canary_size, config.seed
    )


def default_signature(metric: str) -> str:
    """sacreBLEU's default signature of `metric` (bleu, chrf), for a version that recorded none."""
    scorer = BLEU() if metric == "bleu" else CHRF()
    scorer.corpus_score(["-"], [["-"]])  # sacreBLEU signs a metric once it knows nrefs
    return str(scorer.get_signature().format())


def metric_signature(tags: Mapping[str, str], split: str, metric: str) -> str | None:
    """The sacreBLEU signature a version's `metric` was scored with: its gate evidence's
    (`evidence.<metric>_signature`), else the one its metrics.json recorded (lineage tag
    `metrics.<split>.signature.<metric>`), else sacreBLEU's default; None for ROUGE."""
    if metric not in SACREBLEU_METRICS:
        return None
    return (
        tags.get(f"{EVIDENCE_PREFIX}{metric}_signature")
        or tags.get(f"metrics.{split}.signature.{metric}")
        or default_signature(metric)
    )


def canary_score(
    metric: str, hypotheses: Sequence[str], canary: CanarySet, signature: str | None
) -> float:
    """The corpus `metric` of `hypotheses` (one per canary pair): for BLEU and chrF as
    `signature` configures it, for ROUGE the mean sentence F1 ×100; 4 decimals."""
    if len(hypotheses) != len(canary.references):
        raise ValueError(f"{len(hypotheses)} outputs for {len(canary.references)} pairs")
    if metric in SACREBLEU_METRICS:
        scorer = metric_from_signature(metric, signature or default_signature(metric))
        score = scorer.corpus_score(list(hypotheses), [list(canary.references)]).score
    else:
        score = corpus_score(metric, hypotheses, canary.references)
    return round(float(score), 4)


def evidence_problem(evidence: GateEvidence, canary: CanarySet) -> str | None:
    """Why a version's logged hypotheses do not belong to this canary, or None."""
    if evidence.split != canary.split:
        return (
            f"it was evaluated on split {evidence.split!r}, the canary comes from "
            f"{canary.split!r} (data.test_splits[0])"
        )
    if evidence.references_sha256 != canary.split_references_sha256:
        return (
            f"the references of {canary.split} changed since it was evaluated (sha256 "
            f"{evidence.references_sha256[:12]} then, {canary.split_references_sha256[:12]} "
            "now); re-fetch the data it was evaluated on, or register a version evaluated on "
            "today's"
        )
    if len(evidence.hypotheses) <= max(canary.rows, default=-1):
        return f"its logged hypotheses have {len(evidence.hypotheses)} lines, too few"
    return None


def recorded_canary(
    registry: Registry, version: str, canary: CanarySet, metric: str = "bleu"
) -> RecordedCanary | str:
    """The version's recorded canary score in `metric` (register.metric), or why it has none
    (a sentence naming the version)."""
    evidence = stored_evidence(registry, version)
    missing = f"{registry.name} v{version} has no recorded canary {metric_label(metric)}"
    if isinstance(evidence, str):
        return f"{missing}: {evidence}"
    problem = evidence_problem(evidence, canary)
    if problem is not None:
        return f"{missing}: {problem}"
    hypotheses = [evidence.hypotheses[row] for row in canary.rows]
    signature = (
        evidence.signature
        if evidence.metric == metric
        else metric_signature(registry.version(version).tags, evidence.split, metric)
    )
    score = canary_score(metric, hypotheses, canary, signature)
    return RecordedCanary(version=version, score=score, signature=signature, metric=metric)
