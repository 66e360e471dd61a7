"""What outputs look like, beside how they score: length, compression, variety of replies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# Generic replies ("I don't know") are the known failure of dialogue models: the share of
# outputs among the most frequent ones says how much of the output is a handful of replies.
TOP_RESPONSES = 10


def words(text: str) -> list[str]:
    return text.lower().split()


def mean_length(texts: Sequence[str]) -> float:
    """Mean words per text."""
    return round(sum(len(words(text)) for text in texts) / max(len(texts), 1), 2)


def compression(outputs: Sequence[str], sources: Sequence[str]) -> float:
    """Mean of output words / source words per row (a summary's share of its source)."""
    ratios = [
        len(words(output)) / len(words(source))
        for output, source in zip(outputs, sources, strict=True)
        if words(source)
    ]
    return round(sum(ratios) / max(len(ratios), 1), 4)


def distinct_n(outputs: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the outputs (Li et al. 2016's distinct-n)."""
    grams = [
        tuple(tokens[start : start + n])
        for tokens in map(words, outputs)
        for start in range(len(tokens) - n + 1)
    ]
    return round(len(set(grams)) / len(grams), 4) if grams else 0.0


def frequent_responses(outputs: Sequence[str], top: int = TOP_RESPONSES) -> list[tuple[str, int]]:
    """The `top` most frequent outputs (case and spacing folded) with their counts, most
    frequent first; ties in order of first appearance."""
    return Counter(" ".join(words(output)) for output in outputs).most_common(top)


def top_response_share(outputs: Sequence[str], top: int = TOP_RESPONSES) -> float:
    """The share of outputs that are one of the `top` most frequent (case and spacing
    folded)."""
    frequent = sum(count for _, count in frequent_responses(outputs, top))
    return round(frequent / len(outputs), 4) if outputs else 0.0
