"""Extractive summaries a summariser must beat: the first k words, the first sentence.

They are the floor of the report's table (the corpus's README lists them on its test split):
a model that scores below the first sentence of its source has learnt nothing worth serving.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The end of a sentence: ., ! or ? and the space after it.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
FIRST_WORDS = (6, 8, 10)


def first_words(source: str, count: int) -> str:
    return " ".join(source.split()[:count])


def first_sentence(source: str) -> str:
    return SENTENCE_END.split(source.strip(), maxsplit=1)[0]


def extractive_baselines(sources: Sequence[str]) -> dict[str, list[str]]:
    """{baseline name: its summary of each source}."""
    baselines = {
        f"first {count} words": [first_words(source, count) for source in sources]
        for count in FIRST_WORDS
    }
    baselines["first sentence"] = [first_sentence(source) for source in sources]
    return baselines
