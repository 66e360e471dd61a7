"""`mt validate` (DVC stage validate_raw): the raw corpus against its data contract, with GX.

Every split of `config.data.splits` becomes one pandas DataFrame of aligned pairs (columns
`line`, `source`, `target` plus derived columns such as token counts, length ratio, UTF-8
validity, duplicate and foreign-language flags) and one Great Expectations 1.x suite, run by a
Checkpoint in an ephemeral context that also builds Data Docs. Every expectation is a
column-level (vectorised) check on those columns and carries its rule name in `meta["rule"]`,
e.g. `source_max_tokens` or `target_language`; the rule names are what summary.json, the error
message and the tests speak of.

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
import re
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
from pipeline.config import Config, DataConfig, load_config
from pipeline.errors import DataError, ValidationFailed
from pipeline.paths import ProjectPaths, project_paths, raw_file

log = logging.getLogger(__name__)
# GX logs every store and datasource it sets up at INFO; `mt validate` should show our summary.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

Pair = tuple[str, str]

# Frequent function words per language code. A side that should be language X but whose rows
# often contain the other language's words has most likely been swapped or mislabelled. The
# lists avoid words that are common in another of the languages (English "a" is French "has").
FUNCTION_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("the", "and", "is", "are", "of", "with"),
    "de": ("der", "die", "und", "ein", "eine", "ist", "mit"),
    "fr": ("le", "la", "et", "une", "des", "est", "avec"),
}
# Real Multi30k: at most 1% of one side's rows hold the other language's words; a swapped side
# holds them in 79-90% of rows.
MAX_FOREIGN_WORD_SHARE = 0.1
# C0 and C1 control characters, except tab (a whitespace quirk that raw Multi30k has and clean
# repairs) and "\n" (the line end, never inside a line).
CONTROL_CHARS = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
# A side longer than this many characters per allowed token is one run-on blob, not a sentence
# (the token bound alone misses a 100 kB line without spaces).
MAX_CHARS_PER_TOKEN = 20
MAX_EXAMPLES = 5
EXAMPLE_CHARS = 200
SIDES = ("source", "target")
DOCS_SITE = "validation"
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "SUMMARY",
    "partial_unexpected_count": MAX_EXAMPLES,
    "unexpected_index_column_names": ["line"],
    "return_unexpected_index_query": False,
}


# ----------------------------------------------------------------------------- reading


def decode_lines(data: bytes) -> tuple[list[str], list[bool]]:
    """The lines of a raw file and, per line, whether its bytes were valid UTF-8.

    Split on b"\n" only (str.splitlines would also break at U+2028 or U+0085 and misalign the
    sides). Bad bytes become U+FFFD so one broken line cannot stop the whole report.
    """
    if not data:
        return [], []
    chunks = data.removesuffix(b"\n").split(b"\n")
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
        frame[f"{side}_foreign_words"] = contains_words(frame[side].astype(str), foreign)
    shorter = frame[["source_tokens", "target_tokens"]].min(axis=1).clip(lower=1)
    longer = frame[["source_tokens", "target_tokens"]].max(axis=1)
    frame["length_ratio"] = (longer / shorter).astype("float64")
    frame["is_duplicate"] = frame.duplicated(subset=["source", "target"], keep="first")
    return frame


def read_split_frame(raw_dir: Path, split: str, data: DataConfig) -> pd.DataFrame:
    """Both sides of `split` as a pair frame; DataError for a missing file or unequal lengths."""
    source_path = raw_file(raw_dir, split, data.src_lang)
    target_path = raw_file(raw_dir, split, data.tgt_lang)
    sources, source_valid = read_side(source_path, split)
    targets, target_valid = read_side(target_path, split)
    require_same_line_count(source_path, len(sources), target_path, len(targets))
    langs = (data.src_lang, data.tgt_lang)
    return build_pair_frame(sources, targets, langs, (source_valid, target_valid))


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
    """Rules over the pair: row count, length ratio, duplicate share, which language is where."""
    rules = [
        _named("min_rows", gxe.ExpectTableRowCountToBeBetween(min_value=bounds.min_rows)),
        _named(
            "duplicate_pairs",
            gxe.ExpectColumnValuesToBeInSet(
                column="is_duplicate", value_set=[False], mostly=1.0 - bounds.max_duplicate_share
            ),
        ),
    ]
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


# ----------------------------------------------------------------------------- summary


def _example_rows(frame: pd.DataFrame, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Line number and both texts of the first offending rows GX reported."""
    lines = [int(row["line"]) for row in result.get("partial_unexpected_index_list") or []]
    rows = frame.set_index("line").loc[lines[:MAX_EXAMPLES], ["source", "target"]]
    return [
        {"line": line, "source": source[:EXAMPLE_CHARS], "target": target[:EXAMPLE_CHARS]}
        for line, source, target in rows.itertuples(name=None)
    ]


