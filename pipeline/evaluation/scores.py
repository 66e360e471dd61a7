"""The metrics.json entry of one split, scored as its task is scored (pipeline/tasks.py).

Every score is ×100 and rounded to 4 decimals; every `<name>_ci95` is a bootstrap 95% interval
[low, high] of `evaluate.bootstrap_resamples` resamples seeded with the project `seed`.

- translation: sacreBLEU's cased BLEU (13a), lowercased BLEU, chrF and TER with their
  signatures; the CI is sacreBLEU's own (its bootstrap mean ± half the 2.5-97.5 percentile
  range), so the numbers compare with published Multi30k results.
- summarization: rouge-score's ROUGE-1, ROUGE-2 and ROUGE-L F1 (Porter-stemmed): each the mean
  of the sentence scores, with the CI of pipeline/metrics/bootstrap.py (the mean ± half the
  2.5-97.5 percentile range of the resampled means, the convention the gate tests with), and a
  signature per score; `mean_output_words` and `mean_reference_words` (whitespace words);
  `compression`: the MEAN OVER SENTENCES of output words / source words (sentences with an
  empty source left out), so one long source does not outweigh the rest.
- dialogue: BLEU and chrF as translation has them (CIs, signatures), `distinct_1`, `distinct_2`
  (distinct n-grams / all n-grams over every output), `top10_response_share` (the share of
  outputs that are one of the ten most frequent, case and spacing folded: generic replies) and
  `mean_output_words`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from pipeline.errors import ConfigError
from pipeline.metrics.baselines import extractive_baselines
from pipeline.metrics.bootstrap import bootstrap_mean
from pipeline.metrics.rouge import rouge_signature, sentence_rouge
from pipeline.metrics.scoring import ROUGE_TYPE_OF
from pipeline.metrics.text_stats import (
    TOP_RESPONSES,
    compression,
    distinct_n,
    mean_length,
    top_response_share,
)
from pipeline.tasks import Task, metric_label

# The ROUGE scores of a summarization entry, in metrics.json's and the report's order.
ROUGE_METRICS = ("rouge_1", "rouge_2", "rouge_l")
TOP_SHARE = f"top{TOP_RESPONSES}_response_share"


@dataclass(frozen=True)
class MetricResult:
    score: float
    ci95: tuple[float, float]
    signature: str


def rounded(value: float) -> float:
    return round(float(value), 4)


def points(fraction: float) -> float:
    """A 0-1 score as metrics.json holds ROUGE: ×100, 4 decimals, never -0.0."""
    return rounded(100 * fraction) + 0.0


def check_resamples(resamples: int) -> None:
    if resamples < 2:
        raise ConfigError(
            f"params.yaml: `evaluate.bootstrap_resamples` is {resamples}; a confidence "
            "interval needs at least 2 resamples (1000 is usual)"
        )


def _check_rows(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")


# ------------------------------------------------------------------------- sacreBLEU scores


@contextlib.contextmanager
def sacrebleu_seed(seed: int) -> Iterator[None]:
    """sacreBLEU seeds its bootstrap from $SACREBLEU_SEED; set it to ours for the block."""
    previous = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SACREBLEU_SEED"]
        else:
            os.environ["SACREBLEU_SEED"] = previous


def score_with_ci(
    metric: Metric, hypotheses: Sequence[str], references: Sequence[str], resamples: int, seed: int
) -> MetricResult:
    """Corpus score, bootstrap 95% CI (mean ± half the 2.5-97.5 percentile range, as sacreBLEU
    reports it) and the signature, which records the resamples and the seed."""
    check_resamples(resamples)
    with sacrebleu_seed(seed):
        result = metric.corpus_score(list(hypotheses), [list(references)], n_bootstrap=resamples)
    # sacreBLEU keeps the bootstrap mean and half-width on these two attributes.
    low, high = result._mean - result._ci, result._mean + result._ci
    return MetricResult(
        score=rounded(result.score),
        ci95=(rounded(low), rounded(high)),
        signature=str(metric.get_signature()),
    )


def _scored(
    metrics: dict[str, Metric],
    hypotheses: Sequence[str],
    references: Sequence[str],
    resamples: int,
    seed: int,
) -> dict[str, MetricResult]:
    """Each sacreBLEU metric's score, CI and signature, in the order given."""
    return {
        name: score_with_ci(metric, hypotheses, references, resamples, seed)
        for name, metric in metrics.items()
    }


def _sacrebleu_entry(scored: dict[str, MetricResult]) -> dict[str, Any]:
    """{name: score, name_ci95: [low, high]} of each scored metric."""
    entry: dict[str, Any] = {}
    for name, result in scored.items():
        entry[name] = result.score
        entry[f"{name}_ci95"] = list(result.ci95)
    return entry


