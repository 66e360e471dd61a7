"""The data contract as Great Expectations: which rules a split's suite holds, per task.

`raw_bounds` (validate.*, on data/raw, per-row rules for `validate.mostly` of the rows) and
`clean_bounds` (clean.*, on the cleaned pairs, every row) say what one split is checked
against; `suite_expectations` turns them into GX expectations over the columns of
pipeline/data/pair_frames.py. Every expectation carries its rule name in `meta["rule"]`, the
name summary.json, the error message and the tests speak of.

Every task shares the per-side rules (not empty, valid UTF-8, no control characters, length
bounds) and the pair rules min_rows, duplicate_pairs and train_overlap. Then, per task
(docs/tasks.md):

- translation: `length_ratio` (longer / shorter side) and, when the two languages differ,
  `{side}_language` (the side holds few function words of the other language);
- summarization: `min_source_tokens` (a text long enough to summarise), `max_compression`
  (target tokens / source tokens), `{side}_detected_language`;
- dialogue: `identical_sides` (a reply that only echoes its prompt: like duplicates, at most
  `validate.max_duplicate_share` of the raw rows, none after cleaning),
  `{side}_detected_language`; no length rule between the sides: a reply may be much longer or
  shorter than its prompt.

`{side}_detected_language` is checked on data/raw only: clean drops no row for its language,
so the strict suite after cleaning has nothing to agree with there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import great_expectations.expectations as gxe

from pipeline.config import Config
from pipeline.data.pair_frames import FUNCTION_WORDS, SIDES
from pipeline.tasks import Task

# Real Multi30k: at most 1% of one side's rows hold the other language's words; a swapped side
# holds them in 79-90% of rows.
MAX_FOREIGN_WORD_SHARE = 0.1
# C0 and C1 control characters, except tab (a whitespace quirk that raw Multi30k has and clean
# repairs) and "\n" (the line end, never inside a line).
CONTROL_CHARS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
# A side longer than this many characters per allowed token is one run-on blob, not a sentence
# (the token bound alone misses a 100 kB line without spaces).
MAX_CHARS_PER_TOKEN = 20

# The task-specific rule families: a translation is about as long as its source, a summary
# much shorter than its text, a reply any length but not its prompt again; the declared
# language of a side is identified for the tasks without the function-word check's two
# languages.
TASK_RULES: dict[Task, frozenset[str]] = {
    "translation": frozenset({"length_ratio"}),
    "summarization": frozenset({"compression", "detected_language"}),
    "dialogue": frozenset({"identical_sides", "detected_language"}),
}


@dataclass(frozen=True)
class Bounds:
    """What one split's suite checks against; None switches a bound off (e.g. clean tests)."""

    min_rows: int
    min_tokens: int
    max_tokens: int | None
    max_length_ratio: float | None
    mostly: float
    max_duplicate_share: float
    max_train_overlap: float | None = None  # None: not a held-out split, or the clean suite
    # The task rules (TASK_FIELDS); their defaults switch them off.
    min_source_tokens: int | None = None  # summarization
    max_compression: float | None = None  # summarization
    max_identical_share: float | None = None  # dialogue
    min_language_share: float | None = None  # summarization, dialogue; raw data only


# Left out of the report while switched off, so a translation summary.json stays byte for byte
# what it was before tasks existed (`clean` depends on it: DVC would rerun every stage).
TASK_FIELDS = ("min_source_tokens", "max_compression", "max_identical_share", "min_language_share")


def bounds_report(bounds: Bounds) -> dict[str, Any]:
    """The bounds as summary.json shows them: every shared bound, the task rules in use."""
    report = asdict(bounds)
    for name in TASK_FIELDS:
        if report[name] is None:
            del report[name]
    return report


