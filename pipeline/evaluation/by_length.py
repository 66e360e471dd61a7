"""Scores by source length: what long inputs cost, per test split, as a CSV and in report.md.

Sources are bucketed by whitespace words of the normalised source (data/clean), whole, though
the model reads at most `decode.max_source_length` pieces of it. Translation keeps its buckets,
its metric (BLEU whatever register.metric is) and its file, bleu_by_length.csv (the DVC plot);
the other tasks break down their primary metric (register.metric) into
`<metric>_by_length.csv`: corpus BLEU/chrF of each bucket's sentences, or for ROUGE the mean of
their sentence scores. Empty buckets are left out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from pipeline.evaluation.scores import points, rounded
from pipeline.metrics.scoring import corpus_score, sentence_scores
from pipeline.tasks import SACREBLEU_METRICS, Task

Buckets = tuple[tuple[int, int | None], ...]

# Source-length buckets (whitespace tokens, inclusive): sentences (translation, dialogue) ...
LENGTH_BUCKETS: Buckets = (
    (1, 5),
    (6, 10),
    (11, 15),
    (16, 20),
    (21, 25),
    (26, None),
)
# ... and documents (summarization: the Debian descriptions' median is 45 words, the 90th
# percentile 103).
LONG_SOURCE_BUCKETS: Buckets = (
    (1, 20),
    (21, 40),
    (41, 80),
    (81, 160),
    (161, None),
)


def length_buckets(task: Task) -> Buckets:
    return LONG_SOURCE_BUCKETS if task == "summarization" else LENGTH_BUCKETS


def length_metric(task: Task, metric: str) -> str:
    """The metric broken down by source length: translation's BLEU, else register.metric."""
    return "bleu" if task == "translation" else metric


def bucket_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"


def metric_by_length(
    metric: str,
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    buckets: Buckets,
) -> list[dict[str, Any]]:
    """[{source_length, <metric>, sentences}] per non-empty bucket, scores ×100 (4 decimals)."""
    by_sentence = (
        None if metric in SACREBLEU_METRICS else sentence_scores(metric, hypotheses, references)
    )
    lengths = [len(source.split()) for source in sources]
    rows = []
    for low, high in buckets:
        members = [i for i, n in enumerate(lengths) if n >= low and (high is None or n <= high)]
        if not members:
            continue
        if by_sentence is None:
            score = rounded(
                corpus_score(
                    metric, [hypotheses[i] for i in members], [references[i] for i in members]
                )
            )
        else:
            score = points(sum(by_sentence[i] for i in members) / len(members))
        rows.append(
            {
                "source_length": bucket_label(low, high),
                metric: score,
                "sentences": len(members),
            }
        )
    return rows


def bleu_by_length(
    sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str]
) -> list[dict[str, Any]]:
    """Corpus BLEU per source-length bucket (whitespace tokens); empty buckets are left out."""
    return metric_by_length("bleu", sources, hypotheses, references, LENGTH_BUCKETS)


def by_length_csv(rows: Sequence[dict[str, Any]], metric: str = "bleu") -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["source_length", metric, "sentences"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def by_length_filename(split_index: int, split: str, metric: str = "bleu") -> str:
    """The first test split feeds the DVC plot in dvc.yaml; the others get their own file."""
    stem = f"{metric}_by_length"
    return f"{stem}.csv" if split_index == 0 else f"{stem}_{split}.csv"
