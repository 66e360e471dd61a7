"""The canary: a fixed, seeded sample of the gate split, re-scored by the champion watch.

The canary is `monitor.canary_size` pairs of `data.test_splits[0]`, picked with the project's
seed (the rows `mt evaluate` would pick for that many samples), sources from data/clean and
references from data/raw exactly as evaluate reads them. Two numbers are compared on it:

- a version's **recorded** canary BLEU: the BLEU of the hypotheses logged with the version
  (artifact `eval_hypotheses`, what evaluate produced at registration) on the canary rows,
  with the version's own sacreBLEU signature (`evidence.bleu_signature`);
- its canary BLEU **now**: the canary sources translated by the version's pyfunc as it loads
  today, scored the same way.

The same model on the same inputs gives the same hypotheses, hence the same BLEU to the last
digit (both are rounded to 4 decimals as metrics.json is); a drop means the version translates
differently now (its serving environment, its artifacts). Pure apart from `load_canary` and
`recorded_canary` (files, the registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.config import Config
from pipeline.evaluate import choose_sample_rows, read_split
from pipeline.paths import ProjectPaths
from pipeline.registry.gate import GateEvidence, bleu_from_signature
from pipeline.registry.registration import sha256_lines, stored_evidence
from pipeline.registry.store import Registry


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
    """A version's canary BLEU from its logged evaluation hypotheses."""

    version: str
    bleu: float
    signature: str


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


def canary_bleu(hypotheses: Sequence[str], canary: CanarySet, signature: str) -> float:
    """Corpus BLEU of `hypotheses` (one per canary pair) as `signature` configures it."""
    if len(hypotheses) != len(canary.references):
        raise ValueError(f"{len(hypotheses)} translations for {len(canary.references)} pairs")
    metric = bleu_from_signature(signature)
    score = metric.corpus_score(list(hypotheses), [list(canary.references)]).score
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


def recorded_canary(registry: Registry, version: str, canary: CanarySet) -> RecordedCanary | str:
    """The version's recorded canary BLEU, or why it has none (a sentence naming the version)."""
    evidence = stored_evidence(registry, version)
    if isinstance(evidence, str):
        return f"{registry.name} v{version} has no recorded canary BLEU: {evidence}"
    problem = evidence_problem(evidence, canary)
    if problem is not None:
        return f"{registry.name} v{version} has no recorded canary BLEU: {problem}"
    hypotheses = [evidence.hypotheses[row] for row in canary.rows]
    bleu = canary_bleu(hypotheses, canary, evidence.bleu_signature)
    return RecordedCanary(version=version, bleu=bleu, signature=evidence.bleu_signature)
