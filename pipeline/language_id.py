"""Which language a line is in: py3langid, shared by data validation and drift monitoring.

validate_raw checks that each side of a summarization or dialogue corpus is in its declared
language (pipeline/data/pair_frames.py); the corpus profile and the drift check of incoming
batches measure the share of source lines in data.src_lang (pipeline/monitor/). Both measure
with these functions, so a threshold means the same thing in either place. The module sits
below the stages (it imports nothing of the pipeline), so the validate stage does not depend on
the monitoring code.

py3langid is the maintained fork of langid.py. Its naive-Bayes model over byte n-grams ships
inside the wheel (4.5 MB, numpy only), so nothing is downloaded at run time, and it is
deterministic. Measured on Multi30k train (29,000 lines each): English lines are identified as
`en` in 99.94%, French as `fr` in 99.96% and German as `de` in 99.97% of lines, at about
0.1 ms a line after a one-time model load of about 1 s. Short lines are far less certain:
seeded samples of 500 Debian package synopses (median 6 words, "Python bindings for Csound")
are `en` in 83-86% of lines, chatterbot prompts and replies in 91-97%; a side in another
language (Multi30k German or French declared `en`) in 0-2%.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


@functools.cache
def _identifier() -> Any:
    """The bundled py3langid model, loaded once per process (about 1 s)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def detected_languages(lines: Sequence[str]) -> list[str]:
    """The ISO 639-1 code py3langid gives each line."""
    identifier = _identifier()
    return [str(identifier.classify(line)[0]) for line in lines]


def language_share(languages: Sequence[str], expected: str) -> float:
    """Share of lines identified as `expected`."""
    if not languages:
        raise ValueError("language share of no lines")
    return sum(1 for language in languages if language == expected) / len(languages)
