"""How many lines a drift verdict needs: the false-alarm rate of the drift check per batch size.

Batches of Multi30k val sources (the same distribution the model was trained on, so any drift
verdict on them is a false alarm) are drawn at several sizes and judged by the real drift
check's statistics and thresholds: `batch_statistics` and `drifted_features` of
pipeline/monitor/drift.py with params.yaml's monitor.* thresholds, against the reference the
`profile` stage builds (`profile_corpus` of the clean train sources, cleaned by `clean_corpus`,
with a tokenizer trained by `train_tokenizer_models` as `mt tokenize` trains it). The GX suite's
`language` and `unknown_rate` rules use the same thresholds as the statistics of those names;
its `length_in_training_range` rule can only fail on lines outside the profile's length range,
which are counted and printed. Batches of val.fr at the same sizes show the check still sees a
batch of another language (detection rate).

Batches are drawn with replacement (a bootstrap): each is n independent sentences from the val
distribution, so the rate at n = 500 is not flattered by sharing half of val's 1,014 lines.
Multi30k is read from MT_DATA_DIR or ../shared/data/multi30k (never copied into the repo).
Prints a table and writes benchmarks/results/drift_sample_size.json.

    .venv/bin/python benchmarks/drift_sample_size.py [--data DIR] [--resamples N] [--sizes ...]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import random
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.aligned_text import text_lines  # noqa: E402
from pipeline.atomic import atomic_write_json  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data.clean import clean_corpus  # noqa: E402
from pipeline.monitor.drift import (  # noqa: E402
    THRESHOLDS,
    batch_statistics,
    drifted_features,
    thresholds_of,
)
from pipeline.monitor.profile import profile_corpus  # noqa: E402
from pipeline.monitor.text_features import (  # noqa: E402
    detected_languages,
    token_length,
    unknown_piece_counts,
)
from pipeline.tokenize import SOURCE_MODEL, TARGET_MODEL, train_tokenizer_models  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "drift_sample_size.json"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "multi30k"
DEFAULT_SIZES = (3, 5, 10, 20, 30, 50, 75, 100, 125, 150, 200, 300, 500)
DEFAULT_RESAMPLES = 2000
# The false-alarm rate a minimum batch size must reach (issue 23 §5: "about 1%").
TARGET_RATE = 0.01


@dataclass(frozen=True)
class Population:
    """Lines with the per-line features the drift check computes, computed once."""

    lines: list[str]
    languages: list[str]
    unknown: list[tuple[int, int]]


def read_lines(data: Path, split: str, lang: str) -> list[str]:
    with gzip.open(data / f"{split}.{lang}.gz", "rt", encoding="utf-8") as handle:
        return text_lines(handle.read())


def clean_train_pairs(data: Path, config: Config) -> list[tuple[str, str]]:
    """The train pairs `mt clean` keeps (its rules, with val and test as held-out splits)."""
    langs = (config.data.src_lang, config.data.tgt_lang)
    raw = {
        split: list(zip(*(read_lines(data, split, lang) for lang in langs), strict=True))
        for split in config.data.splits
    }
    outcomes = clean_corpus(raw, config.data.train_split, config.data.val_split, config.clean)
    return outcomes[config.data.train_split].pairs


def write_tokenizer(pairs: Sequence[tuple[str, str]], config: Config, directory: Path) -> None:
    """The tokenizer `mt tokenize` would train on these pairs, as models/tokenizer holds it."""
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    models = train_tokenizer_models(sources, targets, config.tokenize, config.seed)
    (directory / SOURCE_MODEL).write_bytes(models[0])
    (directory / TARGET_MODEL).write_bytes(models[1])


def population(lines: list[str], tokenizer_dir: Path) -> Population:
    return Population(lines, detected_languages(lines), unknown_piece_counts(lines, tokenizer_dir))


def verdicts(
    sample: Population,
    size: int,
    resamples: int,
    profile: Mapping[str, Any],
    thresholds: Mapping[str, float],
    rng: random.Random,
) -> list[tuple[str, ...]]:
    """The drifted statistics of each of `resamples` batches of `size` lines (with replacement)."""
    found = []
    for _ in range(resamples):
        rows = rng.choices(range(len(sample.lines)), k=size)
        statistics = batch_statistics(
            [sample.lines[row] for row in rows],
            profile,
            [sample.languages[row] for row in rows],
            [sample.unknown[row] for row in rows],
        )
        found.append(drifted_features(statistics, thresholds))
    return found


def rates(found: Sequence[tuple[str, ...]]) -> dict[str, Any]:
    """Share of batches with any drifted statistic, and per statistic."""
    return {
        "any": sum(1 for drifted in found if drifted) / len(found),
        "by_statistic": {
            name: sum(1 for drifted in found if name in drifted) / len(found)
            for name in THRESHOLDS
        },
    }


def smallest_quiet_size(by_size: Mapping[int, Mapping[str, Any]]) -> int | None:
    """The smallest size from which on every measured size stays within TARGET_RATE."""
    quiet = None
    for size in sorted(by_size, reverse=True):
        if by_size[size]["false_alarm"]["any"] > TARGET_RATE:
            break
        quiet = size
    return quiet


def out_of_range_lines(lines: Sequence[str], profile: Mapping[str, Any]) -> int:
    """Lines the GX rule length_in_training_range would count (1 to the longest train source)."""
    longest = int(profile["length"]["max"])
    return sum(1 for line in lines if not 1 <= token_length(line) <= longest)


def measure(data: Path, sizes: Sequence[int], resamples: int) -> dict[str, Any]:
    config = load_config(REPO_ROOT / "params.yaml")
    src_lang, thresholds = config.data.src_lang, thresholds_of(config)
    train = clean_train_pairs(data, config)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = Path(scratch)
        write_tokenizer(train, config, tokenizer_dir)
        profile = profile_corpus([source for source, _ in train], tokenizer_dir, src_lang)
        val = population(read_lines(data, config.data.val_split, src_lang), tokenizer_dir)
        french = population(read_lines(data, config.data.val_split, "fr"), tokenizer_dir)
    rng = random.Random(config.seed)
    by_size = {
        size: {
            "false_alarm": rates(verdicts(val, size, resamples, profile, thresholds, rng)),
            "fr_detection": rates(verdicts(french, size, resamples, profile, thresholds, rng))[
                "any"
            ],
        }
        for size in sizes
    }
    return {
        "reference": {"clean_train_sources": len(train), "split": config.data.train_split},
        "population": {"file": f"{config.data.val_split}.{src_lang}", "lines": len(val.lines)},
        "val_lines_outside_training_length_range": out_of_range_lines(val.lines, profile),
        "thresholds": thresholds,
        "resamples": resamples,
        "target_false_alarm_rate": TARGET_RATE,
        "sizes": {str(size): result for size, result in by_size.items()},
        "smallest_size_within_target": smallest_quiet_size(by_size),
    }


def print_table(result: dict[str, Any]) -> None:
    names = list(THRESHOLDS)
    print(
        f"{result['population']['file']} ({result['population']['lines']} lines), "
        f"{result['resamples']} batches per size; lines outside the training length range: "
        f"{result['val_lines_outside_training_length_range']}"
    )
    print(f"{'lines':>5} {'false alarm':>11} " + " ".join(f"{n:>14}" for n in names) + "  fr seen")
    for size, row in result["sizes"].items():
        alarms = row["false_alarm"]
        by_name = " ".join(f"{100 * alarms['by_statistic'][n]:>13.2f}%" for n in names)
        print(
            f"{size:>5} {100 * alarms['any']:>10.2f}% {by_name} {100 * row['fr_detection']:>7.2f}%"
        )
    print(
        f"smallest size with a false-alarm rate <= {100 * result['target_false_alarm_rate']:g}% "
        f"(and every larger size measured): {result['smallest_size_within_target']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("MT_DATA_DIR") or DEFAULT_DATA)
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    result = measure(args.data, args.sizes, args.resamples)
    result["measured_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print_table(result)
    atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
