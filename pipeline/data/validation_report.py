"""What a GX run found, in plain deterministic JSON (summary.json) and in the error message.

Every expectation carries its rule name in `meta["rule"]`; the summary is keyed by it, lists
the failed rules per split and the first offending rows with their line numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from great_expectations.core import ExpectationSuiteValidationResult

MAX_EXAMPLES = 5
EXAMPLE_CHARS = 200


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
        if result.get("missing_count"):
            # A sampled column (the detected language): the share is over the rows checked.
            outcome["checked_rows"] = int(result["element_count"]) - int(result["missing_count"])
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
    bounds: Mapping[str, dict[str, Any]],
) -> dict[str, Any]:
    splits = {
        split: {**split_summary(frames[split], results[split], files[split]), "bounds": b}
        for split, b in bounds.items()
    }
    return {
        "suite": suite,
        "success": all(split["success"] for split in splits.values()),
        "splits": splits,
    }


def task_entry(task: str) -> dict[str, str]:
    """The task as a report records it: nothing for translation, so a translation report is
    byte for byte the one written before tasks existed (DVC hashes it; a missing `task` reads
    as translation), `{"task": task}` for the others."""
    return {} if task == "translation" else {"task": task}


# Rules whose failure is not about single bad rows: what the user should change.
RULE_FIXES = {
    "train_overlap": "these val/test sources also occur in train, so BLEU would measure "
    "memory, not translation; point data.val_split / data.test_splits at held-out splits, or "
    "raise validate.max_train_overlap if the overlap is known and accepted",
    "max_compression": "targets this long are no summaries of their sources; are the columns "
    "swapped (a tsv corpus is source<TAB>target)? Or raise validate.max_compression",
    "min_source_tokens": "sources this short leave nothing to summarise; remove them from the "
    "corpus or lower validate.min_source_tokens",
    "identical_sides": "replies that repeat their prompt teach the model to echo; remove them "
    "from the corpus (clean drops them from train and val)",
    **dict.fromkeys(
        ("source_detected_language", "target_detected_language"),
        "this side is not mostly in its declared language: check data.src_lang / "
        "data.tgt_lang against the files; if the example lines are in that language (short "
        "lines are often misidentified), lower validate.min_language_share",
    ),
}


def failure_message(summary: dict[str, Any]) -> str:
    """Which rules failed on which split and files, how many rows, and the first rows."""
    parts = [f"suite {summary['suite']} failed (full report: reports/validation/)"]
    for split, details in summary["splits"].items():
        for name in details["failed_rules"]:
            rule = details["rules"][name]
            where = " / ".join(details["files"])
            parts.append(f"{split} ({where}): rule {name} ({_describe(rule, details['rows'])})")
            if name in RULE_FIXES:
                parts.append(f"    fix: {RULE_FIXES[name]}")
            parts += [
                f"    line {row['line']}: {row['source'][:80]!r} ||| {row['target'][:80]!r}"
                for row in rule.get("examples", [])
            ]
    return "\n".join(parts)


def _describe(rule: dict[str, Any], rows: int) -> str:
    bounds = ", ".join(f"{key}={value}" for key, value in sorted(rule["kwargs"].items()))
    if "error" in rule:
        return f"GX could not evaluate {rule['expectation']}({bounds}): {rule['error']}"
    if "checked_rows" in rule:
        checked = f"{rule['unexpected_rows']} of {rule['checked_rows']} sampled rows"
        return f"{checked} break {rule['expectation']}({bounds})"
    if "unexpected_rows" in rule:
        return f"{rule['unexpected_rows']} of {rows} rows break {rule['expectation']}({bounds})"
    return f"observed {rule.get('observed_value')}, expected {rule['expectation']}({bounds})"
