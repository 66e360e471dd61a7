"""The raw files of a split as one pandas frame of aligned pairs, with the columns GX checks.

Columns: `line` (1-based), `source`, `target`, and derived per row: `{side}_tokens`,
`{side}_utf8_valid`, `length_ratio`, `compression` (target tokens / source tokens),
`identical_sides` (a reply that echoes its prompt), `is_duplicate`; when the two sides are in
different languages also `{side}_foreign_words` (the other language's function words). Val
and test frames also get `source_in_train`; summarization and dialogue frames
`{side}_detected_language` on a seeded sample of rows (None elsewhere). The rules over these
columns live in pipeline/data/expectations.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.aligned_text import byte_lines
from pipeline.config import DataConfig
from pipeline.errors import DataError
from pipeline.language_id import detected_languages
from pipeline.paths import raw_file
from pipeline.text import normalize_text

SIDES = ("source", "target")
# Frequent function words per language code. A side that should be language X but whose rows
# often contain the other language's words has most likely been swapped or mislabelled. The
# lists avoid words that are common in another of the languages (English "a" is French "has").
FUNCTION_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("the", "and", "is", "are", "of", "with"),
    "de": ("der", "die", "und", "ein", "eine", "ist", "mit"),
    "fr": ("le", "la", "et", "une", "des", "est", "avec"),
}
# Language identification runs on a sample: 500 lines per split and side keep a check of a
# 56,000-pair corpus under a second, and a side in the wrong language scores 0-2% on far fewer
# (pipeline/language_id.py). A fixed seed: the same rows in every run, so summary.json is
# deterministic; not `seed` from params.yaml, which is training's knob.
LANGUAGE_SAMPLE_ROWS = 500
LANGUAGE_SAMPLE_SEED = 0


# ----------------------------------------------------------------------------- reading


def decode_lines(data: bytes) -> tuple[list[str], list[bool]]:
    """The lines of a raw file and, per line, whether its bytes were valid UTF-8.

    Lines are cut as every stage cuts them (pipeline.aligned_text). Unlike the stages' strict
    reader, bad bytes become U+FFFD here so one broken line cannot stop the whole report.
    """
    chunks = byte_lines(data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return [chunk.decode("utf-8", "replace") for chunk in chunks], [
            _is_utf8(chunk) for chunk in chunks
        ]
    return [chunk.decode("utf-8") for chunk in chunks], [True] * len(chunks)


def _is_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_side(path: Path, split: str) -> tuple[list[str], list[bool]]:
    if not path.is_file():
        raise DataError(
            f"{path}: missing; rule: every split in data.splits ({split} here) needs both "
            "language files; fix: run `mt fetch`, or remove the split from params.yaml"
        )
    return decode_lines(path.read_bytes())


def require_same_line_count(source: Path, n_source: int, target: Path, n_target: int) -> None:
    if n_source != n_target:
        raise DataError(
            f"{target}: {n_target} lines, but {source} has {n_source}; rule: sentence-aligned "
            "files have one pair per line on both sides; fix: re-export the corpus so that line "
            "i of each file is a translation pair (look for embedded or missing newlines)"
        )


# ----------------------------------------------------------------------------- frames


def token_counts(texts: pd.Series) -> pd.Series:
    """Whitespace tokens per row (the unit of validate.max_tokens and clean.max_tokens)."""
    return texts.str.split().str.len().astype("int64")


def contains_words(texts: pd.Series, lang: str) -> pd.Series:
    """Rows that contain any of `lang`'s function words (False for unlisted languages)."""
    words = FUNCTION_WORDS.get(lang)
    if not words:
        return pd.Series(False, index=texts.index)
    pattern = r"\b(?:" + "|".join(re.escape(word) for word in words) + r")\b"
    return texts.str.contains(pattern, case=False, regex=True)


def build_pair_frame(
    sources: Sequence[str],
    targets: Sequence[str],
    langs: tuple[str, str],
    utf8_valid: tuple[Sequence[bool], Sequence[bool]] | None = None,
) -> pd.DataFrame:
    """One row per aligned pair, with the derived columns the suites check."""
    frame = pd.DataFrame(
        {"line": range(1, len(sources) + 1), "source": list(sources), "target": list(targets)},
        dtype=object,
    ).astype({"line": "int64"})
    valid = utf8_valid or ([True] * len(sources), [True] * len(targets))
    for side, foreign, flags in zip(SIDES, reversed(langs), valid, strict=True):
        frame[f"{side}_tokens"] = token_counts(frame[side].astype(str))
        frame[f"{side}_utf8_valid"] = pd.Series(list(flags), dtype=bool)
        # Words of the other language say a side was swapped only when the two differ: an
        # English summary of an English text is full of "the" and "and".
        if langs[0] != langs[1]:
            frame[f"{side}_foreign_words"] = contains_words(frame[side].astype(str), foreign)
    shorter = frame[["source_tokens", "target_tokens"]].min(axis=1).clip(lower=1)
    longer = frame[["source_tokens", "target_tokens"]].max(axis=1)
    frame["length_ratio"] = (longer / shorter).astype("float64")
    frame["compression"] = compression(frame["source_tokens"], frame["target_tokens"])
    frame["identical_sides"] = pd.Series(
        [identical_sides(s, t) for s, t in zip(sources, targets, strict=True)], dtype=bool
    )
    frame["is_duplicate"] = frame.duplicated(subset=["source", "target"], keep="first")
    return frame


