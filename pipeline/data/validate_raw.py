"""`mt validate` (DVC stage validate_raw): the raw corpus against its data contract, with GX.

Every split of `config.data.splits` becomes one pandas DataFrame of aligned pairs
(pipeline/data/pair_frames.py: columns `line`, `source`, `target` plus derived columns such as
token counts, length ratio, UTF-8 validity, duplicate and foreign-language flags; val and test
frames also flag sources that occur in train) and one Great Expectations 1.x suite, run by a
Checkpoint in an ephemeral context that also builds Data Docs. Every expectation is a
column-level (vectorised) check on those columns and carries its rule name in `meta["rule"]`,
e.g. `source_max_tokens` or `target_language`; the rule names are what summary.json, the error
message (both built by pipeline/data/validation_report.py) and the tests speak of.

Train overlap: the rule `train_overlap` fails a val or test split when more than
`validate.max_train_overlap` of its sources (compared after clean's normalisation) also occur
in train: BLEU on such a split measures recall of training data, not translation.
summary.json's `train_overlap` reports the share for every held-out split, pass or fail.

Outputs (one atomic directory swap): reports/validation/summary.json (deterministic: no
timestamps or run ids, since `clean` depends on it), results/<split>.json (the full GX
validation results) and data_docs/index.html. A failing suite still writes the report, then
raises ValidationFailed; two files of a split with different line counts, or a missing file,
raise DataError before any suite runs.

For the clean stage, a stricter suite over the cleaned pairs (mostly=1.0, bounds from
`clean.*`, no duplicate pairs in train); it writes nothing and raises ValidationFailed:

    validate_clean_pairs(
        pairs_by_split: Mapping[str, Sequence[tuple[str, str]]], config: Config
    ) -> dict[str, Any]            # the summary, same shape as summary.json
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction, ValidationAction
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict
from great_expectations.data_context.types.base import ProgressBarsConfig

from pipeline.atomic import atomic_directory, atomic_write_json, remove_outputs
from pipeline.config import Config, load_config
from pipeline.data.pair_frames import (
    FUNCTION_WORDS,
    SIDES,
    build_pair_frame,
    read_split_frame,
    train_overlap_report,
    with_train_overlap,
)
from pipeline.data.validation_report import MAX_EXAMPLES, failure_message, summarise
from pipeline.errors import DataError, ValidationFailed
from pipeline.paths import ProjectPaths, project_paths, raw_file

log = logging.getLogger(__name__)
# GX logs every store and datasource it sets up at INFO; `mt validate` should show our summary.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

Pair = tuple[str, str]

# Real Multi30k: at most 1% of one side's rows hold the other language's words; a swapped side
# holds them in 79-90% of rows.
MAX_FOREIGN_WORD_SHARE = 0.1
# C0 and C1 control characters, except tab (a whitespace quirk that raw Multi30k has and clean
# repairs) and "\n" (the line end, never inside a line).
CONTROL_CHARS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
# A side longer than this many characters per allowed token is one run-on blob, not a sentence
# (the token bound alone misses a 100 kB line without spaces).
MAX_CHARS_PER_TOKEN = 20
DOCS_SITE = "validation"
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_EXAMPLES,
    "unexpected_index_column_names": ["line"],
    "return_unexpected_index_query": False,
}


# ----------------------------------------------------------------------------- suites


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


def raw_bounds(config: Config, split: str) -> Bounds:
    """validate.*: the per-row bounds hold for `validate.mostly` of the rows."""
    limits = config.validate
    is_train = split == config.data.train_split
    return Bounds(
        min_rows=limits.min_train_rows if is_train else limits.min_rows,
        min_tokens=1,
        max_tokens=limits.max_tokens,
        max_length_ratio=limits.max_length_ratio,
        mostly=limits.mostly,
        max_duplicate_share=limits.max_duplicate_share,
        max_train_overlap=None if is_train else limits.max_train_overlap,
    )


def clean_bounds(config: Config, split: str) -> Bounds:
    """clean.* for every row of train and val; test splits are only normalised, not filtered."""
    limits, data = config.clean, config.data
    filtered = split in (data.train_split, data.val_split)
    is_train = split == data.train_split
    return Bounds(
        min_rows=config.validate.min_train_rows if is_train else config.validate.min_rows,
        min_tokens=limits.min_tokens if filtered else 1,
        max_tokens=limits.max_tokens if filtered else None,
        max_length_ratio=limits.max_length_ratio if filtered else None,
        mostly=1.0,
        max_duplicate_share=0.0 if is_train else config.validate.max_duplicate_share,
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
    for side, foreign in zip(SIDES, reversed(langs), strict=True):
        if foreign in FUNCTION_WORDS:
            language = gxe.ExpectColumnValuesToBeInSet(
                column=f"{side}_foreign_words",
                value_set=[False],
                mostly=1.0 - MAX_FOREIGN_WORD_SHARE,
            )
            rules.append(_named(f"{side}_language", language))
    return rules


def suite_expectations(bounds: Bounds, langs: tuple[str, str]) -> list[gxe.Expectation]:
    expectations = pair_expectations(bounds, langs)
    for side in SIDES:
        expectations += side_expectations(side, bounds)
    return expectations


# ----------------------------------------------------------------------------- running GX


def _quiet_context(docs_dir: Path | None) -> Any:
    """An ephemeral GX context; its only Data Docs site (if any) writes to `docs_dir`."""
    context = gx.get_context(mode="ephemeral")
    # Each split validates in well under a second: GX's per-metric bars would only be noise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        site: DataDocsSiteConfigTypedDict = {
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
        }
        context.add_data_docs_site(DOCS_SITE, site)
    return context


def run_suites(
    frames: Mapping[str, pd.DataFrame],
    expectations: Mapping[str, list[gxe.Expectation]],
    suite_prefix: str,
    docs_dir: Path | None = None,
) -> dict[str, ExpectationSuiteValidationResult]:
    """Validate each split's frame with its expectations through one Checkpoint per split.

    One Checkpoint per split because a Checkpoint run takes one dataframe for all its
    validation definitions. With `docs_dir`, each run also updates the Data Docs site there.
    """
    context = _quiet_context(docs_dir)
    source = context.data_sources.add_pandas(suite_prefix)
    actions: list[ValidationAction] = []
    if docs_dir is not None:
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE]))
    results: dict[str, ExpectationSuiteValidationResult] = {}
    for split, frame in frames.items():
        suite = gx.ExpectationSuite(
            name=f"{suite_prefix}.{split}", expectations=expectations[split]
        )
        checkpoint = _checkpoint(context, source, suite, split, actions)
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        results[split] = next(iter(outcome.run_results.values()))
    return results


def _checkpoint(
    context: Any,
    source: Any,
    suite: gx.ExpectationSuite,
    asset: str,
    actions: list[ValidationAction],
) -> gx.Checkpoint:
    """Register asset, whole-dataframe batch, suite and validation definition; the Checkpoint."""
    batch = source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=suite)
    )
    checkpoint = gx.Checkpoint(
        name=suite.name,
        validation_definitions=[definition],
        actions=actions,
        result_format=RESULT_FORMAT,
    )
    return context.checkpoints.add(checkpoint)


# ----------------------------------------------------------------------------- entry points


def validate_clean_pairs(
    pairs_by_split: Mapping[str, Sequence[Pair]], config: Config
) -> dict[str, Any]:
    """The strict suite over cleaned pairs (split → (source, target) pairs); writes nothing.

    Returns the summary (the shape of summary.json); raises ValidationFailed when a rule fails.
    """
    langs = (config.data.src_lang, config.data.tgt_lang)
    frames = {
        split: build_pair_frame([s for s, _ in pairs], [t for _, t in pairs], langs)
        for split, pairs in pairs_by_split.items()
    }
    bounds = {split: clean_bounds(config, split) for split in frames}
    expectations = {split: suite_expectations(b, langs) for split, b in bounds.items()}
    results = run_suites(frames, expectations, "clean_pairs")
    files = {split: [f"cleaned {split} pairs"] for split in frames}
    summary = summarise("clean_pairs", frames, results, files, _as_dicts(bounds))
    if not summary["success"]:
        raise ValidationFailed(failure_message(summary))
    return summary


def _as_dicts(bounds: Mapping[str, Bounds]) -> dict[str, dict[str, Any]]:
    return {split: asdict(b) for split, b in bounds.items()}


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def read_raw_frames(config: Config, paths: ProjectPaths) -> dict[str, pd.DataFrame]:
    """Every split's pair frame; a stale report is removed when the files themselves are bad."""
    try:
        return {
            split: read_split_frame(paths.raw_dir, split, config.data)
            for split in config.data.splits
        }
    except DataError:
        remove_outputs(paths.validation_dir)
        raise


