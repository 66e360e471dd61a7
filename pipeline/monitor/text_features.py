"""What drift looks at in a line of source text: length, character classes, unknown pieces and
language. Shared by the corpus profile (pipeline/monitor/profile.py) and the check of each
incoming batch (pipeline/monitor/drift.py), so both measure exactly the same way.

Language identification (py3langid) lives in pipeline/language_id.py, shared with data
validation; `detected_languages` and `language_share` are re-exported here for the monitor.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pipeline.language_id import detected_languages as detected_languages
from pipeline.language_id import language_share as language_share

# Character classes, in the order the profile and the PSI use. `other` is punctuation,
# symbols and anything else; letters are split so that accented text (fr, de) shows.
CHAR_CLASSES = ("ascii_letter", "other_letter", "digit", "space", "other")
_ASCII_LETTERS = re.compile(r"[A-Za-z]")
_LETTERS = re.compile(r"[^\W\d_]")
_DIGITS = re.compile(r"\d")
_SPACES = re.compile(r"\s")


def token_length(line: str) -> int:
    """Whitespace tokens: the unit of validate.max_tokens and clean.max_tokens."""
    return len(line.split())


def length_counts(lines: Sequence[str]) -> dict[int, int]:
    """How many lines have each length in whitespace tokens."""
    return dict(sorted(Counter(token_length(line) for line in lines).items()))


def char_class_counts(lines: Sequence[str]) -> list[int]:
    """Characters per class (CHAR_CLASSES order) over all lines; regexes keep it C-speed."""
    text = "".join(lines)
    ascii_letters = len(_ASCII_LETTERS.findall(text))
    letters = len(_LETTERS.findall(text))
    digits = len(_DIGITS.findall(text))
    spaces = len(_SPACES.findall(text))
    other = len(text) - letters - digits - spaces
    return [ascii_letters, letters - ascii_letters, digits, spaces, other]


def unknown_piece_counts(lines: Sequence[str], tokenizer_dir: Path) -> list[tuple[int, int]]:
    """(unknown pieces, pieces) per line under the source tokenizer in `tokenizer_dir`."""
    from pipeline.tokenize import UNK_ID, load_tokenizers

    processor = load_tokenizers(tokenizer_dir).src
    encoded = processor.encode(list(lines))
    return [(sum(1 for piece in ids if piece == UNK_ID), len(ids)) for ids in encoded]


def unknown_rate(per_line: Sequence[tuple[int, int]]) -> float:
    """Unknown pieces over all pieces (0 when there are no pieces at all)."""
    pieces = sum(total for _, total in per_line)
    return sum(unknown for unknown, _ in per_line) / pieces if pieces else 0.0
