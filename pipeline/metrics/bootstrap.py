"""Bootstrap over per-sentence scores: a corpus mean's 95% CI and a paired significance test.

BLEU and chrF are not means of sentence scores, so sacreBLEU resamples their statistics
(evaluate.py, registry/gate.py). ROUGE F1 is a mean of sentence scores, so resampling the scores
is the whole test. Both follow sacreBLEU's conventions, so the gate reads the same way for every
metric: a CI is half the 2.5-97.5 percentile range of the resampled means (sacrebleu.significance
`estimate_ci`), and the paired test centres the resampled absolute differences and counts those
above the observed one, plus one (`_paired_bs_test`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MeanWithCI:
    """A corpus score (mean of sentence scores) and its bootstrap 95% CI, both ×100."""

    score: float
    ci: float


@dataclass(frozen=True)
class PairedMeans:
    """Champion (baseline) against challenger over the same resampled sentences, ×100."""

    baseline: float
    system: float
    delta: float
    p_value: float


def resampled_rows(rows: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` draws of `rows` row indices with replacement, from a seeded generator."""
    if rows < 1 or resamples < 1:
        raise ValueError(f"a bootstrap needs rows and resamples (got {rows}, {resamples})")
    return np.random.default_rng(seed).choice(rows, size=(resamples, rows), replace=True)


def bootstrap_mean(scores: Sequence[float], resamples: int, seed: int) -> tuple[float, float]:
    """The mean of `scores` and half the 2.5-97.5 percentile range of resampled means, in the
    scores' own scale and unrounded (evaluate rounds them as metrics.json holds numbers)."""
    values = np.asarray(scores, dtype=np.float64)
    means = np.sort(values[resampled_rows(len(values), resamples, seed)].mean(axis=1))
    low = len(means) // 40
    return float(values.mean()), 0.5 * float(means[len(means) - low - 1] - means[low])


def mean_with_ci(scores: Sequence[float], resamples: int, seed: int) -> MeanWithCI:
    """The mean of `scores` (0-1) and half the 2.5-97.5 percentile range of resampled means."""
    mean, half_width = bootstrap_mean(scores, resamples, seed)
    return MeanWithCI(round(100 * mean, 2), round(100 * half_width, 2))


def paired_test(
    baseline: Sequence[float], system: Sequence[float], resamples: int, seed: int
) -> PairedMeans:
    """Is `system`'s mean different from `baseline`'s on the same rows? A two-sided p-value.

    An observed difference of exactly zero has p = 1 (no evidence of any difference), where
    the counting rule alone would give its floor, 1 / (resamples + 1).
    """
    base, other = np.asarray(baseline, np.float64), np.asarray(system, np.float64)
    if base.shape != other.shape:
        raise ValueError(f"paired scores differ in length: {len(base)} and {len(other)}")
    observed = abs(float(other.mean() - base.mean()))
    rows = resampled_rows(len(base), resamples, seed)
    differences = np.abs(other[rows].mean(axis=1) - base[rows].mean(axis=1))
    centred = differences - differences.mean()
    p_value = 1.0 if observed == 0.0 else (int(np.sum(centred > observed)) + 1) / (resamples + 1)
    return PairedMeans(
        baseline=round(100 * float(base.mean()), 2),
        system=round(100 * float(other.mean()), 2),
        delta=round(100 * float(other.mean() - base.mean()), 2),
        p_value=round(p_value, 4),
    )