def write_report(
    staging: Path, summary: dict[str, Any], results: Mapping[str, ExpectationSuiteValidationResult]
) -> None:
    for split, result in results.items():
        text = json.dumps(result.to_json_dict(), indent=2, sort_keys=True, ensure_ascii=False)
        (staging / "results").mkdir(exist_ok=True)
        (staging / "results" / f"{split}.json").write_text(text + "\n", encoding="utf-8")
    atomic_write_json(staging / "summary.json", summary)


def run_validate_raw(config: Config, paths: ProjectPaths) -> dict[str, Any]:
    """Validate data/raw and write reports/validation/; ValidationFailed after writing it."""
    data = config.data
    frames = with_train_overlap(read_raw_frames(config, paths), data.train_split)
    langs = (data.src_lang, data.tgt_lang)
    bounds = {split: raw_bounds(config, split) for split in frames}
    expectations = {split: suite_expectations(b, langs) for split, b in bounds.items()}
    files = {
        split: [_relative(raw_file(paths.raw_dir, split, side), paths.root) for side in data.sides]
        for split in frames
    }
    with atomic_directory(paths.validation_dir) as staging:
        results = run_suites(frames, expectations, "raw_pairs", staging / "data_docs")
        summary = summarise("raw_pairs", frames, results, files, _as_dicts(bounds))
        summary["train_overlap"] = train_overlap_report(frames, config.validate.max_train_overlap)
        write_report(staging, summary, results)
    for split, details in summary["splits"].items():
        log.info("%s: %d rows, failed rules: %s", split, details["rows"], details["failed_rules"])
    for split, overlap in summary["train_overlap"].items():
        log.info(
            "%s: %d sources (%.2f%%) also in train", split, overlap["rows"], 100 * overlap["share"]
        )
    if not summary["success"]:
        raise ValidationFailed(failure_message(summary))
    return summary


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt validate", description="Great Expectations suite over data/raw"
    )
    parser.parse_args(argv)
    run_validate_raw(load_config(), project_paths())
    return 0