def corpus_metrics(
    hypotheses: Sequence[str], references: Sequence[str], resamples: int, seed: int
) -> dict[str, Any]:
    """The metrics.json entry of one translation split."""
    _check_rows(hypotheses, references)
    metrics = {
        "bleu": BLEU(),
        "bleu_lowercase": BLEU(lowercase=True),
        "chrf": CHRF(),
        "ter": TER(),
    }
    scored = _scored(metrics, hypotheses, references, resamples, seed)
    entry: dict[str, Any] = {
        "bleu": scored["bleu"].score,
        "bleu_ci95": list(scored["bleu"].ci95),
        "bleu_lowercase": scored["bleu_lowercase"].score,
        "chrf": scored["chrf"].score,
        "chrf_ci95": list(scored["chrf"].ci95),
        "ter": scored["ter"].score,
        "ter_ci95": list(scored["ter"].ci95),
        "sentences": len(hypotheses),
        "signatures": {name: result.signature for name, result in scored.items()},
    }
    return entry


def dialogue_metrics(
    hypotheses: Sequence[str], references: Sequence[str], resamples: int, seed: int
) -> dict[str, Any]:
    """The metrics.json entry of one dialogue split."""
    _check_rows(hypotheses, references)
    scored = _scored({"bleu": BLEU(), "chrf": CHRF()}, hypotheses, references, resamples, seed)
    return _sacrebleu_entry(scored) | {
        "distinct_1": distinct_n(hypotheses, 1),
        "distinct_2": distinct_n(hypotheses, 2),
        TOP_SHARE: top_response_share(hypotheses),
        "mean_output_words": mean_length(hypotheses),
        "sentences": len(hypotheses),
        "signatures": {name: result.signature for name, result in scored.items()},
    }


# ----------------------------------------------------------------------------- ROUGE scores


def summarization_metrics(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The metrics.json entry of one summarization split."""
    _check_rows(hypotheses, references)
    _check_rows(hypotheses, sources)
    check_resamples(resamples)
    by_sentence = sentence_rouge(hypotheses, references)
    entry: dict[str, Any] = {}
    signatures = {}
    for metric in ROUGE_METRICS:
        rouge_type = ROUGE_TYPE_OF[metric]
        mean, half_width = bootstrap_mean(by_sentence[rouge_type], resamples, seed)
        entry[metric] = points(mean)
        entry[f"{metric}_ci95"] = [points(mean - half_width), points(mean + half_width)]
        signatures[metric] = rouge_signature(rouge_type, resamples, seed)
    return entry | {
        "mean_output_words": mean_length(hypotheses),
        "mean_reference_words": mean_length(references),
        "compression": compression(hypotheses, sources),
        "sentences": len(hypotheses),
        "signatures": signatures,
    }


def summary_scores(
    sources: Sequence[str], summaries: Sequence[str], references: Sequence[str]
) -> dict[str, float]:
    """ROUGE-1/2/L (×100), mean words and compression of summaries, without intervals."""
    by_sentence = sentence_rouge(summaries, references)
    scores: dict[str, float] = {}
    for metric in ROUGE_METRICS:
        values = by_sentence[ROUGE_TYPE_OF[metric]]
        scores[metric] = points(sum(values) / max(len(values), 1))
    return scores | {
        "mean_output_words": mean_length(summaries),
        "compression": compression(summaries, sources),
    }


def baseline_scores(
    sources: Sequence[str], references: Sequence[str]
) -> dict[str, dict[str, float]]:
    """{extractive baseline: its summary_scores}: the floor the report shows the model against."""
    return {
        name: summary_scores(sources, summaries, references)
        for name, summaries in extractive_baselines(sources).items()
    }


# --------------------------------------------------------------------------------- per task


def split_metrics(
    task: Task,
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """The metrics.json entry of one split of `task` (the test splits and the val split)."""
    if task == "summarization":
        return summarization_metrics(sources, hypotheses, references, resamples, seed)
    if task == "dialogue":
        return dialogue_metrics(hypotheses, references, resamples, seed)
    return corpus_metrics(hypotheses, references, resamples, seed)


def headline(task: Task, metrics: dict[str, Any]) -> str:
    """The scores of an entry a log line shows."""
    if task == "summarization":
        scores = ", ".join(f"{metric_label(key)} {metrics[key]:.2f}" for key in ROUGE_METRICS)
        return f"{scores}, compression {metrics['compression']:.2f}"
    if task == "dialogue":
        return (
            f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}, distinct-2 "
            f"{metrics['distinct_2']:.4f}, top-{TOP_RESPONSES} share {metrics[TOP_SHARE]:.4f}"
        )
    return f"BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}, TER {metrics['ter']:.2f}"
