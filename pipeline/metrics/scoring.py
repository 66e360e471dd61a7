"""One call for every metric a task reports: a corpus score and per-sentence scores.

evaluate reports more (CIs, signatures); the gate, the watch's canary and the sweep need one
number by name (register.metric) and, for the paired test of a mean metric, its sentence scores.
BLEU and chrF are sacreBLEU's with its defaults (the signatures evaluate records: 13a, mixed
case, exp smoothing; chrF nc 6); ROUGE is rouge-score's F1, stemmed, ×100.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.tasks import SACREBLEU_METRICS

# register.metric -> rouge-score's type name (pipeline/metrics/rouge.py ROUGE_TYPES).
ROUGE_TYPE_OF = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_l": "rougeL"}


def corpus_score(metric: str, hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """The corpus score of `metric` (0-100): sacreBLEU's for bleu/chrf, the mean F1 ×100 of
    the sentence scores for ROUGE."""
    if metric in SACREBLEU_METRICS:
        from sacrebleu.metrics import BLEU, CHRF

        scorer = BLEU() if metric == "bleu" else CHRF()
        return float(scorer.corpus_score(list(hypotheses), [list(references)]).score)
    scores = sentence_scores(metric, hypotheses, references)
    return 100.0 * sum(scores) / len(scores) if scores else 0.0


def sentence_scores(
    metric: str, hypotheses: Sequence[str], references: Sequence[str]
) -> list[float]:
    """Per-sentence F1 (0-1) of a ROUGE metric; a ValueError for a corpus-level metric."""
    if metric not in ROUGE_TYPE_OF:
        raise ValueError(f"{metric} is a corpus statistic, not a mean of sentence scores")
    from pipeline.metrics.rouge import sentence_rouge

    return sentence_rouge(hypotheses, references)[ROUGE_TYPE_OF[metric]]
