"""ROUGE-1/2/L F1 of summaries (rouge-score, Porter-stemmed), per sentence and per corpus.

rouge-score is Google's reference implementation, the one the summarisation corpus's README
measured its extractive baselines with. Its tokenizer keeps [a-z0-9] runs only: it scores
English (the summarisation corpus) and would drop every non-ASCII letter of other languages.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

from pipeline.metrics.bootstrap import MeanWithCI, mean_with_ci

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def sentence_rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, list[float]]:
    """{rouge type: F1 (0-1) of each hypothesis against its reference}."""
    from rouge_score.rouge_scorer import RougeScorer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores: dict[str, list[float]] = {kind: [] for kind in ROUGE_TYPES}
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scored = scorer.score(reference, hypothesis)
        for kind in ROUGE_TYPES:
            scores[kind].append(float(scored[kind].fmeasure))
    return scores


def corpus_rouge(
    hypotheses: Sequence[str], references: Sequence[str], resamples: int, seed: int
) -> dict[str, MeanWithCI]:
    """{rouge type: mean F1 ×100 with its bootstrap 95% CI}."""
    by_sentence = sentence_rouge(hypotheses, references)
    return {kind: mean_with_ci(by_sentence[kind], resamples, seed) for kind in ROUGE_TYPES}


def rouge_signature(rouge_type: str, resamples: int, seed: int) -> str:
    """What a ROUGE score of evaluate's was measured with, in sacreBLEU's `key:value|...` form
    (the bootstrap's resamples and seed included, as sacreBLEU's signatures record them)."""
    fields = {
        "nrefs": "1",
        "bs": str(resamples),
        "seed": str(seed),
        "type": rouge_type,
        "tok": "rouge-score",
        "stemmer": "porter",
        "score": "f1",
        "version": version("rouge-score"),
    }
    return "|".join(f"{key}:{value}" for key, value in fields.items())
