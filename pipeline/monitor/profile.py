"""`mt profile` (DVC stage `profile`): the training corpus's profile, the reference for drift.

Reads the clean train sources (data/clean/{train}.{src_lang}, what the model learned from) and
the tokenizer trained on them, and writes reports/monitoring/corpus_profile.json:

    {"source": {"file": ..., "lines": N},        what was profiled
     "src_lang": "en",
     "length": {"unit": "whitespace tokens", "counts": {"1": n, ...}, "min", "max", "mean",
                "bin_edges": [...], "bin_shares": [...]},   the PSI's reference bins
     "char_classes": {"ascii_letter": share, ...},
     "unknown_rate": share of <unk> pieces under the tokenizer,
     "language_share": share of lines py3langid identifies as src_lang,
     "language_identifier": "py3langid <version>"}

Deterministic (no timestamps): the same corpus and tokenizer give the same bytes. Each incoming
batch is compared with it by pipeline/monitor/drift.py.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.aligned_text import read_aligned_lines
from pipeline.atomic import atomic_write_json
from pipeline.config import Config, load_config
from pipeline.errors import DataError
from pipeline.monitor import drift_stats, text_features
from pipeline.paths import ProjectPaths, project_paths, raw_file

log = logging.getLogger(__name__)


def language_identifier_name() -> str:
    return f"py3langid {metadata.version('py3langid')}"


def length_profile(lines: Sequence[str]) -> dict[str, Any]:
    """Length counts, range, mean and the PSI's reference bins (quantiles of the corpus)."""
    counts = text_features.length_counts(lines)
    edges = drift_stats.quantile_edges(counts)
    total = sum(counts.values())
    return {
        "unit": "whitespace tokens",
        "counts": {str(length): count for length, count in counts.items()},
        "min": min(counts),
        "max": max(counts),
        "mean": sum(length * count for length, count in counts.items()) / total,
        "bin_edges": edges,
        "bin_shares": drift_stats.shares(drift_stats.binned_counts(counts, edges)),
    }


def char_class_profile(lines: Sequence[str]) -> dict[str, float]:
    counts = text_features.char_class_counts(lines)
    return dict(zip(text_features.CHAR_CLASSES, drift_stats.shares(counts), strict=True))


def profile_corpus(lines: Sequence[str], tokenizer_dir: Path, src_lang: str) -> dict[str, Any]:
    """The profile of source `lines` (see the module doc); DataError when there are none."""
    if not lines:
        raise DataError("profile: no source lines to profile; check `mt clean`'s report")
    languages = text_features.detected_languages(lines)
    return {
        "src_lang": src_lang,
        "length": length_profile(lines),
        "char_classes": char_class_profile(lines),
        "unknown_rate": text_features.unknown_rate(
            text_features.unknown_piece_counts(lines, tokenizer_dir)
        ),
        "language_share": text_features.language_share(languages, src_lang),
        "language_identifier": language_identifier_name(),
    }


def run_profile(config: Config, paths: ProjectPaths) -> dict[str, Any]:
    """Profile the clean train sources and write paths.corpus_profile."""
    source = raw_file(paths.clean_dir, config.data.train_split, config.data.sides[0])
    lines = read_aligned_lines(source, "run `mt clean`")
    profile = profile_corpus(lines, paths.tokenizer_dir, config.data.src_lang)
    relative = source.relative_to(paths.root) if source.is_relative_to(paths.root) else source
    profile["source"] = {"file": str(relative), "lines": len(lines)}
    atomic_write_json(paths.corpus_profile, profile)
    log.info(
        "profiled %d lines: mean length %.2f, unknown rate %.5f, %s share %.4f",
        len(lines),
        profile["length"]["mean"],
        profile["unknown_rate"],
        config.data.src_lang,
        profile["language_share"],
    )
    return profile


def main(argv: list[str]) -> int | None:
    parser = argparse.ArgumentParser(
        prog="mt profile",
        description="Profile the clean train sources into reports/monitoring/corpus_profile.json",
    )
    parser.parse_args(argv)
    run_profile(load_config(), project_paths())
    return 0