def rule_outcome(frame: pd.DataFrame, validation: Any) -> dict[str, Any]:
    """One expectation's verdict in plain, deterministic JSON."""
    config, result = validation.expectation_config, validation.result or {}
    outcome: dict[str, Any] = {
        "rule": config.meta["rule"],
        "success": bool(validation.success),
        "expectation": config.type,
        "kwargs": {k: v for k, v in config.kwargs.items() if k != "batch_id"},
    }
    if "unexpected_count" in result:
        outcome["unexpected_rows"] = int(result["unexpected_count"])
        outcome["examples"] = [] if validation.success else _example_rows(frame, result)
    if "observed_value" in result:
        outcome["observed_value"] = result["observed_value"]
    exception = validation.exception_info or {}
    if exception.get("raised_exception"):
        # GX could not evaluate the rule (a bug or a wrongly typed column): say so, not "0 rows".
        outcome["error"] = str(exception.get("exception_message"))
    return outcome


def split_summary(
    frame: pd.DataFrame, result: ExpectationSuiteValidationResult, files: list[str]
) -> dict[str, Any]:
    outcomes = [rule_outcome(frame, item) for item in result.results]
    rules = {outcome.pop("rule"): outcome for outcome in outcomes}
    return {
        "files": files,
        "rows": len(frame),
        "success": bool(result.success),
        "failed_rules": sorted(name for name, rule in rules.items() if not rule["success"]),
        "rules": dict(sorted(rules.items())),
    }


def summarise(
    suite: str,
    frames: Mapping[str, pd.DataFrame],
    results: Mapping[str, ExpectationSuiteValidationResult],
    files: Mapping[str, list[str]],
    bounds: Mapping[str, Bounds],
) -> dict[str, Any]:
    splits = {
        split: {**split_summary(frames[split], results[split], files[split]), "bounds": asdict(b)}
        for split, b in bounds.items()
    }
    return {
        "suite": suite,
        "success": all(split["success"] for split in splits.values()),
        "splits": splits,
    }


def failure_message(summary: dict[str, Any]) -> str:
    """Which rules failed on which split and files, how many rows, and the first rows."""
    parts = [f"suite {summary['suite']} failed (full report: reports/validation/)"]
    for split, details in summary["splits"].items():
        for name in details["failed_rules"]:
            rule = details["rules"][name]
            where = " / ".join(details["files"])
            parts.append(f"{split} ({where}): rule {name} ({_describe(rule, details['rows'])})")
            parts += [
                f"    line {row['line']}: {row['source'][:80]!r} ||| {row['target'][:80]!r}"
                for row in rule.get("examples", [])
            ]
    return "\n".join(parts)


def _describe(rule: dict[str, Any], rows: int) -> str:
    bounds = ", ".join(f"{key}={value}" for key, value in sorted(rule["kwargs"].items()))
    if "error" in rule:
        return f"GX could not evaluate {rule['expectation']}({bounds}): {rule['error']}"
    if "unexpected_rows" in rule:
        return f"{rule['unexpected_rows']} of {rows} rows break {rule['expectation']}({bounds})"
    return f"observed {rule.get('observed_value')}, expected {rule['expectation']}({bounds})"


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
    summary = summarise("clean_pairs", frames, results, files, bounds)
    if not summary["success"]:
        raise ValidationFailed(failure_message(summary))
    return summary


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
    frames = read_raw_frames(config, paths)
    langs = (data.src_lang, data.tgt_lang)
    bounds = {split: raw_bounds(config, split) for split in frames}
    expectations = {split: suite_expectations(b, langs) for split, b in bounds.items()}
    files = {
        split: [_relative(raw_file(paths.raw_dir, split, lang), paths.root) for lang in langs]
        for split in frames
    }
    with atomic_directory(paths.validation_dir) as staging:
        results = run_suites(frames, expectations, "raw_pairs", staging / "data_docs")
        summary = summarise("raw_pairs", frames, results, files, bounds)
        write_report(staging, summary, results)
    for split, details in summary["splits"].items():
        log.info("%s: %d rows, failed rules: %s", split, details["rows"], details["failed_rules"])
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