def raw_bounds(config: Config, split: str) -> Bounds:
    """validate.*: the per-row bounds hold for `validate.mostly` of the rows."""
    limits = config.validate
    rules = TASK_RULES[config.task]
    is_train = split == config.data.train_split
    summarises = "compression" in rules
    # An echoed prompt is a data artefact clean removes, as duplicates are: the same tolerance
    # (chatterbot's English conversations hold 4 in 678 train pairs, 0.6%).
    echoes = limits.max_duplicate_share if "identical_sides" in rules else None
    return Bounds(
        min_rows=limits.min_train_rows if is_train else limits.min_rows,
        min_tokens=1,
        max_tokens=limits.max_tokens,
        max_length_ratio=limits.max_length_ratio if "length_ratio" in rules else None,
        mostly=limits.mostly,
        max_duplicate_share=limits.max_duplicate_share,
        max_train_overlap=None if is_train else limits.max_train_overlap,
        min_source_tokens=limits.min_source_tokens if summarises else None,
        max_compression=limits.max_compression if summarises else None,
        max_identical_share=echoes,
        min_language_share=limits.min_language_share if "detected_language" in rules else None,
    )


def clean_bounds(config: Config, split: str) -> Bounds:
    """clean.* for every row of train and val; test splits are only normalised, not filtered."""
    limits, data = config.clean, config.data
    rules = TASK_RULES[config.task]
    filtered = split in (data.train_split, data.val_split)
    is_train = split == data.train_split
    summarises = filtered and "compression" in rules
    return Bounds(
        min_rows=config.validate.min_train_rows if is_train else config.validate.min_rows,
        min_tokens=limits.min_tokens if filtered else 1,
        max_tokens=limits.max_tokens if filtered else None,
        max_length_ratio=(
            limits.max_length_ratio if filtered and "length_ratio" in rules else None
        ),
        mostly=1.0,
        max_duplicate_share=0.0 if is_train else config.validate.max_duplicate_share,
        min_source_tokens=limits.min_source_tokens if summarises else None,
        max_compression=limits.max_compression if summarises else None,
        max_identical_share=0.0 if filtered and "identical_sides" in rules else None,
    )


def _named(rule: str, expectation: gxe.Expectation) -> gxe.Expectation:
    expectation.meta = {"rule": rule}
    return expectation


def side_expectations(side: str, bounds: Bounds) -> list[gxe.Expectation]:
    """Per-side rules: not empty, valid UTF-8, no control characters, length bounds."""
    tokens = f"{side}_tokens"
    rules = [
        _named(
            f"{side}_min_tokens",
            gxe.ExpectColumnValuesToBeBetween(column=tokens, min_value=bounds.min_tokens),
        ),
        _named(
            f"{side}_valid_utf8",
            gxe.ExpectColumnValuesToBeInSet(column=f"{side}_utf8_valid", value_set=[True]),
        ),
        _named(
            f"{side}_no_control_chars",
            gxe.ExpectColumnValuesToNotMatchRegex(column=side, regex=CONTROL_CHARS),
        ),
    ]
    if bounds.max_tokens is not None:
        rules += _length_expectations(side, bounds.max_tokens, bounds.mostly)
    return rules


def _length_expectations(side: str, max_tokens: int, mostly: float) -> list[gxe.Expectation]:
    return [
        _named(
            f"{side}_max_tokens",
            gxe.ExpectColumnValuesToBeBetween(
                column=f"{side}_tokens", max_value=max_tokens, mostly=mostly
            ),
        ),
        _named(
            f"{side}_max_chars",
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=side, max_value=max_tokens * MAX_CHARS_PER_TOKEN, mostly=mostly
            ),
        ),
    ]


