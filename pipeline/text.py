"""What one sentence's characters look like once normalised: the rule every stage shares.

`normalize_text` is what `mt clean` applies to every pair, what validate's train-overlap rule
compares, and what `mt translate` and the served model apply to their inputs, so a sentence is
the same string in training data, checks and requests. `remove_invisible` is what evaluate and
the registry apply to the references BLEU is computed against.

This module sits below every stage (it imports nothing of the pipeline): a stage that needs the
rule does not depend on the clean stage's module, and changing a cleaning rule does not rerun
the stages that only share this normalisation.
"""

from __future__ import annotations

import unicodedata

# Characters that render as nothing (or as a line break) yet make two equal-looking sentences
# differ: the duplicate and leak rules miss the match, SentencePiece learns pieces for them and
# BLEU counts a reference token "Hund\u200b" as different from "Hund". Zero-width ones go; the
# line and paragraph separators stand between words, so they become a space. U+FEFF inside a
# line is a byte-order mark left by concatenating files (fetch drops the one at the start).
# Right for en/de/fr; a script where ZWNJ/ZWJ carry meaning (Persian, Indic scripts, emoji
# sequences) would need this rule revisited.
ZERO_WIDTH_CHARS = "\u200b\u200c\u200d\u2060\ufeff"
LINE_SEPARATOR_CHARS = "\u2028\u2029"
INVISIBLE_CHARS = ZERO_WIDTH_CHARS + LINE_SEPARATOR_CHARS
_INVISIBLE_TABLE = str.maketrans(
    {
        **dict.fromkeys(map(ord, ZERO_WIDTH_CHARS)),
        **dict.fromkeys(map(ord, LINE_SEPARATOR_CHARS), " "),
    }
)


def remove_invisible(text: str) -> str:
    """`text` without zero-width characters, with line/paragraph separators as spaces."""
    return text.translate(_INVISIBLE_TABLE)


def invisible_chars_in(text: str) -> list[str]:
    """The invisible characters `text` holds, as sorted "U+200B ZERO WIDTH SPACE" labels."""
    found = sorted(set(text) & set(INVISIBLE_CHARS))
    return [f"U+{ord(char):04X} {unicodedata.name(char)}" for char in found]


def normalize_text(text: str) -> str:
    """Invisible characters removed, Unicode NFC, then whitespace repair.

    `str.split()` with no argument splits on every Unicode whitespace character (tabs,
    non-breaking and other Unicode spaces, line separators), so joining its parts with one space
    maps them all to a plain space, collapses runs and strips both ends in one step.
    """
    return " ".join(unicodedata.normalize("NFC", remove_invisible(text)).split())
