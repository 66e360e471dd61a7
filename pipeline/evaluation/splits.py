"""What evaluate scores: the test splits and the val split, read line-aligned, and the rows the
reports show of each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.aligned_text import read_aligned_lines
from pipeline.config import Config
from pipeline.errors import DataError
from pipeline.paths import ProjectPaths, raw_file
from pipeline.text import remove_invisible


@dataclass(frozen=True)
class SplitData:
    """One test split: normalised sources and raw references, line-aligned."""

    name: str
    sources: list[str]
    references: list[str]


@dataclass
class SplitEvaluation:
    """One evaluated test split: what metrics.json holds of it and what its reports show.

    `baselines` (summarization): {extractive baseline: its scores, as the model's table row};
    `frequent_responses` (dialogue): the most frequent outputs, folded, with their counts.
    """

    split: SplitData
    hypotheses: list[str]
    metrics: dict[str, Any]
    by_length: list[dict[str, Any]]
    sample_rows: list[int]
    attention_maps: dict[int, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    frequent_responses: list[tuple[str, int]] = field(default_factory=list)


def read_split(paths: ProjectPaths, config: Config, split: str) -> SplitData:
    """Normalised sources from data/clean/, raw references from data/raw/, line-aligned.

    The references lose their invisible characters (`pipeline.text.remove_invisible`, the same
    function the registry applies): hypotheses never contain them, since the model learnt from
    data/clean, so a "Hund\u200b" in a reference would otherwise count as a wrong word. Nothing
    else is changed, so scores stay comparable with published results on the raw references.
    """
    source_path = raw_file(paths.clean_dir, split, config.data.sides[0])
    reference_path = raw_file(paths.raw_dir, split, config.data.sides[1])
    for path, stage in ((source_path, "clean"), (reference_path, "fetch")):
        if not path.is_file():
            raise DataError(
                f"{path}: not found; evaluate needs the {split} source (data/clean) and "
                f"reference (data/raw) - run `mt {stage}` (or `dvc repro {stage}`) first"
            )
    sources = read_aligned_lines(source_path, "run `mt clean`")
    raw_references = read_aligned_lines(reference_path, "run `mt fetch`")
    references = [remove_invisible(line) for line in raw_references]
    if len(sources) != len(references):
        raise DataError(
            f"{source_path}: {len(sources)} lines, but the reference {reference_path} has "
            f"{len(references)}; test splits must keep every line - re-run `mt clean`"
        )
    return SplitData(split, sources, references)


def read_val_split(paths: ProjectPaths, config: Config) -> SplitData:
    """The cleaned val pairs (data/clean, both sides): what sweeps select on."""
    split, data = config.data.val_split, config.data
    sides = [raw_file(paths.clean_dir, split, lang) for lang in data.sides]
    for path in sides:
        if not path.is_file():
            raise DataError(
                f"{path}: not found; evaluate scores the val split too (data.val_split) - run "
                "`mt clean` (or `dvc repro clean`) first"
            )
    sources, references = (read_aligned_lines(path, "run `mt clean`") for path in sides)
    if len(sources) != len(references):
        raise DataError(
            f"{sides[0]}: {len(sources)} lines, but {sides[1]} has {len(references)}; "
            "re-run `mt clean`"
        )
    return SplitData(split, sources, references)


def choose_sample_rows(total: int, count: int, seed: int) -> list[int]:
    """`count` distinct row indices, seeded, in file order."""
    chosen = np.random.default_rng(seed).choice(total, size=min(count, total), replace=False)
    return sorted(int(row) for row in chosen)
