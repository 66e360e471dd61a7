"""The drift statistics, as pure functions of count tables and shares (tests/test_drift.py).

Distributions travel as count tables ({value: count}) rather than raw samples: the corpus
profile stays a few hundred bytes whatever the corpus size, and both statistics below are exact
on them.

- Population stability index (PSI) of two share vectors over the same bins:
  sum_i (a_i - e_i) * ln(a_i / e_i), with e the reference (training) shares and a the batch's.
  A share of 0 is raised to SHARE_FLOOR first, since ln(0) is undefined and a bin the corpus
  never filled is exactly where drift shows. Rule of thumb: < 0.1 stable, 0.1-0.25 moderate,
  > 0.25 a shift.
- Two-sample Kolmogorov-Smirnov statistic of two count tables: the largest gap between their
  empirical CDFs, in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# The share an empty bin counts as in the PSI (a common choice; one in ten thousand lines).
SHARE_FLOOR = 1e-4
# Reference quantile bins for the PSI of lengths.
LENGTH_BINS = 10


def shares(counts: Sequence[float]) -> list[float]:
    """Counts as shares of their total."""
    total = float(sum(counts))
    if total <= 0:
        raise ValueError("shares of an empty distribution: no counts")
    return [count / total for count in counts]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of `actual` shares against `expected` shares (same bins)."""
    if len(expected) != len(actual) or not expected:
        raise ValueError(
            f"PSI needs two share vectors of one length, got {len(expected)} and {len(actual)}"
        )
    total = 0.0
    for reference, observed in zip(expected, actual, strict=True):
        reference, observed = max(reference, SHARE_FLOOR), max(observed, SHARE_FLOOR)
        total += (observed - reference) * math.log(observed / reference)
    return total


def ks_statistic(reference: Mapping[int, int], batch: Mapping[int, int]) -> float:
    """Largest gap between the empirical CDFs of two count tables."""
    reference_total, batch_total = sum(reference.values()), sum(batch.values())
    if reference_total <= 0 or batch_total <= 0:
        raise ValueError("KS statistic of an empty distribution: no counts")
    reference_seen = batch_seen = 0
    largest = 0.0
    for value in sorted(set(reference) | set(batch)):
        reference_seen += reference.get(value, 0)
        batch_seen += batch.get(value, 0)
        largest = max(largest, abs(reference_seen / reference_total - batch_seen / batch_total))
    return largest


def quantile_edges(counts: Mapping[int, int], bins: int = LENGTH_BINS) -> list[int]:
    """Upper edges of up to `bins` bins holding about equal shares of `counts`.

    Edge k is the smallest value whose cumulative share reaches k/bins; the last bin is open
    (no edge at the maximum), and values that would repeat an edge are dropped, so a corpus
    with few distinct lengths gets fewer, non-empty bins.
    """
    total = sum(counts.values())
    if total <= 0:
        raise ValueError("quantile edges of an empty distribution: no counts")
    ordered = sorted(counts)
    edges: list[int] = []
    seen = 0
    targets = iter(k * total / bins for k in range(1, bins))
    target = next(targets, None)
    for value in ordered[:-1]:
        seen += counts[value]
        while target is not None and seen >= target:
            if not edges or edges[-1] != value:
                edges.append(value)
            target = next(targets, None)
    return edges


def binned_counts(counts: Mapping[int, int], edges: Sequence[int]) -> list[int]:
    """Counts per bin: (-inf, e1], (e1, e2], ..., (e_last, inf)."""
    binned = [0] * (len(edges) + 1)
    for value, count in counts.items():
        binned[next((i for i, edge in enumerate(edges) if value <= edge), len(edges))] += count
    return binned
