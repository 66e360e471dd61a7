"""The Great Expectations suite an incoming batch is checked with, built from the corpus profile.

One row per incoming line (columns `line`, `control_chars`, `tokens`, `language`,
`unknown_pieces`), one suite per batch, run by the project's GX runner
(pipeline/data/validate_raw.py `run_suites`: an ephemeral context and a Checkpoint whose action
builds a Data Docs site). Each expectation
carries its rule name in `meta["rule"]`, as in validate_raw:

- `not_empty`: at least one line.
- `no_control_chars`: no C0/C1 control characters (the raw-data rule), as a count per line.

The frame holds features of the lines, never their text: the Data Docs page lists a failed
rule's unexpected values, and it is uploaded to MLflow, where every user with READ sees it,
while a batch may carry anything its producer put in it (a password pasted into a line, a
terminal escape sequence). A failing line is found by its number (`line`) in the input file.
- `length_in_training_range`: whitespace tokens between 1 and the longest training source, for
  LENGTH_MOSTLY of the lines: the model never saw longer sources.
- `language`: lines identified as data.src_lang, for monitor.min_language_share of the lines.
- `unknown_rate`: unknown pieces summed over the batch at most monitor.max_unknown_rate of all
  its pieces.

The last two are the drift thresholds of the same name, so the Data Docs page and the drift
JSON agree on them; the distribution statistics (PSI, KS) are computed in drift.py.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import great_expectations.expectations as gxe
import pandas as pd

from pipeline.atomic import atomic_directory, atomic_write_text
from pipeline.config import MonitorConfig
from pipeline.data.validate_raw import CONTROL_CHARS, run_suites
from pipeline.monitor.text_features import token_length

SUITE_PREFIX = "incoming"
# Share of lines that must lie in the training corpus's length range (1 line in 100 may not).
LENGTH_MOSTLY = 0.99
_CONTROL = re.compile(CONTROL_CHARS)


def batch_frame(
    lines: Sequence[str], languages: Sequence[str], unknown: Sequence[tuple[int, int]]
) -> pd.DataFrame:
    """One row per incoming line with the features the suite checks (no text of the line)."""
    frame = pd.DataFrame(
        {
            "line": range(1, len(lines) + 1),
            "control_chars": [len(_CONTROL.findall(line)) for line in lines],
            "tokens": [token_length(line) for line in lines],
            "language": list(languages),
            "unknown_pieces": [count for count, _ in unknown],
        }
    )
    integers = ("line", "control_chars", "tokens", "unknown_pieces")
    return frame.astype(dict.fromkeys(integers, "int64"))


def _named(rule: str, expectation: gxe.Expectation) -> gxe.Expectation:
    expectation.meta = {"rule": rule}
    return expectation


def batch_expectations(
    profile: Mapping[str, Any], monitor: MonitorConfig, total_pieces: int
) -> list[gxe.Expectation]:
    """The suite for one batch: bounds from the profile, thresholds from monitor.*."""
    return [
        _named("not_empty", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
        _named(
            "no_control_chars",
            gxe.ExpectColumnValuesToBeBetween(column="control_chars", min_value=0, max_value=0),
        ),
        _named(
            "length_in_training_range",
            gxe.ExpectColumnValuesToBeBetween(
                column="tokens",
                min_value=1,
                max_value=int(profile["length"]["max"]),
                mostly=LENGTH_MOSTLY,
            ),
        ),
        _named(
            "language",
            gxe.ExpectColumnValuesToBeInSet(
                column="language",
                value_set=[profile["src_lang"]],
                mostly=monitor.min_language_share,
            ),
        ),
        _named(
            "unknown_rate",
            gxe.ExpectColumnSumToBeBetween(
                column="unknown_pieces", max_value=monitor.max_unknown_rate * total_pieces
            ),
        ),
    ]


def run_batch_suite(
    frame: pd.DataFrame, expectations: list[gxe.Expectation], batch_id: str, docs_dir: Path
) -> tuple[bool, tuple[str, ...]]:
    """Validate the batch, building its Data Docs site in `docs_dir`; (success, failed rules)."""
    results = run_suites({batch_id: frame}, {batch_id: expectations}, SUITE_PREFIX, docs_dir)
    result = results[batch_id]
    failed = sorted(_rule(item) for item in result.results if not item.success)
    return bool(result.success), tuple(failed)


def _rule(validation: Any) -> str:
    config = validation.expectation_config
    if config is None or not config.meta:
        raise RuntimeError("an expectation without meta['rule']; build each one with _named")
    return str(config.meta["rule"])


def validation_page(docs_dir: Path) -> Path:
    """The batch's validation page in its Data Docs site (the site holds exactly one)."""
    pages = sorted((docs_dir / "validations").rglob("*.html"))
    if len(pages) != 1:
        raise RuntimeError(f"{docs_dir}: expected one GX validation page, found {len(pages)}")
    return pages[0]


def publish_page(staging: Path, page: Path, site: Path) -> None:
    """Put the batch's page into the shared `site` at its path in the staging site, so its
    relative links to static/ hold; the static assets are copied the first time only."""
    if not (site / "static").is_dir():
        with atomic_directory(site / "static") as static:
            shutil.copytree(staging / "static", static, dirs_exist_ok=True)
    atomic_write_text(site / page.relative_to(staging), page.read_text(encoding="utf-8"))