def compression(source_tokens: pd.Series, target_tokens: pd.Series) -> pd.Series:
    """Target tokens / source tokens: how much a summary shortens its text (an empty source
    counts as one token, so the ratio stays finite; min_tokens rules catch it)."""
    return (target_tokens / source_tokens.clip(lower=1)).astype("float64")


def identical_sides(source: str, target: str) -> bool:
    """Both sides say the same once normalised, ignoring case: a reply that echoes its prompt.

    Validate's and clean's `identical_sides` rules both call this, so the strict suite after
    cleaning agrees with the cleaning on every row. Empty sides are never identical here: the
    min_tokens rules already account for them.
    """
    folded = normalize_text(source).casefold()
    return bool(folded) and folded == normalize_text(target).casefold()


def language_sample(rows: int) -> list[int]:
    """The (0-based, sorted) rows whose languages are identified: all, or a seeded sample."""
    if rows <= LANGUAGE_SAMPLE_ROWS:
        return list(range(rows))
    rng = np.random.default_rng(LANGUAGE_SAMPLE_SEED)
    chosen = rng.choice(rows, size=LANGUAGE_SAMPLE_ROWS, replace=False)
    return sorted(int(row) for row in chosen)


def with_detected_languages(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with `{side}_detected_language` on the sampled rows, None on the others.

    Blank lines are not identified (py3langid would still name a language for them); GX leaves
    the None rows out of the share, so the share is over the sampled, non-blank lines.
    """
    rows = language_sample(len(frame))
    columns = {}
    for side in SIDES:
        detected: list[str | None] = [None] * len(frame)
        texts = frame[side].iloc[rows].astype(str).tolist()
        judged = [(row, text) for row, text in zip(rows, texts, strict=True) if text.strip()]
        languages = detected_languages([text for _, text in judged])
        for (row, _), language in zip(judged, languages, strict=True):
            detected[row] = language
        columns[f"{side}_detected_language"] = pd.Series(detected, index=frame.index, dtype=object)
    return frame.assign(**columns)


def sources_in(sources: Sequence[str], known: frozenset[str]) -> pd.Series:
    """Per source: after clean's normalisation, non-empty and one of `known`."""
    flags = [bool(text) and text in known for text in map(normalize_text, sources)]
    return pd.Series(flags, dtype=bool)


def with_train_overlap(
    frames: Mapping[str, pd.DataFrame], train_split: str
) -> dict[str, pd.DataFrame]:
    """Every held-out split's frame with `source_in_train`; the train frame as it is."""
    train_sources = frozenset(map(normalize_text, frames[train_split]["source"]))
    return {
        split: frame
        if split == train_split
        else frame.assign(source_in_train=sources_in(frame["source"], train_sources).values)
        for split, frame in frames.items()
    }


def train_overlap_report(
    frames: Mapping[str, pd.DataFrame], max_share: float
) -> dict[str, dict[str, Any]]:
    """summary.json's `train_overlap`: per held-out split, how many sources occur in train."""
    report = {}
    for split, frame in frames.items():
        if "source_in_train" in frame:
            rows = int(frame["source_in_train"].sum())
            share = rows / len(frame) if len(frame) else 0.0
            report[split] = {"rows": rows, "share": round(share, 6), "max_share": max_share}
    return report


def read_split_frame(raw_dir: Path, split: str, data: DataConfig) -> pd.DataFrame:
    """Both sides of `split` as a pair frame; DataError for a missing file or unequal lengths."""
    source_path = raw_file(raw_dir, split, data.sides[0])
    target_path = raw_file(raw_dir, split, data.sides[1])
    sources, source_valid = read_side(source_path, split)
    targets, target_valid = read_side(target_path, split)
    require_same_line_count(source_path, len(sources), target_path, len(targets))
    langs = (data.src_lang, data.tgt_lang)
    return build_pair_frame(sources, targets, langs, (source_valid, target_valid))
