"""The `profile` stage on Multi30k train, and the language identifier behind its language share.

Measures, on the real corpus (MT_DATA_DIR or ../shared/data/multi30k; never copied into the
repo): the wall time of `profile_corpus` over the train sources against the tokenize stage's
SentencePiece training on the same data (the baseline: the stage before it, in the same run),
and the share of each language's train lines py3langid identifies as that language.
Prints a table and writes benchmarks/results/corpus_profile.json.

    python benchmarks/corpus_profile.py [--data DIR] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pipeline.atomic import atomic_write_json  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.monitor.profile import profile_corpus  # noqa: E402
from pipeline.monitor.text_features import detected_languages, language_share  # noqa: E402
from pipeline.tokenize import train_tokenizer_models  # noqa: E402

DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "corpus_profile.json"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "multi30k"


def read_lines(data: Path, name: str) -> list[str]:
    with gzip.open(data / f"{name}.gz", "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def measure(data: Path) -> dict[str, Any]:
    config = load_config(REPO_ROOT / "params.yaml")
    english, german = read_lines(data, "train.en"), read_lines(data, "train.de")
    seconds_tokenizer, models = timed(
        lambda: train_tokenizer_models(english, german, config.tokenize, config.seed)
    )
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = Path(scratch)
        (tokenizer_dir / "src.model").write_bytes(models[0])
        (tokenizer_dir / "tgt.model").write_bytes(models[1])
        seconds_profile, _ = timed(lambda: profile_corpus(english, tokenizer_dir, "en"))
    shares = {
        lang: language_share(detected_languages(read_lines(data, f"train.{lang}")), lang)
        for lang in ("en", "de", "fr")
    }
    return {
        "train_lines": len(english),
        "seconds": {"tokenizer_training_baseline": seconds_tokenizer, "profile": seconds_profile},
        "identified_as_own_language": shares,
    }


def print_table(result: dict[str, Any]) -> None:
    seconds = result["seconds"]
    print(f"Multi30k train, {result['train_lines']} lines")
    print(f"{'work':<36} {'seconds':>8}")
    print(
        f"{'SentencePiece training (baseline)':<36} {seconds['tokenizer_training_baseline']:>8.2f}"
    )
    print(f"{'profile_corpus (the profile stage)':<36} {seconds['profile']:>8.2f}")
    for lang, share in result["identified_as_own_language"].items():
        print(f"train.{lang} lines identified as {lang}: {100 * share:.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("MT_DATA_DIR") or DEFAULT_DATA)
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    result = measure(args.data)
    result["measured_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print_table(result)
    atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
