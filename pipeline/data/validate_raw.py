"""`mt validate` (DVC stage validate_raw): the raw corpus against its data contract, with GX.

Every split of `config.data.splits` becomes one pandas DataFrame of aligned pairs
(pipeline/data/pair_frames.py: columns `line`, `source`, `target` plus derived columns such as
token counts, length ratio, compression, UTF-8 validity, duplicate and foreign-language flags;
val and test frames also flag sources that occur in train; summarization and dialogue frames
carry the language py3langid identifies on a seeded sample of rows) and one Great Expectations
1.x suite, run by a Checkpoint in an ephemeral context that also builds Data Docs. Which rules
a suite holds depends on `task:` (pipeline/data/expectations.py). Every expectation is a
column-level (vectorised) check on those columns and carries its rule name in `meta["rule"]`,
e.g. `source_max_tokens` or `max_compression`; the rule names are what summary.json, the error
message (both built by pipeline/data/validation_report.py) and the tests speak of. summary.json
records a task other than translation under `task` (translation's summary is what it was
before tasks existed).

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
from pipeline.data.expectations import CONTROL_CHARS as CONTROL_CHARS  # drift_gx reads it here
from pipeline.data.expectations import (
    Bounds,
    bounds_report,
    clean_bounds,
    needs_detected_languages,
    raw_bounds,
    suite_expectations,
)
from pipeline.data.pair_frames import (
    build_pair_frame,
    read_split_frame,
    train_overlap_report,
    with_detected_languages,
    with_train_overlap,
)
from pipeline.data.validation_report import MAX_EXAMPLES, failure_message, summarise, task_entry
from pipeline.errors import DataError, ValidationFailed
from pipeline.paths import ProjectPaths, project_paths, raw_file

log = logging.getLogger(__name__)
# GX logs every store and datasource it sets up at INFO; `mt validate` should show our summary.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

Pair = tuple[str, str]

DOCS_SITE = "validation"
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_EXAMPLES,
    "unexpected_index_column_names": ["line"],
    "return_unexpected_index_query": False,
}


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
    summary.update(task_entry(config.task))
    if not summary["success"]:
        raise ValidationFailed(failure_message(summary))
    return summary


def _as_dicts(bounds: Mapping[str, Bounds]) -> dict[str, dict[str, Any]]:
    return {split: bounds_report(b) for split, b in bounds.items()}


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
    frames = {
        split: with_detected_languages(frame) if needs_detected_languages(bounds[split]) else frame
        for split, frame in frames.items()
    }
    expectations = {split: suite_expectations(b, langs) for split, b in bounds.items()}
    files = {
        split: [_relative(raw_file(paths.raw_dir, split, side), paths.root) for side in data.sides]
        for split in frames
    }
    with atomic_directory(paths.validation_dir) as staging:
        results = run_suites(frames, expectations, "raw_pairs", staging / "data_docs")
        summary = summarise("raw_pairs", frames, results, files, _as_dicts(bounds))
        summary["train_overlap"] = train_overlap_report(frames, config.validate.max_train_overlap)
        summary.update(task_entry(config.task))
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
