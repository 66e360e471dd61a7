"""`mt clean`: normalise every split, filter train/val by named rules, report what was dropped.

Pure core: `normalize_pairs` and the rules in `RULES` work on lists of (source, target) pairs.
`clean_corpus` applies them split by split and says which rule dropped which raw line. Test
splits are only normalised (their line count must match the raw references), never filtered.
Which rules run depends on `task:` (`rules_for`, docs/tasks.md): every task drops empty and
over-long pairs, duplicates and leaks; translation also misaligned lengths (`length_ratio`),
summarization sources too short to summarise (`source_too_short`) and targets not shorter than
their source (`compression`), dialogue replies that echo their prompt (`identical_sides`).
The report lists the rules and the params of its task only, and names a task other than
translation, so a translation report is byte for byte the one written before tasks existed.
Normalisation (pipeline/text.py, shared with validate, translate and evaluate) is counted too:
rows whose invisible characters (`INVISIBLE_CHARS`) were removed or turned into a space are
reported under the rule `invisible_chars`.
`main` reads data/raw, runs the stricter Great Expectations suite on the result and only then
writes data/clean/ (one atomic directory swap) and reports/cleaning.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.aligned_text import join_lines, read_pairs
from pipeline.atomic import atomic_directory, atomic_write_json
from pipeline.config import CleanConfig, Config, load_config
from pipeline.data.pair_frames import identical_sides as sides_identical
from pipeline.paths import ProjectPaths, project_paths, raw_file
from pipeline.tasks import Task
from pipeline.text import invisible_chars_in, normalize_text

log = logging.getLogger(__name__)

Pair = tuple[str, str]
MAX_EXAMPLES = 3


def normalize_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    return [(normalize_text(source), normalize_text(target)) for source, target in pairs]


def token_count(text: str) -> int:
    """Whitespace tokens: the unit of clean.max_tokens and clean.max_length_ratio."""
    return len(text.split())


@dataclass(frozen=True)
class RuleContext:
    """What a rule may look at besides the pairs themselves."""

    config: CleanConfig
    held_out_sources: frozenset[str] = frozenset()
    held_out_pairs: frozenset[Pair] = frozenset()


# A rule takes the surviving pairs of a split and returns, per pair, True when it must go.
Rule = Callable[[Sequence[Pair], RuleContext], list[bool]]


def too_short(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """Empty pairs, or a side with fewer than clean.min_tokens tokens."""
    minimum = context.config.min_tokens
    return [min(token_count(s), token_count(t)) < minimum for s, t in pairs]


def too_long(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """A side with more than clean.max_tokens tokens."""
    maximum = context.config.max_tokens
    return [max(token_count(s), token_count(t)) > maximum for s, t in pairs]


def length_ratio(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """Longer side / shorter side (in tokens) above clean.max_length_ratio: likely misaligned."""
    return [_length_ratio(s, t) > context.config.max_length_ratio for s, t in pairs]


def _length_ratio(source: str, target: str) -> float:
    shorter, longer = sorted((token_count(source), token_count(target)))
    return float("inf") if shorter == 0 else longer / shorter


def source_too_short(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """A source with fewer than clean.min_source_tokens tokens: too little to summarise."""
    minimum = context.config.min_source_tokens
    return [token_count(source) < minimum for source, _ in pairs]


def compression(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """Target tokens / source tokens above clean.max_compression: no summary of its source."""
    return [_compression(s, t) > context.config.max_compression for s, t in pairs]


def _compression(source: str, target: str) -> float:
    # The same ratio as validate's `compression` column; too_short has dropped empty sources.
    return token_count(target) / max(token_count(source), 1)


def identical_sides(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """Both sides the same text once normalised, ignoring case: a reply that echoes its prompt."""
    return [sides_identical(source, target) for source, target in pairs]


def duplicate(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """A pair seen earlier in the same split (the first one is kept)."""
    seen: set[Pair] = set()
    drop = []
    for pair in pairs:
        drop.append(pair in seen)
        seen.add(pair)
    return drop


def leaked_pair(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """The whole pair also occurs in val or a test split."""
    return [pair in context.held_out_pairs for pair in pairs]


def leaked_source(pairs: Sequence[Pair], context: RuleContext) -> list[bool]:
    """The source sentence also occurs in val or a test split (with another translation)."""
    return [source in context.held_out_sources for source, _ in pairs]


# Applied in this order; a row is reported under the first rule that drops it.
RULES: dict[str, Rule] = {
    "too_short": too_short,
    "too_long": too_long,
    "length_ratio": length_ratio,
    "source_too_short": source_too_short,
    "compression": compression,
    "identical_sides": identical_sides,
    "duplicate": duplicate,
    "leaked_pair": leaked_pair,
    "leaked_source": leaked_source,
}
# The rules only one task applies; every other rule applies to all. A translation is about as
# long as its source; a summary much shorter than a text long enough to summarise; a reply any
# length (so no length_ratio), but not its prompt again.
TASK_RULES: dict[Task, frozenset[str]] = {
    "translation": frozenset({"length_ratio"}),
    "summarization": frozenset({"source_too_short", "compression"}),
    "dialogue": frozenset({"identical_sides"}),
}
# Val is a held-out set too: de-duplicating or leak-filtering it is the train split's job.
TRAIN_ONLY_RULES = frozenset({"duplicate", "leaked_pair", "leaked_source"})
# The clean.* params each rule reads: the report lists those of the rules that ran.
RULE_PARAMS: dict[str, tuple[str, ...]] = {
    "too_short": ("min_tokens",),
    "too_long": ("max_tokens",),
    "length_ratio": ("max_length_ratio",),
    "source_too_short": ("min_source_tokens",),
    "compression": ("max_compression",),
}


def task_rules(task: Task) -> list[str]:
    """Every rule name `task` applies to train, in order."""
    only_one_task = frozenset().union(*TASK_RULES.values())
    return [name for name in RULES if name not in only_one_task or name in TASK_RULES[task]]


def rules_for(split_role: str, task: Task = "translation") -> list[str]:
    """Rule names for a split role: "train", "val" or "test" (test: none)."""
    if split_role == "test":
        return []
    return [
        name for name in task_rules(task) if split_role == "train" or name not in TRAIN_ONLY_RULES
    ]


# Named normalisations: they change a row instead of dropping it, and are counted like rules.
NORMALISATIONS: dict[str, str] = {
    "invisible_chars": "Zero-width characters (U+200B-U+200D, U+2060, U+FEFF) removed and line/"
    "paragraph separators (U+2028, U+2029) turned into a space.",
}


@dataclass(frozen=True)
class NormalisedRow:
    """A raw row that a named normalisation changed, and what it found there."""

    line: int
    pair: Pair  # after normalisation
    found: list[str]


@dataclass
class SplitOutcome:
    """One split after cleaning: the kept pairs and what happened to the others."""

    pairs: list[Pair]
    rows_in: int
    rows_normalised: int
    dropped: dict[str, list[tuple[int, Pair]]] = field(default_factory=dict)
    normalised: dict[str, list[NormalisedRow]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "rows_in": self.rows_in,
            "rows_out": len(self.pairs),
            "rows_normalised": self.rows_normalised,
            "normalised": {
                name: _normalised_report(rows) for name, rows in self.normalised.items()
            },
            "dropped": {name: _rule_report(rows) for name, rows in self.dropped.items()},
        }


def _rule_report(rows: list[tuple[int, Pair]]) -> dict[str, Any]:
    examples = [
        {"line": line, "source": source, "target": target}
        for line, (source, target) in rows[:MAX_EXAMPLES]
    ]
    return {"rows": len(rows), "examples": examples}


def _normalised_report(rows: list[NormalisedRow]) -> dict[str, Any]:
    examples = [
        {"line": row.line, "found": row.found, "source": row.pair[0], "target": row.pair[1]}
        for row in rows[:MAX_EXAMPLES]
    ]
    return {"rows": len(rows), "examples": examples}


def rows_with_invisible_chars(
    raw_pairs: Sequence[Pair], normalised: Sequence[Pair]
) -> list[NormalisedRow]:
    """The rows the `invisible_chars` normalisation changed (1-based raw line numbers)."""
    rows = []
    for line, (raw, clean) in enumerate(zip(raw_pairs, normalised, strict=True), 1):
        found = invisible_chars_in(raw[0] + raw[1])
        if found:
            rows.append(NormalisedRow(line, clean, found))
    return rows


def clean_split(
    raw_pairs: Sequence[Pair], rule_names: Sequence[str], context: RuleContext
) -> SplitOutcome:
    """Normalise `raw_pairs`, then apply the named rules in order.

    Dropped rows keep their 1-based line number in the raw files, so the report points at them.
    """
    normalised = normalize_pairs(raw_pairs)
    changed = sum(before != after for before, after in zip(raw_pairs, normalised, strict=True))
    lines = list(range(1, len(normalised) + 1))
    pairs = normalised
    dropped: dict[str, list[tuple[int, Pair]]] = {}
    for name in rule_names:
        drop = RULES[name](pairs, context)
        dropped[name] = [(ln, p) for ln, p, gone in zip(lines, pairs, drop, strict=True) if gone]
        lines = [ln for ln, gone in zip(lines, drop, strict=True) if not gone]
        pairs = [p for p, gone in zip(pairs, drop, strict=True) if not gone]
    invisible = {"invisible_chars": rows_with_invisible_chars(raw_pairs, normalised)}
    return SplitOutcome(pairs, len(raw_pairs), changed, dropped, invisible)


def held_out_context(
    config: CleanConfig, held_out_splits: Sequence[Sequence[Pair]]
) -> RuleContext:
    """Context whose leakage sets hold the normalised pairs of val and the test splits."""
    pairs = frozenset(pair for split in held_out_splits for pair in normalize_pairs(split))
    return RuleContext(config, frozenset(source for source, _ in pairs), pairs)


def clean_corpus(
    raw: Mapping[str, Sequence[Pair]],
    train_split: str,
    val_split: str,
    config: CleanConfig,
    task: Task = "translation",
) -> dict[str, SplitOutcome]:
    """Clean every split of `raw` (split name → raw pairs); the others count as test splits."""
    held_out = [pairs for split, pairs in raw.items() if split != train_split]
    context = held_out_context(config, held_out)
    roles = {train_split: "train", val_split: "val"}
    return {
        split: clean_split(pairs, rules_for(roles.get(split, "test"), task), context)
        for split, pairs in raw.items()
    }


def cleaning_report(
    outcomes: Mapping[str, SplitOutcome], config: CleanConfig, task: Task = "translation"
) -> dict[str, Any]:
    """reports/cleaning.json: the task's rules, the params they read, what each split lost."""
    names = task_rules(task)
    used = {param for name in names for param in RULE_PARAMS.get(name, ())}
    params = {key: value for key, value in dataclasses.asdict(config).items() if key in used}
    return {
        # As validate's summary.json: translation, the task of reports before tasks, unnamed.
        **({} if task == "translation" else {"task": task}),
        "params": params,
        "rules": {name: (RULES[name].__doc__ or "").strip() for name in names},
        "normalisations": NORMALISATIONS,
        "splits": {split: outcome.report() for split, outcome in outcomes.items()},
    }