def pair_expectations(bounds: Bounds, langs: tuple[str, str]) -> list[gxe.Expectation]:
    """Rules over the pair: row count, length ratio, duplicate share, which language is where,
    and (held-out splits) the share of sources seen in train."""
    rules = [
        _named("min_rows", gxe.ExpectTableRowCountToBeBetween(min_value=bounds.min_rows)),
        _named(
            "duplicate_pairs",
            gxe.ExpectColumnValuesToBeInSet(
                column="is_duplicate", value_set=[False], mostly=1.0 - bounds.max_duplicate_share
            ),
        ),
    ]
    if bounds.max_train_overlap is not None:
        overlap = gxe.ExpectColumnValuesToBeInSet(
            column="source_in_train", value_set=[False], mostly=1.0 - bounds.max_train_overlap
        )
        rules.append(_named("train_overlap", overlap))
    if bounds.max_length_ratio is not None:
        ratio = gxe.ExpectColumnValuesToBeBetween(
            column="length_ratio", max_value=bounds.max_length_ratio, mostly=bounds.mostly
        )
        rules.append(_named("length_ratio", ratio))
    return rules + foreign_word_expectations(langs)


def foreign_word_expectations(langs: tuple[str, str]) -> list[gxe.Expectation]:
    """`{side}_language`: few rows of a side hold the other language's function words; only
    for two different languages (pair_frames builds the columns only then)."""
    if langs[0] == langs[1]:
        return []
    rules = []
    for side, foreign in zip(SIDES, reversed(langs), strict=True):
        if foreign in FUNCTION_WORDS:
            language = gxe.ExpectColumnValuesToBeInSet(
                column=f"{side}_foreign_words",
                value_set=[False],
                mostly=1.0 - MAX_FOREIGN_WORD_SHARE,
            )
            rules.append(_named(f"{side}_language", language))
    return rules


def summary_expectations(bounds: Bounds) -> list[gxe.Expectation]:
    """Summarization: a source long enough to summarise, a target shorter than its source."""
    rules = []
    if bounds.min_source_tokens is not None:
        long_enough = gxe.ExpectColumnValuesToBeBetween(
            column="source_tokens", min_value=bounds.min_source_tokens, mostly=bounds.mostly
        )
        rules.append(_named("min_source_tokens", long_enough))
    if bounds.max_compression is not None:
        shorter = gxe.ExpectColumnValuesToBeBetween(
            column="compression", max_value=bounds.max_compression, mostly=bounds.mostly
        )
        rules.append(_named("max_compression", shorter))
    return rules


def dialogue_expectations(bounds: Bounds) -> list[gxe.Expectation]:
    """Dialogue: a reply that repeats its prompt teaches the model to echo; rare in raw data,
    none after cleaning."""
    if bounds.max_identical_share is None:
        return []
    echo = gxe.ExpectColumnValuesToBeInSet(
        column="identical_sides", value_set=[False], mostly=1.0 - bounds.max_identical_share
    )
    return [_named("identical_sides", echo)]


def language_expectations(bounds: Bounds, langs: tuple[str, str]) -> list[gxe.Expectation]:
    """`{side}_detected_language`: of the sampled lines (the others are None, which GX leaves
    out), at least min_language_share are identified as the side's declared language."""
    if bounds.min_language_share is None:
        return []
    return [
        _named(
            f"{side}_detected_language",
            gxe.ExpectColumnValuesToBeInSet(
                column=f"{side}_detected_language",
                value_set=[lang],
                mostly=bounds.min_language_share,
            ),
        )
        for side, lang in zip(SIDES, langs, strict=True)
    ]


def suite_expectations(bounds: Bounds, langs: tuple[str, str]) -> list[gxe.Expectation]:
    """Every expectation of one split's suite: shared rules first, then the task's."""
    expectations = pair_expectations(bounds, langs)
    expectations += summary_expectations(bounds) + dialogue_expectations(bounds)
    expectations += language_expectations(bounds, langs)
    for side in SIDES:
        expectations += side_expectations(side, bounds)
    return expectations


def needs_detected_languages(bounds: Bounds) -> bool:
    """Whether the split's frame needs the (sampled, about 1 s) language columns."""
    return bounds.min_language_share is not None
