"""Read the project's evidence files into an `EvaluationEvidence` (what `mt register` logs).

The test sets are read as the gate reads its references (cut into lines as every stage cuts
them, invisible characters removed), so a dataset's digest is the gate's references hash.
Report files that a project does not have (a stand-in model in tests, a project that never
ran `mt validate`) are simply not logged; the model card says what is not recorded.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pipeline.aligned_text import read_aligned_lines
from pipeline.config import Config
from pipeline.evaluate import by_length_filename
from pipeline.evaluation.by_length import length_metric
from pipeline.paths import ProjectPaths, raw_file
from pipeline.registry.errors import RegistryError
from pipeline.registry.evidence_charts import by_length_rows, history_rows
from pipeline.registry.evidence_logging import EvaluationEvidence, LengthBuckets, TestSet
from pipeline.registry.registration import sha256_lines
from pipeline.text import remove_invisible

VALIDATION_SUMMARY = "summary.json"
TRAINING_HISTORY = "history.csv"
Row = TypeVar("Row")


def evaluation_evidence(
    paths: ProjectPaths, config: Config, metrics: Mapping[str, Any], splits: Iterable[str]
) -> EvaluationEvidence:
    """The evidence of the evaluated `splits` (in `data.test_splits` order)."""
    evaluated = set(splits)
    ordered = [split for split in config.data.test_splits if split in evaluated]
    return EvaluationEvidence(
        metrics=metrics,
        test_sets=tuple(read_test_set(paths, config, split) for split in ordered),
        eval_dir=paths.eval_reports_dir,
        validation_summary=paths.validation_dir / VALIDATION_SUMMARY,
        training_history=tuple(
            _parsed(paths.train_reports_dir / TRAINING_HISTORY, history_rows, "rerun `mt train`")
        ),
        by_length=length_buckets(
            paths.eval_reports_dir,
            config.data.test_splits,
            ordered,
            length_metric(config.task, config.metric),
        ),
        split_sizes=cleaning_sizes(paths.cleaning_report),
    )


def length_buckets(
    eval_dir: Path, test_splits: Sequence[str], evaluated: Sequence[str], metric: str = "bleu"
) -> tuple[LengthBuckets, ...]:
    """The `metric`-by-length rows of each evaluated split that has its CSV (named as evaluate
    names it: the first of `data.test_splits` gets the plain name, e.g. bleu_by_length.csv)."""
    found = []
    for split in evaluated:
        name = by_length_filename(list(test_splits).index(split), split, metric)
        parse = functools.partial(by_length_rows, metric=metric)
        rows = _parsed(eval_dir / name, parse, "rerun `mt evaluate`")
        if rows:
            found.append(LengthBuckets(split, name, tuple(rows), metric))
    return tuple(found)


def _parsed(path: Path, parse: Callable[[str], list[Row]], fix: str) -> list[Row]:
    """`parse` of the file's text; [] when there is no file. A file that is not what its
    stage writes stops the registration before anything is logged."""
    if not path.is_file():
        return []
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise RegistryError(f"{path}: {error}; {fix}; nothing was registered") from None


def _lines(path: Path, fix: str) -> tuple[str, ...]:
    return tuple(remove_invisible(line) for line in read_aligned_lines(path, fix))


def read_test_set(paths: ProjectPaths, config: Config, split: str) -> TestSet:
    """Raw references of `split` (and raw sources, when data/raw has them)."""
    references_file = raw_file(paths.raw_dir, split, config.data.sides[1])
    references = _lines(references_file, "run `mt fetch`")
    sources_file = raw_file(paths.raw_dir, split, config.data.sides[0])
    sources = _lines(sources_file, "run `mt fetch`") if sources_file.is_file() else None
    if sources is not None and len(sources) != len(references):
        raise RegistryError(
            f"{sources_file}: {len(sources)} lines but {references_file} has "
            f"{len(references)}; the two sides of a split must be line-aligned (run `mt fetch`)"
        )
    return TestSet(
        split=split,
        location=references_file.relative_to(paths.root).as_posix(),
        references_sha256=sha256_lines(references),
        references=references,
        sources=sources,
    )


def cleaning_sizes(report: Path) -> dict[str, tuple[int, int]]:
    """{split: (rows read, rows kept)} from reports/cleaning.json; empty when there is none."""
    if not report.is_file():
        return {}
    try:
        splits = json.loads(report.read_text(encoding="utf-8"))["splits"]
        return {
            str(split): (int(counts["rows_in"]), int(counts["rows_out"]))
            for split, counts in splits.items()
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise RegistryError(
            f"{report}: unreadable ({type(error).__name__}: {error}); rerun `mt clean` "
            "(or `dvc repro clean`); nothing was registered"
        ) from None