def write_clean_dir(
    target: Path, outcomes: Mapping[str, SplitOutcome], sides: tuple[str, str]
) -> None:
    """All splits into `target`, swapped in as one directory."""
    with atomic_directory(target) as staging:
        for split, outcome in outcomes.items():
            for column, side in enumerate(sides):
                text = join_lines(pair[column] for pair in outcome.pairs)
                raw_file(staging, split, side).write_text(text, encoding="utf-8", newline="\n")


def run_clean(config: Config, paths: ProjectPaths) -> dict[str, SplitOutcome]:
    """Read data/raw, clean, validate, write data/clean and reports/cleaning.json."""
    data = config.data
    raw = {split: read_pairs(paths.raw_dir, split, data.sides) for split in data.splits}
    outcomes = clean_corpus(raw, data.train_split, data.val_split, config.clean, config.task)
    for split, outcome in outcomes.items():
        log.info("%s: %d rows in, %d out", split, outcome.rows_in, len(outcome.pairs))
    validation = validate_clean_outcomes(outcomes, config)
    write_clean_dir(paths.clean_dir, outcomes, data.sides)
    report = {**cleaning_report(outcomes, config.clean, config.task), "validation": validation}
    atomic_write_json(paths.cleaning_report, report)
    return outcomes


def validate_clean_outcomes(
    outcomes: Mapping[str, SplitOutcome], config: Config
) -> dict[str, Any]:
    """The strict GX suite over the cleaned pairs; raises ValidationFailed before any write.

    Returns, per split, the rules that passed (for the report).
    """
    # Imported here: Great Expectations takes seconds to import, and readers of this module
    # that only need `read_pairs` (tokenize) should not pay for it.
    from pipeline.data.validate_raw import validate_clean_pairs

    summary = validate_clean_pairs({split: o.pairs for split, o in outcomes.items()}, config)
    return {
        "suite": summary["suite"],
        "success": summary["success"],
        "rules_passed": {split: sorted(s["rules"]) for split, s in summary["splits"].items()},
    }


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt clean", description="Normalise and filter data/raw into data/clean."
    )
    parser.parse_args(argv)
    run_clean(load_config(), project_paths())
    return 0
